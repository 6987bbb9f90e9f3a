// Emits made while disconnected, against a real server that is stopped and
// started again on the same port: with bufferMessages on they are sent after
// the reconnect (after the channels were re-joined, in order); with it off
// they are dropped. Joins made before the first connect apply either way.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { createClient } from "ringcast-client";

import { startServer } from "./helpers/server.mjs";
import { QUIET_MS, clientPool, waitFor } from "./helpers/wait.mjs";

const FAST = { reconnectionDelay: 100, timeout: 5_000 };

describe("buffering while disconnected", () => {
  let server;
  const pool = clientPool();
  before(async () => {
    server = await startServer({ config: "envs.toml" });
  });
  after(async () => {
    pool.closeAll();
    await server?.stop();
  });

  /**
   * Stops the server, runs `whileDown` against the disconnected clients, and
   * starts the server again on the same port; resolves once every client is
   * connected again.
   */
  async function outage(clients, whileDown) {
    const before = clients.map((c) => c.disconnects.length);
    await server.stop();
    await waitFor(() => clients.every((c, i) => c.disconnects.length > before[i]), "every client disconnected");
    for (const c of clients) assert.equal(c.rt.isConnected(), false);
    await whileDown();
    await server.start();
    await waitFor(() => clients.every((c) => c.rt.isConnected()), "every client reconnected", 10_000);
  }

  test("bufferMessages on: emits made while disconnected are sent after the reconnect, in order", async () => {
    const a = pool.make(server.origin, { realtime: FAST });
    a.rt.join("buffered");
    await a.connected();
    await waitFor(async () => (await a.rt.getMembers("buffered")).data?.length === 1, "a joined");

    await outage([a], async () => {
      for (let i = 0; i < 5; i += 1) a.rt.send("buffered", "chat", `down ${i}`);
      a.rt.broadcast("news", "down broadcast");
      a.rt.updateProfile({ name: "ann", status: "back" });
    });
    // Echo is on, so a sees its own buffered messages: proof the server got
    // them, after the replayed join (else the channel would have been empty).
    const got = await a.count("chat", 5);
    assert.deepEqual(got.map((p) => p.message), [0, 1, 2, 3, 4].map((i) => `down ${i}`));
    assert.deepEqual(await a.next("news"), { channel: null, message: "down broadcast" });
    const { data } = await a.rt.getMembers("buffered");
    assert.deepEqual(data, [{ id: a.rt.getSocketId(), data: { name: "ann", status: "back" } }],
      "profile set while down was applied");
  });

  test("bufferMessages off: emits made while disconnected are dropped", async () => {
    const a = pool.make(server.origin, { realtime: { ...FAST, bufferMessages: false } });
    const b = pool.make(server.origin, { realtime: FAST });
    a.rt.join("unbuffered");
    b.rt.join("unbuffered");
    await a.connected();
    await b.connected();
    await waitFor(async () => (await b.rt.getMembers("unbuffered")).data?.length === 2, "both joined");

    await outage([a, b], async () => {
      a.rt.send("unbuffered", "chat", "lost 1");
      a.rt.broadcast("news", "lost 2");
    });
    await waitFor(async () => (await b.rt.getMembers("unbuffered")).data?.length === 2, "both re-joined");
    a.rt.send("unbuffered", "chat", "after");
    await b.next("chat", (p) => p.message === "after");
    await a.next("chat", (p) => p.message === "after");
    await sleep(QUIET_MS);
    assert.deepEqual(b.payloads("chat").map((p) => p.message), ["after"]);
    assert.deepEqual(a.payloads("chat").map((p) => p.message), ["after"], "not even echoed: never sent");
    assert.deepEqual(b.payloads("news"), []);
    assert.deepEqual(a.payloads("news"), []);
  });

  test("bufferMessages off: joins and the profile made before the first connect still apply", async () => {
    const rt = createClient(server.origin, { realtime: { ...FAST, bufferMessages: false } }).realtime;
    try {
      rt.updateProfile({ name: "early" });
      rt.join("early-bird");
      assert.equal(rt.isConnected(), false);
      const { data, errors } = await rt.getMembers("early-bird");
      assert.equal(errors, null);
      assert.deepEqual(data, [{ id: rt.getSocketId(), data: { name: "early" } }]);
    } finally {
      rt.close();
    }
  });

  test("getMembers waits for a reconnect within timeout, else reports not_connected", async () => {
    const short = pool.make(server.origin, { realtime: { reconnectionDelay: 100, timeout: 1_000 } });
    const long = pool.make(server.origin, { realtime: { reconnectionDelay: 100, timeout: 8_000 } });
    long.rt.join("waiting");
    await short.connected();
    await long.connected();
    await server.stop();
    await waitFor(() => !short.rt.isConnected() && !long.rt.isConnected(), "both disconnected");

    const pending = long.rt.getMembers("waiting");
    const started = Date.now();
    const down = await short.rt.getMembers("waiting");
    const tookMs = Date.now() - started;
    assert.equal(down.data, null);
    assert.equal(down.errors.code, "not_connected");
    assert.equal(typeof down.errors.message, "string");
    assert.ok(tookMs >= 900 && tookMs < 2_500, `bounded by timeout: took ${tookMs} ms`);

    await server.start();
    const up = await pending;
    assert.equal(up.errors, null, `answered after the reconnect: ${JSON.stringify(up.errors)}`);
    assert.deepEqual(up.data, [{ id: long.rt.getSocketId(), data: null }], "re-joined before answering");
  });
});
