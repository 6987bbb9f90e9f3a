// Client-side helpers: connect real socket.io-client v4 sockets the way the
// Agnost client library does, record everything they receive, and wait for
// events with a timeout (no wait in this suite is unbounded).
import { createHmac } from "node:crypto";
import http from "node:http";
import { io } from "socket.io-client";

/**
 * The transport every connection of the suite uses, from
 * RINGCAST_INTEROP_TRANSPORT: `websocket` (the default; WebSocket only, as
 * Agnost's client library connects first), `polling` (HTTP long-polling
 * only) or `default` (socket.io-client's own default: long-polling, then
 * the upgrade to WebSocket). scripts/test.sh runs the suite once for each.
 */
export const TRANSPORT = process.env.RINGCAST_INTEROP_TRANSPORT ?? "websocket";
if (!["websocket", "polling", "default"].includes(TRANSPORT)) {
  throw new Error(`RINGCAST_INTEROP_TRANSPORT must be websocket, polling or default, not ${TRANSPORT}`);
}

/**
 * The socket.io-client options that select the suite's transport. Long-polling
 * requests in Node go through an http.Agent: one per client that keeps its
 * connections alive, as a browser does (socket.io-client's default opens a
 * new connection per request), and where a test's `localAddress` (its client
 * IP) is set.
 */
export function transportOptions(ioOptions = {}) {
  const out = {};
  if (TRANSPORT === "websocket") out.transports = ["websocket"];
  if (TRANSPORT === "polling") out.transports = ["polling"];
  // A test that picks WebSocket itself needs no polling agent (and over
  // wss:// an http.Agent would be the wrong one).
  const polls = !ioOptions.transports || ioOptions.transports.includes("polling");
  if (TRANSPORT !== "websocket" && polls && !ioOptions.agent) {
    const localAddress = ioOptions.localAddress;
    out.agent = new http.Agent({ keepAlive: true, ...(localAddress ? { localAddress } : {}) });
  }
  return out;
}

/** Default bound of any single wait for an expected event. */
export const WAIT_MS = 5_000;
/**
 * How long a socket must stay silent to count as "did not receive". Only used
 * after the positive deliveries of the same action have arrived elsewhere, so
 * the server has demonstrably processed the action already.
 */
export const QUIET_MS = 250;

/** Socket.IO ids: 20 chars of base64url (15 bytes). */
export const SOCKET_ID_RE = /^[A-Za-z0-9_-]{20}$/;

/** The shard that owns a connection: byte 0 of its decoded socket id. */
export function shardOf(socketId) {
  const bytes = Buffer.from(socketId, "base64url");
  if (bytes.length !== 15) throw new Error(`socket id ${socketId} decodes to ${bytes.length} bytes`);
  return bytes[0];
}

/** HS256 JWT signed with node's crypto (no JWT library on purpose). */
export function signSession(secret, claims) {
  const now = Math.floor(Date.now() / 1000);
  const encode = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");
  const header = encode({ alg: "HS256", typ: "JWT" });
  const payload = encode({ iat: now, exp: now + 3600, ...claims });
  const signature = createHmac("sha256", secret).update(`${header}.${payload}`).digest("base64url");
  return `${header}.${payload}.${signature}`;
}

/**
 * Wraps a socket.io-client socket and records every event it receives
 * (`onAny`), so a test can wait for an event that may already have arrived and
 * can assert on everything a socket got.
 */
export class Client {
  constructor(socket) {
    this.socket = socket;
    /** @type {{event: string, args: any[]}[]} */
    this.events = [];
    this.waiters = [];
    /** Reasons of every disconnect this socket saw, in order. */
    this.disconnects = [];
    socket.onAny((event, ...args) => {
      this.events.push({ event, args });
      this.waiters = this.waiters.filter((w) => !w.check());
    });
    // A socket that drops while a test waits on it will not get the event:
    // fail that wait at once, with the reason, instead of at its timeout.
    socket.on("disconnect", (reason) => {
      this.disconnects.push(reason);
      const waiters = this.waiters;
      this.waiters = [];
      for (const w of waiters) w.abort(reason);
    });
  }

  get id() {
    return this.socket.id;
  }

  /** Events named `event` received so far (their args arrays). */
  received(event) {
    return this.events.filter((e) => e.event === event).map((e) => e.args);
  }

  /** Forgets everything recorded so far. */
  clear() {
    this.events = [];
  }

  /**
   * Resolves with the args of the `count`-th event named `event` (counting
   * events already recorded) that matches `match`; rejects after `timeoutMs`.
   */
  waitFor(event, { match = () => true, count = 1, timeoutMs = WAIT_MS } = {}) {
    const id = this.socket.id;
    return new Promise((resolvePromise, rejectPromise) => {
      const matching = () => this.received(event).filter((args) => match(...args));
      const waiter = {
        check: () => {
          const found = matching();
          if (found.length < count) return false;
          clearTimeout(waiter.timer);
          resolvePromise(found[count - 1]);
          return true;
        },
        abort: (reason) => {
          clearTimeout(waiter.timer);
          rejectPromise(new Error(
            `socket ${id} was disconnected (${reason}) while waiting for ${count} x '${event}', ` +
              `got ${matching().length}`,
          ));
        },
      };
      if (waiter.check()) return;
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        const got = this.events.map((e) => e.event).slice(-20);
        rejectPromise(new Error(
          `socket ${id} waited ${timeoutMs} ms for ${count} x '${event}', ` +
            `got ${matching().length}; last events: ${JSON.stringify(got)}`,
        ));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Emits and resolves with the ack's args; rejects after `timeoutMs` without an ack. */
  emitWithAck(event, payload, timeoutMs = WAIT_MS) {
    return new Promise((resolvePromise, rejectPromise) => {
      this.socket.timeout(timeoutMs).emit(event, payload, (err, ...args) => {
        if (err) rejectPromise(new Error(`no ack for '${event}' within ${timeoutMs} ms`));
        else resolvePromise(args);
      });
    });
  }

  close() {
    this.socket.disconnect();
  }
}

/**
 * Opens a socket the way the Agnost client library does (path of the server,
 * auth in the Socket.IO CONNECT packet; the suite's transport, see
 * TRANSPORT) and resolves once it is connected. Rejects on connect_error or
 * after `timeoutMs`.
 */
export async function connect(server, auth = {}, options = {}) {
  const { namespace = "", timeoutMs = WAIT_MS, ...ioOptions } = options;
  const socket = io(server.url + namespace, {
    path: server.path,
    ...transportOptions(ioOptions),
    auth,
    reconnection: false,
    forceNew: true,
    timeout: timeoutMs,
    ...ioOptions,
  });
  const client = new Client(socket);
  await new Promise((resolvePromise, rejectPromise) => {
    // Both listeners go once the first connect settles: a connect_error of a
    // later reconnection attempt must not disconnect the socket for good.
    const settle = () => {
      clearTimeout(timer);
      socket.off("connect", onConnect);
      socket.off("connect_error", onConnectError);
    };
    const timer = setTimeout(() => {
      settle();
      socket.disconnect();
      rejectPromise(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    const onConnect = () => {
      settle();
      resolvePromise();
    };
    const onConnectError = (err) => {
      settle();
      socket.disconnect();
      rejectPromise(Object.assign(new Error(`connect_error: ${err.message}`), { cause: err }));
    };
    socket.once("connect", onConnect);
    socket.once("connect_error", onConnectError);
  });
  return client;
}

/**
 * Resolves with the connect_error a connection attempt gets; rejects if it
 * connects instead or nothing happens within `timeoutMs`.
 */
export function connectError(server, auth = {}, options = {}) {
  const { namespace = "", timeoutMs = WAIT_MS, ...ioOptions } = options;
  const socket = io(server.url + namespace, {
    path: server.path,
    ...transportOptions(ioOptions),
    auth,
    reconnection: false,
    forceNew: true,
    timeout: timeoutMs,
    ...ioOptions,
  });
  return new Promise((resolvePromise, rejectPromise) => {
    const timer = setTimeout(() => {
      socket.disconnect();
      rejectPromise(new Error(`neither connect nor connect_error within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      const id = socket.id;
      socket.disconnect();
      rejectPromise(new Error(`expected connect_error, but connected as ${id}`));
    });
    socket.once("connect_error", (err) => {
      clearTimeout(timer);
      // Read before disconnect(): it is what the app sees in its error handler.
      const id = socket.id;
      const active = socket.active;
      socket.disconnect();
      resolvePromise({ err, id, active });
    });
  });
}

/** The master (app backend) connection. */
export function connectMaster(server, options = {}) {
  return connect(server, { accessToken: server.masterToken }, options);
}

/**
 * Connects `count` clients (each with `auth`, possibly a function of the
 * index) in batches of `batch` concurrent handshakes.
 */
export async function connectMany(server, count, auth = {}, { batch = 100, ...options } = {}) {
  const clients = [];
  for (let start = 0; start < count; start += batch) {
    const size = Math.min(batch, count - start);
    const made = await Promise.all(
      Array.from({ length: size }, (_, k) =>
        connect(server, typeof auth === "function" ? auth(start + k) : auth, options)),
    );
    clients.push(...made);
  }
  return clients;
}

/**
 * Connects clients until at least `perShard[s]` of them sit on each shard `s`
 * (the kernel spreads connections over the SO_REUSEPORT listeners, so this
 * takes a few tries), closes the extra ones, and returns
 * `byShard[s] = [clients...]`.
 */
export async function connectOnShards(server, perShard, auth = {}, options = {}) {
  const MAX_ATTEMPTS = 200;
  const byShard = perShard.map(() => []);
  const extra = [];
  const done = () => byShard.every((list, s) => list.length >= perShard[s]);
  for (let attempt = 0; attempt < MAX_ATTEMPTS && !done(); attempt++) {
    const client = await connect(server, typeof auth === "function" ? auth(attempt) : auth, options);
    const shard = shardOf(client.id);
    if (shard < byShard.length && byShard[shard].length < perShard[shard]) {
      byShard[shard].push(client);
    } else {
      extra.push(client);
    }
  }
  for (const client of extra) client.close();
  if (!done()) {
    for (const list of byShard) for (const client of list) client.close();
    throw new Error(
      `could not place clients on shards ${JSON.stringify(perShard)} in ${MAX_ATTEMPTS} connects; ` +
        `got ${JSON.stringify(byShard.map((l) => l.length))} (shard byte of ids wrong?)`,
    );
  }
  return byShard;
}

/** Resolves after `ms`. */
export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * Waits QUIET_MS and then returns the events named `event` that each client
 * received, to assert that they received none.
 */
export async function quietly(clients, event) {
  await sleep(QUIET_MS);
  return clients.map((c) => c.received(event));
}

/** Disconnects every client given (arrays are flattened). */
export function closeAll(...clients) {
  for (const c of clients.flat(Infinity)) if (c) c.close();
}

/** Sorts a member list by id so two lists compare with deepStrictEqual. */
export function byId(members) {
  return [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/**
 * Joins every client to `channel` (no echo) and waits until the master's
 * get_members lists all of them, so the joins are known to be done on every
 * shard before the test acts.
 */
export async function joinAll(master, channel, clients, { envId = "default", timeoutMs = 10_000 } = {}) {
  for (const c of clients) c.socket.emit("join", { channel });
  await waitMembers(master, channel, clients.map((c) => c.id), { envId, timeoutMs });
}

/**
 * Polls get_members until the member ids of `channel` are exactly `ids`
 * (any order); returns the last member list. Rejects after `timeoutMs`.
 */
export async function waitMembers(master, channel, ids, { envId = "default", timeoutMs = 10_000 } = {}) {
  const want = [...ids].sort();
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    const [members] = await master.emitWithAck("get_members", { envId, channel });
    last = members;
    const got = Array.isArray(members) ? members.map((m) => m.id).sort() : null;
    if (got && got.length === want.length && got.every((id, i) => id === want[i])) return members;
    if (Date.now() > deadline) {
      throw new Error(`members of ${envId}/${channel} did not become ${JSON.stringify(want)} ` +
        `within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
    }
    await sleep(20);
  }
}

/** A channel name unique to this test run. */
let channelCount = 0;
export function uniqueChannel(prefix = "ch") {
  channelCount += 1;
  return `${prefix}-${process.pid}-${channelCount}`;
}

/**
 * Turns binary values (Buffer / Uint8Array / ArrayBuffer) anywhere in `value`
 * into `{ $binary: hex }`, so payloads with attachments compare with
 * deepStrictEqual and a binary that arrived as a non-binary value does not.
 */
export function normalizeBinary(value) {
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString("hex") };
  if (ArrayBuffer.isView(value)) {
    return { $binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("hex") };
  }
  if (Array.isArray(value)) return value.map(normalizeBinary);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, normalizeBinary(v)]));
  }
  return value;
}
