// The app backend's master connection (`auth: {accessToken}`): send_message,
// broadcast_message, user_event and get_members (with ack), and the rule that
// master events from a non-master connection have no effect.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  QUIET_MS,
  byId,
  closeAll,
  connect,
  connectError,
  connectMaster,
  connectOnShards,
  joinAll,
  quietly,
  shardOf,
  signSession,
  sleep,
  uniqueChannel,
  waitMembers,
} from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";

const SESSION_SECRET = "interop-session-secret"; // fixtures/two-envs.toml, env `default`

let server;
let master;

before(async () => {
  server = await startServer({ config: "two-envs.toml" });
  master = await connectMaster(server);
});

after(async () => {
  master?.close();
  await server?.stop();
});

async function client(t, auth = {}) {
  const c = await connect(server, auth);
  t.after(() => c.close());
  return c;
}

describe("send_message", () => {
  it("channel members get eventName with {channel, message}; others do not", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const outsider = await client(t);
    const otherEnv = await client(t, { envId: "other", echoMessages: false });
    const channel = uniqueChannel("send");
    await joinAll(master, channel, [a, b]);
    await joinAll(master, channel, [otherEnv], { envId: "other" });

    const message = { from: "backend", items: [1, 2, 3] };
    master.socket.emit("send_message", { envId: "default", channelName: channel, eventName: "srv", message });
    const expected = [{ channel, message }];
    assert.deepEqual(await a.waitFor("srv"), expected);
    assert.deepEqual(await b.waitFor("srv"), expected);
    assert.notEqual(shardOf(a.id), shardOf(b.id));
    const [outsiderGot, otherGot, masterGot] = await quietly([outsider, otherEnv, master], "srv");
    assert.deepEqual(outsiderGot, []);
    assert.deepEqual(otherGot, [], "send_message is scoped to its envId");
    assert.deepEqual(masterGot, []);
  });

  it("send_message to environment `other` reaches only that environment's channel", async (t) => {
    const inDefault = await client(t);
    const inOther = await client(t, { envId: "other" });
    const channel = uniqueChannel("send-other");
    await joinAll(master, channel, [inDefault]);
    await joinAll(master, channel, [inOther], { envId: "other" });

    master.socket.emit("send_message", { envId: "other", channelName: channel, eventName: "srv2", message: "o" });
    assert.deepEqual(await inOther.waitFor("srv2"), [{ channel, message: "o" }]);
    const [defaultGot] = await quietly([inDefault], "srv2");
    assert.deepEqual(defaultGot, []);
  });
});

describe("broadcast_message", () => {
  it("every connection of the environment gets eventName with {channel:null, message}", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const member = await client(t);
    const otherEnv = await client(t, { envId: "other" });
    await joinAll(master, uniqueChannel("bc"), [member]);

    const message = { maintenance: "at noon" };
    master.socket.emit("broadcast_message", { envId: "default", eventName: "bc", message });
    const expected = [{ channel: null, message }];
    for (const c of [a, b, member]) assert.deepEqual(await c.waitFor("bc"), expected);
    const [otherGot] = await quietly([otherEnv], "bc");
    assert.deepEqual(otherGot, []);

    master.socket.emit("broadcast_message", { envId: "other", eventName: "bc2", message: 2 });
    assert.deepEqual(await otherEnv.waitFor("bc2"), [{ channel: null, message: 2 }]);
    const got = await quietly([a, b, member], "bc2");
    assert.deepEqual(got, [[], [], []]);
  });
});

describe("user_event", () => {
  const USER_EVENTS = ["user:signin", "user:signout", "user:pwdchange", "user:emailchange", "user:phonechange"];

  it("all of a user's sockets (on both shards) get (eventName, session, user); nobody else does", async (t) => {
    const session1 = signSession(SESSION_SECRET, { sub: "user-1" });
    const session2 = signSession(SESSION_SECRET, { sub: "user-2" });
    const [[u1a], [u1b]] = await connectOnShards(server, [1, 1], { envId: "default", session: session1 });
    t.after(() => closeAll(u1a, u1b));
    const u2 = await client(t, { envId: "default", session: session2 });
    const anonymous = await client(t);
    const otherEnv = await client(t, { envId: "other" });

    for (const eventName of USER_EVENTS) {
      const session = { token: `tok-${eventName}`, expires: 123 };
      const user = { _id: "user-1", email: "ada@example.com", name: "Ada" };
      master.socket.emit("user_event", { envId: "default", userId: "user-1", eventName, session, user });
      const expected = [eventName, session, user];
      assert.deepEqual(await u1a.waitFor(eventName), expected, `${eventName} on shard ${shardOf(u1a.id)}`);
      assert.deepEqual(await u1b.waitFor(eventName), expected, `${eventName} on shard ${shardOf(u1b.id)}`);
    }
    await sleep(QUIET_MS);
    for (const c of [u2, anonymous, otherEnv]) {
      for (const eventName of USER_EVENTS) assert.deepEqual(c.received(eventName), [], `${eventName} leaked`);
    }
    for (const eventName of USER_EVENTS) {
      assert.equal(u1a.received(eventName).length, 1);
      assert.equal(u1b.received(eventName).length, 1);
    }
  });

  it("a user event for another environment or another user reaches nobody here", async (t) => {
    const session = signSession(SESSION_SECRET, { sub: "user-3" });
    const u3 = await client(t, { envId: "default", session });
    master.socket.emit("user_event", {
      envId: "other", userId: "user-3", eventName: "user:signout", session: null, user: { _id: "user-3" },
    });
    master.socket.emit("user_event", {
      envId: "default", userId: "user-4", eventName: "user:signout", session: null, user: { _id: "user-4" },
    });
    // Barrier: a user event that must arrive, sent after the two that must not.
    master.socket.emit("user_event", {
      envId: "default", userId: "user-3", eventName: "user:pwdchange", session: null, user: { _id: "user-3" },
    });
    assert.deepEqual(await u3.waitFor("user:pwdchange"), ["user:pwdchange", null, { _id: "user-3" }]);
    const [got] = await quietly([u3], "user:signout");
    assert.deepEqual(got, []);
  });

  it("a session signed with the wrong secret does not put the socket in the user's room", async (t) => {
    const forged = signSession("not-the-secret", { sub: "user-5" });
    const genuine = await client(t, { envId: "default", session: signSession(SESSION_SECRET, { sub: "user-5" }) });
    // DESIGN.md leaves open whether an invalid optional session is rejected
    // or ignored; either way it must not reach the user's room.
    let forgedClient;
    try {
      forgedClient = await connect(server, { envId: "default", session: forged });
    } catch (err) {
      assert.match(err.message, /^connect_error/, "only a connect_error may replace the connection");
    }
    t.after(() => forgedClient?.close());
    master.socket.emit("user_event", {
      envId: "default", userId: "user-5", eventName: "user:signin", session: { s: 1 }, user: { _id: "user-5" },
    });
    assert.deepEqual(await genuine.waitFor("user:signin"), ["user:signin", { s: 1 }, { _id: "user-5" }]);
    if (forgedClient) {
      const [got] = await quietly([forgedClient], "user:signin");
      assert.deepEqual(got, [], "a forged session must not receive the user's events");
    }
  });
});

describe("get_members", () => {
  it("acks [{id, data}] with the members of both shards, null data for no profile", async (t) => {
    const [[a, c], [b, d]] = await connectOnShards(server, [2, 2]);
    t.after(() => closeAll(a, b, c, d));
    const channel = uniqueChannel("members");
    b.socket.emit("update", { data: { name: "B" } });
    d.socket.emit("update", { data: [1, "d"] });
    await joinAll(master, channel, [a, b, c, d]);

    const args = await master.emitWithAck("get_members", { envId: "default", channel });
    assert.equal(args.length, 1, "the ack has exactly one argument, the member list");
    assert.deepEqual(byId(args[0]), byId([
      { id: a.id, data: null },
      { id: b.id, data: { name: "B" } },
      { id: c.id, data: null },
      { id: d.id, data: [1, "d"] },
    ]));
    assert.deepEqual(new Set(args[0].map((m) => shardOf(m.id))), new Set([0, 1]));
  });

  it("an empty or unknown channel acks []", async () => {
    const args = await master.emitWithAck("get_members", { envId: "default", channel: uniqueChannel("nobody") });
    assert.deepEqual(args, [[]]);
  });

  it("is scoped to the environment", async (t) => {
    const inOther = await client(t, { envId: "other" });
    const channel = uniqueChannel("members-env");
    await joinAll(master, channel, [inOther], { envId: "other" });
    const args = await master.emitWithAck("get_members", { envId: "default", channel });
    assert.deepEqual(args, [[]]);
    const otherArgs = await master.emitWithAck("get_members", { envId: "other", channel });
    assert.deepEqual(otherArgs, [[{ id: inOther.id, data: null }]]);
  });

  it("answers many concurrent requests, each with its own ack", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const channels = Array.from({ length: 20 }, () => uniqueChannel("members-many"));
    for (const [i, channel] of channels.entries()) {
      await joinAll(master, channel, i % 2 === 0 ? [a, b] : [a]);
    }
    const answers = await Promise.all(
      channels.map((channel) => master.emitWithAck("get_members", { envId: "default", channel })),
    );
    for (const [i, [members]] of answers.entries()) {
      const want = i % 2 === 0 ? [a.id, b.id] : [a.id];
      assert.deepEqual(members.map((m) => m.id).sort(), want.sort(), channels[i]);
    }
  });
});

describe("master events from a non-master connection", () => {
  it("send_message, broadcast_message and user_event have no effect", async (t) => {
    const session = signSession(SESSION_SECRET, { sub: "user-9" });
    const [[a], [b]] = await connectOnShards(server, [1, 1], { envId: "default", session });
    t.after(() => closeAll(a, b));
    const intruder = await client(t);
    const channel = uniqueChannel("intrude");
    await joinAll(master, channel, [a, b]);

    intruder.socket.emit("send_message", { envId: "default", channelName: channel, eventName: "x1", message: 1 });
    intruder.socket.emit("broadcast_message", { envId: "default", eventName: "x2", message: 2 });
    intruder.socket.emit("user_event", {
      envId: "default", userId: "user-9", eventName: "user:signout", session: null, user: {},
    });
    // Barrier: an ordinary message from the same connection, sent after them.
    intruder.socket.emit("message", { eventName: "intruder-done", message: 0 });
    await a.waitFor("intruder-done");
    await b.waitFor("intruder-done");
    await sleep(QUIET_MS);
    for (const c of [a, b, intruder]) {
      for (const e of ["x1", "x2", "user:signout"]) assert.deepEqual(c.received(e), [], `${e} must not be executed`);
    }
    // The intruder is still a working ordinary client afterwards.
    await joinAll(master, channel, [a, b, intruder]);
  });

  it("get_members from a non-master connection is ignored (no ack)", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const channel = uniqueChannel("intrude-members");
    await joinAll(master, channel, [a]);
    await assert.rejects(
      b.emitWithAck("get_members", { envId: "default", channel }, 1_000),
      /no ack/,
      "a non-master connection must not get an answer to get_members",
    );
    assert.ok(b.socket.connected);
  });

  it("a wrong accessToken is refused with connect_error", async () => {
    const { err, id, active } = await connectError(server, { accessToken: "wrong-token" });
    assert.equal(id, undefined);
    assert.equal(active, false);
    assert.ok(err.message.length > 0);
    assert.equal(typeof err.data, "object", "connect_error carries a data object");
  });
});

describe("master connection", () => {
  it("connects with the right accessToken and gets a socket id", async () => {
    assert.match(master.id, /^[A-Za-z0-9_-]{20}$/);
  });

  it("send_message to a member that just disconnected is dropped without harm", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const channel = uniqueChannel("gone");
    await joinAll(master, channel, [a, b]);
    b.close();
    await waitMembers(master, channel, [a.id]);
    master.socket.emit("send_message", { envId: "default", channelName: channel, eventName: "after", message: 1 });
    assert.deepEqual(await a.waitFor("after"), [{ channel, message: 1 }]);
  });

  it("connect_error for a disabled environment and an unknown one", async () => {
    const disabled = await connectError(server, { envId: "off" });
    assert.equal(disabled.id, undefined);
    assert.equal(typeof disabled.err.message, "string");
    const unknown = await connectError(server, { envId: "no-such-env" });
    assert.equal(unknown.id, undefined);
  });
});
