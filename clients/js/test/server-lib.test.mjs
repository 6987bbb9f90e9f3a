// ringcast-client/server against the real server's HTTP API: send,
// broadcast, getMembers and userEvent reach real ringcast-client clients;
// errors (wrong token, unknown environment, bad arguments, no server) come
// back as rejected promises carrying the server's {error, code} and status.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { ClientError, RealtimeApiError, USER_EVENTS, createServerClient } from "ringcast-client/server";

import { startServer } from "./helpers/server.mjs";
import { QUIET_MS, byId, clientPool, signSession, waitFor } from "./helpers/wait.mjs";

const FAST = { reconnectionDelay: 100, timeout: 5_000 };
const SESSION_SECRET = "client-tests-session-secret"; // test/fixtures/envs.toml

describe("server library over the HTTP API", () => {
  let server;
  let backend;
  const pool = clientPool();
  before(async () => {
    server = await startServer({ config: "envs.toml" });
    backend = createServerClient(server.origin, { masterToken: server.masterToken });
  });
  after(async () => {
    pool.closeAll();
    await server?.stop();
  });

  async function joined(channel, count, options = {}) {
    const clients = [];
    for (let i = 0; i < count; i += 1) {
      const c = pool.make(server.origin, { ...options, realtime: FAST });
      c.rt.join(channel);
      clients.push(c);
    }
    for (const c of clients) c.id = await c.connected();
    await waitFor(async () => (await clients[0].rt.getMembers(channel)).data?.length === count,
      `${count} members in ${channel}`);
    return clients;
  }

  test("send: channel members get the event as {channel, message}; others do not", async () => {
    const [a, b] = await joined("backend-room", 2);
    const [outsider] = await joined("elsewhere", 1);
    assert.deepEqual(await backend.send("backend-room", "order:shipped", { orderId: 7 }), { ok: true });
    for (const c of [a, b]) {
      assert.deepEqual(await c.next("order:shipped"), { channel: "backend-room", message: { orderId: 7 } });
    }
    await backend.send("elsewhere", "sentinel", 1);
    await outsider.next("sentinel");
    await sleep(QUIET_MS);
    assert.deepEqual(outsider.payloads("order:shipped"), []);
  });

  test("broadcast: every client of the environment, none of another", async () => {
    const [a] = await joined("b1", 1);
    const [other] = await joined("b1", 1, { envId: "other" });
    assert.deepEqual(await backend.broadcast("maintenance", { at: "02:00" }), { ok: true });
    assert.deepEqual(await a.next("maintenance"), { channel: null, message: { at: "02:00" } });
    const otherBackend = createServerClient(server.origin, { masterToken: server.masterToken, envId: "other" });
    await otherBackend.broadcast("sentinel", "other env");
    assert.deepEqual(await other.next("sentinel"), { channel: null, message: "other env" });
    await sleep(QUIET_MS);
    assert.deepEqual(other.payloads("maintenance"), [], "envId scopes the broadcast");
    assert.deepEqual(a.payloads("sentinel"), []);
  });

  test("getMembers equals the clients' own member list, profiles included", async () => {
    const clients = await joined("listed", 3);
    clients[1].rt.updateProfile({ name: "bea" });
    await waitFor(async () => (await clients[0].rt.getMembers("listed")).data?.some((m) => m.data), "profile");
    const fromBackend = await backend.getMembers("listed");
    const fromClient = (await clients[2].rt.getMembers("listed")).data;
    assert.deepEqual(byId(fromBackend), byId(fromClient));
    assert.deepEqual(byId(fromBackend), byId(clients.map((c, i) => ({ id: c.id, data: i === 1 ? { name: "bea" } : null }))));
    assert.deepEqual(await backend.getMembers("nobody"), []);
  });

  test("userEvent: each user event reaches all of that user's sockets as (eventName, session, user)", async () => {
    const session = signSession(SESSION_SECRET, { sub: "user-42" });
    const tabs = [
      pool.make(server.origin, { session, realtime: FAST }),
      pool.make(server.origin, { session, realtime: FAST }),
    ];
    const stranger = pool.make(server.origin, { session: signSession(SESSION_SECRET, { sub: "user-7" }), realtime: FAST });
    const anonymous = pool.make(server.origin, { realtime: FAST });
    const seen = new Map();
    for (const c of [...tabs, stranger, anonymous]) {
      seen.set(c, []);
      c.rt.onUserEvent((eventName, s, user) => seen.get(c).push([eventName, s, user]));
      await c.connected();
    }
    const user = { _id: "user-42", email: "u42@example.com" };
    for (const [i, eventName] of USER_EVENTS.entries()) {
      assert.deepEqual(await backend.userEvent("user-42", eventName, { token: `s${i}` }, user), { ok: true });
    }
    for (const tab of tabs) {
      await waitFor(() => seen.get(tab).length === USER_EVENTS.length, "every user event on every tab");
      assert.deepEqual(seen.get(tab), USER_EVENTS.map((e, i) => [e, { token: `s${i}` }, user]));
    }
    await backend.userEvent("user-7", "user:signout", null, null);
    await waitFor(() => seen.get(stranger).length === 1, "user-7's signout");
    assert.deepEqual(seen.get(stranger), [["user:signout", null, null]]);
    await sleep(QUIET_MS);
    assert.deepEqual(seen.get(anonymous), [], "a socket without a session is in no user room");
  });

  test("wrong master token: rejected with status 401 and the server's {error, code}", async () => {
    const intruder = createServerClient(server.origin, { masterToken: "not-the-token" });
    for (const call of [
      () => intruder.send("c", "e", 1),
      () => intruder.broadcast("e", 1),
      () => intruder.getMembers("c"),
      () => intruder.userEvent("u", "user:signin", null, null),
    ]) {
      await assert.rejects(call, (err) => {
        assert.ok(err instanceof RealtimeApiError, String(err));
        assert.equal(err.status, 401);
        assert.equal(typeof err.code, "string");
        assert.ok(err.code.length > 0);
        assert.equal(typeof err.error, "string");
        assert.deepEqual(err.body, { error: err.error, code: err.code });
        return true;
      });
    }
  });

  test("unknown environment: 404 with {error, code}", async () => {
    const lost = createServerClient(server.origin, { masterToken: server.masterToken, envId: "no-such-env" });
    await assert.rejects(() => lost.broadcast("e", 1), (err) => {
      assert.ok(err instanceof RealtimeApiError);
      assert.equal(err.status, 404);
      assert.equal(typeof err.code, "string");
      assert.equal(typeof err.error, "string");
      return true;
    });
  });

  test("a request the server refuses (channel name too long): 400 with {error, code}", async () => {
    await assert.rejects(() => backend.send("x".repeat(1_000), "e", 1), (err) => {
      assert.ok(err instanceof RealtimeApiError, String(err));
      assert.equal(err.status, 400);
      assert.equal(typeof err.code, "string");
      assert.match(err.message, /HTTP 400/);
      return true;
    });
  });

  test("bad arguments are rejected before any request, with a ClientError", async () => {
    assert.throws(() => createServerClient(server.origin), { name: "ClientError", code: "missing_required_argument" });
    assert.throws(() => createServerClient(server.origin, {}), /"masterToken" is required/);
    assert.throws(() => createServerClient("nope", { masterToken: "t" }), { code: "invalid_value" });
    const cases = [
      [() => backend.send(undefined, "e", 1), "channel"],
      [() => backend.send("c", "", 1), "eventName"],
      [() => backend.send("c", "e"), "message"],
      [() => backend.broadcast("connect", 1), "eventName"],
      [() => backend.getMembers(), "channel"],
      [() => backend.userEvent(), "userId"],
      [() => backend.userEvent("u", "user:deleted"), "eventName"],
    ];
    for (const [call, argument] of cases) {
      await assert.rejects(call, (err) => {
        assert.ok(err instanceof ClientError, String(err));
        assert.equal(err.argument, argument);
        return true;
      });
    }
  });

  test("no server: rejected with status 0 and code network_error", async () => {
    const nowhere = createServerClient("http://127.0.0.1:9", { masterToken: "t", timeout: 3_000 });
    await assert.rejects(() => nowhere.broadcast("e", 1), (err) => {
      assert.ok(err instanceof RealtimeApiError);
      assert.equal(err.status, 0);
      assert.equal(err.code, "network_error");
      return true;
    });
  });
});
