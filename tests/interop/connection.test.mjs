// Connection-level facts real clients rely on: socket ids (format, shard byte,
// distinct from the Engine.IO sid, new on every reconnect, unique across
// restarts), the Engine.IO handshake and heartbeat seen by the client,
// connect_error for other namespaces, maxPayload, and the plain HTTP answers.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { io } from "socket.io-client";
import {
  SOCKET_ID_RE,
  WAIT_MS,
  closeAll,
  connect,
  connectError,
  connectMany,
  connectMaster,
  connectOnShards,
  joinAll,
  quietly,
  shardOf,
  sleep,
  uniqueChannel,
  waitMembers,
} from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";

const PING_INTERVAL_MS = 300;
const PING_TIMEOUT_MS = 600;
const MAX_PAYLOAD_BYTES = 64 * 1024;

let server;
let master;

before(async () => {
  server = await startServer({
    args: [
      "--ping-interval-ms", String(PING_INTERVAL_MS),
      "--ping-timeout-ms", String(PING_TIMEOUT_MS),
      "--max-payload-bytes", String(MAX_PAYLOAD_BYTES),
    ],
  });
  master = await connectMaster(server);
});

after(async () => {
  master?.close();
  await server?.stop();
});

/** Resolves when `socket` emits `event` (first args), rejects after `timeoutMs`. */
function once(emitter, event, timeoutMs = WAIT_MS) {
  return new Promise((resolvePromise, rejectPromise) => {
    const timer = setTimeout(() => rejectPromise(new Error(`no '${event}' within ${timeoutMs} ms`)), timeoutMs);
    emitter.once(event, (...args) => {
      clearTimeout(timer);
      resolvePromise(args);
    });
  });
}

describe("socket ids", () => {
  it("are 20 chars of [A-Za-z0-9_-] (15 bytes), differ from the Engine.IO sid, are unique, and cover both shards", async (t) => {
    const clients = await connectMany(server, 40, {});
    t.after(() => closeAll(clients));
    const ids = clients.map((c) => c.id);
    for (const c of clients) {
      assert.match(c.id, SOCKET_ID_RE);
      assert.equal(Buffer.from(c.id, "base64url").length, 15);
      assert.equal(typeof c.socket.io.engine.id, "string");
      assert.notEqual(c.id, c.socket.io.engine.id, "socket.id must not be the Engine.IO sid");
      assert.ok(shardOf(c.id) < server.shards, `shard byte ${shardOf(c.id)} out of range`);
    }
    assert.equal(new Set(ids).size, ids.length, "socket ids must be unique");
    const engineIds = clients.map((c) => c.socket.io.engine.id);
    assert.equal(new Set(engineIds).size, engineIds.length, "Engine.IO sids must be unique");
    assert.deepEqual(new Set(ids.map(shardOf)), new Set([0, 1]), "40 connections should land on both shards");
  });

  it("a new id after disconnect()+connect(), and others see the old id leave", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const channel = uniqueChannel("reconnect");
    await joinAll(master, channel, [a, b]);
    const oldId = b.id;
    const oldEngineId = b.socket.io.engine.id;

    b.socket.disconnect();
    assert.deepEqual(await a.waitFor("channel:leave"), [{ channel, message: { id: oldId, data: null } }]);
    b.socket.connect();
    await once(b.socket, "connect");
    assert.match(b.id, SOCKET_ID_RE);
    assert.notEqual(b.id, oldId, "socket.id must be new after a reconnect");
    assert.notEqual(b.socket.io.engine.id, oldEngineId);
    // The new connection starts in no channel.
    await waitMembers(master, channel, [a.id]);
  });

  it("a new id after the transport drops and the client reconnects by itself", async (t) => {
    const c = await connect(server, {}, { reconnection: true, reconnectionDelay: 50, reconnectionDelayMax: 100 });
    t.after(() => c.close());
    const oldId = c.id;
    const reconnected = once(c.socket, "connect", 10_000);
    c.socket.io.engine.close(); // like a network drop: the manager reconnects
    await reconnected;
    assert.match(c.id, SOCKET_ID_RE);
    assert.notEqual(c.id, oldId);
  });

  it("are unique across server restarts", async () => {
    const ids = new Set();
    for (let run = 0; run < 2; run++) {
      const s = await startServer({});
      try {
        const clients = await connectMany(s, 20, {});
        for (const c of clients) ids.add(c.id);
        closeAll(clients);
      } finally {
        await s.stop();
      }
    }
    assert.equal(ids.size, 40);
  });
});

describe("namespaces", () => {
  it("connecting to /admin gets connect_error, no id, and no retry", async () => {
    const { err, id, active } = await connectError(server, {}, { namespace: "/admin" });
    assert.ok(err instanceof Error);
    assert.equal(typeof err.message, "string");
    assert.ok(err.message.length > 0);
    assert.equal(id, undefined);
    assert.equal(active, false, "a rejected connect must not be retried");
  });

  it("the main namespace works alongside a rejected one on the same manager", async (t) => {
    const main = await connect(server, {}, { forceNew: true });
    t.after(() => main.close());
    const admin = main.socket.io.socket("/admin", { auth: {} });
    const [err] = await once(admin, "connect_error");
    assert.ok(err instanceof Error);
    admin.disconnect();
    assert.ok(main.socket.connected);
    main.socket.emit("message", { eventName: "still-ok", message: 1, echo: true });
    assert.deepEqual(await main.waitFor("still-ok"), [{ channel: null, message: 1 }]);
  });
});

describe("Engine.IO handshake and heartbeat", () => {
  for (const [transport, upgrades] of [["websocket", []], ["polling", ["websocket"]]]) {
    it(`the ${transport} open packet advertises ${JSON.stringify(upgrades)} and the configured timings`, async () => {
      const socket = io(server.url, {
        path: server.path, transports: [transport], reconnection: false, forceNew: true, auth: {},
      });
      try {
        const [handshake] = await once(socket.io.engine, "handshake");
        assert.equal(typeof handshake.sid, "string");
        assert.deepEqual(handshake.upgrades, upgrades);
        assert.equal(handshake.pingInterval, PING_INTERVAL_MS);
        assert.equal(handshake.pingTimeout, PING_TIMEOUT_MS);
        assert.equal(handshake.maxPayload, MAX_PAYLOAD_BYTES);
        await once(socket, "connect");
      } finally {
        socket.disconnect();
      }
    });
  }

  it("socket.io-client's defaults: long-polling first, then the upgrade to WebSocket", async () => {
    const socket = io(server.url, { path: server.path, reconnection: false, forceNew: true, auth: {} });
    try {
      // The engine exists (and picked its first transport) as soon as the
      // socket does; the upgrade may finish before the Socket.IO connect.
      const engine = socket.io.engine;
      assert.equal(engine.transport.name, "polling");
      const upgraded = once(engine, "upgrade", WAIT_MS);
      await once(socket, "connect");
      const [transport] = await upgraded;
      assert.equal(transport.name, "websocket");
      assert.equal(engine.transport.name, "websocket");
      socket.emit("message", { eventName: "after-upgrade", message: 1, echo: true });
      const [arg] = await once(socket, "after-upgrade", WAIT_MS);
      assert.deepEqual(arg, { channel: null, message: 1 });
    } finally {
      socket.disconnect();
    }
  });

  it("the server pings every pingInterval and a client that answers stays connected", async (t) => {
    const c = await connect(server, {});
    t.after(() => c.close());
    let pings = 0;
    c.socket.io.engine.on("ping", () => pings++);
    let disconnected = null;
    c.socket.on("disconnect", (reason) => (disconnected = reason));
    await sleep(PING_INTERVAL_MS * 5 + 100);
    assert.ok(pings >= 4, `expected >= 4 pings in ${PING_INTERVAL_MS * 5 + 100} ms, got ${pings}`);
    assert.ok(pings <= 7, `expected about 5 pings, got ${pings}`);
    assert.equal(disconnected, null);
    assert.ok(c.socket.connected);
  });

  it("a client that stops answering pings is dropped and its channels get channel:leave", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const channel = uniqueChannel("ping-timeout");
    await joinAll(master, channel, [a, b]);
    const silentId = b.id;
    // engine.io-client answers a ping with `_sendPacket("pong")` (pinned 6.x
    // internals); dropping those pongs makes this client a dead peer.
    const engine = b.socket.io.engine;
    assert.equal(typeof engine._sendPacket, "function", "engine.io-client internals changed");
    const sendPacket = engine._sendPacket.bind(engine);
    engine._sendPacket = (type, ...rest) => (type === "pong" ? undefined : sendPacket(type, ...rest));
    const started = Date.now();
    const [reason] = await once(b.socket, "disconnect", (PING_INTERVAL_MS + PING_TIMEOUT_MS) * 4);
    const elapsed = Date.now() - started;
    assert.ok(["transport close", "transport error"].includes(reason), `disconnect reason ${reason}`);
    assert.ok(elapsed <= (PING_INTERVAL_MS + PING_TIMEOUT_MS) * 3, `dropped after ${elapsed} ms`);
    assert.deepEqual(await a.waitFor("channel:leave"), [{ channel, message: { id: silentId, data: null } }]);
  });
});

describe("maxPayload", () => {
  it("a packet over maxPayload closes that connection only", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const channel = uniqueChannel("too-big");
    await joinAll(master, channel, [a, b]);
    const bigId = b.id;
    b.socket.emit("message", { channel, eventName: "huge", message: "x".repeat(MAX_PAYLOAD_BYTES * 2) });
    const [reason] = await once(b.socket, "disconnect");
    assert.ok(["transport close", "transport error"].includes(reason), `disconnect reason ${reason}`);
    assert.deepEqual(await a.waitFor("channel:leave"), [{ channel, message: { id: bigId, data: null } }]);
    const [aGot] = await quietly([a], "huge");
    assert.deepEqual(aGot, [], "the oversized message must not be delivered");

    // A message just under the limit still goes through on a fresh connection.
    const c = await connect(server, {});
    t.after(() => c.close());
    await joinAll(master, channel, [a, c]);
    const fits = "y".repeat(MAX_PAYLOAD_BYTES - 1024);
    c.socket.emit("message", { channel, eventName: "fits", message: fits });
    const [arg] = await a.waitFor("fits");
    assert.equal(arg.message.length, fits.length);
  });
});

describe("HTTP", () => {
  it("GET /health is 200 JSON", async () => {
    const res = await fetch(`${server.url}/health`, { signal: AbortSignal.timeout(WAIT_MS) });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const body = await res.json();
    assert.equal(typeof body, "object");
  });

  it("a bad EIO version or transport on the path is 400 with Engine.IO's error JSON", async () => {
    const cases = {
      "EIO=3&transport=websocket": { code: 5, message: "Unsupported protocol version" },
      "transport=polling": { code: 5, message: "Unsupported protocol version" },
      "EIO=4&transport=flash": { code: 0, message: "Transport unknown" },
      "EIO=4": { code: 0, message: "Transport unknown" },
      "EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA": { code: 1, message: "Session ID unknown" },
      "EIO=4&transport=websocket": { code: 3, message: "Bad request" },
    };
    for (const [query, expected] of Object.entries(cases)) {
      const res = await fetch(`${server.url}${server.path}?${query}`, { signal: AbortSignal.timeout(WAIT_MS) });
      assert.equal(res.status, 400, query);
      assert.match(res.headers.get("content-type") ?? "", /application\/json/, query);
      assert.deepEqual(await res.json(), expected, query);
    }
  });

  it("other paths are 404 JSON", async () => {
    const res = await fetch(`${server.url}/nope`, { signal: AbortSignal.timeout(WAIT_MS) });
    assert.equal(res.status, 404);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    await res.json();
  });
});
