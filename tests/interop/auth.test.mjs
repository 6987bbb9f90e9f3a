// Issue 4, connection checks: every refusal a client can get (as
// socket.io-client's connect_error with Agnost's {origin, code, message}
// data), in Agnost's order: environment, suspension, realtime switch, API key
// (presence, existence, allow_realtime, expiry, origin, IP), then session.
// Origins travel as the upgrade's Origin header; client IPs are the TCP peer
// (socket.io-client's `localAddress` picks 127.0.0.x) or, through the trusted
// proxy 127.0.0.1, the last untrusted X-Forwarded-For hop. Also: the example
// config file loads and its environments work, and a bad config file stops
// start-up naming the file and line.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import {
  TRANSPORT,
  closeAll,
  connect,
  connectMaster,
  connectOnShards,
  quietly,
  shardOf,
  signSession,
} from "./helpers/client.mjs";
import { serverBin, startServer } from "./helpers/server.mjs";
import { expectRefused } from "./helpers/settings.mjs";

// Secrets of fixtures/settings-auth.toml.
const SESSIONS_SECRET = "auth-session-secret";
const OPTIONAL_SECRET = "auth-optional-secret";
const KEYS_SESSIONS_SECRET = "auth-keys-sessions-secret";

let server;
let master;

before(async () => {
  server = await startServer({ config: "settings-auth.toml" });
  master = await connectMaster(server);
});

after(async () => {
  master?.close();
  await server?.stop();
});

/** Connects (must be accepted) and closes the socket when the test ends. */
async function accepted(t, auth, options = {}) {
  const c = await connect(server, auth, options);
  t.after(() => c.close());
  return c;
}

/** Connection options that make the request come from `ip` (a local address). */
const from = (ip) => ({ localAddress: ip });
/** Connection options that send an Origin header. */
const withOrigin = (origin, extra = {}) => ({ ...extra, extraHeaders: { ...(extra.extraHeaders ?? {}), origin } });
/** Connection options for a request relayed by the trusted proxy 127.0.0.1. */
const forwardedFor = (xff, extra = {}) => ({
  ...extra,
  localAddress: "127.0.0.1",
  extraHeaders: { ...(extra.extraHeaders ?? {}), "x-forwarded-for": xff },
});

/** An HS256 JWT with arbitrary header and claims (no defaults). */
function rawJwt(secret, header, claims) {
  const encode = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const head = `${encode(header)}.${encode(claims)}`;
  return `${head}.${createHmac("sha256", secret).update(head).digest("base64url")}`;
}

describe("environment checks", () => {
  it("an unknown envId gets no_environment_found", async () => {
    const err = await expectRefused(server, { envId: "no-such-env" }, "no_environment_found");
    assert.notEqual(err.message, "no_environment_found", "err.message is the title, the code is in err.data");
  });

  it("a client without envId joins environment `default`", async (t) => {
    const c = await accepted(t, {});
    assert.match(c.id, /^[A-Za-z0-9_-]{20}$/);
  });

  it("a suspended environment gets suspended_environment", async () => {
    await expectRefused(server, { envId: "suspended" }, "suspended_environment");
  });

  it("a disabled environment gets realtime_not_allowed", async () => {
    await expectRefused(server, { envId: "disabled" }, "realtime_not_allowed");
  });

  it("suspension is reported before the realtime switch", async () => {
    await expectRefused(server, { envId: "suspended-disabled" }, "suspended_environment");
  });

  it("the environment checks come before the API key and session checks", async () => {
    await expectRefused(server, { envId: "no-such-env", apiKey: "k-open", session: "x" }, "no_environment_found");
  });

  it("a wrong master accessToken gets invalid_access_token; the right one connects", async (t) => {
    await expectRefused(server, { accessToken: "not-the-token" }, "invalid_access_token");
    await expectRefused(server, { accessToken: "" }, "invalid_access_token");
    const m = await accepted(t, { accessToken: server.masterToken });
    assert.match(m.id, /^[A-Za-z0-9_-]{20}$/);
  });
});

describe("API key checks", () => {
  it("no apiKey (absent or empty) gets missing_api_key", async () => {
    await expectRefused(server, { envId: "keys" }, "missing_api_key");
    await expectRefused(server, { envId: "keys", apiKey: "" }, "missing_api_key");
  });

  it("an unknown key, or another environment's key, gets invalid_api_key", async () => {
    await expectRefused(server, { envId: "keys", apiKey: "k-nope" }, "invalid_api_key");
    await expectRefused(server, { envId: "keys", apiKey: "k-other-env" }, "invalid_api_key");
    await expectRefused(server, { envId: "keys-other", apiKey: "k-open" }, "invalid_api_key");
  });

  it("a key with allow_realtime = false gets unauthorizez_api_key (Agnost's spelling), before expiry", async () => {
    await expectRefused(server, { envId: "keys", apiKey: "k-no-realtime" }, "unauthorizez_api_key");
    await expectRefused(server, { envId: "keys", apiKey: "k-no-realtime-expired" }, "unauthorizez_api_key");
  });

  it("an expired key gets expired_api_key (RFC 3339 UTC, RFC 3339 with offset, Unix seconds)", async () => {
    for (const apiKey of ["k-expired-rfc3339", "k-expired-offset", "k-expired-unix"]) {
      await expectRefused(server, { envId: "keys", apiKey }, "expired_api_key");
    }
  });

  it("valid keys connect: no expiry, future expiry as RFC 3339 and as Unix seconds", async (t) => {
    for (const apiKey of ["k-open", "k-future-rfc3339", "k-future-unix"]) {
      const c = await accepted(t, { envId: "keys", apiKey });
      assert.match(c.id, /^[A-Za-z0-9_-]{20}$/, apiKey);
    }
    const other = await accepted(t, { envId: "keys-other", apiKey: "k-other-env" });
    assert.ok(other.id);
  });
});

describe("origin rules", () => {
  const key = { envId: "keys", apiKey: "k-origins" };

  it("a listed-origins key without an Origin header gets missing_request_origin", async () => {
    await expectRefused(server, key, "missing_request_origin");
  });

  it("an exact origin is allowed (sent as extraHeaders.origin and as the ws `origin` option)", async (t) => {
    await accepted(t, key, withOrigin("https://app.example.com"));
    // `origin` is an option of the `ws` package: WebSocket only.
    if (TRANSPORT === "websocket") await accepted(t, key, { origin: "https://app.example.com" });
  });

  it("a full origin in the rule compares the scheme and the host", async () => {
    await expectRefused(server, key, "domain_not_authorized", withOrigin("http://app.example.com"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://other.example.com"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://app.example.com.evil.io"));
  });

  it("*.example.org matches exactly one subdomain level, any scheme", async (t) => {
    await accepted(t, key, withOrigin("https://a.example.org"));
    await accepted(t, key, withOrigin("http://www.example.org"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://example.org"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://a.b.example.org"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://evilexample.org"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://a.example.org.evil.io"));
  });

  it("a plain host example.net matches that host only", async (t) => {
    await accepted(t, key, withOrigin("https://example.net"));
    await accepted(t, key, withOrigin("http://example.net"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://www.example.net"));
    await expectRefused(server, key, "domain_not_authorized", withOrigin("https://example.network"));
  });

  it("the refusal's details name the refused origin", async () => {
    const err = await expectRefused(server, key, "domain_not_authorized", withOrigin("https://nope.example.com"));
    assert.match(err.data.message, /nope\.example\.com/);
  });

  it("an \"all\" origin rule needs no Origin header", async (t) => {
    await accepted(t, { envId: "keys", apiKey: "k-open" });
    await accepted(t, { envId: "keys", apiKey: "k-open" }, withOrigin("https://anything.test"));
  });
});

describe("IP rules, client IP as the TCP peer", () => {
  const key = { envId: "keys", apiKey: "k-ips" };

  it("a single listed IP is allowed; an unlisted one gets ip_not_authorized naming it", async (t) => {
    await accepted(t, key, from("127.0.0.2"));
    const err = await expectRefused(server, key, "ip_not_authorized", from("127.0.0.3"));
    assert.match(err.data.message, /127\.0\.0\.3/);
  });

  it("an IPv4 CIDR range allows its addresses only", async (t) => {
    await accepted(t, key, from("127.0.1.1"));
    await accepted(t, key, from("127.0.1.254"));
    await expectRefused(server, key, "ip_not_authorized", from("127.0.2.1"));
  });

  it("X-Forwarded-For from an untrusted peer is ignored (no spoofing)", async (t) => {
    const spoof = (xff, ip) => ({ localAddress: ip, extraHeaders: { "x-forwarded-for": xff } });
    await expectRefused(server, key, "ip_not_authorized", spoof("203.0.113.7", "127.0.0.3"));
    await accepted(t, key, spoof("198.51.100.1", "127.0.0.2"));
  });

  it("an \"all\" IP rule accepts any address", async (t) => {
    await accepted(t, { envId: "keys", apiKey: "k-open" }, from("127.0.0.77"));
  });
});

describe("IP rules, client IP through the trusted proxy 127.0.0.1", () => {
  const key = { envId: "keys", apiKey: "k-ips" };

  it("the forwarded IPv4 address is checked against a CIDR range", async (t) => {
    await accepted(t, key, forwardedFor("203.0.113.7"));
    await expectRefused(server, key, "ip_not_authorized", forwardedFor("198.51.100.7"));
  });

  it("IPv6: a CIDR range and a single address (::1) via X-Forwarded-For", async (t) => {
    await accepted(t, key, forwardedFor("2001:db8::1"));
    await accepted(t, key, forwardedFor("2001:db8:ffff::42"));
    await accepted(t, key, forwardedFor("::1"));
    await expectRefused(server, key, "ip_not_authorized", forwardedFor("2001:db9::1"));
    await expectRefused(server, key, "ip_not_authorized", forwardedFor("::2"));
  });

  it("the client IP is the last hop that is not a trusted proxy", async (t) => {
    // Hops the client wrote itself (first) are not believed.
    await accepted(t, key, forwardedFor("198.51.100.1, 203.0.113.7"));
    await accepted(t, key, forwardedFor("203.0.113.7, 127.0.0.1"));
    await expectRefused(server, key, "ip_not_authorized", forwardedFor("203.0.113.7, 198.51.100.1"));
  });

  it("no usable X-Forwarded-For from the trusted proxy gets missing_client_IP", async () => {
    await expectRefused(server, key, "missing_client_IP", from("127.0.0.1"));
    await expectRefused(server, key, "missing_client_IP", forwardedFor("not-an-ip"));
    await expectRefused(server, key, "missing_client_IP", forwardedFor("127.0.0.1"));
  });

  it("a key with an \"all\" IP rule needs no client IP", async (t) => {
    await accepted(t, { envId: "keys", apiKey: "k-open" }, from("127.0.0.1"));
  });
});

describe("order of the origin and IP checks", () => {
  const key = { envId: "keys", apiKey: "k-both" };

  it("no origin and no client IP: missing_request_origin first", async () => {
    await expectRefused(server, key, "missing_request_origin", from("127.0.0.1"));
  });

  it("bad origin and bad IP: domain_not_authorized first", async () => {
    await expectRefused(server, key, "domain_not_authorized",
      withOrigin("https://evil.test", forwardedFor("198.51.100.1")));
  });

  it("good origin, then the IP: missing_client_IP, ip_not_authorized, or accepted", async (t) => {
    const origin = "https://app.example.com";
    await expectRefused(server, key, "missing_client_IP", withOrigin(origin, from("127.0.0.1")));
    await expectRefused(server, key, "ip_not_authorized", withOrigin(origin, forwardedFor("198.51.100.1")));
    await expectRefused(server, key, "ip_not_authorized", withOrigin(origin, from("127.0.0.2")));
    await accepted(t, key, withOrigin(origin, forwardedFor("203.0.113.200")));
  });
});

describe("session checks", () => {
  it("a required session that is missing gets missing_session_token", async () => {
    await expectRefused(server, { envId: "sessions" }, "missing_session_token");
  });

  it("a valid session connects", async (t) => {
    await accepted(t, { envId: "sessions", session: signSession(SESSIONS_SECRET, { sub: "user-1" }) });
  });

  it("expired, wrong signature, no sub, empty sub, alg none, garbage: invalid_session_token", async () => {
    const now = Math.floor(Date.now() / 1000);
    const bad = {
      expired: signSession(SESSIONS_SECRET, { sub: "user-1", exp: now - 5 }),
      "wrong signature": signSession("some-other-secret", { sub: "user-1" }),
      "no sub": signSession(SESSIONS_SECRET, { name: "no subject" }),
      "empty sub": signSession(SESSIONS_SECRET, { sub: "" }),
      "alg none": `${Buffer.from('{"alg":"none","typ":"JWT"}').toString("base64url")}.` +
        `${Buffer.from(JSON.stringify({ sub: "user-1" })).toString("base64url")}.`,
      "alg HS512 label": rawJwt(SESSIONS_SECRET, { alg: "HS512", typ: "JWT" }, { sub: "user-1" }),
      "tampered payload": (() => {
        const [h, , s] = signSession(SESSIONS_SECRET, { sub: "user-1" }).split(".");
        return `${h}.${Buffer.from(JSON.stringify({ sub: "admin" })).toString("base64url")}.${s}`;
      })(),
      garbage: "not.a.jwt",
      "two parts": "abc.def",
    };
    for (const [label, session] of Object.entries(bad)) {
      await expectRefused(server, { envId: "sessions", session }, "invalid_session_token").catch((e) => {
        throw new Error(`${label}: ${e.message}`);
      });
    }
  });

  it("a session with exp far ahead and no iat connects (only exp is required to be in the future)", async (t) => {
    const session = rawJwt(SESSIONS_SECRET, { alg: "HS256", typ: "JWT" },
      { sub: "user-2", exp: Math.floor(Date.now() / 1000) + 600 });
    await accepted(t, { envId: "sessions", session });
  });

  it("the API key checks come before the session checks", async (t) => {
    await expectRefused(server, { envId: "keys-sessions" }, "missing_api_key");
    await expectRefused(server, { envId: "keys-sessions", apiKey: "k-nope" }, "invalid_api_key");
    await expectRefused(server, { envId: "keys-sessions", apiKey: "k-ks" }, "missing_session_token");
    await expectRefused(server, { envId: "keys-sessions", apiKey: "k-ks",
      session: signSession("wrong", { sub: "u" }) }, "invalid_session_token");
    await accepted(t, { envId: "keys-sessions", apiKey: "k-ks",
      session: signSession(KEYS_SESSIONS_SECRET, { sub: "u" }) });
  });
});

describe("optional sessions (secret set, not required)", () => {
  it("a valid session puts sockets (on both shards) in the user's room; invalid or no session is accepted without one", async (t) => {
    const user = `opt-user-${process.pid}`;
    const good = signSession(OPTIONAL_SECRET, { sub: user });
    const [[a], [b]] = await connectOnShards(server, [1, 1], { envId: "optional-session", session: good });
    t.after(() => closeAll(a, b));
    assert.notEqual(shardOf(a.id), shardOf(b.id));
    const now = Math.floor(Date.now() / 1000);
    const ignored = [
      await accepted(t, { envId: "optional-session", session: signSession("wrong-secret", { sub: user }) }),
      await accepted(t, { envId: "optional-session", session: signSession(OPTIONAL_SECRET, { sub: user, exp: now - 5 }) }),
      await accepted(t, { envId: "optional-session", session: "garbage" }),
      await accepted(t, { envId: "optional-session" }),
    ];
    // The user's id as a session in an environment without sessions at all.
    const noSecretEnv = await accepted(t, { envId: "default", session: good });

    const session = { token: "s" };
    const profile = { id: user, email: "u@example.com" };
    master.socket.emit("user_event", { envId: "optional-session", userId: user, eventName: "user:signin",
      session, user: profile });
    assert.deepEqual(await a.waitFor("user:signin"), ["user:signin", session, profile]);
    assert.deepEqual(await b.waitFor("user:signin"), ["user:signin", session, profile]);
    const got = await quietly([...ignored, noSecretEnv], "user:signin");
    assert.deepEqual(got, ignored.map(() => []).concat([[]]));
  });
});

describe("the example config file (ringcast.example.toml)", () => {
  let example;
  const exampleFile = resolve(dirname(fileURLToPath(import.meta.url)), "../../ringcast.example.toml");

  before(async () => {
    // CLI flags override its [server] listen, shards and master token.
    example = await startServer({ args: ["--config", exampleFile] });
  });
  after(async () => {
    await example?.stop();
  });

  it("loads, and its environments work as documented", async (t) => {
    const d = await connect(example, {}, { localAddress: "127.0.0.2" });
    t.after(() => d.close());
    // `production`: key with origins and IPs (127.0.0.1 is a trusted proxy in the example), sessions required.
    const auth = { envId: "production", apiKey: "pk_live_example",
      session: signSession("another-long-random-secret", { sub: "u1" }) };
    const p = await connect(example, auth, withOrigin("https://shop.example.com", forwardedFor("203.0.113.9")));
    t.after(() => p.close());
    await expectRefused(example, { envId: "production" }, "missing_api_key");
    await expectRefused(example, { ...auth, session: undefined }, "missing_session_token",
      withOrigin("https://app.example.com", forwardedFor("203.0.113.9")));
    await expectRefused(example, auth, "ip_not_authorized",
      withOrigin("https://app.example.com", forwardedFor("198.51.100.9")));
    const server2 = await connect(example, { envId: "production", apiKey: "pk_server_side",
      session: signSession("another-long-random-secret", { sub: "u2" }) }, from("127.0.0.5"));
    t.after(() => server2.close());
  });
});

describe("a bad config file", () => {
  it("stops start-up with a non-zero exit naming the file, line and reason", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "ringcast-badcfg-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "bad.toml");
    writeFileSync(file, '[[environments]]\nid = "a"\nenabled = "yes please"\n');
    const child = spawn(serverBin, ["--listen", "127.0.0.1:0", "--shards", "2", "--master-token", "t",
      "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => { stdout += c; });
    child.stderr.on("data", (c) => { stderr += c; });
    const result = await new Promise((resolveExit, rejectExit) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        rejectExit(new Error(`ringcast with a bad config still running after 5 s; stdout ${stdout}`));
      }, 5_000);
      child.on("exit", (code, signal) => {
        clearTimeout(timer);
        resolveExit({ code, signal });
      });
    });
    assert.notEqual(result.code, 0, `exit ${JSON.stringify(result)}`);
    assert.doesNotMatch(stdout, /ringcast listening/);
    assert.ok(stderr.includes(file), `stderr names the file: ${stderr}`);
    assert.match(stderr, /bad\.toml:3\b/, `stderr names line 3: ${stderr}`);
  });

  it("an invalid value caught after parsing (bad IP rule) also stops start-up, naming the file and line", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), "ringcast-badcfg-"));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const file = join(dir, "bad-ip.toml");
    writeFileSync(file, '[[environments]]\nid = "a"\napi_key_required = true\n' +
      '[[environments.api_keys]]\nkey = "k"\nips = ["300.1.2.3"]\n');
    const child = spawn(serverBin, ["--listen", "127.0.0.1:0", "--shards", "2", "--master-token", "t",
      "--config", file], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (c) => { stderr += c; });
    child.stdout.resume();
    const code = await new Promise((resolveExit, rejectExit) => {
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        rejectExit(new Error("ringcast with a bad IP rule still running after 5 s"));
      }, 5_000);
      child.on("exit", (c) => {
        clearTimeout(timer);
        resolveExit(c);
      });
    });
    assert.notEqual(code, 0);
    assert.match(stderr, /300\.1\.2\.3/, `stderr names the bad entry: ${stderr}`);
    // The issue: "a bad file stops start-up naming the file, line and reason".
    assert.match(stderr, /bad-ip\.toml:\d+/, `stderr names the file and line: ${stderr}`);
  });
});
