#!/usr/bin/env node
// Soak: runs ringcast under a long mixed load and reports whether it kept its
// promises.
//
//   node tests/soak/soak.mjs [--duration-s 600] [--good-clients 200] [--channel-size 5]
//                            [--rate 20] [--flood-rate 200] [--flood-bytes 4000]
//                            [--slow-clients 4] [--churn-rate 10] [--bad-rate 5]
//                            [--half-open 100] [--out FILE]
//
// The load, all on loopback and all of it bounded by the duration:
// - good clients (socket.io-client, as Agnost's library connects) in channels
//   of --channel-size, each publishing sequence-numbered messages at --rate
//   per second; every member checks that every other member's messages arrive
//   exactly once and in order. Channel 0 is the busy channel: its first member
//   also floods it with --flood-bytes messages at --flood-rate per second;
// - slow clients (raw WebSocket) that join the busy channel and stop reading:
//   the server must close them as slow consumers (the config caps a
//   connection's queue at 256 KiB);
// - connection churn: socket.io-client and raw clients connecting, joining,
//   and leaving cleanly, with a TCP FIN or with a reset;
// - bad clients: raw sockets sending unmasked frames, reserved bits, bad
//   opcodes, invalid UTF-8, bad Engine.IO and Socket.IO packets, non-object
//   payloads, huge channel names, oversized messages, garbage instead of HTTP,
//   silence after the upgrade, and a standing pool of half-open HTTP requests.
//
// It samples the server's RSS every second, scrapes GET /metrics at the end,
// stops the server with SIGTERM, and writes a JSON report (artifacts/) and a
// text summary. Exit status 0 only if: no good client lost, duplicated or
// reordered a message or was disconnected; RSS after warm-up stayed flat
// (last <= warm-up x 1.2 + 8 MiB); every slow client was dropped; every bad
// connection was closed with its documented outcome; the server did not die
// and exited 0 on SIGTERM.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { io } from "socket.io-client";
import { OP, RawConnection, encodeFrame } from "./rawws.mjs";

const soakDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(soakDir, "../..");

const { values: opts } = parseArgs({
  options: {
    "duration-s": { type: "string", default: "600" },
    "good-clients": { type: "string", default: "200" },
    "channel-size": { type: "string", default: "5" },
    rate: { type: "string", default: "20" },
    "flood-rate": { type: "string", default: "200" },
    "flood-bytes": { type: "string", default: "4000" },
    "slow-clients": { type: "string", default: "4" },
    "churn-rate": { type: "string", default: "10" },
    "bad-rate": { type: "string", default: "5" },
    "half-open": { type: "string", default: "100" },
    out: { type: "string" },
  },
});
const num = (name) => {
  const v = Number(opts[name]);
  if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} must be a non-negative number, got ${opts[name]}`);
  return v;
};
const DURATION_MS = num("duration-s") * 1000;
const GOOD_CLIENTS = num("good-clients");
const CHANNEL_SIZE = num("channel-size");
const RATE = num("rate");
const FLOOD_RATE = num("flood-rate");
const FLOOD_BYTES = num("flood-bytes");
const SLOW_CLIENTS = num("slow-clients");
const CHURN_RATE = num("churn-rate");
const BAD_RATE = num("bad-rate");
const HALF_OPEN = num("half-open");
if (GOOD_CLIENTS < 2 || CHANNEL_SIZE < 2 || GOOD_CLIENTS % CHANNEL_SIZE !== 0) {
  throw new Error("--good-clients must be a multiple of --channel-size, both >= 2");
}

/** Warm-up: RSS may grow while caches and pools fill; after it, it must be flat. */
const WARMUP_MS = Math.min(60_000, DURATION_MS / 4);
const RSS_GROWTH_FACTOR = 1.2;
const RSS_SLACK_KB = 8 * 1024;
/** The server's limits in this run (written to its config file). */
const SEND_QUEUE_BYTES_MAX = 262_144;
const MAX_PAYLOAD_BYTES = 65_536;
const HTTP_HEAD_TIMEOUT_MS = 5_000;
const CONNECT_TIMEOUT_MS = 5_000;
const SHUTDOWN_DEADLINE_MS = 5_000;
/** How long a slow client holds still before checking that it was dropped. */
const SLOW_HOLD_MS = 15_000;
/** Bound on any single handshake or expected reaction of the server. */
const STEP_TIMEOUT_MS = 10_000;
/** Bound on the whole run beyond its duration (start-up, settling, shutdown). */
const OVERALL_SLACK_MS = 180_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Date.now();
const pick = (list) => list[Math.floor(Math.random() * list.length)];

// A run that hangs anyway is a failure, not a stuck CI job.
const hardStop = setTimeout(() => {
  console.error(`soak: still running ${OVERALL_SLACK_MS / 1000} s after its duration; aborting`);
  server?.child.kill("SIGKILL");
  process.exit(3);
}, DURATION_MS + OVERALL_SLACK_MS);
hardStop.unref();

// --- the server ------------------------------------------------------------------

const serverBin = process.env.RINGCAST_BIN
  ? resolve(process.env.RINGCAST_BIN)
  : resolve(repoRoot, "target/release/ringcast");
const artifacts = resolve(soakDir, "artifacts");
mkdirSync(artifacts, { recursive: true });
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const reportPath = opts.out ? resolve(opts.out) : join(artifacts, `soak-${stamp}.json`);
const serverLogPath = join(artifacts, `soak-${stamp}-server.log`);

let server;

async function startServer() {
  const configDir = join(tmpdir(), `ringcast-soak-${process.pid}`);
  mkdirSync(configDir, { recursive: true });
  const configPath = join(configDir, "soak.toml");
  writeFileSync(configPath, [
    "[server]",
    `send_queue_bytes_max = ${SEND_QUEUE_BYTES_MAX}`,
    `max_payload_bytes = ${MAX_PAYLOAD_BYTES}`,
    `http_head_timeout_ms = ${HTTP_HEAD_TIMEOUT_MS}`,
    `connect_timeout_ms = ${CONNECT_TIMEOUT_MS}`,
    "drain_window_ms = 1000",
    `shutdown_deadline_ms = ${SHUTDOWN_DEADLINE_MS}`,
    "",
  ].join("\n"));
  // Hex: a base64url token may start with "-", which the CLI would take for a flag.
  const masterToken = randomBytes(18).toString("hex");
  const args = ["--listen", "127.0.0.1:0", "--shards", "2", `--master-token=${masterToken}`, "--config", configPath];
  const log = createWriteStream(serverLogPath);
  log.write(`$ ${serverBin} ${args.join(" ")}\n`);
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" };
  delete env.RINGCAST_MASTER_TOKEN;
  const child = spawn(serverBin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  process.on("exit", () => child.kill("SIGKILL"));
  child.stderr.pipe(log);
  const exited = new Promise((r) => child.on("exit", (code, signal) => r({ code, signal, at: now() })));
  const listening = await new Promise((resolveStart, rejectStart) => {
    let out = "";
    const timer = setTimeout(() => rejectStart(new Error("no listening line within 15 s")), 15_000);
    child.on("error", (err) => rejectStart(new Error(`cannot start ${serverBin}: ${err.message}`)));
    child.on("exit", (code) => rejectStart(new Error(`server exited with ${code} during start-up; see ${serverLogPath}`)));
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = /ringcast listening on http:\/\/([0-9.]+):(\d+)(\/\S*) shards=(\d+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolveStart({ host: m[1], port: Number(m[2]), path: m[3] });
      }
    });
  });
  rmSync(configDir, { recursive: true, force: true });
  return { child, exited, masterToken, ...listening, url: `http://${listening.host}:${listening.port}` };
}

// --- RSS --------------------------------------------------------------------------

/** `{t_s, rss_kb, phase}` once a second, from the server's /proc status. */
const rssSamples = [];
/**
 * This process's own event-loop delay: when it stalls, its sockets are not
 * read and the server rightly sees slow consumers. Reported so a failure can
 * be told apart from a client that could not keep up.
 */
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
const loopDelayMaxMsPerSecond = [];
loopDelay.enable();
let phase = "start";
let loadStartedAt = 0;
function sampleRss() {
  try {
    const status = readFileSync(`/proc/${server.child.pid}/status`, "utf8");
    const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]);
    if (Number.isFinite(kb)) {
      rssSamples.push({ t_s: Math.round((now() - (loadStartedAt || now())) / 100) / 10, rss_kb: kb, phase });
      loopDelayMaxMsPerSecond.push(Math.round(loopDelay.max / 1e6));
      loopDelay.reset();
    }
  } catch {
    // The process is gone; the exit watcher reports that.
  }
}

// --- good clients -----------------------------------------------------------------

const good = [];
const goodFailures = { disconnects: [], foreign: 0, duplicatesOrOld: 0, gaps: 0, gapMessages: 0 };
const channelOfGood = (i) => `soak-good-${Math.floor(i / CHANNEL_SIZE)}`;
const BUSY_CHANNEL = channelOfGood(0);
const FLOODER = 0;

function openSocket(auth = {}, extra = {}) {
  return io(server.url, {
    path: server.path,
    transports: ["websocket"],
    auth,
    forceNew: true,
    reconnection: false,
    timeout: STEP_TIMEOUT_MS,
    ...extra,
  });
}

function waitConnect(socket) {
  return new Promise((resolveConnect, rejectConnect) => {
    const timer = setTimeout(() => rejectConnect(new Error("connect timed out")), STEP_TIMEOUT_MS + 1_000);
    socket.once("connect", () => {
      clearTimeout(timer);
      resolveConnect();
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      rejectConnect(err);
    });
  });
}

async function connectGood(i) {
  const socket = openSocket();
  const client = { i, channel: channelOfGood(i), socket, sent: 0, from: new Map(), received: 0, bytesReceived: 0 };
  socket.on("soak", (arg) => {
    client.received += 1;
    const { channel, message } = arg ?? {};
    if (channel !== client.channel || !message || typeof message.s !== "number") {
      goodFailures.foreign += 1;
      return;
    }
    if (message.p) client.bytesReceived += message.p.length;
    const st = client.from.get(message.s) ?? { next: 1, got: 0 };
    client.from.set(message.s, st);
    if (message.n === st.next) {
      st.next += 1;
      st.got += 1;
    } else if (message.n < st.next) {
      goodFailures.duplicatesOrOld += 1;
    } else {
      goodFailures.gaps += 1;
      goodFailures.gapMessages += message.n - st.next;
      st.next = message.n + 1;
      st.got += 1;
    }
  });
  socket.on("disconnect", (reason) => {
    if (!stoppingGood) {
      goodFailures.disconnects.push({
        client: i, shard: client.shard, reason, at_s: (now() - loadStartedAt) / 1000,
        // This process's worst event-loop stall in the current second so far.
        loop_delay_ms: Math.round(loopDelay.max / 1e6),
      });
    }
  });
  await waitConnect(socket);
  // Byte 0 of a socket id is the shard that owns the connection.
  client.shard = Buffer.from(socket.id, "base64url")[0];
  socket.emit("join", { channel: client.channel });
  return client;
}

let stoppingGood = false;
/** Publishing rounds skipped because this process stalled (the rate is kept, not caught up in a burst). */
const publishSkipped = { good_rounds: 0, flood: 0 };

/** Emits the next sequence-numbered message of `client` (with `pad` bytes of padding). */
function publish(client, pad) {
  client.sent += 1;
  const message = { s: client.i, n: client.sent };
  if (pad) message.p = pad;
  client.socket.emit("message", { channel: client.channel, eventName: "soak", message });
}

/** Messages each good client should have got: everything its channel's other members sent. */
function deliveryTotals() {
  let expected = 0;
  let got = 0;
  for (const c of good) {
    const base = Math.floor(c.i / CHANNEL_SIZE) * CHANNEL_SIZE;
    for (let j = base; j < base + CHANNEL_SIZE; j++) {
      if (j === c.i) continue;
      expected += good[j].sent;
      got += c.from.get(j)?.got ?? 0;
    }
  }
  return { expected, got };
}

async function masterMembers(master, channel) {
  return new Promise((resolveAck, rejectAck) => {
    master.timeout(STEP_TIMEOUT_MS).emit("get_members", { envId: "default", channel }, (err, members) => {
      if (err) rejectAck(new Error(`get_members ${channel}: no ack`));
      else resolveAck(members);
    });
  });
}

// --- slow clients -----------------------------------------------------------------

const slow = { started: 0, setupFailed: 0, dropped: 0, survived: 0, survivors: [], outcomes: {}, bufferedBytes: [] };

async function slowClientOnce() {
  slow.started += 1;
  const conn = new RawConnection(server.host, server.port, server.path);
  try {
    await conn.upgrade(STEP_TIMEOUT_MS);
    await conn.sioConnect(null, STEP_TIMEOUT_MS);
  } catch (err) {
    slow.setupFailed += 1;
    slow.lastSetupError = err.message;
    conn.destroy();
    return;
  }
  conn.autoPong = false;
  conn.recordMessages = false;
  conn.emit("join", { channel: BUSY_CHANNEL });
  conn.stopReading();
  const bytesAtPause = conn.bytesIn;
  const heldUntil = Math.min(now() + SLOW_HOLD_MS, endAt + 2_000);
  await sleep(Math.max(0, heldUntil - now()));
  // Read again: a dropped connection shows its end once the kernel buffer
  // is drained; one still open keeps streaming and is closed here.
  conn.resumeReading();
  const outcome = await Promise.race([conn.ended, sleep(5_000).then(() => null)]);
  if (outcome) {
    slow.dropped += 1;
    // What the kernel held for it (both socket buffers) when it was dropped.
    slow.bufferedBytes.push(conn.bytesIn - bytesAtPause);
    const key = outcome.how === "close-frame" ? `close-${outcome.code}` : outcome.how;
    slow.outcomes[key] = (slow.outcomes[key] ?? 0) + 1;
  } else {
    // Not dropped while it was not reading. Keep reading a while to tell
    // "never dropped" from "dropped only once it read again" (which would
    // mean the server's queue accounting, not the client, was at fault).
    const resumedAt = now();
    const late = await Promise.race([conn.ended, sleep(20_000).then(() => null)]);
    slow.survived += 1;
    slow.survivors.push({
      paused_at_s: Math.round((heldUntil - SLOW_HOLD_MS - loadStartedAt) / 100) / 10,
      bytes_while_paused: conn.bytesIn - bytesAtPause,
      after_resume: late ? { ended_after_ms: now() - resumedAt, ...late } : "still open after 20 s",
    });
    conn.destroy();
  }
}

async function slowLoop(slot) {
  // Stagger the slots so their drops spread out.
  await sleep(slot * 1_000);
  while (now() < endAt - SLOW_HOLD_MS) await slowClientOnce();
}

// --- churn ------------------------------------------------------------------------

const churn = {
  started: 0, connected: 0, failed: 0, failures: {}, byKind: {}, concurrentMax: 0,
};
let churnActive = 0;
const CHURN_CONCURRENT_MAX = 60;

async function churnOnce(kind) {
  churn.started += 1;
  churn.byKind[kind] = (churn.byKind[kind] ?? 0) + 1;
  churnActive += 1;
  churn.concurrentMax = Math.max(churn.concurrentMax, churnActive);
  const lifeMs = 200 + Math.random() * 1_800;
  // One churn client in four joins a good channel (its members see the
  // join and leave); the others join churn channels of their own.
  const channel = Math.random() < 0.25
    ? channelOfGood(CHANNEL_SIZE * (1 + Math.floor(Math.random() * (GOOD_CLIENTS / CHANNEL_SIZE - 1))))
    : `soak-churn-${Math.floor(Math.random() * 10)}`;
  try {
    if (kind === "sio-clean") {
      const socket = openSocket();
      try {
        await waitConnect(socket);
        churn.connected += 1;
        socket.emit("join", { channel });
        socket.emit("message", { channel, eventName: "churn", message: { hello: true } });
        await sleep(lifeMs);
      } finally {
        socket.disconnect();
      }
    } else {
      const conn = new RawConnection(server.host, server.port, server.path);
      try {
        await conn.upgrade(STEP_TIMEOUT_MS);
        await conn.sioConnect(null, STEP_TIMEOUT_MS);
        churn.connected += 1;
        conn.emit("join", { channel });
        await sleep(lifeMs);
      } finally {
        if (kind === "raw-reset") conn.destroy();
        else conn.end();
        // A FIN leaves the socket half-open on our side until the server
        // closes its half: bound that.
        await Promise.race([conn.ended, sleep(STEP_TIMEOUT_MS)]);
        conn.destroy();
      }
    }
  } catch (err) {
    churn.failed += 1;
    const key = `${kind}: ${err.message}`.slice(0, 120);
    churn.failures[key] = (churn.failures[key] ?? 0) + 1;
  } finally {
    churnActive -= 1;
  }
}

async function churnLoop() {
  if (CHURN_RATE <= 0) return;
  const kinds = ["sio-clean", "sio-clean", "raw-fin", "raw-reset"];
  const pending = new Set();
  for (let k = 0; now() < endAt; k++) {
    if (churnActive < CHURN_CONCURRENT_MAX) {
      const p = churnOnce(kinds[k % kinds.length]).finally(() => pending.delete(p));
      pending.add(p);
    }
    await sleep(1000 / CHURN_RATE);
  }
  await Promise.all(pending);
}

// --- bad clients ------------------------------------------------------------------

/**
 * Each kind of bad client: what it does once its connection is open, and
 * the outcome the README documents for it (`close-NNNN` is a WebSocket close
 * code; `http-NNN` an HTTP status; `closed` any end of the connection).
 */
const BAD_KINDS = {
  "unmasked-frame": { upgrade: true, sio: false, expect: ["close-1002"], act: (c) => c.sendText("40", { mask: false }) },
  "reserved-bits": { upgrade: true, sio: false, expect: ["close-1002"], act: (c) => c.sendText("40", { rsv: 4 }) },
  "unknown-opcode": { upgrade: true, sio: false, expect: ["close-1002"], act: (c) => c.write(encodeFrame(0x3, "40")) },
  "continuation-first": {
    upgrade: true, sio: false, expect: ["close-1002"], act: (c) => c.write(encodeFrame(OP.CONT, "40")),
  },
  "invalid-utf8": {
    upgrade: true, sio: false, expect: ["close-1007"],
    act: (c) => c.write(encodeFrame(OP.TEXT, Buffer.from([0x34, 0x32, 0xff, 0xfe]))),
  },
  "bad-engineio-packet": { upgrade: true, sio: false, expect: ["close-1002"], act: (c) => c.sendText("9garbage") },
  "bad-socketio-type": { upgrade: true, sio: true, expect: ["close-1002"], act: (c) => c.sendText("49[]") },
  "bad-socketio-json": { upgrade: true, sio: true, expect: ["close-1002"], act: (c) => c.sendText('42["join",{"channel":') },
  "non-object-join": { upgrade: true, sio: true, expect: ["close-1008"], act: (c) => c.emit("join", "lobby") },
  "huge-channel-name": {
    upgrade: true, sio: true, expect: ["close-1008"], act: (c) => c.emit("join", { channel: "c".repeat(10_000) }),
  },
  oversized: {
    upgrade: true, sio: true, expect: ["close-1009"],
    act: (c) => c.emit("message", { channel: "x", eventName: "big", message: "x".repeat(MAX_PAYLOAD_BYTES + 1_000) }),
  },
  "garbage-http": {
    upgrade: false, expect: ["http-400"],
    act: (c) => c.write(Buffer.concat([randomBytes(200).map((b) => (b === 13 || b === 10 ? 32 : b)), Buffer.from("\r\n\r\n")])),
  },
  "silent-after-upgrade": { upgrade: true, sio: false, expect: ["closed"], act: () => {} },
};

const bad = { started: 0, byKind: {} };
function badRecord(kind) {
  bad.byKind[kind] ??= { started: 0, expected: 0, unexpected: {}, notClosed: 0, setupFailed: 0 };
  return bad.byKind[kind];
}

async function badOnce(kind) {
  const spec = BAD_KINDS[kind];
  const rec = badRecord(kind);
  bad.started += 1;
  rec.started += 1;
  const conn = new RawConnection(server.host, server.port, server.path);
  try {
    if (spec.upgrade) {
      await conn.upgrade(STEP_TIMEOUT_MS);
      if (spec.sio) await conn.sioConnect(null, STEP_TIMEOUT_MS);
    } else {
      await conn.connected;
    }
  } catch (err) {
    rec.setupFailed += 1;
    rec.lastSetupError = err.message;
    conn.destroy();
    return;
  }
  spec.act(conn);
  const bound = kind === "silent-after-upgrade" ? CONNECT_TIMEOUT_MS + 5_000 : STEP_TIMEOUT_MS;
  const outcome = await Promise.race([conn.ended, sleep(bound).then(() => null)]);
  if (!outcome) {
    rec.notClosed += 1;
    conn.destroy();
    return;
  }
  const key = outcome.how === "close-frame" ? `close-${outcome.code}`
    : outcome.how === "http" ? `http-${outcome.status}` : outcome.how;
  if (spec.expect.includes(key) || spec.expect.includes("closed")) rec.expected += 1;
  else rec.unexpected[key] = (rec.unexpected[key] ?? 0) + 1;
}

async function badLoop() {
  if (BAD_RATE <= 0) return;
  const kinds = Object.keys(BAD_KINDS);
  const pending = new Set();
  for (let k = 0; now() < endAt; k++) {
    const p = badOnce(kinds[k % kinds.length]).finally(() => pending.delete(p));
    pending.add(p);
    await sleep(1000 / BAD_RATE);
  }
  await Promise.all(pending);
}

/** A standing pool of half-open HTTP requests (a slowloris): each must be cut at the head deadline. */
const halfOpen = { started: 0, closedByServer: 0, notClosed: 0, outcomes: {}, lifetimeMsMax: 0 };
async function halfOpenSlot(slot) {
  await sleep((slot * HTTP_HEAD_TIMEOUT_MS) / Math.max(1, HALF_OPEN));
  while (now() < endAt) {
    halfOpen.started += 1;
    const conn = new RawConnection(server.host, server.port, server.path);
    const opened = now();
    try {
      await conn.connected;
    } catch {
      halfOpen.outcomes["connect-failed"] = (halfOpen.outcomes["connect-failed"] ?? 0) + 1;
      await sleep(1_000);
      continue;
    }
    conn.write(`GET ${server.path}?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: web`);
    const outcome = await Promise.race([conn.ended, sleep(HTTP_HEAD_TIMEOUT_MS + 5_000).then(() => null)]);
    if (!outcome) {
      halfOpen.notClosed += 1;
      conn.destroy();
      continue;
    }
    halfOpen.closedByServer += 1;
    halfOpen.lifetimeMsMax = Math.max(halfOpen.lifetimeMsMax, now() - opened);
    const key = outcome.how === "http" ? `http-${outcome.status}` : outcome.how;
    halfOpen.outcomes[key] = (halfOpen.outcomes[key] ?? 0) + 1;
  }
}

// --- metrics ----------------------------------------------------------------------

async function scrapeMetrics() {
  const response = await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) });
  const text = await response.text();
  const disconnects = {};
  const totals = {};
  const gauges = {};
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-z_]+)(?:\{([^}]*)\})?\s+([0-9.eE+-]+)$/.exec(line);
    if (!m) continue;
    const [, name, labels = "", value] = m;
    const v = Number(value);
    if (name === "ringcast_disconnects_total") {
      const reason = /reason="([^"]*)"/.exec(labels)?.[1] ?? "?";
      disconnects[reason] = (disconnects[reason] ?? 0) + v;
    } else if (name.endsWith("_total")) {
      totals[name] = (totals[name] ?? 0) + v;
    } else {
      gauges[name] = (gauges[name] ?? 0) + v;
    }
  }
  return { status: response.status, disconnects, totals, gauges };
}

// --- the run ----------------------------------------------------------------------

let endAt = Infinity;

async function main() {
  const started = now();
  server = await startServer();
  let serverDied = null;
  server.exited.then((e) => {
    if (phase !== "shutdown") serverDied = e;
  });
  const rssTimer = setInterval(sampleRss, 1_000);
  sampleRss();
  console.log(`soak: ${serverBin} pid ${server.child.pid} on ${server.url}${server.path}; ` +
    `${DURATION_MS / 1000} s of load; report ${reportPath}`);

  // Good clients connect, join, and are all members before anyone publishes.
  const master = openSocket({ accessToken: server.masterToken });
  await waitConnect(master);
  for (let start = 0; start < GOOD_CLIENTS; start += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, GOOD_CLIENTS - start) }, (_, k) => connectGood(start + k)),
    );
    good.push(...batch);
  }
  for (let k = 0; k < GOOD_CLIENTS / CHANNEL_SIZE; k++) {
    const channel = channelOfGood(k * CHANNEL_SIZE);
    const want = good.slice(k * CHANNEL_SIZE, (k + 1) * CHANNEL_SIZE).map((c) => c.socket.id).sort();
    const deadline = now() + STEP_TIMEOUT_MS;
    for (;;) {
      const members = await masterMembers(master, channel);
      const ids = Array.isArray(members) ? members.map((m) => m.id).sort() : [];
      if (want.every((id) => ids.includes(id))) break;
      if (now() > deadline) throw new Error(`good clients of ${channel} not all members: ${JSON.stringify(ids)}`);
      await sleep(20);
    }
  }
  const setupMs = now() - started;

  phase = "load";
  loadStartedAt = now();
  endAt = loadStartedAt + DURATION_MS;
  console.log(`soak: ${GOOD_CLIENTS} good clients joined in ${setupMs} ms; load running`);

  // Publishing: every good client RATE times a second; the flooder also
  // FLOOD_RATE padded messages a second. Rounds are due by the clock (timers
  // run late under load); after a stall of this process at most 20 ms worth
  // is caught up and the rest skipped (counted), so the rate stays steady
  // instead of bursting.
  const pad = "p".repeat(FLOOD_BYTES);
  let goodRounds = 0;
  let floods = 0;
  const goodCatchUp = Math.max(1, Math.ceil((RATE * 20) / 1000));
  const floodCatchUp = Math.max(1, Math.ceil((FLOOD_RATE * 20) / 1000));
  const publishTimer = setInterval(() => {
    const elapsedMs = now() - loadStartedAt;
    let goodDue = Math.floor((elapsedMs * RATE) / 1000) - goodRounds;
    if (goodDue > goodCatchUp) {
      publishSkipped.good_rounds += goodDue - goodCatchUp;
      goodRounds += goodDue - goodCatchUp;
      goodDue = goodCatchUp;
    }
    for (let k = 0; k < goodDue; k++, goodRounds++) for (const c of good) if (c.socket.connected) publish(c, null);
    let floodDue = Math.floor((elapsedMs * FLOOD_RATE) / 1000) - floods;
    if (floodDue > floodCatchUp) {
      publishSkipped.flood += floodDue - floodCatchUp;
      floods += floodDue - floodCatchUp;
      floodDue = floodCatchUp;
    }
    for (let k = 0; k < floodDue; k++, floods++) if (good[FLOODER].socket.connected) publish(good[FLOODER], pad);
  }, 10);
  const progressTimer = setInterval(() => {
    const { expected, got } = deliveryTotals();
    const rss = rssSamples.at(-1)?.rss_kb;
    console.log(`soak: t=${Math.round((now() - loadStartedAt) / 1000)} s rss=${rss} kB ` +
      `delivered ${got}/${expected} churn=${churn.started} bad=${bad.started} slow dropped=${slow.dropped} ` +
      `half-open=${halfOpen.started}`);
  }, Math.min(60_000, Math.max(10_000, DURATION_MS / 10)));

  const loops = [
    churnLoop(),
    badLoop(),
    ...Array.from({ length: SLOW_CLIENTS }, (_, s) => slowLoop(s)),
    ...Array.from({ length: HALF_OPEN }, (_, s) => halfOpenSlot(s)),
  ];
  const warmupAt = loadStartedAt + WARMUP_MS;
  while (now() < endAt && !serverDied) {
    await sleep(Math.min(1_000, Math.max(0, endAt - now())));
    if (phase === "load" && now() >= warmupAt) phase = "steady";
  }

  // --- settle: stop publishing, let in-flight deliveries land ---
  clearInterval(publishTimer);
  clearInterval(progressTimer);
  sampleRss();
  phase = "settle";
  const settleDeadline = now() + 15_000;
  while (!serverDied && now() < settleDeadline) {
    const { expected, got } = deliveryTotals();
    if (got >= expected) break;
    await sleep(100);
  }
  const settleLoops = await Promise.race([Promise.all(loops).then(() => "done"), sleep(30_000).then(() => "timeout")]);
  stoppingGood = true;

  let metrics = null;
  if (!serverDied) {
    try {
      metrics = await scrapeMetrics();
    } catch (err) {
      metrics = { error: err.message };
    }
  }
  for (const c of good) c.socket.disconnect();
  master.disconnect();

  // --- shutdown: SIGTERM must end the server with 0 by its deadline ---
  phase = "shutdown";
  clearInterval(rssTimer);
  let shutdown = null;
  if (!serverDied) {
    const sigtermAt = now();
    server.child.kill("SIGTERM");
    const exit = await Promise.race([server.exited, sleep(SHUTDOWN_DEADLINE_MS + 5_000).then(() => null)]);
    if (!exit) server.child.kill("SIGKILL");
    shutdown = exit ? { code: exit.code, signal: exit.signal, ms: exit.at - sigtermAt } : { timedOut: true };
  }

  return buildReport({ setupMs, metrics, shutdown, serverDied, settleLoops });
}

function buildReport({ setupMs, metrics, shutdown, serverDied, settleLoops }) {
  const { expected, got } = deliveryTotals();
  const sent = good.reduce((s, c) => s + c.sent, 0);
  const loadSamples = rssSamples.filter((s) => s.phase === "load" || s.phase === "steady");
  const steady = rssSamples.filter((s) => s.phase === "steady");
  const first = rssSamples[0]?.rss_kb ?? null;
  const warmup = steady[0]?.rss_kb ?? null;
  const last = (steady.at(-1) ?? loadSamples.at(-1))?.rss_kb ?? null;
  const max = Math.max(...rssSamples.map((s) => s.rss_kb));
  const maxAfterWarmup = steady.length ? Math.max(...steady.map((s) => s.rss_kb)) : null;
  const rssLimit = warmup === null ? null : Math.round(warmup * RSS_GROWTH_FACTOR + RSS_SLACK_KB);
  const loss = expected - got;
  const badTotals = Object.values(bad.byKind).reduce((t, r) => ({
    unexpected: t.unexpected + Object.values(r.unexpected).reduce((a, b) => a + b, 0),
    notClosed: t.notClosed + r.notClosed,
    setupFailed: t.setupFailed + r.setupFailed,
  }), { unexpected: 0, notClosed: 0, setupFailed: 0 });

  const failures = [];
  if (serverDied) failures.push(`server died during the run: ${JSON.stringify(serverDied)}`);
  if (loss !== 0) failures.push(`good clients lost ${loss} of ${expected} messages`);
  if (goodFailures.duplicatesOrOld || goodFailures.gaps) {
    failures.push(`order violations: ${goodFailures.gaps} gaps, ${goodFailures.duplicatesOrOld} duplicates/out of order`);
  }
  if (goodFailures.foreign) failures.push(`${goodFailures.foreign} messages reached a good client outside their channel`);
  if (goodFailures.disconnects.length) {
    // A good client reads all the time: the server closing one as a slow
    // consumer (more slow_consumer disconnects than slow clients dropped)
    // means the server stalled, not the client (see this process's
    // event-loop delay: the kernel buffers ~4 MB before the server queues).
    const slowConsumers = metrics?.disconnects?.slow_consumer;
    const slowNote = slowConsumers === undefined ? ""
      : ` (server counted ${slowConsumers} slow_consumer disconnects for ${slow.dropped} slow clients dropped)`;
    failures.push(`${goodFailures.disconnects.length} good clients were disconnected${slowNote}: ` +
      JSON.stringify(goodFailures.disconnects.slice(0, 5)));
  }
  if (warmup === null || last === null) failures.push("RSS: too few samples");
  else if (last > rssLimit) failures.push(`RSS grew after warm-up: ${last} kB > ${rssLimit} kB (warm-up ${warmup} kB)`);
  if (slow.survived) failures.push(`${slow.survived} slow clients were not disconnected`);
  if (SLOW_CLIENTS > 0 && slow.dropped === 0) failures.push("no slow client was dropped");
  if (metrics?.disconnects && slow.dropped > (metrics.disconnects.slow_consumer ?? 0)) {
    failures.push(`${slow.dropped} slow clients dropped but only ${metrics.disconnects.slow_consumer ?? 0} ` +
      "slow_consumer disconnects counted");
  }
  if (badTotals.unexpected || badTotals.notClosed) {
    failures.push(`bad clients: ${badTotals.unexpected} unexpected outcomes, ${badTotals.notClosed} not closed`);
  }
  if (halfOpen.notClosed) failures.push(`${halfOpen.notClosed} half-open HTTP requests were not cut at the head deadline`);
  if (!metrics || metrics.error || metrics.status !== 200) failures.push(`GET /metrics failed: ${JSON.stringify(metrics)}`);
  if (!serverDied && !(shutdown && shutdown.code === 0 && shutdown.signal === null)) {
    failures.push(`server did not exit 0 on SIGTERM: ${JSON.stringify(shutdown)}`);
  }
  if (settleLoops !== "done") failures.push("load loops did not finish within 30 s of the end");

  const everyTenS = loadSamples.filter((s, k) => k % 10 === 0).map((s) => [s.t_s, s.rss_kb]);
  return {
    ok: failures.length === 0,
    failures,
    config: {
      duration_s: DURATION_MS / 1000, warmup_s: WARMUP_MS / 1000, shards: 2, good_clients: GOOD_CLIENTS,
      channel_size: CHANNEL_SIZE, rate_per_client: RATE, flood_rate: FLOOD_RATE, flood_bytes: FLOOD_BYTES,
      slow_clients: SLOW_CLIENTS, churn_rate: CHURN_RATE, bad_rate: BAD_RATE, half_open: HALF_OPEN,
      send_queue_bytes_max: SEND_QUEUE_BYTES_MAX, max_payload_bytes: MAX_PAYLOAD_BYTES,
    },
    setup_ms: setupMs,
    good: {
      sent,
      deliveries_expected: expected,
      deliveries_received: got,
      lost: loss,
      gaps: goodFailures.gaps,
      gap_messages: goodFailures.gapMessages,
      duplicates_or_out_of_order: goodFailures.duplicatesOrOld,
      foreign: goodFailures.foreign,
      disconnects: goodFailures.disconnects.length,
      flood_messages: good[FLOODER]?.sent ?? 0,
      publish_rate_per_s: Math.round(sent / (DURATION_MS / 1000)),
      publish_skipped: publishSkipped,
      busy_channel_shards: good.slice(0, CHANNEL_SIZE).map((c) => c.shard),
    },
    rss_kb: {
      first, after_warmup: warmup, max, max_after_warmup: maxAfterWarmup, last, limit: rssLimit,
      every_10_s: everyTenS,
    },
    soak_event_loop_delay_ms: {
      max: Math.max(0, ...loopDelayMaxMsPerSecond),
      seconds_over_100_ms: loopDelayMaxMsPerSecond.filter((ms) => ms > 100).length,
      worst_10: [...loopDelayMaxMsPerSecond].sort((x, y) => y - x).slice(0, 10),
    },
    disconnects_by_reason: metrics?.disconnects ?? null,
    metrics_totals: metrics?.totals ?? null,
    metrics_gauges_at_end: metrics?.gauges ?? null,
    churn,
    slow: (({ bufferedBytes, ...rest }) => {
      const sorted = [...bufferedBytes].sort((x, y) => x - y);
      return {
        ...rest,
        // Bytes a dropped slow client found in its kernel buffers: what got
        // past the server's queue before the drop.
        buffered_bytes: sorted.length
          ? { min: sorted[0], median: sorted[Math.floor(sorted.length / 2)], max: sorted.at(-1) }
          : null,
      };
    })(slow),
    bad,
    half_open: halfOpen,
    shutdown,
    server_log: serverLogPath,
    rss_samples: rssSamples,
  };
}

function summary(r) {
  const lines = [];
  lines.push(`soak ${r.ok ? "PASSED" : "FAILED"}: ${r.config.duration_s} s, ${r.config.good_clients} good clients ` +
    `x ${r.config.rate_per_client} msg/s + flood ${r.config.flood_rate} x ${r.config.flood_bytes} B/s, 2 shards`);
  lines.push(`  good clients: ${r.good.sent} sent (${r.good.publish_rate_per_s}/s), ` +
    `${r.good.deliveries_received}/${r.good.deliveries_expected} ` +
    `delivered, lost ${r.good.lost}, gaps ${r.good.gaps}, duplicates/out of order ${r.good.duplicates_or_out_of_order}, ` +
    `disconnected ${r.good.disconnects}`);
  const mb = (kb) => (kb === null ? "?" : `${(kb / 1024).toFixed(1)} MiB`);
  lines.push(`  RSS: first ${mb(r.rss_kb.first)}, after warm-up (${r.config.warmup_s} s) ${mb(r.rss_kb.after_warmup)}, ` +
    `max ${mb(r.rss_kb.max)}, last ${mb(r.rss_kb.last)} (limit ${mb(r.rss_kb.limit)})`);
  const reasons = Object.entries(r.disconnects_by_reason ?? {}).filter(([, v]) => v > 0)
    .map(([k, v]) => `${k}=${v}`).join(" ");
  lines.push(`  disconnects by reason (server): ${reasons || "none"}`);
  lines.push(`  this process's event-loop delay: max ${r.soak_event_loop_delay_ms.max} ms, ` +
    `${r.soak_event_loop_delay_ms.seconds_over_100_ms} s with a stall over 100 ms`);
  lines.push(`  churn: ${r.churn.started} started (${Object.entries(r.churn.byKind).map(([k, v]) => `${k}=${v}`).join(" ")}), ` +
    `${r.churn.connected} connected, ${r.churn.failed} failed`);
  lines.push(`  slow clients: ${r.slow.started} started, ${r.slow.dropped} dropped, ${r.slow.survived} survived, ` +
    `${r.slow.setupFailed} setup failures`);
  const badLine = Object.entries(r.bad.byKind).map(([k, v]) => {
    const extra = Object.keys(v.unexpected).length ? ` unexpected ${JSON.stringify(v.unexpected)}` : "";
    return `${k} ${v.expected}/${v.started}${v.notClosed ? ` notClosed=${v.notClosed}` : ""}${extra}`;
  }).join("; ");
  lines.push(`  bad clients (expected outcome/started): ${badLine}`);
  lines.push(`  half-open HTTP: ${r.half_open.started} started, ${r.half_open.closedByServer} cut by the server ` +
    `(${JSON.stringify(r.half_open.outcomes)}), ${r.half_open.notClosed} not cut`);
  lines.push(`  shutdown: ${JSON.stringify(r.shutdown)}`);
  for (const f of r.failures) lines.push(`  FAILURE: ${f}`);
  return lines.join("\n");
}

main().then((report) => {
  writeFileSync(reportPath, `${JSON.stringify(report, null, 2)}\n`);
  const { rss_samples: _samples, ...brief } = report;
  console.log(JSON.stringify(brief));
  console.log(summary(report));
  console.log(`soak: full report (with every RSS sample) in ${reportPath}`);
  process.exit(report.ok ? 0 : 1);
}, (err) => {
  console.error(`soak: aborted: ${err.stack ?? err}`);
  server?.child.kill("SIGKILL");
  process.exit(2);
});
