// TLS with the real socket.io-client: `https://` long-polling, `wss://`
// WebSocket and socket.io-client's default (long-polling, then the upgrade
// to WebSocket), against a server started with a self-signed certificate
// made here with the openssl command line tool (scripts/setup.sh installs
// it). The client trusts that certificate through `ca`, or skips
// verification with `rejectUnauthorized: false`; a client that trusts
// neither is refused by its own TLS stack. Every transport is exercised in
// this one file whatever RINGCAST_INTEROP_TRANSPORT says.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { SOCKET_ID_RE, WAIT_MS, closeAll, connect, connectError, uniqueChannel } from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";

let dir;
let ca;
let server;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "ringcast-interop-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
    "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
  ], { stdio: "ignore" });
  ca = readFileSync(cert);
  // One process, not a cluster behind the plain TCP proxy: the test is
  // about this listener.
  server = await startServer({ alone: true, args: ["--tls-cert", cert, "--tls-key", key] });
  assert.match(server.url, /^https:\/\//);
});

after(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** socket.io-client options for `transport` over TLS, trusting `ca`. */
function tlsOptions(transport, extra = {}) {
  const transports = {
    websocket: ["websocket"],
    polling: ["polling"],
    default: ["polling", "websocket"],
  }[transport];
  // Long-polling goes through a keep-alive https.Agent, as a browser keeps
  // its connections (its requests then often reach the other shard, which
  // hands the connection, TLS state and all, to the session's shard).
  const agent = transport === "websocket"
    ? undefined
    : new https.Agent({ keepAlive: true, ca, ...extra });
  return { transports, ca, agent, ...extra };
}

/** Resolves once `client` runs on WebSocket (after the upgrade). */
function upgraded(client) {
  const engine = client.socket.io.engine;
  if (engine.transport.name === "websocket") return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no upgrade within ${WAIT_MS} ms`)), WAIT_MS);
    engine.once("upgrade", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

describe("socket.io-client over TLS", () => {
  for (const transport of ["websocket", "polling", "default"]) {
    it(`${transport}: connects with the server's certificate as its CA and exchanges messages both ways`, async () => {
      const a = await connect(server, {}, tlsOptions(transport));
      const b = await connect(server, {}, tlsOptions("websocket"));
      try {
        assert.match(a.id, SOCKET_ID_RE);
        if (transport === "default") await upgraded(a);
        assert.equal(a.socket.io.engine.transport.name, transport === "polling" ? "polling" : "websocket");
        const channel = uniqueChannel("tls");
        a.socket.emit("join", { channel, echo: true });
        await a.waitFor("channel:join");
        b.socket.emit("join", { channel });
        const [joined] = await a.waitFor("channel:join", { count: 2 });
        assert.deepEqual(joined, { channel, message: { id: b.id, data: null } });
        // Text and binary, from the other client (over wss://) to this one.
        const big = "y".repeat(64 * 1024);
        b.socket.emit("message", { channel, eventName: "big", message: big });
        b.socket.emit("message", { channel, eventName: "bytes", message: Buffer.from([0, 1, 2, 255]) });
        const [got] = await a.waitFor("big");
        assert.deepEqual(got, { channel, message: big });
        const [bytes] = await a.waitFor("bytes");
        assert.deepEqual([...bytes.message], [0, 1, 2, 255]);
        // And back.
        a.socket.emit("message", { channel, eventName: "back", message: { n: 1 } });
        const [back] = await b.waitFor("back");
        assert.deepEqual(back, { channel, message: { n: 1 } });
      } finally {
        closeAll(a, b);
      }
    });
  }

  it("connects with rejectUnauthorized: false (no CA given)", async () => {
    const client = await connect(server, {}, { transports: ["websocket"], rejectUnauthorized: false });
    try {
      assert.match(client.id, SOCKET_ID_RE);
    } finally {
      closeAll(client);
    }
  });

  it("counts every handshake and refusal in /metrics (fetched over https)", async () => {
    const text = await new Promise((resolve, reject) => {
      https.get(`${server.url}/metrics`, { ca }, (res) => {
        let body = "";
        res.on("data", (chunk) => (body += chunk));
        res.on("end", () => resolve(body));
      }).on("error", reject);
    });
    const sum = (name) => text.split("\n")
      .filter((line) => line.startsWith(`${name}{`))
      .reduce((total, line) => total + Number(line.split(" ").pop()), 0);
    // Seven clients so far: two per transport test, one more without a CA;
    // long-polling clients may have opened more than one connection.
    assert.ok(sum("ringcast_tls_handshakes_total") >= 7, text);
    assert.equal(sum("ringcast_tls_plain_requests_total"), 0);
  });

  it("a client that does not trust the certificate cannot connect", async () => {
    const { err, id } = await connectError(server, {}, { transports: ["websocket"] });
    assert.equal(id, undefined);
    // ws reports the TLS stack's verdict on the certificate.
    const cause = err.description?.message ?? err.description?.error?.message ?? String(err.description);
    assert.match(cause, /self[- ]signed|certificate/i, `${err.message}: ${cause}`);
  });
});
