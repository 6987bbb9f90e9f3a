// Starts, restarts and stops real ringcast server processes for the client
// library tests (the same approach as tests/interop/helpers/server.mjs).
//
// A server starts on 127.0.0.1:0 and its port is parsed from its one
// `ringcast listening on http://IP:PORT/PATH shards=N` stdout line. restart()
// stops it and starts it again on the SAME port, which is what a client sees
// when a server is redeployed. Server stderr goes to clients/artifacts/.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, mkdirSync } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const repoRoot = resolve(packageDir, "../..");

export const artifactsDir = resolve(repoRoot, "clients/artifacts");

/** env RINGCAST_BIN, else the workspace release build. */
export const serverBin = process.env.RINGCAST_BIN
  ? resolve(process.env.RINGCAST_BIN)
  : resolve(repoRoot, "target/release/ringcast");

export function fixture(name) {
  return resolve(packageDir, "test/fixtures", name);
}

const LISTENING_LINE = /^ringcast listening on http:\/\/([0-9.]+):(\d+)(\/\S*) shards=(\d+)\s*$/m;
const START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 5_000;

const running = new Set();
// Never leave a server behind, even when a test file crashes.
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

let launches = 0;

/**
 * Starts ringcast with `--shards 2`, a random master token and the given
 * fixture config. Resolves once the server accepts connections.
 *
 * @param {{config?: string, shards?: number, args?: string[]}} [options]
 */
export async function startServer(options = {}) {
  const masterToken = randomBytes(18).toString("base64url");
  const baseArgs = [
    "--shards", String(options.shards ?? 2),
    `--master-token=${masterToken}`,
    ...(options.config ? ["--config", fixture(options.config)] : []),
    ...(options.args ?? []),
  ];
  let process_ = await launch(["--listen", "127.0.0.1:0", ...baseArgs]);
  const { host, port, path } = process_.listening;
  const server = {
    origin: `http://${host}:${port}`,
    host,
    port,
    path,
    masterToken,
    get logPath() {
      return process_.logPath;
    },
    /** Stops the server (SIGTERM, then SIGKILL after a bound). */
    async stop() {
      await process_.stop();
    },
    /** Starts it again on the same port (after stop(), or stopping it first). */
    async start() {
      await process_.stop();
      process_ = await launch(["--listen", `${host}:${port}`, ...baseArgs]);
    },
    async restart() {
      await server.start();
    },
  };
  return server;
}

async function launch(args) {
  mkdirSync(artifactsDir, { recursive: true });
  launches += 1;
  const testFile = basename(process.argv[1] ?? "client", ".mjs");
  const logPath = resolve(artifactsDir, `${testFile}-server${launches}.log`);
  const log = createWriteStream(logPath);
  log.write(`$ ${serverBin} ${args.join(" ")}\n`);

  const env = { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" };
  delete env.RINGCAST_MASTER_TOKEN;
  const child = spawn(serverBin, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  running.add(child);
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
    let stdout = "";
    let found = false;
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      rejectStart(new Error(`ringcast did not start (${why}); args: ${args.join(" ")}\n` +
        `stdout: ${JSON.stringify(stdout.slice(-2_000))}\nstderr tail:\n${stderrTail}`));
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
      stdout += chunk.toString();
      const m = LISTENING_LINE.exec(stdout);
      if (m) {
        found = true;
        clearTimeout(timer);
        resolveStart({ host: m[1], port: Number(m[2]), path: m[3] });
      }
    });
  });

  return {
    listening,
    logPath,
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
