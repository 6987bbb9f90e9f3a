// Binary payloads both ways: Buffers inside `message` go client → server as
// Socket.IO binary events (45…) and come back server → client as binary events
// with attachments, byte for byte, mixed with JSON; the same for master
// send_message/broadcast_message, for profile data (channel:update) and for the
// get_members ack (a binary ack, 46…).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import {
  byId,
  closeAll,
  connect,
  connectMaster,
  connectOnShards,
  joinAll,
  normalizeBinary,
  quietly,
  uniqueChannel,
} from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";

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

async function pair(t, channel) {
  const [[a], [b]] = await connectOnShards(server, [1, 1]);
  t.after(() => closeAll(a, b));
  await joinAll(master, channel, [a, b]);
  return [a, b];
}

/** Asserts `actual` equals `expected` with every binary arriving as binary. */
function assertSamePayload(actual, expected, what) {
  assert.deepEqual(normalizeBinary(actual), normalizeBinary(expected), what);
}

function allBytes() {
  return Buffer.from(Array.from({ length: 256 }, (_, i) => i));
}

describe("binary from a client", () => {
  it("a Buffer inside message arrives as binary with identical bytes", async (t) => {
    const channel = uniqueChannel("bin");
    const [a, b] = await pair(t, channel);
    const blob = allBytes();
    a.socket.emit("message", { channel, eventName: "bin", message: { blob } });
    const [arg] = await b.waitFor("bin");
    assert.ok(arg.message.blob instanceof Uint8Array, `got ${typeof arg.message.blob}: ${JSON.stringify(arg)}`);
    assert.ok(Buffer.from(arg.message.blob).equals(blob), "bytes differ");
    assert.equal(arg.channel, channel);
  });

  it("mixed JSON and several Buffers (nested, in arrays, empty) keep their places", async (t) => {
    const channel = uniqueChannel("bin-mixed");
    const [a, b] = await pair(t, channel);
    const message = {
      text: "caption ✓",
      count: 3,
      first: Buffer.from("first"),
      list: [Buffer.from([0, 1, 2]), 7, { deep: Buffer.from([255, 254]) }, null],
      empty: Buffer.alloc(0),
      nested: { again: { blob: randomBytes(1000) } },
    };
    a.socket.emit("message", { channel, eventName: "mixed", message });
    const args = await b.waitFor("mixed");
    assert.equal(args.length, 1);
    assertSamePayload(args[0], { channel, message });
  });

  it("a Buffer as the whole message, and a 256 KiB Buffer", async (t) => {
    const channel = uniqueChannel("bin-whole");
    const [a, b] = await pair(t, channel);
    const small = Buffer.from("just bytes");
    const big = randomBytes(256 * 1024);
    a.socket.emit("message", { channel, eventName: "whole", message: small });
    a.socket.emit("message", { channel, eventName: "big", message: { big } });
    assertSamePayload(await b.waitFor("whole"), [{ channel, message: small }]);
    const [arg] = await b.waitFor("big", { timeoutMs: 10_000 });
    assert.ok(Buffer.from(arg.message.big).equals(big), "256 KiB payload differs");
  });

  it("binary with echo:true comes back to the sender, and goes environment-wide", async (t) => {
    const channel = uniqueChannel("bin-echo");
    const [a, b] = await pair(t, channel);
    const outsider = await connect(server, {});
    t.after(() => outsider.close());
    const payload = { b: Buffer.from([9, 8, 7]) };
    a.socket.emit("message", { channel, eventName: "bin-echo", message: payload, echo: true });
    assertSamePayload(await a.waitFor("bin-echo"), [{ channel, message: payload }]);
    assertSamePayload(await b.waitFor("bin-echo"), [{ channel, message: payload }]);

    a.socket.emit("message", { eventName: "bin-env", message: payload });
    assertSamePayload(await outsider.waitFor("bin-env"), [{ channel: null, message: payload }]);
    assertSamePayload(await b.waitFor("bin-env"), [{ channel: null, message: payload }]);
    const [senderGot] = await quietly([a], "bin-env");
    assert.deepEqual(senderGot, []);
  });

  it("binary and text messages from one sender stay in order", async (t) => {
    const channel = uniqueChannel("bin-order");
    const [a, b] = await pair(t, channel);
    const N = 200;
    for (let i = 0; i < N; i++) {
      const message = i % 3 === 0 ? { i, bytes: Buffer.from([i & 0xff, (i >> 8) & 0xff]) } : { i };
      a.socket.emit("message", { channel, eventName: "seq", message });
    }
    await b.waitFor("seq", { count: N, timeoutMs: 10_000 });
    const got = b.received("seq").map(([arg]) => arg.message);
    assert.deepEqual(got.map((m) => m.i), Array.from({ length: N }, (_, i) => i));
    for (const m of got) {
      if (m.i % 3 === 0) assert.deepEqual([...m.bytes], [m.i & 0xff, (m.i >> 8) & 0xff]);
      else assert.equal(m.bytes, undefined);
    }
  });
});

describe("binary from the master", () => {
  it("send_message and broadcast_message forward Buffers", async (t) => {
    const channel = uniqueChannel("bin-master");
    const [a, b] = await pair(t, channel);
    const message = { img: allBytes(), label: "png-ish" };
    master.socket.emit("send_message", { envId: "default", channelName: channel, eventName: "m-bin", message });
    assertSamePayload(await a.waitFor("m-bin"), [{ channel, message }]);
    assertSamePayload(await b.waitFor("m-bin"), [{ channel, message }]);

    master.socket.emit("broadcast_message", { envId: "default", eventName: "m-bc-bin", message });
    assertSamePayload(await a.waitFor("m-bc-bin"), [{ channel: null, message }]);
    assertSamePayload(await b.waitFor("m-bc-bin"), [{ channel: null, message }]);
  });
});

describe("binary profile data", () => {
  it("channel:update carries a Buffer in the profile data as binary", async (t) => {
    const channel = uniqueChannel("bin-profile");
    const [a, b] = await pair(t, channel);
    const data = { avatar: Buffer.from([1, 2, 3, 4]), name: "bin" };
    b.socket.emit("update", { data });
    assertSamePayload(await a.waitFor("channel:update"), [{ channel, message: { id: b.id, data } }]);
  });

  it("get_members acks a Buffer in the profile data as binary (a binary ack)", async (t) => {
    const channel = uniqueChannel("bin-profile-ack");
    const [a, b] = await pair(t, channel);
    const data = { avatar: Buffer.from([5, 6, 7]), name: "bin" };
    b.socket.emit("update", { data });
    await a.waitFor("channel:update");
    const [members] = await master.emitWithAck("get_members", { envId: "default", channel });
    assertSamePayload(byId(members), byId([{ id: a.id, data: null }, { id: b.id, data }]));
  });

  it("channel:join and channel:leave carry a binary profile as binary", async (t) => {
    const channel = uniqueChannel("bin-profile-join");
    const [a, b] = await pair(t, channel);
    const c = await connect(server, {});
    t.after(() => c.close());
    const data = { key: Buffer.from("pubkey") };
    c.socket.emit("update", { data });
    c.socket.emit("join", { channel });
    assertSamePayload(await a.waitFor("channel:join", { match: (arg) => arg.message.id === c.id }),
      [{ channel, message: { id: c.id, data } }]);
    const cId = c.id;
    c.close();
    assertSamePayload(await b.waitFor("channel:leave"), [{ channel, message: { id: cId, data } }]);
  });
});
