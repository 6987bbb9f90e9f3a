// Issue 4, the app backend's HTTP API on the server's port (real HTTP with
// fetch): POST /api/send, /api/broadcast, /api/members, /api/user-event and
// GET/PUT /api/environments/{id}, each with good and bad input (401 wrong or
// missing token, 400 bad JSON / missing field / reserved event name, 404
// unknown env or route, 405 wrong method, 413 body over the payload limit; all
// errors {error, code}); deliveries reach receivers on both shards. User
// events, over HTTP and over the master socket, reach every connection of the
// user in that environment (both shards) and nobody else.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  byId,
  closeAll,
  connect,
  connectMaster,
  connectOnShards,
  joinAll,
  quietly,
  shardOf,
  signSession,
  uniqueChannel,
  waitMembers,
} from "./helpers/client.mjs";
import { startServer } from "./helpers/server.mjs";
import { api, assertApiError, connectEventually, getEnvironment, getEnvironmentEventually, putEnvironment } from "./helpers/settings.mjs";

// fixtures/settings-api.toml
const DEFAULT_SECRET = "api-session-secret";
const OTHER_SECRET = "api-other-secret";
const MAX_PAYLOAD_BYTES = 4096;

let server;
let master;

before(async () => {
  server = await startServer({ config: "settings-api.toml",
    args: ["--max-payload-bytes", String(MAX_PAYLOAD_BYTES)] });
  master = await connectMaster(server);
});

after(async () => {
  master?.close();
  await server?.stop();
});

async function client(t, auth = {}) {
  const c = await connect(server, auth);
  t.after(() => c.close());
  return c;
}

/** Asserts a 200 `{"ok":true}` JSON response. */
function assertOk(response) {
  assert.equal(response.status, 200, `${response.status} ${response.text}`);
  assert.match(response.headers.get("content-type") ?? "", /application\/json/);
  assert.deepEqual(response.json, { ok: true });
}

const ROUTES = [
  ["POST", "/api/send", { envId: "default", channel: "c", eventName: "e", message: 1 }],
  ["POST", "/api/broadcast", { envId: "default", eventName: "e", message: 1 }],
  ["POST", "/api/members", { envId: "default", channel: "c" }],
  ["POST", "/api/user-event", { envId: "default", userId: "u", eventName: "user:signin", session: {}, user: {} }],
  ["GET", "/api/environments/default", undefined],
  ["PUT", "/api/environments/default", { session_secret: "hijacked", enabled: false }],
];

describe("authorization", () => {
  it("every route answers 401 {error, code} without a token, with a wrong token, or with another scheme", async () => {
    for (const [method, path, body] of ROUTES) {
      const tries = [
        { token: null },
        { token: "wrong-token" },
        { token: `${server.masterToken}x` },
        { token: server.masterToken.slice(0, -1) },
        { token: null, headers: { authorization: `Basic ${server.masterToken}` } },
        { token: null, headers: { authorization: server.masterToken } },
      ];
      for (const options of tries) {
        const response = await api(server, method, path, body, options);
        try {
          assertApiError(response, 401, "unauthorized");
        } catch (e) {
          throw new Error(`${method} ${path} with ${JSON.stringify(options)}: ${e.message}`);
        }
      }
    }
    // The refused PUTs changed nothing.
    const env = await getEnvironment(server, "default");
    assert.equal(env.session_secret, DEFAULT_SECRET);
    assert.equal(env.enabled, true);
  });

  it("an unknown /api route without a token is 401, with the token 404", async () => {
    assertApiError(await api(server, "GET", "/api/nope", undefined, { token: null }), 401, "unauthorized");
    assertApiError(await api(server, "GET", "/api/nope"), 404, "not_found");
    assertApiError(await api(server, "POST", "/api/", {}), 404, "not_found");
    assertApiError(await api(server, "POST", "/api/sendx", {}), 404, "not_found");
  });
});

describe("POST /api/send", () => {
  it("members of the channel on both shards get eventName with {channel, message}; others do not", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    assert.notEqual(shardOf(a.id), shardOf(b.id));
    const outsider = await client(t);
    const otherEnv = await client(t, { envId: "other" });
    const channel = uniqueChannel("api-send");
    await joinAll(master, channel, [a, b]);
    await joinAll(master, channel, [otherEnv], { envId: "other" });

    const message = { text: "hi", n: [1, 2, { deep: true }], unicode: "✓ \"q\"" };
    assertOk(await api(server, "POST", "/api/send", { envId: "default", channel, eventName: "from-api", message }));
    assert.deepEqual(await a.waitFor("from-api"), [{ channel, message }]);
    assert.deepEqual(await b.waitFor("from-api"), [{ channel, message }]);
    const [o, e, m] = await quietly([outsider, otherEnv, master], "from-api");
    assert.deepEqual([o, e, m], [[], [], []]);

    // Scalar and null messages pass through as JSON values.
    assertOk(await api(server, "POST", "/api/send", { envId: "default", channel, eventName: "scalar", message: 42 }));
    assertOk(await api(server, "POST", "/api/send", { envId: "default", channel, eventName: "scalar", message: null }));
    assert.deepEqual(await a.waitFor("scalar", { count: 2 }), [{ channel, message: null }]);
    assert.deepEqual(a.received("scalar")[0], [{ channel, message: 42 }]);
  });

  it("bad input: 400 bad JSON / missing or mistyped field / empty channel / reserved name, 404 unknown env, 405 GET", async (t) => {
    const listener = await client(t);
    const channel = uniqueChannel("api-send-bad");
    await joinAll(master, channel, [listener]);
    const good = { envId: "default", channel, eventName: "bad-send", message: "m" };

    assertApiError(await api(server, "POST", "/api/send", "{not json"), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/send", ""), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/send", []), 400, "bad_request");
    for (const field of ["envId", "channel", "eventName"]) {
      const body = { ...good };
      delete body[field];
      assertApiError(await api(server, "POST", "/api/send", body), 400, "bad_request");
    }
    assertApiError(await api(server, "POST", "/api/send", { ...good, channel: 7 }), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/send", { ...good, channel: "" }), 400, "invalid_channel");
    assertApiError(await api(server, "POST", "/api/send", { ...good, eventName: "disconnect" }), 400,
      "reserved_event_name");
    assertApiError(await api(server, "POST", "/api/send", { ...good, envId: "nope" }), 404, "no_environment_found");
    assertApiError(await api(server, "GET", "/api/send"), 405, "method_not_allowed");
    assertApiError(await api(server, "PUT", "/api/send", good), 405, "method_not_allowed");

    const [got] = await quietly([listener], "bad-send");
    assert.deepEqual(got, [], "no refused request delivered anything");
    const [gotReserved] = await quietly([listener], "disconnect");
    assert.deepEqual(gotReserved, []);
    assert.deepEqual(listener.disconnects, []);
  });
});

describe("POST /api/broadcast", () => {
  it("every connection of the environment on both shards gets {channel: null, message}; other envs do not", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const otherEnv = await client(t, { envId: "other" });
    const message = { all: true };
    assertOk(await api(server, "POST", "/api/broadcast", { envId: "default", eventName: "api-bc", message }));
    assert.deepEqual(await a.waitFor("api-bc"), [{ channel: null, message }]);
    assert.deepEqual(await b.waitFor("api-bc"), [{ channel: null, message }]);
    const [e, m] = await quietly([otherEnv, master], "api-bc");
    assert.deepEqual([e, m], [[], []]);

    assertOk(await api(server, "POST", "/api/broadcast", { envId: "other", eventName: "api-bc2", message: "o" }));
    assert.deepEqual(await otherEnv.waitFor("api-bc2"), [{ channel: null, message: "o" }]);
    const [a2, b2] = await quietly([a, b], "api-bc2");
    assert.deepEqual([a2, b2], [[], []]);
  });

  it("bad input: 400 bad JSON / missing field / reserved name, 404 unknown env, 405 GET", async (t) => {
    const listener = await client(t);
    const good = { envId: "default", eventName: "bad-bc", message: 1 };
    assertApiError(await api(server, "POST", "/api/broadcast", "[1,"), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/broadcast", { envId: "default", message: 1 }), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/broadcast", { eventName: "bad-bc" }), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/broadcast", { ...good, eventName: "connect" }), 400,
      "reserved_event_name");
    assertApiError(await api(server, "POST", "/api/broadcast", { ...good, envId: "nope" }), 404,
      "no_environment_found");
    assertApiError(await api(server, "GET", "/api/broadcast"), 405, "method_not_allowed");
    const [got] = await quietly([listener], "bad-bc");
    assert.deepEqual(got, []);
    assert.deepEqual(listener.disconnects, []);
  });
});

describe("POST /api/members", () => {
  it("lists [{id, data}] from both shards, Buffers as {type: \"Buffer\", data}, null without a profile", async (t) => {
    const [[a], [b]] = await connectOnShards(server, [1, 1]);
    t.after(() => closeAll(a, b));
    const c = await client(t);
    const channel = uniqueChannel("api-members");
    a.socket.emit("update", { data: { name: "a", avatar: Buffer.from([1, 2, 255]) } });
    b.socket.emit("update", { data: { name: "b", tags: ["x"] } });
    await joinAll(master, channel, [a, b, c]);
    // joinAll ensures membership; the profiles were set before the joins on the same connections.
    const response = await api(server, "POST", "/api/members", { envId: "default", channel });
    assert.equal(response.status, 200, response.text);
    assert.match(response.headers.get("content-type") ?? "", /application\/json/);
    assert.deepEqual(byId(response.json), byId([
      { id: a.id, data: { name: "a", avatar: { type: "Buffer", data: [1, 2, 255] } } },
      { id: b.id, data: { name: "b", tags: ["x"] } },
      { id: c.id, data: null },
    ]));

    const empty = await api(server, "POST", "/api/members", { envId: "default", channel: uniqueChannel("none") });
    assert.equal(empty.status, 200);
    assert.deepEqual(empty.json, []);
    // The same channel name in another environment is another channel.
    const other = await api(server, "POST", "/api/members", { envId: "other", channel });
    assert.deepEqual(other.json, []);

    // After a leave the list shrinks.
    a.socket.emit("leave", { channel });
    await waitMembers(master, channel, [b.id, c.id]);
    const after = await api(server, "POST", "/api/members", { envId: "default", channel });
    assert.deepEqual(after.json.map((m) => m.id).sort(), [b.id, c.id].sort());
  });

  it("bad input: 400 bad JSON / missing field, 404 unknown env, 405 GET", async () => {
    assertApiError(await api(server, "POST", "/api/members", "nope"), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/members", { envId: "default" }), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/members", { channel: "c" }), 400, "bad_request");
    assertApiError(await api(server, "POST", "/api/members", { envId: "nope", channel: "c" }), 404,
      "no_environment_found");
    assertApiError(await api(server, "GET", "/api/members"), 405, "method_not_allowed");
  });
});

describe("user events", () => {
  let u1a;
  let u1b;
  let bystanders;

  before(async () => {
    const user = "user-1";
    [[u1a], [u1b]] = await connectOnShards(server, [1, 1],
      { envId: "default", session: signSession(DEFAULT_SECRET, { sub: user }) });
    bystanders = {
      otherUser: await connect(server, { session: signSession(DEFAULT_SECRET, { sub: "user-2" }) }),
      sameIdOtherEnv: await connect(server, { envId: "other", session: signSession(OTHER_SECRET, { sub: user }) }),
      anonymous: await connect(server, {}),
      badSession: await connect(server, { session: signSession("wrong", { sub: user }) }),
    };
  });

  after(() => {
    closeAll(u1a, u1b, Object.values(bystanders ?? {}));
  });

  async function expectOnlyUser1(eventName, session, user) {
    assert.deepEqual(await u1a.waitFor(eventName), [eventName, session, user]);
    assert.deepEqual(await u1b.waitFor(eventName), [eventName, session, user]);
    const names = Object.keys(bystanders);
    const got = await quietly([...Object.values(bystanders), master], eventName);
    assert.deepEqual(Object.fromEntries(got.map((g, i) => [names[i] ?? "master", g])),
      Object.fromEntries([...names, "master"].map((n) => [n, []])), `only user-1 gets ${eventName}`);
  }

  it("the user's two connections sit on different shards", () => {
    assert.notEqual(shardOf(u1a.id), shardOf(u1b.id));
  });

  for (const eventName of ["user:signin", "user:signout", "user:pwdchange", "user:emailchange",
    "user:phonechange", "app:custom-event"]) {
    it(`POST /api/user-event ${eventName} reaches (eventName, session, user) at both connections only`, async () => {
      const session = { token: `tok-${eventName}`, expiresAt: 1700000000 };
      const user = { _id: "user-1", email: "one@example.com", event: eventName };
      assertOk(await api(server, "POST", "/api/user-event",
        { envId: "default", userId: "user-1", eventName, session, user }));
      await expectOnlyUser1(eventName, session, user);
    });
  }

  it("session and user may be omitted: they arrive as null", async () => {
    assertOk(await api(server, "POST", "/api/user-event",
      { envId: "default", userId: "user-1", eventName: "user:bare" }));
    await expectOnlyUser1("user:bare", null, null);
  });

  it("the master socket's user_event does the same", async () => {
    const session = { via: "socket" };
    const user = { _id: "user-1" };
    master.socket.emit("user_event", { envId: "default", userId: "user-1", eventName: "user:signout-socket",
      session, user });
    await expectOnlyUser1("user:signout-socket", session, user);
  });

  it("a user event for the same user id in another environment reaches only that environment", async () => {
    assertOk(await api(server, "POST", "/api/user-event",
      { envId: "other", userId: "user-1", eventName: "user:other-env", session: 1, user: 2 }));
    assert.deepEqual(await bystanders.sameIdOtherEnv.waitFor("user:other-env"), ["user:other-env", 1, 2]);
    const got = await quietly([u1a, u1b, bystanders.otherUser, bystanders.anonymous], "user:other-env");
    assert.deepEqual(got, [[], [], [], []]);
  });

  it("a user with no connection: 200 and nobody gets it", async () => {
    assertOk(await api(server, "POST", "/api/user-event",
      { envId: "default", userId: "nobody-here", eventName: "user:ghost", session: null, user: null }));
    const got = await quietly([u1a, u1b, ...Object.values(bystanders)], "user:ghost");
    assert.ok(got.every((g) => g.length === 0));
  });

  it("bad input: 400 bad JSON / missing or empty userId / missing eventName / reserved name, 404 unknown env, 405 GET",
    async () => {
      const good = { envId: "default", userId: "user-1", eventName: "user:bad", session: {}, user: {} };
      assertApiError(await api(server, "POST", "/api/user-event", "{"), 400, "bad_request");
      for (const field of ["envId", "userId", "eventName"]) {
        const body = { ...good };
        delete body[field];
        assertApiError(await api(server, "POST", "/api/user-event", body), 400, "bad_request");
      }
      assertApiError(await api(server, "POST", "/api/user-event", { ...good, userId: "" }), 400, "bad_request");
      assertApiError(await api(server, "POST", "/api/user-event", { ...good, eventName: "disconnect" }), 400,
        "reserved_event_name");
      assertApiError(await api(server, "POST", "/api/user-event", { ...good, envId: "nope" }), 404,
        "no_environment_found");
      assertApiError(await api(server, "GET", "/api/user-event"), 405, "method_not_allowed");
      const got = await quietly([u1a, u1b], "user:bad");
      assert.deepEqual(got, [[], []]);
      assert.deepEqual([u1a.disconnects, u1b.disconnects], [[], []]);
    });
});

describe("GET/PUT /api/environments/{id}", () => {
  it("GET returns the environment's settings", async () => {
    const env = await getEnvironment(server, "default");
    assert.equal(env.id, "default");
    assert.equal(env.enabled, true);
    assert.equal(env.suspended, false);
    assert.equal(env.echo_messages, false);
    assert.equal(env.api_key_required, false);
    assert.deepEqual(env.api_keys, []);
    assert.equal(env.session_required, false);
    assert.equal(env.session_secret, DEFAULT_SECRET);
    assert.deepEqual(env.rate_limits, []);
  });

  it("PUT without id creates an environment that GET returns and clients can use; PUT with the same id replaces it",
    async (t) => {
      const id = `api-created-${process.pid}`;
      const created = await putEnvironment(server, id, {
        echo_messages: true,
        api_key_required: true,
        api_keys: [{ key: "k1", expires_at: 4070908800, origins: ["*.example.com"], ips: ["127.0.0.0/8"] }],
        rate_limits: [{ limit: 100, window_s: 60, message: "slow down" }],
      });
      assert.equal(created.id, id);
      const got = await getEnvironmentEventually(server, id, created);
      assert.equal(got.echo_messages, true);
      assert.equal(got.api_keys[0].key, "k1");
      assert.equal(got.api_keys[0].allow_realtime, true);
      assert.deepEqual(got.api_keys[0].origins, ["*.example.com"]);
      assert.deepEqual(got.api_keys[0].ips, ["127.0.0.0/8"]);
      // Unix seconds come back as an RFC 3339 time.
      assert.equal(got.api_keys[0].expires_at, "2099-01-01T00:00:00Z");
      assert.deepEqual(got.rate_limits, [{ limit: 100, window_s: 60, message: "slow down" }]);

      const c = await connectEventually(server, { envId: id, apiKey: "k1" },
        { extraHeaders: { origin: "https://shop.example.com" } });
      t.after(() => c.close());
      // echo_messages = true is the default for clients that omit it.
      c.socket.emit("message", { channel: null, eventName: "self", message: 1 });
      assert.deepEqual(await c.waitFor("self"), [{ channel: null, message: 1 }]);

      const replaced = await putEnvironment(server, id, { id, echo_messages: false });
      await getEnvironmentEventually(server, id, replaced);
      assert.equal(replaced.api_key_required, false);
      assert.deepEqual(replaced.api_keys, []);
    });

  it("bad input: 400 id mismatch / bad JSON / not an object / unknown field / invalid values, 404 unknown GET, 405",
    async () => {
      const path = "/api/environments/default";
      const before = await getEnvironment(server, "default");
      assertApiError(await api(server, "PUT", path, { id: "other" }), 400, "bad_request");
      assertApiError(await api(server, "PUT", path, "{"), 400, "bad_request");
      assertApiError(await api(server, "PUT", path, [1]), 400, "bad_request");
      assertApiError(await api(server, "PUT", path, { enabled: "yes" }), 400, "bad_request");
      assertApiError(await api(server, "PUT", path, { no_such_field: 1 }), 400, "bad_request");
      assertApiError(await api(server, "PUT", path, { rate_limits: [{ limit: 0, window_s: 1 }] }), 400, "bad_request");
      assertApiError(await api(server, "PUT", path, { session_required: true }), 400, "bad_request");
      assertApiError(await api(server, "PUT", path, { api_keys: [{ key: "k", ips: ["300.0.0.1"] }] }), 400,
        "bad_request");
      assertApiError(await api(server, "PUT", path, { api_keys: [{ key: "k", expires_at: "tomorrow" }] }), 400,
        "bad_request");
      assertApiError(await api(server, "PUT", path, { api_keys: [{ key: "k", origins: "some" }] }), 400,
        "bad_request");
      // A value the server checks after parsing names its field.
      for (const [body, field] of [
        [{ rate_limits: [{ limit: 5, window_s: 1 }, { limit: 0, window_s: 1 }] }, "rate_limits[1].limit"],
        [{ session_required: true }, "session_secret"],
        [{ api_keys: [{ key: "k", ips: ["10.0.0.0/8", "300.0.0.1"] }] }, "api_keys[0].ips[1]"],
      ]) {
        const response = await api(server, "PUT", path, body);
        assertApiError(response, 400, "bad_request");
        assert.equal(response.json.field, field, response.text);
      }
      assert.deepEqual(await getEnvironment(server, "default"), before, "refused PUTs changed nothing");

      assertApiError(await api(server, "GET", "/api/environments/nope"), 404, "no_environment_found");
      assertApiError(await api(server, "DELETE", path), 405, "method_not_allowed");
      assertApiError(await api(server, "POST", path, {}), 405, "method_not_allowed");
    });
});

describe("payload limit", () => {
  it("a body over max_payload_bytes gets 413 payload_too_large; just under is accepted", async (t) => {
    const listener = await client(t);
    const channel = uniqueChannel("api-big");
    await joinAll(master, channel, [listener]);
    const over = { envId: "default", channel, eventName: "big", message: "x".repeat(MAX_PAYLOAD_BYTES) };
    assertApiError(await api(server, "POST", "/api/send", over), 413, "payload_too_large");
    const under = { envId: "default", channel, eventName: "big", message: "y".repeat(MAX_PAYLOAD_BYTES - 200) };
    assertOk(await api(server, "POST", "/api/send", under));
    const [arg] = await listener.waitFor("big");
    assert.equal(arg.message.length, MAX_PAYLOAD_BYTES - 200);
    assert.equal(listener.received("big").length, 1);
  });
});
