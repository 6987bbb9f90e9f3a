// Starts and stops real ringcast server processes for the interop tests.
//
// Each test file starts its own server(s) on 127.0.0.1:0 with `--shards 2` and
// a random master token, parses the port from the one
// `ringcast listening on http://IP:PORT/PATH shards=N` stdout line (https:// on
// a TLS listener), and kills
// the process when the file is done. The server's stderr (its logs) is kept in
// tests/interop/artifacts/ so a failing run can be diagnosed afterwards.
//
// With RINGCAST_INTEROP_CLUSTER=N (N >= 2) every "server" is a cluster: its
// own redis-server on a free loopback port (no persistence), N ringcast nodes
// joined through it, and a round-robin TCP proxy in front, so the sockets of
// one test are spread over the nodes. The returned object looks the same
// (`signal` goes to every node); a test about one process's own life (a
// fixed listen port for a restart) gets a single server (`alone`).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { basename, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const interopDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** Path of the server binary: env RINGCAST_BIN, else the workspace release build. */
export const serverBin = process.env.RINGCAST_BIN
  ? resolve(process.env.RINGCAST_BIN)
  : resolve(interopDir, "../../target/release/ringcast");

/** Absolute path of a file under tests/interop/fixtures/. */
export function fixture(name) {
  return resolve(interopDir, "fixtures", name);
}

const LISTENING_LINE =
  /^ringcast listening on ((https?):\/\/([0-9.]+):(\d+)(\/\S*)) shards=(\d+)\s*$/;
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

const running = new Set();
// Last resort when a test file crashes before its `after` hook: never leave a
// server process behind.
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

let serverCount = 0;

/**
 * Starts `ringcast` and resolves once it printed its listening line.
 *
 * @param {object} [options]
 * @param {number} [options.shards=2]
 * @param {string} [options.config] fixture file name (tests/interop/fixtures/...)
 * @param {string} [options.listen="127.0.0.1:0"] listen address (a fixed port, e.g. to restart
 *   a server in place)
 * @param {string[]} [options.args] extra CLI arguments
 * @returns {Promise<{url: string, origin: string, path: string, port: number,
 *   shards: number, masterToken: string, pid: number, signal: (name: string) => boolean,
 *   stop: () => Promise<void>,
 *   stderr: () => string, exited: Promise<{code: number|null, signal: string|null}>}>}
 */
export async function startServer(options = {}) {
  const nodes = Number(process.env.RINGCAST_INTEROP_CLUSTER ?? 0);
  if (nodes >= 2 && !options.alone && !options.listen) return startCluster(nodes, options);
  return startNode(options);
}

async function startNode(options = {}) {
  const shards = options.shards ?? 2;
  const masterToken = options.masterToken ?? randomBytes(18).toString("base64url");
  const args = [
    "--listen",
    options.listen ?? "127.0.0.1:0",
    "--shards",
    String(shards),
    // One argument with `=`: a base64url token may start with `-`, which
    // would otherwise be parsed as a flag (1 start in 64 failed that way).
    `--master-token=${masterToken}`,
  ];
  if (options.config) args.push("--config", fixture(options.config));
  args.push(...(options.args ?? []));

  const artifacts = resolve(interopDir, "artifacts");
  mkdirSync(artifacts, { recursive: true });
  const testFile = basename(process.argv[1] ?? "interop", ".mjs");
  serverCount += 1;
  const logPath = resolve(artifacts, `${testFile}-server${serverCount}.log`);
  const log = createWriteStream(logPath);
  log.write(`$ ${serverBin} ${args.join(" ")}\n`);

  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" };
  delete env.RINGCAST_MASTER_TOKEN;
  const child = spawn(serverBin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);

  // The tail of stderr, for error messages when startup fails.
  let stderrTail = "";
  child.stderr.on("data", (chunk) => {
    log.write(chunk);
    stderrTail = (stderrTail + chunk.toString()).slice(-8_000);
  });

  const exited = new Promise((resolveExit) => {
    child.on("exit", (code, signal) => {
      running.delete(child);
      resolveExit({ code, signal });
    });
  });

  const listening = await new Promise((resolveStart, rejectStart) => {
    let stdoutBuffer = "";
    let found = false;
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      rejectStart(
        new Error(`ringcast did not start (${why}); args: ${args.join(" ")}\n` +
          `stdout so far: ${JSON.stringify(stdoutBuffer.slice(-2_000))}\n` +
          `stderr tail:\n${stderrTail}`),
      );
    };
    const timer = setTimeout(() => fail(`no listening line within ${START_TIMEOUT_MS} ms`),
      START_TIMEOUT_MS);
    child.on("error", (err) => fail(`spawn error: ${err.message} (binary ${serverBin})`));
    child.on("exit", (code, signal) => {
      if (!found) fail(`exited early with code ${code} signal ${signal}`);
    });
    child.stdout.on("data", (chunk) => {
      log.write(chunk);
      if (found) return;
      stdoutBuffer += chunk.toString();
      for (const line of stdoutBuffer.split("\n")) {
        const m = LISTENING_LINE.exec(line);
        if (m) {
          found = true;
          clearTimeout(timer);
          resolveStart({
            href: m[1],
            scheme: m[2],
            host: m[3],
            port: Number(m[4]),
            path: m[5],
            shards: Number(m[6]),
          });
          return;
        }
      }
    });
  });

  // https:// when the server was started with --tls-cert/--tls-key.
  const origin = `${listening.scheme}://${listening.host}:${listening.port}`;
  return {
    url: origin,
    origin,
    href: listening.href,
    path: listening.path,
    port: listening.port,
    shards: listening.shards,
    masterToken,
    logPath,
    /** Process id of the server (e.g. to send it SIGHUP). */
    pid: child.pid,
    /** Sends `signal` (e.g. "SIGHUP") to the server process. */
    signal: (signal) => child.kill(signal),
    exited,
    stderr: () => stderrTail,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
      log.end();
    },
  };
}

/** A free TCP port on loopback (bound, read, released). */
async function freePort() {
  const probe = createServer();
  await new Promise((ok) => probe.listen(0, "127.0.0.1", ok));
  const { port } = probe.address();
  await new Promise((ok) => probe.close(ok));
  return port;
}

/** A redis-server on a free loopback port, without persistence. */
async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1",
    "--save", "", "--appendonly", "no"], { stdio: ["ignore", "ignore", "pipe"] });
  running.add(child);
  const exited = new Promise((ok) => child.on("exit", () => { running.delete(child); ok(); }));
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const up = await new Promise((ok) => {
      const socket = tcpConnect(port, "127.0.0.1");
      socket.once("connect", () => { socket.end("PING\r\n"); });
      socket.once("data", (d) => { socket.destroy(); ok(d.toString().startsWith("+PONG")); });
      socket.once("error", () => ok(false));
    });
    if (up) break;
    if (Date.now() > deadline) throw new Error(`redis-server did not start on port ${port}`);
    await new Promise((ok) => setTimeout(ok, 20));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * A TCP proxy on loopback handing each new connection to the next target,
 * except that a connection whose first request names an Engine.IO session
 * (`sid=` in its query: a long-polling request or the upgrade of a polling
 * session) goes to the node that opened that session, learned from the
 * handshake answers it relayed. This is the stickiness a load balancer must
 * give long-polling clients (as with socket.io: HAProxy `stick on
 * url_param(sid)`, or `balance source` / nginx `ip_hash`); WebSocket
 * clients need none.
 */
async function startProxy(targetPorts) {
  let next = 0;
  const sockets = new Set();
  /** Engine.IO sid -> the port of the node that opened the session. */
  const sessions = new Map();
  const proxy = createServer((client) => {
    client.once("readable", () => {
      const first = client.read() ?? Buffer.alloc(0);
      const requestLine = first.subarray(0, Math.max(0, first.indexOf("\r\n"))).toString("latin1");
      const sid = /[?&]sid=([A-Za-z0-9_-]+)/.exec(requestLine)?.[1];
      const port = (sid && sessions.get(sid)) ?? targetPorts[next++ % targetPorts.length];
      // From the client's own loopback address, so the node sees the client
      // IP the test chose (IP rules, rate limits per IP).
      const upstream = tcpConnect({ port, host: "127.0.0.1", localAddress: client.remoteAddress });
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.setNoDelay(true);
        s.on("close", () => sockets.delete(s));
        s.on("error", () => { client.destroy(); upstream.destroy(); });
      }
      // Learn the sessions this node opens from its handshake answers.
      upstream.on("data", (chunk) => {
        for (const m of chunk.toString("latin1").matchAll(/0\{"sid":"([A-Za-z0-9_-]+)"/g)) sessions.set(m[1], port);
      });
      if (first.length > 0) upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  });
  await new Promise((ok) => proxy.listen(0, "127.0.0.1", ok));
  return {
    port: proxy.address().port,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((ok) => proxy.close(ok));
    },
  };
}

/** `nodes` ringcast nodes on one Redis behind a round-robin, session-sticky proxy. */
async function startCluster(nodes, options) {
  const redis = await startRedis();
  const masterToken = randomBytes(18).toString("base64url");
  const members = [];
  try {
    for (let i = 0; i < nodes; i++) {
      const args = [...(options.args ?? []), "--redis", redis.url, "--node-id", `interop-${i}`];
      members.push(await startNode({ ...options, args, masterToken }));
    }
  } catch (e) {
    for (const m of members) await m.stop();
    await redis.stop();
    throw e;
  }
  // Every node has seen the others before the first client connects.
  await waitForNodes(members, nodes);
  const proxy = await startProxy(members.map((m) => m.port));
  const first = members[0];
  const origin = `http://127.0.0.1:${proxy.port}`;
  return {
    ...first,
    url: origin,
    origin,
    href: `${origin}${first.path}`,
    port: proxy.port,
    nodes: members,
    signal: (signal) => members.every((m) => m.signal(signal)),
    exited: Promise.all(members.map((m) => m.exited)).then((all) => all[0]),
    stderr: () => members.map((m) => m.stderr()).join("\n"),
    async stop() {
      await proxy.stop();
      for (const m of members) await m.stop();
      await redis.stop();
    },
  };
}

async function waitForNodes(members, nodes) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (const m of members) {
    for (;;) {
      const text = await fetch(`${m.origin}/metrics`).then((r) => r.text());
      if (new RegExp(`^ringcast_cluster_nodes ${nodes}$`, "m").test(text)) break;
      if (Date.now() > deadline) throw new Error(`node ${m.origin} never saw ${nodes} nodes`);
      await new Promise((ok) => setTimeout(ok, 20));
    }
  }
}
