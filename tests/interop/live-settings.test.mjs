// Issue 4, settings changed while the server runs: through the admin API
// (PUT /api/environments/{id}) and by rewriting the config file and sending
// SIGHUP. An environment turned off or suspended disconnects its clients on
// every shard with "io server disconnect" (the server sends 41, so
// socket.io-client does not come back) and refuses new ones; turned on again
// it accepts. An API key removed, expired or stripped of allow_realtime
// disconnects exactly the connections that used it. Connected clients are
// held to the connect rules both ways (issue 14): requiring a key or a session
// disconnects the clients that would now be refused, and only those; removing
// a key that is no longer required disconnects no one. On SIGHUP the file is
// the source of truth (environments made through the API are dropped); a bad
// file is refused and the running settings stay.
import assert from "node:assert/strict";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import {
  closeAll,
  connect,
  connectMaster,
  connectOnShards,
  joinAll,
  shardOf,
  signSession,
  sleep,
  uniqueChannel,
} from "./helpers/client.mjs";
import { fixture, startServer } from "./helpers/server.mjs";
import {
  api,
  assertStaysConnected,
  connectEventually,
  expectRefused,
  getEnvironment,
  putEnvironment,
  until,
  waitDisconnect,
} from "./helpers/settings.mjs";

const SERVER_DISCONNECT = "io server disconnect";

let server;
let master;
let dir;
let configFile;
let baseConfig;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), "ringcast-live-"));
  configFile = join(dir, "live.toml");
  copyFileSync(fixture("settings-live.toml"), configFile);
  baseConfig = readFileSync(configFile, "utf8");
  server = await startServer({ args: ["--config", configFile] });
  master = await connectMaster(server);
});

after(async () => {
  master?.close();
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/**
 * Asserts a client was disconnected by the server ("io server disconnect")
 * and that socket.io-client will not reconnect it.
 */
async function expectKicked(client, label, timeoutMs = 5_000) {
  const reason = await waitDisconnect(client, timeoutMs);
  assert.equal(reason, SERVER_DISCONNECT, `${label}: disconnect reason`);
  assert.equal(client.socket.active, false, `${label}: socket.io-client gives up (no reconnect)`);
}

describe("environment switched off and on through the admin API", () => {
  it("enabled = false disconnects the clients on both shards (no reconnect) and refuses new ones; true accepts again",
    async (t) => {
      // reconnection: true, as an app has it: the 41 must stop the client from coming back.
      const [[a], [b]] = await connectOnShards(server, [1, 1], { envId: "toggle" }, { reconnection: true });
      t.after(() => closeAll(a, b));
      assert.notEqual(shardOf(a.id), shardOf(b.id));
      const bystander = await connect(server, { envId: "default" });
      t.after(() => bystander.close());
      const channel = uniqueChannel("toggle");
      await joinAll(master, channel, [a, b], { envId: "toggle" });

      const stored = await putEnvironment(server, "toggle", { enabled: false });
      assert.equal(stored.enabled, false);
      assert.equal((await getEnvironment(server, "toggle")).enabled, false);
      await expectKicked(a, "shard-a client");
      await expectKicked(b, "shard-b client");
      await expectRefused(server, { envId: "toggle" }, "realtime_not_allowed");
      // Still down a while later: no reconnect behind our back.
      await sleep(300);
      assert.equal(a.socket.connected || b.socket.connected, false);
      assert.deepEqual([a.disconnects, b.disconnects], [[SERVER_DISCONNECT], [SERVER_DISCONNECT]]);
      await assertStaysConnected(bystander, 0, "client of another environment");
      assert.deepEqual(master.disconnects, []);

      await putEnvironment(server, "toggle", { enabled: true });
      const again = await connectEventually(server, { envId: "toggle" });
      t.after(() => again.close());
      // The channel emptied when its members were kicked.
      const [members] = await master.emitWithAck("get_members", { envId: "toggle", channel });
      assert.deepEqual(members, []);
    });

  it("suspended = true disconnects and refuses with suspended_environment; false accepts again", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1], { envId: "suspend" });
    t.after(() => closeAll(a, b));
    await putEnvironment(server, "suspend", { suspended: true });
    await expectKicked(a, "shard-a client");
    await expectKicked(b, "shard-b client");
    await expectRefused(server, { envId: "suspend" }, "suspended_environment");
    await putEnvironment(server, "suspend", { suspended: false });
    const again = await connectEventually(server, { envId: "suspend" });
    t.after(() => again.close());
  });

  it("an environment created through the API accepts clients on both shards",
    async (t) => {
      const id = `created-${process.pid}`;
      await expectRefused(server, { envId: id }, "no_environment_found");
      await putEnvironment(server, id, { echo_messages: true });
      (await connectEventually(server, { envId: id })).close();
      const [[a], [b]] = await connectOnShards(server, [1, 1], () => ({ envId: id }));
      t.after(() => closeAll(a, b));
      const channel = uniqueChannel("created");
      await joinAll(master, channel, [a, b], { envId: id });
      a.socket.emit("message", { channel, eventName: "hello", message: 1 });
      // echo_messages = true: the sender hears itself too.
      assert.deepEqual(await a.waitFor("hello"), [{ channel, message: 1 }]);
      assert.deepEqual(await b.waitFor("hello"), [{ channel, message: 1 }]);
    });
});

describe("API keys changed through the admin API", () => {
  /** keyed's keys by name; each PUT sends all of them (a PUT replaces the environment). */
  const keys = {
    "k-remove": {},
    "k-norealtime": {},
    "k-expire-now": {},
    "k-expire-soon": {},
    "k-stays": {},
  };
  const putKeyed = () => putEnvironment(server, "keyed", {
    api_key_required: true,
    api_keys: Object.entries(keys).map(([key, rest]) => ({ key, ...rest })),
  });

  let clients;
  before(async () => {
    clients = {};
    for (const key of Object.keys(keys)) {
      const [[a], [b]] = await connectOnShards(server, [1, 1], { envId: "keyed", apiKey: key });
      clients[key] = [a, b];
    }
  });
  after(() => closeAll(Object.values(clients ?? {})));

  /** Asserts the clients of every key in `keyNames` are still connected. */
  function assertConnected(keyNames) {
    for (const key of keyNames) {
      for (const c of clients[key]) {
        assert.deepEqual(c.disconnects, [], `${key} client ${c.id} was disconnected`);
        assert.equal(c.socket.connected, true, `${key} client ${c.id}`);
      }
    }
  }

  it("a removed key disconnects its connections on both shards; the others stay; reconnecting gets invalid_api_key",
    async () => {
      const shards = clients["k-remove"].map((c) => shardOf(c.id));
      assert.notEqual(shards[0], shards[1]);
      delete keys["k-remove"];
      await putKeyed();
      for (const [i, c] of clients["k-remove"].entries()) await expectKicked(c, `k-remove on shard ${shards[i]}`);
      await expectRefused(server, { envId: "keyed", apiKey: "k-remove" }, "invalid_api_key");
      await sleep(200);
      assertConnected(["k-norealtime", "k-expire-now", "k-expire-soon", "k-stays"]);
    });

  it("a key losing allow_realtime disconnects its connections; reconnecting gets unauthorizez_api_key", async () => {
    keys["k-norealtime"] = { allow_realtime: false };
    await putKeyed();
    for (const c of clients["k-norealtime"]) await expectKicked(c, "k-norealtime");
    await expectRefused(server, { envId: "keyed", apiKey: "k-norealtime" }, "unauthorizez_api_key");
    await sleep(200);
    assertConnected(["k-expire-now", "k-expire-soon", "k-stays"]);
  });

  it("an expiry set in the past disconnects at once; reconnecting gets expired_api_key", async () => {
    keys["k-expire-now"] = { expires_at: "2021-06-01T00:00:00Z" };
    await putKeyed();
    for (const c of clients["k-expire-now"]) await expectKicked(c, "k-expire-now", 2_000);
    await expectRefused(server, { envId: "keyed", apiKey: "k-expire-now" }, "expired_api_key");
    assertConnected(["k-expire-soon", "k-stays"]);
  });

  it("a key expiring while its clients are connected disconnects them within about a second of the expiry",
    async () => {
      const expiresAtS = Math.floor(Date.now() / 1000) + 2;
      keys["k-expire-soon"] = { expires_at: expiresAtS };
      const stored = await putKeyed();
      assert.equal(stored.api_keys.find((k) => k.key === "k-expire-soon").expires_at,
        new Date(expiresAtS * 1000).toISOString().replace(".000Z", "Z"));
      // Still valid now: new connections with it are accepted until the expiry.
      const late = await connect(server, { envId: "keyed", apiKey: "k-expire-soon" });
      clients["k-expire-soon"].push(late);
      assertConnected(["k-expire-soon"]);

      const kicked = clients["k-expire-soon"].map(async (c) => {
        await expectKicked(c, "k-expire-soon", 6_000);
        return Date.now();
      });
      const times = await Promise.all(kicked);
      for (const at of times) {
        // Not before the expiry (small allowance for clock reads), and within ~1 s after it.
        assert.ok(at >= expiresAtS * 1000 - 100, `disconnected ${expiresAtS * 1000 - at} ms before the expiry`);
        assert.ok(at <= expiresAtS * 1000 + 2_000, `disconnected ${at - expiresAtS * 1000} ms after the expiry`);
      }
      await expectRefused(server, { envId: "keyed", apiKey: "k-expire-soon" }, "expired_api_key");
      assertConnected(["k-stays"]);
    });

  it("the untouched key's connections were never disconnected and still work", async () => {
    const [a, b] = clients["k-stays"];
    const channel = uniqueChannel("stays");
    await joinAll(master, channel, [a, b], { envId: "keyed" });
    a.socket.emit("message", { channel, eventName: "still", message: "here" });
    assert.deepEqual(await b.waitFor("still"), [{ channel, message: "here" }]);
  });
});

/**
 * Proves the server queued no disconnect for `client` up to now: a join of a
 * fresh channel with echo comes back (a `41` queued before it would have
 * arrived first and failed the wait).
 */
async function assertStillIn(client, label) {
  const channel = uniqueChannel("still-in");
  client.socket.emit("join", { channel, echo: true });
  await client.waitFor("channel:join", { match: (arg) => arg.channel === channel });
  assert.deepEqual(client.disconnects, [], `${label} was disconnected`);
}

describe("connected clients are held to the connect rules, both ways", () => {
  const secret = "rules-secret";
  const base = { session_secret: secret, api_keys: [{ key: "k-valid" }] };
  after(() => putEnvironment(server, "rules", base));

  it("requiring an API key disconnects the clients without one on both shards and keeps those with a valid one; "
    + "removing a key that is no longer required disconnects no one", async (t) => {
    const [[bare1], [bare2]] = await connectOnShards(server, [1, 1], { envId: "rules" });
    // Keys are not required yet, but these clients presented a valid one.
    const [[keyed1], [keyed2]] = await connectOnShards(server, [1, 1], { envId: "rules", apiKey: "k-valid" });
    t.after(() => closeAll(bare1, bare2, keyed1, keyed2));

    await putEnvironment(server, "rules", { ...base, api_key_required: true });
    await expectKicked(bare1, "keyless client (shard a)");
    await expectKicked(bare2, "keyless client (shard b)");
    await assertStillIn(keyed1, "client with a valid key (shard a)");
    await assertStillIn(keyed2, "client with a valid key (shard b)");
    await expectRefused(server, { envId: "rules" }, "missing_api_key");

    // Keys no longer required, and the key removed: the connect rules would
    // let these clients in, so they stay.
    await putEnvironment(server, "rules", { ...base, api_keys: [] });
    await assertStillIn(keyed1, "client whose key was removed while keys are not required (shard a)");
    await assertStillIn(keyed2, "client whose key was removed while keys are not required (shard b)");
  });

  it("requiring a session disconnects the clients without a valid one and keeps the signed-in ones; "
    + "a new secret then disconnects those", async (t) => {
    await putEnvironment(server, "rules", base);
    const session = signSession(secret, { sub: "rules-user" });
    const [[anon]] = await connectOnShards(server, [1, 0], { envId: "rules" });
    const [[], [forged]] = await connectOnShards(server, [0, 1],
      { envId: "rules", session: signSession("not-the-secret", { sub: "rules-user" }) });
    const [[signed1], [signed2]] = await connectOnShards(server, [1, 1], { envId: "rules", session });
    t.after(() => closeAll(anon, forged, signed1, signed2));

    await putEnvironment(server, "rules", { ...base, session_required: true });
    await expectKicked(anon, "client without a session");
    await expectKicked(forged, "client whose session did not verify");
    await assertStillIn(signed1, "signed-in client (shard a)");
    await assertStillIn(signed2, "signed-in client (shard b)");
    // Still in the user's room: user events reach both.
    master.socket.emit("user_event", { envId: "rules", userId: "rules-user", eventName: "user:signin",
      session: { s: 1 }, user: { id: "rules-user" } });
    for (const c of [signed1, signed2]) {
      assert.deepEqual(await c.waitFor("user:signin"), ["user:signin", { s: 1 }, { id: "rules-user" }]);
    }

    // Sessions signed with the old secret no longer verify.
    await putEnvironment(server, "rules", { ...base, session_required: true, session_secret: "rotated" });
    await expectKicked(signed1, "signed-in client after the secret changed (shard a)");
    await expectKicked(signed2, "signed-in client after the secret changed (shard b)");
    await expectRefused(server, { envId: "rules", session }, "invalid_session_token");
  });
});

describe("SIGHUP reloads the config file", () => {
  /** Rewrites the config file: the base fixture with `edit` applied, plus `extra` TOML. */
  function writeConfig({ hupEnabled = true, hupKeyRequired = false, extra = "" } = {}) {
    const hup = 'id = "hup"\nenabled = true';
    const hupRules = 'id = "hup-rules"\napi_key_required = false';
    assert.ok(baseConfig.includes(hup), "the fixture has the hup section");
    assert.ok(baseConfig.includes(hupRules), "the fixture has the hup-rules section");
    let text = baseConfig.replace(hup, `id = "hup"\nenabled = ${hupEnabled}`)
      .replace(hupRules, `id = "hup-rules"\napi_key_required = ${hupKeyRequired}`);
    text += extra;
    writeFileSync(configFile, text);
  }

  async function reload(check, what) {
    assert.equal(server.signal("SIGHUP"), true);
    await until(check, what, 5_000);
  }

  it("applies the file: a disabled environment's clients are disconnected, API-made environments are removed, new ones appear",
    async (t) => {
      const apiMade = `api-made-${process.pid}`;
      await putEnvironment(server, apiMade, {});
      const fromApi = await connectEventually(server, { envId: apiMade });
      const [[h1], [h2]] = await connectOnShards(server, [1, 1], { envId: "hup" });
      const bystander = await connect(server, { envId: "default" });
      t.after(() => closeAll(fromApi, h1, h2, bystander));

      writeConfig({ hupEnabled: false, extra: '\n[[environments]]\nid = "from-file"\necho_messages = true\n' });
      await reload(async () => (await api(server, "GET", "/api/environments/from-file")).status === 200,
        "from-file to appear after SIGHUP");
      await expectKicked(h1, "hup client (shard a)");
      await expectKicked(h2, "hup client (shard b)");
      await expectKicked(fromApi, "client of the environment made through the API");
      await expectRefused(server, { envId: "hup" }, "realtime_not_allowed");
      await expectRefused(server, { envId: apiMade }, "no_environment_found");
      assert.equal((await api(server, "GET", `/api/environments/${apiMade}`)).status, 404);
      const fromFile = await connectEventually(server, { envId: "from-file" });
      t.after(() => fromFile.close());
      assert.equal((await getEnvironment(server, "from-file")).echo_messages, true);
      // The file also reset what the API had changed: `keyed` has all its keys again.
      const keyed = await getEnvironment(server, "keyed");
      assert.deepEqual(keyed.api_keys.map((k) => k.key).sort(),
        ["k-expire-now", "k-expire-soon", "k-norealtime", "k-remove", "k-stays"]);
      await assertStaysConnected(bystander, 0, "client of an unchanged environment");
      assert.deepEqual(master.disconnects, []);
    });

  it("re-enabled in the file, the environment accepts connections again", async (t) => {
    writeConfig({ hupEnabled: true, extra: '\n[[environments]]\nid = "from-file"\necho_messages = true\n' });
    await reload(async () => (await getEnvironment(server, "hup")).enabled === true, "hup enabled after SIGHUP");
    const c = await connectEventually(server, { envId: "hup" });
    t.after(() => c.close());
  });

  it("a bad file is refused (logged) and the running settings and clients stay", async (t) => {
    const [[h1], [h2]] = await connectOnShards(server, [1, 1], { envId: "hup" });
    t.after(() => closeAll(h1, h2));
    const logged = () => (server.stderr().match(/SIGHUP reload refused/g) ?? []).length;
    const refusedBefore = logged();

    // Not TOML.
    writeFileSync(configFile, '[[environments]]\nid = "hup"\nenabled = false\nthis is not toml\n');
    await reload(() => logged() > refusedBefore, "the refusal in the server log");
    assert.match(server.stderr(), /live\.toml/, "the log names the file");
    // Valid TOML, invalid settings: the same environment twice.
    writeFileSync(configFile, '[[environments]]\nid = "hup"\nenabled = false\n[[environments]]\nid = "hup"\n');
    await reload(() => logged() > refusedBefore + 1, "the second refusal in the server log");
    // Missing file.
    rmSync(configFile);
    await reload(() => logged() > refusedBefore + 2, "the third refusal in the server log");

    await sleep(200);
    assert.deepEqual([h1.disconnects, h2.disconnects], [[], []], "hup clients stay connected");
    assert.equal((await getEnvironment(server, "hup")).enabled, true);
    assert.equal((await api(server, "GET", "/api/environments/from-file")).status, 200);
    const c = await connect(server, { envId: "hup" });
    t.after(() => c.close());

    // A good file afterwards is applied again.
    writeConfig({ hupEnabled: false });
    await reload(async () => (await api(server, "GET", "/api/environments/from-file")).status === 404,
      "from-file removed after the good SIGHUP");
    await expectKicked(h1, "hup client after the good reload");
    await expectKicked(h2, "hup client after the good reload");
    await expectKicked(c, "late hup client after the good reload");
  });

  it("a file that starts requiring an API key disconnects the keyless clients and keeps those with a valid key",
    async (t) => {
      const [[bare1], [bare2]] = await connectOnShards(server, [1, 1], { envId: "hup-rules" });
      const [[keyed1], [keyed2]] = await connectOnShards(server, [1, 1], { envId: "hup-rules", apiKey: "k-hup" });
      t.after(() => closeAll(bare1, bare2, keyed1, keyed2));
      writeConfig({ hupEnabled: false, hupKeyRequired: true });
      await reload(async () => (await getEnvironment(server, "hup-rules")).api_key_required === true,
        "hup-rules requiring a key after SIGHUP");
      await expectKicked(bare1, "keyless client (shard a)");
      await expectKicked(bare2, "keyless client (shard b)");
      await assertStillIn(keyed1, "client with a valid key (shard a)");
      await assertStillIn(keyed2, "client with a valid key (shard b)");
      await expectRefused(server, { envId: "hup-rules" }, "missing_api_key");
    });
});
