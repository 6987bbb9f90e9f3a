// Bounded waits and recorders for the client library tests: every wait has a
// deadline, and a client records everything it receives so a test can wait
// for an event that may already have arrived.
import { createHmac } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { createClient } from "ringcast-client";

/** Bound of any single wait for something expected. */
export const WAIT_MS = 5_000;
/**
 * How long a client must stay silent to count as "did not receive". Only
 * used after a later message from the same sender (or the same action's
 * positive deliveries) arrived, so the server has demonstrably processed it.
 */
export const QUIET_MS = 300;

/** Socket.IO ids: 20 chars of base64url (15 bytes), byte 0 = owning shard. */
export const SOCKET_ID_RE = /^[A-Za-z0-9_-]{20}$/;

export function shardOf(socketId) {
  return Buffer.from(socketId, "base64url")[0];
}

/** Polls `check` every 10 ms until it returns a truthy value; throws after `timeoutMs`. */
export async function waitFor(check, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
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
 * A ringcast-client client plus a log of what it saw: every event from the
 * server (onAny), connects, disconnect reasons, reconnect attempts, errors.
 */
export class Recorded {
  constructor(origin, options = {}) {
    this.client = createClient(origin, options);
    this.rt = this.client.realtime;
    this.events = [];
    this.connects = 0;
    this.disconnects = [];
    this.attempts = [];
    this.errors = [];
    this.rt.onAny((event, ...args) => this.events.push({ event, args }));
    this.rt.onConnect(() => {
      this.connects += 1;
    });
    this.rt.onDisconnect((reason) => this.disconnects.push(reason));
    this.rt.onReconnectAttempt((attempt) => this.attempts.push(attempt));
    this.rt.onError((err) => this.errors.push(err));
  }

  /** Args arrays of the events named `event` received so far. */
  received(event) {
    return this.events.filter((e) => e.event === event).map((e) => e.args);
  }

  /** First args of the `event` events, in order (the payload of most events). */
  payloads(event) {
    return this.received(event).map((args) => args[0]);
  }

  clear() {
    this.events = [];
  }

  async connected(timeoutMs = WAIT_MS) {
    await waitFor(() => this.rt.isConnected(), "a connection", timeoutMs);
    return this.rt.getSocketId();
  }

  /** Resolves with the first payload of `event` satisfying `match`. */
  async next(event, match = () => true, timeoutMs = WAIT_MS) {
    return waitFor(() => this.payloads(event).find(match), `event ${event}`, timeoutMs);
  }

  /** Resolves once `count` payloads of `event` have arrived; returns them all. */
  async count(event, count, timeoutMs = WAIT_MS) {
    await waitFor(() => this.payloads(event).length >= count,
      `${count} ${event} events (have ${this.payloads(event).length})`, timeoutMs);
    return this.payloads(event);
  }
}

/** Tracks every Recorded of a test file so `after` can close them all. */
export function clientPool() {
  const all = [];
  return {
    make(origin, options) {
      const c = new Recorded(origin, options);
      all.push(c);
      return c;
    },
    closeAll() {
      for (const c of all.splice(0)) c.rt.close();
    },
  };
}

/** Sorts a member list by id so lists compare independently of shard order. */
export function byId(members) {
  return [...members].sort((a, b) => (a.id < b.id ? -1 : 1));
}
