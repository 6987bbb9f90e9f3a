// Issue 4, rate limiters: each client event (join, leave, update, message,
// members) counts against the environment's limiters in order, keyed by
// environment + client IP and shared by all shards. An event over a limit is
// dropped and the client gets ONE `error` event {code: "rate_limit_exceeded",
// message} per window. Master connections are not limited. New limits (admin
// API) apply to the next event. Client IPs are the TCP peers, picked with
// socket.io-client's `localAddress` (127.0.0.x are all local).
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  QUIET_MS,
  closeAll,
  connect,
  connectMaster,
  connectOnShards,
  joinAll,
  shardOf,
  sleep,
  uniqueChannel,
  waitMembers,
} from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";
import { putEnvironment, until } from "./helpers/settings.mjs";

let server;
let master;

before(async () => {
  server = await startServer({ config: "settings-ratelimit.toml" });
  master = await connectMaster(server);
});

after(async () => {
  master?.close();
  await server?.stop();
});

/** Connects from local address `ip` to environment `envId`. */
async function clientFrom(t, envId, ip, auth = {}) {
  const c = await connect(server, { envId, ...auth }, { localAddress: ip });
  t.after(() => c.close());
  return c;
}

/** Sends `count` messages `{tag, i}` to `channel` as event `eventName`. */
function burst(client, channel, eventName, tag, count) {
  for (let i = 0; i < count; i++) {
    client.socket.emit("message", { channel, eventName, message: { tag, i } });
  }
}

/** The messages with `tag` a receiver got as `eventName`. */
function got(receiver, eventName, tag) {
  return receiver.received(eventName).filter(([arg]) => arg?.message?.tag === tag);
}

/** Waits until `receiver` has exactly `count` messages with `tag`, then a quiet period, and asserts it still has. */
async function expectDelivered(receiver, eventName, tag, count, label = tag) {
  await until(() => got(receiver, eventName, tag).length >= count,
    `${count} x ${eventName}/${tag} (got ${got(receiver, eventName, tag).length})`);
  await sleep(QUIET_MS * 2);
  assert.equal(got(receiver, eventName, tag).length, count, `${label}: delivered count`);
}

const rateError = (message) => [{ code: "rate_limit_exceeded", message }];

// On a cluster (RINGCAST_INTEROP_CLUSTER) the sockets of a test land on
// different nodes, which count exactly only after their next sync (100 ms)
// and apply an API change a moment after the node that took it answered:
// the bound the cluster keeps instead is tested in tests/it/cluster.rs.
const onCluster = Number(process.env.RINGCAST_INTEROP_CLUSTER ?? 0) >= 2;
const exactAcrossNodes = onCluster
  ? { skip: "a burst within one sync interval is counted exactly on one node only (cluster bound: tests/it/cluster.rs)" }
  : {};
const nextEventAcrossNodes = onCluster
  ? { skip: "other nodes apply an API change within milliseconds, not before the API answers" }
  : {};

describe("shared budget per environment + client IP", () => {
  it("two connections of one IP on different shards share one budget; other IPs are unaffected", exactAcrossNodes, async (t) => {
    const channel = uniqueChannel("rl-shared");
    const receiver = await clientFrom(t, "shared", "127.0.0.9");
    await joinAll(master, channel, [receiver], { envId: "shared" }); // 1 of 127.0.0.9's 6
    const [[a], [b]] = await connectOnShards(server, [1, 1], { envId: "shared" }, { localAddress: "127.0.0.20" });
    t.after(() => closeAll(a, b));
    assert.notEqual(shardOf(a.id), shardOf(b.id));

    burst(a, channel, "rl", "a", 4);
    await expectDelivered(receiver, "rl", "a", 4);
    burst(b, channel, "rl", "b", 4);
    // 6 per IP: b's first two pass, the rest are dropped.
    assert.deepEqual(await b.waitFor("error"), rateError("six per five minutes"));
    await expectDelivered(receiver, "rl", "b", 2);
    assert.equal(b.received("error").length, 1, "one error for two dropped events");
    assert.deepEqual(a.received("error"), [], "a stayed within the budget so far");

    // a's budget is the same one, now spent.
    burst(a, channel, "rl", "a2", 1);
    assert.deepEqual(await a.waitFor("error"), rateError("six per five minutes"));
    await expectDelivered(receiver, "rl", "a2", 0);

    // Another IP on the same environment has its own budget.
    const c = await clientFrom(t, "shared", "127.0.0.21");
    burst(c, channel, "rl", "c", 5);
    await expectDelivered(receiver, "rl", "c", 5);
    assert.deepEqual(c.received("error"), []);
    // And both connections stay connected: dropping is not disconnecting.
    assert.equal(a.socket.connected && b.socket.connected, true);

    // The same IP in another environment has that environment's own budget.
    const elsewhere = await clientFrom(t, "first-trips", "127.0.0.20");
    elsewhere.socket.emit("message", { eventName: "self", message: { tag: "e" }, echo: true });
    assert.deepEqual(await elsewhere.waitFor("self"), [{ channel: null, message: { tag: "e" } }]);
    assert.deepEqual(elsewhere.received("error"), []);
  });

  it("behind a trusted proxy the budget belongs to the forwarded client IP, across shards", exactAcrossNodes, async (t) => {
    const channel = uniqueChannel("rl-proxied");
    const receiver = await clientFrom(t, "proxied", "127.0.0.35");
    await joinAll(master, channel, [receiver], { envId: "proxied" });
    const via = (xff) => ({ localAddress: "127.0.0.1", extraHeaders: { "x-forwarded-for": xff } });
    const [[a], [b]] = await connectOnShards(server, [1, 1], { envId: "proxied" }, via("198.51.100.1"));
    t.after(() => closeAll(a, b));
    const other = await connect(server, { envId: "proxied" }, via("198.51.100.2"));
    t.after(() => other.close());

    burst(a, channel, "px", "a", 2);
    await expectDelivered(receiver, "px", "a", 2);
    burst(b, channel, "px", "b", 3);
    assert.deepEqual(await b.waitFor("error"), rateError("proxied limit"));
    await expectDelivered(receiver, "px", "b", 1, "198.51.100.1 has 1 of 3 left for b");
    // Same proxy, another forwarded client: a full budget of its own.
    burst(other, channel, "px", "o", 3);
    await expectDelivered(receiver, "px", "o", 3);
    assert.deepEqual(other.received("error"), []);
  });

  it("one error event per window, not one per dropped event", async (t) => {
    const channel = uniqueChannel("rl-once");
    const receiver = await clientFrom(t, "shared", "127.0.0.31");
    await joinAll(master, channel, [receiver], { envId: "shared" });
    const sender = await clientFrom(t, "shared", "127.0.0.30");
    burst(sender, channel, "once", "s", 30);
    await sender.waitFor("error");
    await expectDelivered(receiver, "once", "s", 6);
    assert.deepEqual(sender.received("error"), [rateError("six per five minutes")], "exactly one error for 24 drops");
  });

  it("the master connection is not rate limited", async (t) => {
    const channel = uniqueChannel("rl-master");
    const receiver = await clientFrom(t, "shared", "127.0.0.32");
    await joinAll(master, channel, [receiver], { envId: "shared" });
    for (let i = 0; i < 25; i++) {
      master.socket.emit("send_message", { envId: "shared", channelName: channel, eventName: "m",
        message: { tag: "master", i } });
    }
    master.socket.emit("broadcast_message", { envId: "shared", eventName: "m", message: { tag: "master-b" } });
    await expectDelivered(receiver, "m", "master", 25);
    await expectDelivered(receiver, "m", "master-b", 1);
    assert.deepEqual(master.received("error"), []);
    // get_members (25+ so far) is not limited either.
    const members = await waitMembers(master, channel, [receiver.id], { envId: "shared" });
    assert.equal(members.length, 1);
  });
});

describe("what counts", () => {
  it("join, update, members, leave and message each count; over the limit each is dropped", async (t) => {
    const channel = uniqueChannel("rl-kinds");
    const observer = await clientFrom(t, "kinds", "127.0.0.41");
    await joinAll(master, channel, [observer], { envId: "kinds" });
    const k = await clientFrom(t, "kinds", "127.0.0.40");

    k.socket.emit("join", { channel }); // 1
    await observer.waitFor("channel:join", { match: (p) => p.message.id === k.id });
    k.socket.emit("update", { data: { n: 1 } }); // 2
    await observer.waitFor("channel:update", { match: (p) => p.message.id === k.id });
    const [members] = await k.emitWithAck("members", { channel }); // 3
    assert.equal(members.length, 2);
    k.socket.emit("leave", { channel }); // 4
    await observer.waitFor("channel:leave", { match: (p) => p.message.id === k.id });
    k.socket.emit("message", { channel, eventName: "kind", message: { tag: "k", i: 0 } }); // 5
    await observer.waitFor("kind");

    // Budget spent: every kind is dropped now.
    k.socket.emit("join", { channel });
    assert.deepEqual(await k.waitFor("error"), rateError("kinds limit"));
    k.socket.emit("update", { data: { n: 2 } });
    await assert.rejects(k.emitWithAck("members", { channel }, 500), /no ack/, "a dropped members request gets no ack");
    k.socket.emit("message", { channel, eventName: "kind", message: { tag: "k", i: 1 } });
    k.socket.emit("leave", { channel });
    await sleep(QUIET_MS);
    const list = await waitMembers(master, channel, [observer.id], { envId: "kinds" });
    assert.deepEqual(list.map((m) => m.id), [observer.id], "the dropped join did not happen");
    assert.equal(observer.received("channel:join").filter(([p]) => p.message.id === k.id).length, 1);
    assert.equal(observer.received("channel:update").filter(([p]) => p.message.id === k.id).length, 1);
    assert.equal(got(observer, "kind", "k").length, 1);
    assert.equal(k.received("error").length, 1);
  });
});

describe("several limiters", () => {
  it("are applied in order: the first one over its limit drops the event and names the message", async (t) => {
    const f = await clientFrom(t, "first-trips", "127.0.0.50");
    burst(f, uniqueChannel("rl-first"), "x", "f", 6);
    assert.deepEqual(await f.waitFor("error"), rateError("first limiter"));

    const g = await clientFrom(t, "second-trips", "127.0.0.51");
    burst(g, uniqueChannel("rl-second"), "x", "g", 6);
    assert.deepEqual(await g.waitFor("error"), rateError("strict limiter"));
    await sleep(QUIET_MS);
    assert.equal(f.received("error").length, 1);
    assert.equal(g.received("error").length, 1);
  });
});

describe("windows", () => {
  it("the next window allows events again, and a new window can send a new error", async (t) => {
    const channel = uniqueChannel("rl-window");
    const receiver = await clientFrom(t, "windowed", "127.0.0.61");
    const sender = await clientFrom(t, "windowed", "127.0.0.60");
    // The receiver's join is its own IP's only event.
    await joinAll(master, channel, [receiver], { envId: "windowed" });

    // 3 per 1 s window; a burst of 12 spans at most two windows (6 pass).
    burst(sender, channel, "w", "burst1", 12);
    await sender.waitFor("error");
    await until(() => got(receiver, "w", "burst1").length >= 3, "3 of the first burst");
    await sleep(QUIET_MS);
    const firstCount = got(receiver, "w", "burst1").length;
    assert.ok(firstCount >= 3 && firstCount <= 6, `first burst delivered ${firstCount} of 12 (limit 3/s)`);
    const errorsAfterFirst = sender.received("error").length;
    assert.ok(errorsAfterFirst >= 1 && errorsAfterFirst <= 2, `errors after the first burst: ${errorsAfterFirst}`);
    assert.deepEqual(sender.received("error")[0], rateError("three per second"));

    // A whole window later the budget is back.
    await sleep(1_100);
    burst(sender, channel, "w", "after", 1);
    await expectDelivered(receiver, "w", "after", 1);

    // ...and a fresh window that overflows sends a fresh error.
    burst(sender, channel, "w", "burst2", 12);
    await sender.waitFor("error", { count: errorsAfterFirst + 1 });
    await sleep(QUIET_MS);
    const secondCount = got(receiver, "w", "burst2").length;
    assert.ok(secondCount >= 2 && secondCount <= 6, `second burst delivered ${secondCount} of 12`);
  });
});

describe("live changes", () => {
  // Strict on purpose: the issue says new rules apply to the next event, so
  // the events sent right after the PUT's 200 must see them. (Fails now and
  // then while PUT answers before every shard applied the change.)
  it("limits set through the admin API apply to the very next event; removing them lifts the limit", nextEventAcrossNodes, async (t) => {
    const channel = uniqueChannel("rl-live");
    const receiver = await clientFrom(t, "live", "127.0.0.71");
    await joinAll(master, channel, [receiver], { envId: "live" });
    const sender = await clientFrom(t, "live", "127.0.0.70");

    burst(sender, channel, "l", "before", 8);
    await expectDelivered(receiver, "l", "before", 8, "no limiter yet");

    await putEnvironment(server, "live", { rate_limits: [{ limit: 2, window_s: 300, message: "now limited" }] });
    burst(sender, channel, "l", "limited", 8);
    assert.deepEqual(await sender.waitFor("error"), rateError("now limited"));
    await expectDelivered(receiver, "l", "limited", 2, "limit 2 after the change");

    await putEnvironment(server, "live", { rate_limits: [] });
    burst(sender, channel, "l", "lifted", 8);
    await expectDelivered(receiver, "l", "lifted", 8, "limiter removed");
    assert.equal(sender.received("error").length, 1);
  });
});
