// Channels, presence, profiles, messages and member lists through
// ringcast-client against the real server: join/leave/update events,
// getMembers across shards and environments, send/broadcast with echo on and
// off (option and per call), binary payloads and per-sender ordering.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { startServer } from "./helpers/server.mjs";
import { QUIET_MS, byId, clientPool, shardOf, waitFor } from "./helpers/wait.mjs";

const FAST = { reconnectionDelay: 100, timeout: 5_000 };

describe("channels and messages", () => {
  let server;
  const pool = clientPool();
  before(async () => {
    server = await startServer({ config: "envs.toml" });
  });
  after(async () => {
    pool.closeAll();
    await server?.stop();
  });

  /** Connected clients with the given realtime options, ids resolved. */
  async function connected(count, realtime = {}, extra = {}) {
    const clients = [];
    for (let i = 0; i < count; i += 1) {
      clients.push(pool.make(server.origin, { ...extra, realtime: { ...FAST, ...realtime } }));
    }
    for (const c of clients) c.id = await c.connected();
    return clients;
  }

  async function membersOf(client, channel, count) {
    return waitFor(async () => {
      const r = await client.rt.getMembers(channel);
      assert.equal(r.errors, null);
      return r.data.length === count ? r.data : null;
    }, `${count} members in ${channel}`);
  }

  test("join and leave: others get onJoin/onLeave; echo per call decides about the caller", async () => {
    const [a, b] = await connected(2);
    const joins = [];
    const leaves = [];
    a.rt.onJoin((p) => joins.push(p));
    a.rt.onLeave((p) => leaves.push(p));
    a.rt.join("presence", false);
    await membersOf(b, "presence", 1);
    b.rt.join("presence", true);
    const own = await b.next("channel:join");
    assert.deepEqual(own, { channel: "presence", message: { id: b.id, data: null } }, "echo: true reaches b");
    await waitFor(() => joins.length === 1, "a's onJoin");
    assert.deepEqual(joins, [{ channel: "presence", message: { id: b.id, data: null } }]);
    assert.deepEqual(a.payloads("channel:join"), joins, "a did not get its own join (echo false)");

    b.rt.join("presence");
    b.rt.send("presence", "sentinel", 1);
    await a.next("sentinel");
    assert.equal(joins.length, 1, "joining twice is a no-op");

    b.rt.leave("presence", false);
    await waitFor(() => leaves.length === 1, "a's onLeave");
    assert.deepEqual(leaves, [{ channel: "presence", message: { id: b.id, data: null } }]);
    await membersOf(a, "presence", 1);
    assert.deepEqual(b.payloads("channel:leave"), [], "echo false: b got no leave of its own");
  });

  test("updateProfile: channel members get onUpdate; getMembers shows profiles", async () => {
    const [a, b] = await connected(2);
    const updates = [];
    a.rt.onUpdate((p) => updates.push(p));
    a.rt.join("profiles");
    b.rt.join("profiles");
    await membersOf(a, "profiles", 2);
    b.rt.updateProfile({ name: "bob", color: "#0a0" }, false);
    await waitFor(() => updates.length === 1, "a's onUpdate");
    assert.deepEqual(updates, [{ channel: "profiles", message: { id: b.id, data: { name: "bob", color: "#0a0" } } }]);
    a.rt.updateProfile({ name: "ann" }, true);
    await waitFor(() => updates.length === 2, "a's own update (echo true)");
    assert.deepEqual(updates[1], { channel: "profiles", message: { id: a.id, data: { name: "ann" } } });
    const members = await membersOf(b, "profiles", 2);
    assert.deepEqual(byId(members), byId([
      { id: a.id, data: { name: "ann" } },
      { id: b.id, data: { name: "bob", color: "#0a0" } },
    ]));
    // A profile set before joining travels with the join.
    const [c] = await connected(1);
    c.rt.updateProfile({ name: "cy" });
    c.rt.join("profiles");
    const join = await a.next("channel:join", (p) => p.message.id === c.id);
    assert.deepEqual(join.message.data, { name: "cy" });
  });

  test("getMembers lists members from every shard, only of the caller's environment", async () => {
    // Connect until the channel has members on two different shards (the
    // kernel spreads connections; bounded to 12 clients).
    const members = [];
    for (let i = 0; i < 12; i += 1) {
      const [c] = await connected(1);
      c.rt.updateProfile({ n: i });
      c.rt.join("everywhere");
      members.push(c);
      if (members.length >= 2 && new Set(members.map((m) => shardOf(m.id))).size >= 2) break;
    }
    assert.ok(new Set(members.map((m) => shardOf(m.id))).size >= 2,
      `12 connections all landed on one shard: ${members.map((m) => shardOf(m.id))}`);
    const [outsider] = await connected(1, {}, { envId: "other" });
    outsider.rt.join("everywhere");
    const expected = byId(members.map((m, n) => ({ id: m.id, data: { n } })));
    for (const asker of [members[0], members.at(-1)]) {
      assert.deepEqual(byId(await membersOf(asker, "everywhere", members.length)), expected);
    }
    const fromOther = await membersOf(outsider, "everywhere", 1);
    assert.deepEqual(fromOther, [{ id: outsider.id, data: null }], "environments do not mix");
    const empty = await members[0].rt.getMembers("nobody-here");
    assert.deepEqual(empty, { data: [], errors: null });
  });

  test("send: members get {channel, message}; non-members do not; echoMessages default true echoes", async () => {
    const [sender, member, outsider] = await connected(3);
    sender.rt.join("room");
    member.rt.join("room");
    await membersOf(outsider, "room", 2);
    sender.rt.send("room", "chat", { text: "hi", n: 1 });
    const got = await member.next("chat");
    assert.deepEqual(got, { channel: "room", message: { text: "hi", n: 1 } });
    assert.deepEqual(await sender.next("chat"), got, "the client library sends echoMessages: true");
    sender.rt.send("room", "chat", "no echo", false);
    await member.next("chat", (p) => p.message === "no echo");
    // Messages to a channel reach members only; the sender need not be one.
    outsider.rt.send("room", "chat", "from outside");
    await member.next("chat", (p) => p.message === "from outside");
    await sleep(QUIET_MS);
    assert.deepEqual(sender.payloads("chat").map((p) => p.message), [{ text: "hi", n: 1 }, "from outside"]);
    assert.deepEqual(outsider.payloads("chat").map((p) => p.message), [], "not a member: nothing, not even echo");
  });

  test("echoMessages false: no echo unless a call asks for it", async () => {
    const [quiet] = await connected(1, { echoMessages: false });
    const [member] = await connected(1);
    quiet.rt.join("quiet");
    member.rt.join("quiet");
    await membersOf(member, "quiet", 2);
    quiet.rt.send("quiet", "chat", 1);
    quiet.rt.send("quiet", "chat", 2, true);
    quiet.rt.broadcast("all", 3);
    quiet.rt.broadcast("all", 4, true);
    await member.count("chat", 2);
    await member.count("all", 2);
    await quiet.next("all", (p) => p.message === 4);
    assert.deepEqual(quiet.payloads("chat"), [{ channel: "quiet", message: 2 }]);
    assert.deepEqual(quiet.payloads("all"), [{ channel: null, message: 4 }]);
  });

  test("broadcast: every client of the environment gets {channel: null, message}, other environments nothing", async () => {
    const [a, b] = await connected(2);
    const [other] = await connected(1, {}, { envId: "other" });
    a.rt.broadcast("news", { headline: "ringcast" });
    assert.deepEqual(await b.next("news"), { channel: null, message: { headline: "ringcast" } });
    assert.deepEqual(await a.next("news"), { channel: null, message: { headline: "ringcast" } });
    other.rt.broadcast("news", "other env", false);
    a.rt.broadcast("news", "sentinel");
    await b.next("news", (p) => p.message === "sentinel");
    await sleep(QUIET_MS);
    assert.deepEqual(b.payloads("news").map((p) => p.message), [{ headline: "ringcast" }, "sentinel"]);
    assert.deepEqual(other.payloads("news"), [], "other environment got nothing");
  });

  test("binary values and any JSON value arrive intact", async () => {
    const [a, b] = await connected(2);
    a.rt.join("bin");
    b.rt.join("bin");
    await membersOf(a, "bin", 2);
    const bytes = Buffer.from([0, 1, 2, 253, 254, 255]);
    a.rt.send("bin", "blob", { name: "x.bin", bytes }, false);
    for (const value of [null, 0, "", [1, [2]], { deep: { a: [true, false] } }, "ünïcødé ✓"]) {
      a.rt.send("bin", "value", value, false);
    }
    const blob = await b.next("blob");
    assert.equal(blob.message.name, "x.bin");
    assert.ok(Buffer.isBuffer(blob.message.bytes), "binary arrives as a Buffer");
    assert.deepEqual([...blob.message.bytes], [...bytes]);
    const values = await b.count("value", 6);
    assert.deepEqual(values.map((p) => p.message),
      [null, 0, "", [1, [2]], { deep: { a: [true, false] } }, "ünïcødé ✓"]);
  });

  test("messages from one sender arrive in send order", async () => {
    const [a, b] = await connected(2);
    a.rt.join("order");
    b.rt.join("order");
    await membersOf(a, "order", 2);
    const count = 300;
    for (let i = 0; i < count; i += 1) a.rt.send("order", "seq", i, false);
    const got = await b.count("seq", count);
    assert.deepEqual(got.map((p) => p.message), Array.from({ length: count }, (_, i) => i));
  });
});
