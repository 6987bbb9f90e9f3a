// Real processes for the console test: a redis-server on a free loopback
// port (no persistence) and ringcast nodes joined through it, each on
// 127.0.0.1:0 with its port parsed from its one
// `ringcast listening on http://IP:PORT/PATH shards=N` stdout line (the
// approach of tests/interop/helpers/server.mjs). Logs go to
// tests/console/artifacts/; nothing is left running, even when a test
// crashes.
import { spawn } from "node:child_process";
import { createWriteStream, mkdirSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const artifactsDir = resolve(here, "artifacts");

/** env RINGCAST_BIN, else the workspace release build. */
export const serverBin = process.env.RINGCAST_BIN
  ? resolve(process.env.RINGCAST_BIN)
  : resolve(here, "../../target/release/ringcast");

const LISTENING_LINE = /^ringcast listening on http:\/\/([0-9.]+):(\d+)(\/\S*) shards=(\d+)\s*$/m;
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

async function freePort() {
  const probe = createServer();
  await new Promise((ok) => probe.listen(0, "127.0.0.1", ok));
  const { port } = probe.address();
  await new Promise((ok) => probe.close(ok));
  return port;
}

function ping(port) {
  return new Promise((ok) => {
    const socket = tcpConnect(port, "127.0.0.1");
    socket.once("connect", () => socket.end("PING\r\n"));
    socket.once("data", (d) => {
      socket.destroy();
      ok(d.toString().startsWith("+PONG"));
    });
    socket.once("error", () => ok(false));
  });
}

/** A redis-server on a free loopback port. */
export async function startRedis() {
  const port = await freePort();
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdio: ["ignore", "ignore", "pipe"] });
  running.add(child);
  const exited = new Promise((ok) => child.on("exit", () => {
    running.delete(child);
    ok();
  }));
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (!(await ping(port))) {
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
 * A ringcast node with `--shards 2` and `args`; resolves once it listens.
 * @returns {Promise<{origin: string, path: string, stop: () => Promise<void>}>}
 */
export async function startNode(name, args) {
  mkdirSync(artifactsDir, { recursive: true });
  const all = ["--listen", "127.0.0.1:0", "--shards", "2", ...args];
  const log = createWriteStream(resolve(artifactsDir, `${name}.log`));
  log.write(`$ ${serverBin} ${all.join(" ")}\n`);
  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" };
  delete env.RINGCAST_MASTER_TOKEN;
  delete env.RINGCAST_ADMIN_TOKEN;
  const child = spawn(serverBin, all, { env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
  let stderrTail = "";
  child.stderr.on("data", (chunk) => {
    log.write(chunk);
    stderrTail = (stderrTail + chunk).slice(-4_000);
  });
  const exited = new Promise((ok) => child.on("exit", () => {
    running.delete(child);
    ok();
  }));
  const listening = await new Promise((ok, fail) => {
    let stdout = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      fail(new Error(`${name} printed no listening line in ${START_TIMEOUT_MS} ms; stderr: ${stderrTail}`));
    }, START_TIMEOUT_MS);
    child.on("exit", (code) => {
      clearTimeout(timer);
      fail(new Error(`${name} exited with ${code}; stderr: ${stderrTail}`));
    });
    child.stdout.on("data", (chunk) => {
      log.write(chunk);
      stdout += chunk;
      const m = LISTENING_LINE.exec(stdout);
      if (m) {
        clearTimeout(timer);
        ok({ origin: `http://${m[1]}:${m[2]}`, path: m[3] });
      }
    });
  });
  return {
    ...listening,
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

/** Waits until every node's /health says it sees `count` nodes. */
export async function waitForNodes(nodes, count) {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (const node of nodes) {
    for (;;) {
      const health = await fetch(`${node.origin}/health`).then((r) => r.json());
      if (health.cluster?.up && health.cluster.nodes === count) break;
      if (Date.now() > deadline) throw new Error(`${node.origin} never saw ${count} nodes: ${JSON.stringify(health)}`);
      await new Promise((ok) => setTimeout(ok, 20));
    }
  }
}
