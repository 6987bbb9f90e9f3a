// ringcast-client/server: the app backend's side of the Agnost realtime API
// (send, broadcast, getMembers, user events) over ringcast's HTTP JSON API.
//
// Each call is one `POST /api/...` with the master token as a bearer token,
// on the same host and port as the socket server. Plain HTTP instead of a
// long-lived master socket: a backend can call it from any process (a
// request handler, a cron job) with nothing to connect or keep alive.
import {
  ClientError,
  USER_EVENTS,
  optionalMs,
  optionalString,
  requireDefined,
  requireEventName,
  requireString,
  requireUserEvent,
} from "./errors.js";

export { ClientError, USER_EVENTS };

/** Bound on each HTTP call, unless `timeout` says otherwise. */
export const SERVER_TIMEOUT_MS_DEFAULT = 10000;

/**
 * A failed API call: the server's `{error, code}` and the HTTP `status`; for
 * a failure before any answer, `status` is 0 and `code` is `network_error`
 * or `timeout`.
 */
export class RealtimeApiError extends Error {
  constructor(status, code, error, body) {
    super(`ringcast API: ${error} (${code}${status ? `, HTTP ${status}` : ""})`);
    this.name = "RealtimeApiError";
    this.status = status;
    this.code = code;
    this.error = error;
    this.body = body;
  }
}

/**
 * Creates the backend client of the ringcast server at `url`
 * (`http(s)://host:port`). `envId` (default `"default"`) is the environment
 * every call addresses.
 */
export function createServerClient(url, options) {
  const m = "createServerClient";
  requireString(m, "url", url);
  if (options === null || typeof options !== "object") {
    throw new ClientError("missing_required_argument", m, "options",
      "\"options\" with a \"masterToken\" is required");
  }
  requireString(m, "masterToken", options.masterToken);
  optionalString(m, "envId", options.envId);
  optionalMs(m, "timeout", options.timeout, 1);
  let base;
  try {
    base = new URL(url);
  } catch {
    throw new ClientError("invalid_value", m, "url", `"url" is not a URL: ${JSON.stringify(url)}`);
  }
  return new ServerClient(base, options);
}

export class ServerClient {
  #base;
  #token;
  #envId;
  #timeoutMs;

  constructor(base, options) {
    this.#base = base;
    this.#token = options.masterToken;
    this.#envId = options.envId ?? "default";
    this.#timeoutMs = options.timeout ?? SERVER_TIMEOUT_MS_DEFAULT;
  }

  /** Publishes `message` to `channel`'s members as event `eventName`. */
  async send(channel, eventName, message) {
    requireString("send", "channel", channel);
    requireEventName("send", "eventName", eventName);
    requireDefined("send", "message", message);
    return this.#post("/api/send", { envId: this.#envId, channel, eventName, message });
  }

  /** Publishes `message` to every client of the environment as event `eventName`. */
  async broadcast(eventName, message) {
    requireEventName("broadcast", "eventName", eventName);
    requireDefined("broadcast", "message", message);
    return this.#post("/api/broadcast", { envId: this.#envId, eventName, message });
  }

  /** The members of `channel`: `[{id, data}]`. */
  async getMembers(channel) {
    requireString("getMembers", "channel", channel);
    return this.#post("/api/members", { envId: this.#envId, channel });
  }

  /**
   * Pushes a user event to every socket of user `userId`; they receive
   * event `eventName` with arguments `(eventName, session, user)`.
   */
  async userEvent(userId, eventName, session = null, user = null) {
    requireString("userEvent", "userId", userId);
    requireUserEvent("userEvent", "eventName", eventName);
    return this.#post("/api/user-event", { envId: this.#envId, userId, eventName, session, user });
  }

  async #post(path, body) {
    let response;
    let text;
    try {
      response = await fetch(new URL(path, this.#base), {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${this.#token}`,
        },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      // The same signal bounds reading the body.
      text = await response.text();
    } catch (err) {
      const timedOut = err?.name === "TimeoutError" || err?.name === "AbortError";
      throw new RealtimeApiError(0, timedOut ? "timeout" : "network_error",
        timedOut ? `no answer within ${this.#timeoutMs} ms` : String(err?.cause?.message ?? err?.message ?? err),
        null);
    }
    let parsed = null;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      // Not JSON: reported below with the raw text.
    }
    if (!response.ok) {
      const error = typeof parsed?.error === "string" ? parsed.error : (text || response.statusText);
      const code = typeof parsed?.code === "string" ? parsed.code : `http_${response.status}`;
      throw new RealtimeApiError(response.status, code, error, parsed ?? text);
    }
    if (parsed === null && text !== "") {
      throw new RealtimeApiError(response.status, "bad_response",
        `answer is not JSON: ${text.slice(0, 200)}`, text);
    }
    return parsed;
  }
}
