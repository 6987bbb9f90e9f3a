// Many connections at once: 1,000 concurrent socket.io-client connections join
// 100 channels (10 members each, spread over both shards); every connection
// publishes once to its channel and every member receives exactly the 9
// messages of the other members of its channel; a master broadcast reaches all
// 1,000; and after they all disconnect the channels are empty again.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  closeAll,
  connectMany,
  connectMaster,
  shardOf,
  sleep,
  waitMembers,
} from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";

const CONNECTIONS = 1_000;
const CHANNELS = 100;

let server;
let master;

before(async () => {
  server = await startServer({});
  master = await connectMaster(server);
});

after(async () => {
  master?.close();
  await server?.stop();
});

/** Resolves once `done()` is true, polling; rejects with `describe()` at the deadline. */
async function until(done, describeState, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describeState()}`);
    await sleep(50);
  }
}

describe("scale", () => {
  it("1,000 connections in 100 channels all get their messages", { timeout: 180_000 }, async (t) => {
    const started = Date.now();
    const clients = await connectMany(server, CONNECTIONS, {}, { batch: 100, timeoutMs: 20_000 });
    t.after(() => closeAll(clients));
    assert.equal(clients.length, CONNECTIONS);
    assert.equal(new Set(clients.map((c) => c.id)).size, CONNECTIONS, "ids must be unique");
    const shardCounts = [0, 0];
    for (const c of clients) shardCounts[shardOf(c.id)] += 1;
    assert.ok(shardCounts.every((n) => n > 0), `connections per shard: ${JSON.stringify(shardCounts)}`);

    const channelOf = (i) => `scale-${process.pid}-${i % CHANNELS}`;
    clients.forEach((c, i) => c.socket.emit("join", { channel: channelOf(i) }));
    const membersOf = Array.from({ length: CHANNELS }, () => []);
    clients.forEach((c, i) => membersOf[i % CHANNELS].push(c));
    let crossShardChannels = 0;
    for (let k = 0; k < CHANNELS; k++) {
      await waitMembers(master, channelOf(k), membersOf[k].map((c) => c.id), { timeoutMs: 30_000 });
      if (new Set(membersOf[k].map((c) => shardOf(c.id))).size > 1) crossShardChannels += 1;
    }
    assert.ok(crossShardChannels > 0, "at least one channel must span both shards");

    for (const c of clients) c.clear();
    clients.forEach((c, i) => c.socket.emit("message", { channel: channelOf(i), eventName: "hello", message: { from: i } }));
    const expectedCount = CHANNELS === CONNECTIONS ? 0 : CONNECTIONS / CHANNELS - 1;
    const behind = () => clients.filter((c) => c.received("hello").length < expectedCount).length;
    await until(() => behind() === 0, () => `${behind()} connections still missing messages`, 60_000);
    await sleep(200);
    clients.forEach((c, i) => {
      const got = c.received("hello").map(([arg]) => {
        assert.equal(arg.channel, channelOf(i));
        return arg.message.from;
      }).sort((x, y) => x - y);
      const want = membersOf[i % CHANNELS].map((m) => clients.indexOf(m)).filter((j) => j !== i).sort((x, y) => x - y);
      assert.deepEqual(got, want, `connection ${i}`);
    });

    master.socket.emit("broadcast_message", { envId: "default", eventName: "all", message: "everyone" });
    const missing = () => clients.filter((c) => c.received("all").length === 0).length;
    await until(() => missing() === 0, () => `${missing()} connections missed the broadcast`, 30_000);
    for (const c of clients) assert.deepEqual(c.received("all"), [[{ channel: null, message: "everyone" }]]);

    closeAll(clients);
    for (let k = 0; k < CHANNELS; k++) await waitMembers(master, channelOf(k), [], { timeoutMs: 30_000 });
    t.diagnostic(`1,000 connections scenario took ${Date.now() - started} ms; per shard ${JSON.stringify(shardCounts)}`);
  });
});
