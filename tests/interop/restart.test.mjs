// A deploy under load: 1,000 socket.io-client clients (reconnection on, as in
// Agnost's client library, which re-joins its channels on every `connect`)
// sit in 100 channels; the server gets SIGTERM. It must close every client
// with a transport close (so socket.io-client reconnects by itself; an "io
// server disconnect" would stop it), spread over the drain window (so the
// reconnects do not arrive as one avalanche), and exit 0. A new server starts
// on the same port at once; every client reconnects with a new socket id,
// re-joins, and a message to each channel reaches exactly its 10 members.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
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
const MEMBERS = CONNECTIONS / CHANNELS;
const DRAIN_WINDOW_MS = 2_000;
const SHUTDOWN_DEADLINE_MS = 10_000;
/** The disconnects must cover at least this much of the drain window. */
const DISCONNECT_SPAN_MS_MIN = 1_000;
/** No 200 ms slice of the drain may hold more than this share of the disconnects. */
const SLICE_MS = 200;
const SLICE_SHARE_MAX = 0.3;
/** Bound on all clients reconnecting and re-joining after the restart. */
const RECONNECT_WAIT_MS = 30_000;

// socket.io-client's reconnection as an app would configure it, with a short
// first delay so the test stays quick.
const RECONNECTING = {
  reconnection: true,
  reconnectionDelay: 200,
  randomizationFactor: 0.5,
  timeoutMs: 20_000,
};

const configDir = mkdtempSync(join(tmpdir(), "ringcast-restart-"));
const configPath = join(configDir, "restart.toml");
writeFileSync(
  configPath,
  `[server]\ndrain_window_ms = ${DRAIN_WINDOW_MS}\nshutdown_deadline_ms = ${SHUTDOWN_DEADLINE_MS}\n`,
);

const servers = [];
after(async () => {
  for (const s of servers) await s.stop();
  rmSync(configDir, { recursive: true, force: true });
});

/** A port nobody listens on right now (the kernel picks it; we release it). */
function freePort() {
  return new Promise((resolvePort, rejectPort) => {
    const probe = createServer();
    probe.once("error", rejectPort);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolvePort(port));
    });
  });
}

/**
 * Starts a server on 127.0.0.1:`port`, retrying a few times: the old
 * process may still hold the address for a moment.
 */
async function startOnPort(port, attempts = 5, args = []) {
  let lastError;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    try {
      const server = await startServer({ config: configPath, listen: `127.0.0.1:${port}`, args });
      servers.push(server);
      return server;
    } catch (err) {
      lastError = err;
      await sleep(200 * attempt);
    }
  }
  throw new Error(`no server on port ${port} after ${attempts} attempts: ${lastError.message}`);
}

/**
 * The times (ms, from the first) at which the server's shutdown drain closed
 * each client, read from its debug log lines `... closing a client for
 * shutdown` (each starts with an RFC 3339 timestamp).
 */
function drainCloseTimes(logPath) {
  // eslint-disable-next-line no-control-regex
  const plain = readFileSync(logPath, "utf8").replace(/\x1b\[[0-9;]*m/g, "");
  const stamps = plain
    .split("\n")
    .filter((line) => line.includes("closing a client for shutdown"))
    .map((line) => Date.parse(line.slice(0, line.indexOf("Z") + 1)));
  const first = Math.min(...stamps);
  return stamps.map((at) => at - first).sort((x, y) => x - y);
}

/** Polls `done()` every 50 ms; rejects with `describeState()` after `timeoutMs`. */
async function until(done, describeState, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${describeState()}`);
    await sleep(50);
  }
}

/** Resolves with the promise's value, or rejects with `what` after `timeoutMs`. */
function within(promise, timeoutMs, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rejectTimeout) => {
      timer = setTimeout(() => rejectTimeout(new Error(`${what} not within ${timeoutMs} ms`)), timeoutMs);
    }),
  ]).finally(() => clearTimeout(timer));
}

describe("restart under 1,000 clients", () => {
  it("SIGTERM drains with transport closes over the window; all clients reconnect and re-join",
    { timeout: 60_000 }, async (t) => {
      let port;
      let first;
      for (let attempt = 0; attempt < 3 && !first; attempt++) {
        port = await freePort();
        // Its shutdown drain logs each close at debug: the spread is judged
        // on the server's own clock (this process, busy with 1,000 clients
        // reconnecting, may see the closes late and in bunches).
        first = await startOnPort(port, 2, ["--log-level", "info,ringcast::shard=debug"])
          .catch(() => undefined);
      }
      assert.ok(first, "the first server started on a fixed port");
      assert.equal(first.port, port);

      const firstMaster = await connectMaster(first);
      t.after(() => firstMaster.close());

      const channelOf = (i) => `restart-${process.pid}-${i % CHANNELS}`;
      const clients = await connectMany(first, CONNECTIONS, {}, { batch: 100, ...RECONNECTING });
      t.after(() => closeAll(clients));
      assert.equal(clients.length, CONNECTIONS);

      // Per client: every connect (the app re-joins on each), every disconnect
      // with its reason and time.
      const log = clients.map(() => ({ connects: 0, disconnects: [] }));
      clients.forEach((c, i) => {
        const join = () => c.socket.emit("join", { channel: channelOf(i) });
        c.socket.on("connect", () => {
          log[i].connects += 1;
          join();
        });
        c.socket.on("disconnect", (reason) => log[i].disconnects.push({ reason, at: Date.now() }));
        join();
      });

      const oldIds = clients.map((c) => c.id);
      assert.equal(new Set(oldIds).size, CONNECTIONS, "socket ids are unique");
      const shardCounts = [0, 0];
      for (const id of oldIds) shardCounts[shardOf(id)] += 1;
      assert.ok(shardCounts.every((n) => n > 0), `connections per shard: ${JSON.stringify(shardCounts)}`);

      const membersOf = Array.from({ length: CHANNELS }, () => []);
      clients.forEach((c, i) => membersOf[i % CHANNELS].push(i));
      for (let k = 0; k < CHANNELS; k++) {
        await waitMembers(firstMaster, channelOf(k), membersOf[k].map((i) => oldIds[i]), { timeoutMs: 20_000 });
      }

      // --- the deploy: SIGTERM, and a new server on the same port at once ---
      const sigtermAt = Date.now();
      assert.ok(first.signal("SIGTERM"), "SIGTERM sent");
      const firstExit = within(first.exited, SHUTDOWN_DEADLINE_MS + 2_000, "exit of the old server");
      const second = await startOnPort(port);
      assert.equal(second.port, port);

      const exit = await firstExit;
      const exitMs = Date.now() - sigtermAt;
      assert.deepEqual(exit, { code: 0, signal: null }, `old server exit (after ${exitMs} ms)`);

      // Every client saw exactly one disconnect, a transport close, spread
      // over the drain window.
      await until(() => log.every((l) => l.disconnects.length > 0),
        () => `${log.filter((l) => l.disconnects.length === 0).length} clients never saw a disconnect`,
        5_000);
      const reasons = {};
      for (const l of log) for (const d of l.disconnects) reasons[d.reason] = (reasons[d.reason] ?? 0) + 1;
      assert.deepEqual(reasons, { "transport close": CONNECTIONS },
        `disconnect reasons (must all be "transport close", once per client): ${JSON.stringify(reasons)}`);
      // Its log reaches the file through this process: wait for every line.
      // Every client and the master connection: one close each.
      const sockets = CONNECTIONS + 1;
      await until(() => drainCloseTimes(first.logPath).length >= sockets,
        () => `${drainCloseTimes(first.logPath).length} drain closes logged`, 10_000);
      const times = drainCloseTimes(first.logPath);
      assert.equal(times.length, sockets, "the old server closed every socket in its drain");
      const span = times[times.length - 1] - times[0];
      const slices = new Map();
      for (const ms of times) slices.set(Math.floor(ms / SLICE_MS), (slices.get(Math.floor(ms / SLICE_MS)) ?? 0) + 1);
      const busiestSlice = Math.max(...slices.values());
      const spread = `last ${times[times.length - 1]} ms after the first; ` +
        `per ${SLICE_MS} ms: ${JSON.stringify(Object.fromEntries([...slices].sort((a, b) => a[0] - b[0])))}`;
      t.diagnostic(`old server exited after ${exitMs} ms; closes on the server's clock: ${spread}`);
      assert.ok(span >= DISCONNECT_SPAN_MS_MIN, `disconnects span ${span} ms < ${DISCONNECT_SPAN_MS_MIN} ms: ${spread}`);
      assert.ok(span <= DRAIN_WINDOW_MS + 500,
        `the closes took longer than the ${DRAIN_WINDOW_MS} ms drain window: ${spread}`);
      assert.ok(busiestSlice <= CONNECTIONS * SLICE_SHARE_MAX,
        `${busiestSlice} disconnects in one ${SLICE_MS} ms slice (an avalanche): ${spread}`);

      // --- every client reconnects by itself, with a new id, and re-joins ---
      const startedWaiting = Date.now();
      await until(() => clients.every((c, i) => c.socket.connected && log[i].connects >= 1),
        () => `${clients.filter((c, i) => !(c.socket.connected && log[i].connects >= 1)).length} ` +
          "clients not reconnected",
        RECONNECT_WAIT_MS);
      const reconnectMs = Date.now() - startedWaiting;
      assert.ok(log.every((l) => l.connects === 1), "each client reconnected exactly once");
      const newIds = clients.map((c) => c.id);
      assert.equal(new Set(newIds).size, CONNECTIONS, "new socket ids are unique");
      const reused = newIds.filter((id) => oldIds.includes(id));
      assert.deepEqual(reused, [], "no client got its old socket id back");

      const secondMaster = await connectMaster(second);
      t.after(() => secondMaster.close());
      const rejoinDeadline = startedWaiting + RECONNECT_WAIT_MS;
      for (let k = 0; k < CHANNELS; k++) {
        await waitMembers(secondMaster, channelOf(k), membersOf[k].map((i) => newIds[i]),
          { timeoutMs: Math.max(1_000, rejoinDeadline - Date.now()) });
      }
      t.diagnostic(`all ${CONNECTIONS} clients reconnected and re-joined ` +
        `${Date.now() - startedWaiting} ms after the old server exited (connected after ${reconnectMs} ms)`);

      // --- a message to each channel reaches exactly its members ---
      for (const c of clients) c.clear();
      for (let k = 0; k < CHANNELS; k++) {
        secondMaster.socket.emit("send_message",
          { envId: "default", channelName: channelOf(k), eventName: "after-restart", message: { k } });
      }
      const missing = () => clients.filter((c) => c.received("after-restart").length === 0).length;
      await until(() => missing() === 0, () => `${missing()} clients still without their channel's message`, 20_000);
      // Every client now has its own channel's message; a quiet period lets a
      // stray second delivery (or another channel's) show up.
      await sleep(250);
      const receiversOf = Array.from({ length: CHANNELS }, () => []);
      clients.forEach((c, i) => {
        const got = c.received("after-restart");
        assert.equal(got.length, 1, `client ${i} got ${JSON.stringify(got)}`);
        const [{ channel, message }] = got[0];
        assert.equal(channel, channelOf(i), `client ${i}`);
        receiversOf[message.k].push(i);
      });
      for (let k = 0; k < CHANNELS; k++) {
        assert.deepEqual(receiversOf[k].sort((x, y) => x - y), membersOf[k],
          `receivers of channel ${k}'s message`);
        assert.equal(receiversOf[k].length, MEMBERS);
      }
    });
});
