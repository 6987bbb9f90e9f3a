// Ordering (DESIGN.md: "messages from one sender to one channel arrive at every
// member in send order"): 10,000 messages from one sender reach 3 members that
// sit on both shards (one local to the sender, two across the mesh) in order,
// none lost, none duplicated. The same for the master's send_message.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  closeAll,
  connectMaster,
  connectOnShards,
  joinAll,
  shardOf,
  sleep,
  uniqueChannel,
} from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";

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

/** Asserts `got` is exactly 0..count-1, naming the first place it is not. */
function assertSequence(got, count, who) {
  const firstBad = got.findIndex((value, index) => value !== index);
  assert.equal(firstBad, -1, `${who}: position ${firstBad} holds ${got[firstBad]}`);
  assert.equal(got.length, count, `${who}: got ${got.length} of ${count}`);
}

/** Resolves when every member received `count` events named `event`, or rejects at the deadline. */
async function waitAll(members, event, count, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = members.map((m) => m.received(event).length);
    if (counts.every((n) => n >= count)) return;
    if (Date.now() > deadline) {
      throw new Error(`after ${timeoutMs} ms the members got ${JSON.stringify(counts)} of ${count} '${event}'`);
    }
    await sleep(50);
  }
}

describe("ordering", () => {
  it("10,000 messages from one client arrive in order at 3 members on both shards", { timeout: 120_000 }, async (t) => {
    const [[sender, local], [remote1, remote2]] = await connectOnShards(server, [2, 2]);
    t.after(() => closeAll(sender, local, remote1, remote2));
    const members = [local, remote1, remote2];
    assert.equal(shardOf(local.id), shardOf(sender.id));
    assert.notEqual(shardOf(remote1.id), shardOf(sender.id));
    assert.equal(new Set(members.map((m) => shardOf(m.id))).size, 2, "members must sit on both shards");
    const channel = uniqueChannel("order");
    await joinAll(master, channel, [sender, ...members]);

    const COUNT = 10_000;
    for (let i = 0; i < COUNT; i++) {
      sender.socket.emit("message", { channel, eventName: "seq", message: { i, pad: "p".repeat(i % 64) } });
    }
    await waitAll(members, "seq", COUNT, 90_000);
    await sleep(200); // anything extra (duplicates) would show up now
    for (const [k, m] of members.entries()) {
      const got = m.received("seq").map(([arg]) => {
        assert.equal(arg.channel, channel);
        return arg.message.i;
      });
      assertSequence(got, COUNT, `member ${k} on shard ${shardOf(m.id)}`);
    }
    assert.deepEqual(sender.received("seq"), []);
  });

  it("2,000 send_message from the master arrive in order at members on both shards", { timeout: 60_000 }, async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const channel = uniqueChannel("order-master");
    await joinAll(master, channel, [a, b]);
    const COUNT = 2_000;
    for (let i = 0; i < COUNT; i++) {
      master.socket.emit("send_message", { envId: "default", channelName: channel, eventName: "mseq", message: i });
    }
    await waitAll([a, b], "mseq", COUNT, 45_000);
    for (const m of [a, b]) {
      assertSequence(m.received("mseq").map(([arg]) => arg.message), COUNT, `shard ${shardOf(m.id)}`);
    }
  });
});
