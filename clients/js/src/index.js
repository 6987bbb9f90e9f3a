// ringcast-client: the Agnost realtime client API on top of socket.io-client v4.
//
// One `createClient(url, options)` gives a client whose `realtime` manager
// owns a single socket.io socket for the client's whole life. The manager
// keeps what the server forgets when a connection drops (the channels this
// client joined and its member profile) and replays it on every reconnect,
// so an app sees one continuous session across network blips and server
// restarts. Runs unchanged in browsers and in Node (>= 20).
import { io } from "socket.io-client";

import {
  ClientError,
  RESERVED_EVENT_NAMES,
  USER_EVENTS,
  optionalBoolean,
  optionalMs,
  optionalString,
  requireDefined,
  requireEventName,
  requireFunction,
  requireString,
} from "./errors.js";

export { ClientError, RESERVED_EVENT_NAMES, USER_EVENTS };

/** Agnost's defaults, except `path` which is ringcast's (and Agnost's) socket path. */
export const REALTIME_DEFAULTS = Object.freeze({
  echoMessages: true,
  bufferMessages: true,
  autoJoinChannels: true,
  reconnectionDelay: 1000,
  timeout: 20000,
  path: "/realtime/",
});

/**
 * Emits kept while disconnected with `bufferMessages` on. Past this many the
 * newest are dropped: an app that keeps sending into a dead connection must
 * not grow without bound.
 */
export const BUFFERED_MESSAGES_MAX = 10000;

/** socket.io's own backoff cap; kept unless `reconnectionDelay` is larger. */
const RECONNECTION_DELAY_MAX_MS = 5000;

/**
 * Creates a client for the ringcast server at `url` (`http(s)://host:port`;
 * a path in the URL, as in the server's listening line, is the socket path).
 * Nothing connects until the first use of `client.realtime`.
 */
export function createClient(url, options = {}) {
  requireString("createClient", "url", url);
  if (options === null || typeof options !== "object") {
    throw new ClientError("invalid_value", "createClient", "options",
      "\"options\" must be an object when given");
  }
  return new RingcastClient(url, options);
}

class RingcastClient {
  constructor(url, options) {
    this.realtime = new RealtimeManager(url, options);
  }
}

/** The member-list and ack errors of `getMembers`, Agnost-shaped. */
function realtimeError(code, message) {
  return Object.freeze({ origin: "client_error", code, message });
}

export class RealtimeManager {
  /** `"idle"` before first use, `"open"` while the app wants a connection, `"closed"` after close(). */
  #state = "idle";
  #socket;
  #options;
  #auth;
  /** Whether a connection was ever established: the first connect always applies pending joins. */
  #everConnected = false;
  /**
   * Channels this client is in (or will be in once connected), in join order.
   * `pending` marks a join made while disconnected that the next connect
   * still has to send, with the caller's `echo`.
   */
  #channels = new Map();
  /** The member profile, replayed on reconnect; `undefined` until updateProfile. */
  #profile = undefined;
  /** `[event, payload]` emits waiting for a connection (bufferMessages). */
  #buffer = [];
  /** Listeners the manager itself put on the socket, which off() must not remove. */
  #internal = new Set();
  /** getMembers calls waiting for a connection; close() fails them at once. */
  #connectWaiters = new Set();

  constructor(url, options = {}) {
    const m = "createClient";
    const realtime = options.realtime ?? {};
    if (typeof realtime !== "object" || Array.isArray(realtime)) {
      throw new ClientError("invalid_value", m, "realtime", "\"realtime\" must be an object when given");
    }
    optionalString(m, "envId", options.envId);
    optionalString(m, "apiKey", options.apiKey);
    optionalString(m, "session", options.session);
    optionalBoolean(m, "realtime.echoMessages", realtime.echoMessages);
    optionalBoolean(m, "realtime.bufferMessages", realtime.bufferMessages);
    optionalBoolean(m, "realtime.autoJoinChannels", realtime.autoJoinChannels);
    optionalMs(m, "realtime.reconnectionDelay", realtime.reconnectionDelay, 0);
    optionalMs(m, "realtime.timeout", realtime.timeout, 1);
    optionalString(m, "realtime.path", realtime.path);

    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      throw new ClientError("invalid_value", m, "url", `"url" is not a URL: ${JSON.stringify(url)}`);
    }
    // A path in the URL is the socket path (socket.io would read it as a namespace).
    const urlPath = parsed.pathname !== "/" ? parsed.pathname : undefined;
    this.#options = {
      ...REALTIME_DEFAULTS,
      ...(urlPath ? { path: urlPath } : {}),
      ...definedOnly(realtime),
    };
    this.#auth = definedOnly({
      envId: options.envId ?? undefined,
      apiKey: options.apiKey ?? undefined,
      session: options.session ?? undefined,
      echoMessages: this.#options.echoMessages,
    });

    const o = this.#options;
    this.#socket = io(parsed.origin, {
      path: o.path,
      // WebSocket first, as Agnost's client library connects; where no
      // WebSocket gets through (a proxy that blocks it) the client falls
      // back to HTTP long-polling. A browser without WebSocket long-polls
      // from the start (socket.io-client would not fall back: its WebSocket
      // transport fails before anyone listens).
      transports: webSocketMissing() ? ["polling"] : ["websocket", "polling"],
      tryAllTransports: true,
      autoConnect: false,
      forceNew: true,
      reconnection: true,
      reconnectionDelay: o.reconnectionDelay,
      reconnectionDelayMax: Math.max(RECONNECTION_DELAY_MAX_MS, o.reconnectionDelay),
      timeout: o.timeout,
      // A fresh copy for every (re)connect.
      auth: (cb) => cb({ ...this.#auth }),
    });
    this.#internalOn("connect", () => this.#onConnected());
    this.#internalOn("disconnect", () => this.#onDisconnected());
  }

  // --- connection -------------------------------------------------------------

  /** Connects (again, after close()). Reconnects by itself until close(). */
  open() {
    this.#state = "open";
    this.#socket.connect();
  }

  /** Disconnects without reconnecting until open(); drops buffered emits and fails waiting getMembers calls. */
  close() {
    this.#state = "closed";
    this.#buffer = [];
    this.#socket.disconnect();
    for (const settle of [...this.#connectWaiters]) settle();
  }

  isConnected() {
    return this.#socket.connected;
  }

  /** The server-assigned socket id while connected, else `null`. */
  getSocketId() {
    return this.#socket.connected ? (this.#socket.id ?? null) : null;
  }

  onConnect(listener) {
    this.#listen("onConnect", "connect", listener);
  }

  /** `listener(reason)`; `reason` is socket.io's ("transport close", "io client disconnect", ...). */
  onDisconnect(listener) {
    this.#listen("onDisconnect", "disconnect", listener);
  }

  /** `listener(error)` on a failed (re)connect; a refusal carries the server's `data`. */
  onError(listener) {
    this.#listen("onError", "connect_error", listener);
  }

  /** `listener(attempt)` before each reconnect attempt (1, 2, ...). */
  onReconnectAttempt(listener) {
    requireFunction("onReconnectAttempt", "listener", listener);
    this.#ensureOpen();
    this.#socket.io.on("reconnect_attempt", listener);
  }

  // --- listeners ----------------------------------------------------------------

  on(eventName, listener) {
    requireString("on", "eventName", eventName);
    this.#listen("on", eventName, listener);
  }

  once(eventName, listener) {
    requireString("once", "eventName", eventName);
    requireFunction("once", "listener", listener);
    this.#ensureOpen();
    this.#socket.once(eventName, listener);
  }

  /** Removes `listener` from `eventName`, or every app listener of it when no listener is given. */
  off(eventName, listener) {
    requireString("off", "eventName", eventName);
    if (listener !== undefined) {
      requireFunction("off", "listener", listener);
      this.#socket.off(eventName, listener);
      return;
    }
    // A copy: the emitter hands out its own array, which off() splices.
    for (const l of [...this.#socket.listeners(eventName)]) {
      if (!this.#internal.has(l)) this.#socket.off(eventName, l);
    }
  }

  /** `listener(eventName, ...args)` for every event the server sends. */
  onAny(listener) {
    requireFunction("onAny", "listener", listener);
    this.#ensureOpen();
    this.#socket.onAny(listener);
  }

  offAny(listener) {
    if (listener !== undefined) requireFunction("offAny", "listener", listener);
    this.#socket.offAny(listener);
  }

  /** The app's listeners of `eventName`; without a name, the onAny listeners. */
  getListeners(eventName) {
    if (eventName === undefined) return [...this.#socket.listenersAny()];
    requireString("getListeners", "eventName", eventName);
    return this.#socket.listeners(eventName)
      .filter((l) => !this.#internal.has(l))
      // once() listeners sit in the emitter behind a wrapper holding them as `fn`.
      .map((l) => (typeof l.fn === "function" ? l.fn : l));
  }

  // --- channels, messages, profile ------------------------------------------------

  /** Joins `channel`; others in it get `channel:join` (this client too when echo). */
  join(channel, echo) {
    requireString("join", "channel", channel);
    optionalBoolean("join", "echo", echo);
    this.#ensureOpen();
    if (this.#socket.connected) {
      this.#channels.set(channel, { pending: false });
      this.#socket.emit("join", withEcho({ channel }, echo));
    } else if (this.#replaysOnConnect()) {
      this.#channels.set(channel, { pending: true, echo });
    } else {
      this.#channels.set(channel, { pending: false });
      this.#emitLater("join", withEcho({ channel }, echo));
    }
  }

  leave(channel, echo) {
    requireString("leave", "channel", channel);
    optionalBoolean("leave", "echo", echo);
    this.#ensureOpen();
    this.#channels.delete(channel);
    if (this.#socket.connected) {
      this.#socket.emit("leave", withEcho({ channel }, echo));
    } else if (!this.#replaysOnConnect()) {
      // A buffered join may still reach the server first.
      this.#emitLater("leave", withEcho({ channel }, echo));
    }
    // Otherwise there is nothing to send: the dropped connection already left
    // every channel, and a join still pending is simply not replayed.
  }

  /** Publishes `message` to `channel`'s members as event `eventName`. */
  send(channel, eventName, message, echo) {
    requireString("send", "channel", channel);
    requireEventName("send", "eventName", eventName);
    requireDefined("send", "message", message);
    optionalBoolean("send", "echo", echo);
    this.#emit("message", withEcho({ channel, eventName, message }, echo));
  }

  /** Publishes `message` to every client of the environment as event `eventName`. */
  broadcast(eventName, message, echo) {
    requireEventName("broadcast", "eventName", eventName);
    requireDefined("broadcast", "message", message);
    optionalBoolean("broadcast", "echo", echo);
    this.#emit("message", withEcho({ eventName, message }, echo));
  }

  /** Sets this client's member profile; every joined channel gets `channel:update`. */
  updateProfile(data, echo) {
    requireDefined("updateProfile", "data", data);
    optionalBoolean("updateProfile", "echo", echo);
    this.#ensureOpen();
    this.#profile = { data };
    if (this.#socket.connected) {
      this.#socket.emit("update", withEcho({ data }, echo));
    } else if (!this.#replaysOnConnect()) {
      this.#emitLater("update", withEcho({ data }, echo));
    }
  }

  /** `listener({channel, message: {id, data}})` when a member joins a channel of this client. */
  onJoin(listener) {
    this.#listen("onJoin", "channel:join", listener);
  }

  onLeave(listener) {
    this.#listen("onLeave", "channel:leave", listener);
  }

  onUpdate(listener) {
    this.#listen("onUpdate", "channel:update", listener);
  }

  /**
   * The members of `channel` (this client's environment, every shard):
   * `{data: [{id, data}], errors: null}`, or `{data: null, errors: {code,
   * message}}` when not connected within `timeout` or the server did not answer.
   */
  async getMembers(channel) {
    requireString("getMembers", "channel", channel);
    this.#ensureOpen();
    const started = Date.now();
    const timeoutMs = this.#options.timeout;
    if (!this.#socket.connected) {
      if (this.#state === "closed") {
        return { data: null, errors: realtimeError("not_connected", "the realtime connection is closed") };
      }
      const connected = await this.#waitForConnect(timeoutMs);
      if (!connected) {
        return {
          data: null,
          errors: realtimeError("not_connected", `not connected within ${timeoutMs} ms`),
        };
      }
    }
    const leftMs = Math.max(1, timeoutMs - (Date.now() - started));
    return new Promise((resolve) => {
      this.#socket.timeout(leftMs).emit("members", { channel }, (err, members) => {
        if (err) {
          const disconnected = /disconnect/i.test(String(err.message));
          resolve({
            data: null,
            errors: disconnected
              ? realtimeError("not_connected", "disconnected before the server answered")
              : realtimeError("timeout", `no member list within ${leftMs} ms`),
          });
        } else {
          resolve({ data: members, errors: null });
        }
      });
    });
  }

  /** `listener(eventName, session, user)` for user:signin/signout/pwdchange/emailchange/phonechange. */
  onUserEvent(listener) {
    requireFunction("onUserEvent", "listener", listener);
    this.#ensureOpen();
    for (const name of USER_EVENTS) this.#socket.on(name, listener);
  }

  // --- internals --------------------------------------------------------------------

  /** Connect on first use; after close() only open() connects again. */
  #ensureOpen() {
    if (this.#state === "idle") this.open();
  }

  /** Whether joins and the profile made while disconnected are sent by the next connect. */
  #replaysOnConnect() {
    return this.#options.autoJoinChannels || !this.#everConnected;
  }

  #listen(method, eventName, listener) {
    requireFunction(method, "listener", listener);
    this.#ensureOpen();
    this.#socket.on(eventName, listener);
  }

  #internalOn(eventName, listener) {
    this.#internal.add(listener);
    this.#socket.on(eventName, listener);
  }

  #emit(event, payload) {
    this.#ensureOpen();
    if (this.#socket.connected) this.#socket.emit(event, payload);
    else this.#emitLater(event, payload);
  }

  /** Buffers an emit for the next connect, or drops it (bufferMessages off, or closed). */
  #emitLater(event, payload) {
    if (!this.#options.bufferMessages) return;
    if (this.#buffer.length >= BUFFERED_MESSAGES_MAX) return;
    this.#buffer.push([event, payload]);
  }

  /**
   * Runs first among the connect listeners: replays the profile and the
   * channels (the new connection has a new socket id and is in no channel),
   * then flushes buffered emits, so that the app's onConnect listeners and
   * the buffered messages see the session restored.
   */
  #onConnected() {
    const replay = this.#replaysOnConnect();
    this.#everConnected = true;
    if (replay) {
      if (this.#profile !== undefined) {
        this.#socket.emit("update", { data: this.#profile.data, echo: false });
      }
      for (const [channel, entry] of this.#channels) {
        // A join the app asked for while disconnected keeps its echo; a
        // re-join after a reconnect is not news to this client.
        const payload = entry.pending ? withEcho({ channel }, entry.echo) : { channel, echo: false };
        this.#socket.emit("join", payload);
        this.#channels.set(channel, { pending: false });
      }
    }
    const buffered = this.#buffer;
    this.#buffer = [];
    for (const [event, payload] of buffered) this.#socket.emit(event, payload);
    for (const wake of [...this.#connectWaiters]) wake();
  }

  #onDisconnected() {
    // Without replay the server-side memberships are gone for good.
    if (!this.#options.autoJoinChannels) this.#channels.clear();
  }

  /** Resolves true once connected, false after `timeoutMs` or on close(). */
  #waitForConnect(timeoutMs) {
    return new Promise((resolve) => {
      // Called by the connect listener and by close(); the socket's state
      // tells which one it was.
      const settle = () => {
        clearTimeout(timer);
        this.#connectWaiters.delete(settle);
        resolve(this.#socket.connected);
      };
      const timer = setTimeout(settle, timeoutMs);
      this.#connectWaiters.add(settle);
    });
  }
}

function withEcho(payload, echo) {
  if (echo !== undefined) payload.echo = echo;
  return payload;
}

function definedOnly(object) {
  return Object.fromEntries(Object.entries(object).filter(([, v]) => v !== undefined));
}

/** Whether this is a browser page without WebSocket (Node uses the `ws` package). */
function webSocketMissing() {
  return typeof window !== "undefined" && typeof globalThis.WebSocket !== "function";
}
