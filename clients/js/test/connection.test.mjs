// Connection lifecycle of ringcast-client against the real server: connect
// on first use, socket ids, refusals, manual close (no reconnect), reconnect
// after a server restart with the profile and channels replayed, and the
// listener API (on/once/off/onAny/offAny/getListeners).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { ClientError, createClient } from "ringcast-client";

import { startServer } from "./helpers/server.mjs";
import {
  QUIET_MS,
  SOCKET_ID_RE,
  byId,
  clientPool,
  waitFor,
} from "./helpers/wait.mjs";

/** Fast reconnects so a restart costs well under a second per client. */
const FAST = { reconnectionDelay: 100, timeout: 5_000 };

describe("connection lifecycle", () => {
  let server;
  const pool = clientPool();
  before(async () => {
    server = await startServer({ config: "envs.toml" });
  });
  after(async () => {
    pool.closeAll();
    await server?.stop();
  });

  test("nothing connects before first use; the first join connects and lands", async () => {
    const client = createClient(server.origin, { realtime: FAST });
    const rt = client.realtime;
    try {
      await sleep(QUIET_MS);
      assert.equal(rt.isConnected(), false, "connected without being used");
      assert.equal(rt.getSocketId(), null);
      let connects = 0;
      rt.onConnect(() => {
        connects += 1;
      });
      rt.join("first-use");
      await waitFor(() => rt.isConnected(), "the first connect");
      const id = rt.getSocketId();
      assert.match(id, SOCKET_ID_RE);
      assert.equal(connects, 1);
      const { data, errors } = await rt.getMembers("first-use");
      assert.equal(errors, null);
      assert.deepEqual(data, [{ id, data: null }], "the join made before connecting was applied");
    } finally {
      rt.close();
    }
  });

  test("a URL with a path uses it as the socket path (the server's listening line works)", async () => {
    const c = pool.make(`${server.origin}${server.path}`, { realtime: FAST });
    assert.match(await c.connected(), SOCKET_ID_RE);
    const wrongPath = pool.make(`${server.origin}/not-the-path/`, { realtime: { ...FAST, reconnectionDelay: 5_000 } });
    await waitFor(() => wrongPath.errors.length > 0, "onError for a wrong socket path");
    assert.equal(wrongPath.rt.isConnected(), false);
    wrongPath.rt.close();
  });

  test("a refused connection reports onError with the server's data and does not retry", async () => {
    const c = pool.make(server.origin, { envId: "off", realtime: FAST });
    const err = await waitFor(() => c.errors[0], "onError");
    assert.ok(err instanceof Error, "onError gets an Error");
    assert.equal(typeof err.message, "string");
    assert.ok(err.message.length > 0);
    assert.equal(err.data?.code, "realtime_not_allowed", "a refusal (44) carries the server's data");
    assert.equal(err.data.origin, "client_error");
    await sleep(4 * FAST.reconnectionDelay + QUIET_MS);
    assert.deepEqual(c.attempts, [], "socket.io does not retry a refused connect");
    assert.equal(c.rt.isConnected(), false);
    assert.equal(c.rt.getSocketId(), null);
  });

  test("unknown environment is refused too", async () => {
    const c = pool.make(server.origin, { envId: "no-such-env", realtime: FAST });
    const err = await waitFor(() => c.errors[0], "onError");
    assert.equal(err.data?.code, "no_environment_found");
    assert.equal(c.rt.isConnected(), false);
  });

  test("apiKey is sent in the handshake: a required key admits, a missing or wrong one is refused", async () => {
    const good = pool.make(server.origin, { envId: "keyed", apiKey: "client-tests-key", realtime: FAST });
    assert.match(await good.connected(), SOCKET_ID_RE);
    const missing = pool.make(server.origin, { envId: "keyed", realtime: FAST });
    const wrong = pool.make(server.origin, { envId: "keyed", apiKey: "nope", realtime: FAST });
    assert.equal((await waitFor(() => missing.errors[0], "onError")).data?.code, "missing_api_key");
    assert.equal((await waitFor(() => wrong.errors[0], "onError")).data?.code, "invalid_api_key");
    assert.equal(missing.rt.isConnected(), false);
    assert.equal(wrong.rt.isConnected(), false);
  });

  test("no server: onError and reconnect attempts with growing numbers until close()", async () => {
    const c = pool.make("http://127.0.0.1:9", { realtime: { reconnectionDelay: 50, timeout: 2_000 } });
    await waitFor(() => c.attempts.length >= 2, "two reconnect attempts");
    assert.ok(c.errors.length >= 1, "every failed attempt reports onError");
    assert.deepEqual(c.attempts.slice(0, 2), [1, 2]);
    c.rt.close();
    const seen = c.attempts.length;
    await sleep(QUIET_MS);
    assert.equal(c.attempts.length, seen, "close() stops the reconnect loop");
  });

  test("manual close: onDisconnect('io client disconnect'), no reconnect, nothing received; open() comes back", async () => {
    const a = pool.make(server.origin, { realtime: FAST });
    const b = pool.make(server.origin, { realtime: FAST });
    a.rt.updateProfile({ name: "ann" });
    a.rt.join("closing");
    b.rt.join("closing");
    const firstId = await a.connected();
    await b.connected();
    await waitFor(async () => (await b.rt.getMembers("closing")).data?.length === 2, "both in the channel");

    a.rt.close();
    assert.equal(a.rt.isConnected(), false);
    assert.equal(a.rt.getSocketId(), null);
    await waitFor(() => a.disconnects.length === 1, "onDisconnect");
    assert.deepEqual(a.disconnects, ["io client disconnect"]);
    const leave = await b.next("channel:leave");
    assert.deepEqual(leave, { channel: "closing", message: { id: firstId, data: { name: "ann" } } });

    b.rt.send("closing", "chat", "while a is closed");
    b.rt.broadcast("news", "while a is closed");
    await sleep(2 * FAST.reconnectionDelay + QUIET_MS);
    assert.equal(a.rt.isConnected(), false, "a closed client stays closed");
    assert.deepEqual(a.attempts, []);
    assert.equal(a.connects, 1);
    assert.deepEqual(a.received("chat"), []);
    assert.deepEqual(a.received("news"), []);
    const members = await a.rt.getMembers("closing");
    assert.equal(members.data, null);
    assert.equal(members.errors.code, "not_connected");

    // Using a closed client does not reopen it; open() does, with the session restored.
    a.rt.join("closing");
    await sleep(QUIET_MS);
    assert.equal(a.rt.isConnected(), false);
    a.rt.open();
    const secondId = await a.connected();
    assert.notEqual(secondId, firstId, "a new connection gets a new socket id");
    const rejoin = await b.next("channel:join", (p) => p.message.id === secondId);
    assert.deepEqual(rejoin, { channel: "closing", message: { id: secondId, data: { name: "ann" } } });
  });

  test("server restart: transport close, reconnect attempts, new ids, profile and channels replayed", async () => {
    const a = pool.make(server.origin, { realtime: FAST });
    const b = pool.make(server.origin, { realtime: FAST });
    a.rt.updateProfile({ name: "ann" });
    b.rt.updateProfile({ name: "bob" });
    a.rt.join("restart");
    b.rt.join("restart");
    const [a1, b1] = [await a.connected(), await b.connected()];
    await waitFor(async () => (await a.rt.getMembers("restart")).data?.length === 2, "both joined");

    await server.restart();
    await waitFor(() => a.disconnects.length === 1 && b.disconnects.length === 1, "both disconnected");
    assert.deepEqual([a.disconnects[0], b.disconnects[0]], ["transport close", "transport close"]);
    await waitFor(() => a.connects === 2 && b.connects === 2, "both reconnected", 10_000);
    assert.ok(a.attempts.length >= 1 && b.attempts.length >= 1, "onReconnectAttempt fired");
    assert.equal(a.attempts[0], 1);
    const [a2, b2] = [a.rt.getSocketId(), b.rt.getSocketId()];
    assert.notEqual(a2, a1);
    assert.notEqual(b2, b1);

    const expected = byId([{ id: a2, data: { name: "ann" } }, { id: b2, data: { name: "bob" } }]);
    const members = await waitFor(async () => {
      const r = await a.rt.getMembers("restart");
      return r.data?.length === 2 ? r.data : null;
    }, "both re-joined with their profiles");
    assert.deepEqual(byId(members), expected);

    b.rt.send("restart", "chat", { text: "after restart" });
    assert.deepEqual(await a.next("chat"), { channel: "restart", message: { text: "after restart" } });
  });

  test("autoJoinChannels off: after a restart the client is in no channel", async () => {
    const a = pool.make(server.origin, { realtime: { ...FAST, autoJoinChannels: false } });
    const b = pool.make(server.origin, { realtime: FAST });
    a.rt.join("no-auto");
    b.rt.join("no-auto");
    await a.connected();
    await b.connected();
    await waitFor(async () => (await b.rt.getMembers("no-auto")).data?.length === 2, "both joined");

    await server.restart();
    await waitFor(() => a.connects === 2 && b.connects === 2, "both reconnected", 10_000);
    const bId = b.rt.getSocketId();
    const members = await waitFor(async () => {
      const r = await b.rt.getMembers("no-auto");
      return r.data?.length >= 1 ? r.data : null;
    }, "b re-joined");
    assert.deepEqual(members, [{ id: bId, data: null }], "only the auto-joining client is back");
    b.rt.send("no-auto", "chat", "hello?");
    b.rt.send("no-auto", "chat", "sentinel", true);
    await b.next("chat", (p) => p.message === "sentinel");
    await sleep(QUIET_MS);
    assert.deepEqual(a.received("chat"), [], "a left the channel for good");
    // Joining again works as usual.
    a.rt.join("no-auto");
    await b.next("channel:join", (p) => p.message.id === a.rt.getSocketId());
  });

  test("listeners: on, once, off (one and all), onAny, offAny, getListeners", async () => {
    const a = pool.make(server.origin, { realtime: FAST });
    const b = pool.make(server.origin, { realtime: FAST });
    a.rt.join("listeners");
    await a.connected();
    await b.connected();
    await waitFor(async () => (await b.rt.getMembers("listeners")).data?.length === 1, "a joined");

    const onCalls = [];
    const onceCalls = [];
    const anyCalls = [];
    const onListener = (p) => onCalls.push(p.message);
    const onceListener = (p) => onceCalls.push(p.message);
    const anyListener = (event, p) => anyCalls.push([event, p.message]);
    a.rt.on("ping", onListener);
    a.rt.once("ping", onceListener);
    a.rt.onAny(anyListener);
    assert.deepEqual(a.rt.getListeners("ping"), [onListener, onceListener]);
    assert.ok(a.rt.getListeners().includes(anyListener));

    b.rt.send("listeners", "ping", 1);
    b.rt.send("listeners", "ping", 2);
    await waitFor(() => onCalls.length === 2, "two pings");
    assert.deepEqual(onCalls, [1, 2]);
    assert.deepEqual(onceCalls, [1], "once fires once");
    assert.deepEqual(anyCalls, [["ping", 1], ["ping", 2]]);
    assert.deepEqual(a.rt.getListeners("ping"), [onListener]);

    a.rt.off("ping", onListener);
    a.rt.offAny(anyListener);
    assert.deepEqual(a.rt.getListeners("ping"), []);
    assert.ok(!a.rt.getListeners().includes(anyListener));
    b.rt.send("listeners", "ping", 3);
    await a.next("ping", (p) => p.message === 3);
    assert.deepEqual(onCalls, [1, 2], "off removed the listener");
    assert.deepEqual(anyCalls.length, 2, "offAny removed the any-listener");

    // off(name) without a listener removes the app's listeners only: the
    // client's own connect handling (replay after reconnect) keeps working.
    a.rt.onConnect(() => {});
    a.rt.off("connect");
    assert.deepEqual(a.rt.getListeners("connect"), []);
    await server.restart();
    await waitFor(() => a.rt.isConnected() && a.disconnects.length === 1, "a reconnected", 10_000);
    await waitFor(async () => (await b.rt.getMembers("listeners")).data?.[0]?.id === a.rt.getSocketId(),
      "a re-joined after off('connect')", 10_000);
  });

  test("required arguments are checked with a clear ClientError", async () => {
    assert.throws(() => createClient(), (e) => e instanceof ClientError &&
      e.code === "missing_required_argument" && /createClient: "url" is required/.test(e.message));
    assert.throws(() => createClient("not a url"), { name: "ClientError", code: "invalid_value" });
    assert.throws(() => createClient(server.origin, { realtime: { echoMessages: "yes" } }),
      /"realtime.echoMessages" must be a boolean/);
    assert.throws(() => createClient(server.origin, { realtime: { timeout: -1 } }),
      /"realtime.timeout" must be a number of milliseconds/);

    const rt = createClient(server.origin).realtime;
    const cases = [
      [() => rt.join(), "join", "channel", "missing_required_argument"],
      [() => rt.join(""), "join", "channel", "invalid_value"],
      [() => rt.join("c", "yes"), "join", "echo", "invalid_value"],
      [() => rt.leave(42), "leave", "channel", "invalid_value"],
      [() => rt.send("c"), "send", "eventName", "missing_required_argument"],
      [() => rt.send("c", "e"), "send", "message", "missing_required_argument"],
      [() => rt.send("c", "connect", 1), "send", "eventName", "invalid_value"],
      [() => rt.broadcast(undefined, 1), "broadcast", "eventName", "missing_required_argument"],
      [() => rt.broadcast("disconnect", 1), "broadcast", "eventName", "invalid_value"],
      [() => rt.updateProfile(), "updateProfile", "data", "missing_required_argument"],
      [() => rt.on("x"), "on", "listener", "missing_required_argument"],
      [() => rt.onJoin("not a function"), "onJoin", "listener", "invalid_value"],
      [() => rt.onUserEvent(), "onUserEvent", "listener", "missing_required_argument"],
    ];
    for (const [call, method, argument, code] of cases) {
      assert.throws(call, (e) => {
        assert.ok(e instanceof ClientError, `${method}: not a ClientError: ${e}`);
        assert.equal(e.method, method);
        assert.equal(e.argument, argument);
        assert.equal(e.code, code);
        assert.ok(e.message.startsWith(`${method}: `), e.message);
        assert.ok(e.message.includes(`"${argument}"`), e.message);
        return true;
      });
    }
    await assert.rejects(() => rt.getMembers(), { name: "ClientError", code: "missing_required_argument" });
    assert.equal(rt.isConnected(), false, "rejected calls do not connect");
    rt.close();
  });
});

