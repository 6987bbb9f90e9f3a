// Helpers of the settings tests (issue 4): connect_error assertions, the
// app backend's HTTP API, environment changes, disconnect waits, rate-limit
// bursts. Every wait is bounded.
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { WAIT_MS, connect, connectError, sleep } from "./client.mjs";

/** Agnost's connect_error titles by code, letter for letter. */
export const AGNOST_TITLES = Object.fromEntries(Object.entries({
  no_environment_found: "No Environment Found",
  suspended_environment: "Suspended Environment",
  realtime_not_allowed: "Realtime Disabled",
  missing_api_key: "Missing API Key",
  invalid_api_key: "Invalid API Key",
  unauthorizez_api_key: "Unauthorized API Key",
  expired_api_key: "Expired API Key",
  missing_request_origin: "Origin Domain Not Found",
  domain_not_authorized: "Origin Domain Not Authorized",
  missing_client_IP: "IP Address Not Found",
  ip_not_authorized: "IP Address Not Authorized",
  missing_session_token: "Missing Session Token",
  invalid_session_token: "Invalid Session Token",
}).map(([code, title]) => [code, `Realtime Connection Error - ${title}`]));

/**
 * Attempts a connection that must be refused with Agnost's connect_error
 * `code`; asserts what socket.io-client hands the app (`err.message` is the
 * title, `err.data` is exactly `{origin: "client_error", code, message}`, no
 * socket id, no retry) and returns the error.
 */
export async function expectRefused(server, auth, code, options = {}) {
  const { err, id, active } = await connectError(server, auth, options);
  assert.equal(typeof err.message, "string");
  assert.equal(err.message, AGNOST_TITLES[code] ?? err.message, "Agnost's title for " + code);
  assert.ok(err.message.length > 0, "connect_error has a title");
  assert.ok(err.data && typeof err.data === "object", `connect_error has data: ${JSON.stringify(err.data)}`);
  assert.deepEqual(Object.keys(err.data).sort(), ["code", "message", "origin"],
    `connect_error data: ${JSON.stringify(err.data)}`);
  assert.equal(err.data.origin, "client_error");
  assert.equal(err.data.code, code, `expected ${code}, got ${JSON.stringify(err.data)}`);
  assert.equal(typeof err.data.message, "string");
  assert.ok(err.data.message.length > 0, "connect_error data has details");
  assert.equal(id, undefined, "a refused socket has no id");
  assert.equal(active, false, "socket.io-client does not retry a refused connect");
  return err;
}

/**
 * One request to the HTTP API. `body` is JSON-encoded unless it is a string
 * (sent as is) or undefined. `token` defaults to the master token; pass
 * `null` to send no Authorization header. Resolves with status, headers,
 * text and the parsed JSON (undefined when the body is not JSON).
 */
export async function api(server, method, path, body, { token = server.masterToken, headers = {},
  timeoutMs = WAIT_MS } = {}) {
  const allHeaders = { ...headers };
  if (token !== null) allHeaders.authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    payload = typeof body === "string" || body instanceof Uint8Array ? body : JSON.stringify(body);
    allHeaders["content-type"] ??= "application/json";
  }
  const response = await fetch(server.url + path, {
    method,
    headers: allHeaders,
    body: payload,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/**
 * Asserts an API error response: `status`, a JSON content type and a body
 * that is exactly `{error: <non-empty string>, code}`, plus, for an invalid
 * environment, `field`: the path of the offending field.
 */
export function assertApiError(response, status, code) {
  const what = `${response.status} ${response.text}`;
  assert.equal(response.status, status, what);
  assert.match(response.headers.get("content-type") ?? "", /application\/json/, what);
  assert.ok(response.json && typeof response.json === "object", `JSON error body: ${what}`);
  const keys = Object.keys(response.json).sort();
  if (keys.includes("field")) {
    assert.equal(status, 400, what);
    assert.match(response.json.field, /^[a-z_]+(\[\d+\])?(\.[a-z_]+(\[\d+\])?)*$/, what);
  }
  assert.deepEqual(keys.filter((k) => k !== "field"), ["code", "error"], what);
  assert.equal(response.json.code, code, what);
  assert.equal(typeof response.json.error, "string", what);
  assert.ok(response.json.error.length > 0, what);
}

/** `PUT /api/environments/{id}`; asserts 200 and returns the stored environment. */
export async function putEnvironment(server, id, env) {
  const response = await api(server, "PUT", `/api/environments/${encodeURIComponent(id)}`, env);
  assert.equal(response.status, 200, `PUT ${id}: ${response.status} ${response.text}`);
  return response.json;
}

/** `GET /api/environments/{id}`; asserts 200 and returns the environment. */
export async function getEnvironment(server, id) {
  const response = await api(server, "GET", `/api/environments/${encodeURIComponent(id)}`);
  assert.equal(response.status, 200, `GET ${id}: ${response.status} ${response.text}`);
  return response.json;
}

/**
 * `GET /api/environments/{id}` until it answers `expected` (the answer of a
 * `PUT`), and returns it; asserts the last answer equals `expected` after
 * `timeoutMs`. In a cluster a `PUT` answers once its own node applied the
 * change; a `GET` served by another node sees it once that node applied it
 * from Redis's notification, a moment later (README, Cluster).
 */
export async function getEnvironmentEventually(server, id, expected, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await getEnvironment(server, id);
    if (isDeepStrictEqual(got, expected) || Date.now() > deadline) {
      assert.deepEqual(got, expected, `GET ${id} after its PUT`);
      return got;
    }
    await sleep(20);
  }
}

/**
 * Resolves with the reason of the client's (first) disconnect, which may
 * already have happened; rejects after `timeoutMs`.
 */
export function waitDisconnect(client, timeoutMs = WAIT_MS) {
  if (client.disconnects.length > 0) return Promise.resolve(client.disconnects[0]);
  return new Promise((resolvePromise, rejectPromise) => {
    const timer = setTimeout(() => {
      client.socket.off("disconnect", onDisconnect);
      rejectPromise(new Error(`socket ${client.id} still connected after ${timeoutMs} ms`));
    }, timeoutMs);
    function onDisconnect(reason) {
      clearTimeout(timer);
      resolvePromise(reason);
    }
    client.socket.once("disconnect", onDisconnect);
  });
}

/**
 * Waits `ms` and asserts the client is still connected and saw no
 * disconnect.
 */
export async function assertStaysConnected(client, ms, label = "client") {
  await sleep(ms);
  assert.deepEqual(client.disconnects, [], `${label} was disconnected`);
  assert.equal(client.socket.connected, true, `${label} is connected`);
}

/**
 * Polls `predicate` (sync or async) every 20 ms until it returns a truthy
 * value; rejects after `timeoutMs` with `what`.
 */
export async function until(predicate, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * Connects until accepted, for a connection right after a settings change:
 * the change reaches each shard by message, and a shard may still hold the
 * old settings for a moment after the change was answered. Rejects with the
 * last connect error after `timeoutMs`.
 */
export async function connectEventually(server, auth, options = {}, timeoutMs = 3_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await connect(server, auth, options);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await sleep(50);
    }
  }
}
