// A minimal WebSocket + Engine.IO + Socket.IO client over a raw TCP socket,
// for the clients socket.io-client cannot play: one that stops reading, one
// that drops its connection without a goodbye, and ones that send what no
// correct client would (unmasked frames, reserved bits, bad packets). Every
// wait is bounded.
import { randomBytes } from "node:crypto";
import { connect as tcpConnect } from "node:net";

/** WebSocket opcodes used here. */
export const OP = { CONT: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa };

/**
 * Encodes one WebSocket frame. Client frames are masked unless `mask` is
 * false (which a server must refuse); `rsv` sets the reserved bits (0..7).
 */
export function encodeFrame(opcode, payload, { mask = true, fin = true, rsv = 0 } = {}) {
  const data = Buffer.isBuffer(payload) ? payload : Buffer.from(payload);
  const len = data.length;
  const lenBytes = len < 126 ? 0 : len < 65536 ? 2 : 8;
  const head = Buffer.alloc(2 + lenBytes + (mask ? 4 : 0));
  head[0] = (fin ? 0x80 : 0) | ((rsv & 7) << 4) | opcode;
  head[1] = (mask ? 0x80 : 0) | (len < 126 ? len : len < 65536 ? 126 : 127);
  if (lenBytes === 2) head.writeUInt16BE(len, 2);
  if (lenBytes === 8) head.writeBigUInt64BE(BigInt(len), 2);
  if (!mask) return Buffer.concat([head, data]);
  const key = randomBytes(4);
  key.copy(head, 2 + lenBytes);
  const masked = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) masked[i] = data[i] ^ key[i & 3];
  return Buffer.concat([head, masked]);
}

/** The upgrade request of the Socket.IO path (EIO=4, websocket transport). */
export function upgradeRequest(host, port, path) {
  return (
    `GET ${path}?EIO=4&transport=websocket HTTP/1.1\r\n` +
    `Host: ${host}:${port}\r\n` +
    "Upgrade: websocket\r\n" +
    "Connection: Upgrade\r\n" +
    `Sec-WebSocket-Key: ${randomBytes(16).toString("base64")}\r\n` +
    "Sec-WebSocket-Version: 13\r\n\r\n"
  );
}

/**
 * One raw TCP connection to the server, with a WebSocket frame parser for
 * what the server sends once upgraded.
 *
 * `ended` resolves (never rejects) when the connection is over, with how:
 * `{how: "close-frame", code}` when the server sent a WebSocket close (code
 * null if it had no body), `{how: "http", status}` when it answered the HTTP
 * request with an error status and closed, `{how: "eof"}`, `{how: "reset"}`
 * or `{how: "error", error}`.
 */
export class RawConnection {
  constructor(host, port, path) {
    this.host = host;
    this.port = port;
    this.path = path;
    this.socket = tcpConnect({ host, port });
    this.socket.setNoDelay(true);
    this.upgraded = false;
    this.head = Buffer.alloc(0);
    this.buffer = Buffer.alloc(0);
    this.httpStatus = null;
    this.closeCode = undefined;
    /** Text messages received, in order (Engine.IO packets). */
    this.messages = [];
    this.waiters = [];
    /** Answer Engine.IO pings ("2") with pongs ("3"), as a live client does. */
    this.autoPong = true;
    /** Keep received messages (off for clients that only drain what they get). */
    this.recordMessages = true;
    this.bytesIn = 0;
    this.ended = new Promise((resolveEnd) => {
      this.socket.on("error", (error) => {
        // The first error says how the connection ended (a later EPIPE of
        // a write after a reset does not).
        this.error ??= error;
      });
      this.socket.on("close", () => {
        let outcome;
        if (this.closeCode !== undefined) outcome = { how: "close-frame", code: this.closeCode };
        else if (this.httpStatus !== null && this.httpStatus !== 101) outcome = { how: "http", status: this.httpStatus };
        else if (this.error?.code === "ECONNRESET") outcome = { how: "reset" };
        else if (this.error) outcome = { how: "error", error: this.error.code ?? this.error.message };
        else outcome = { how: "eof" };
        this.outcome = outcome;
        for (const w of this.waiters.splice(0)) w.fail(new Error(`connection ended (${JSON.stringify(outcome)})`));
        resolveEnd(outcome);
      });
    });
    this.connected = new Promise((resolveConnect, rejectConnect) => {
      this.socket.once("connect", resolveConnect);
      this.socket.once("error", rejectConnect);
    });
    // Failing to connect also ends the connection (`ended`); callers that
    // never await `connected` must not see an unhandled rejection.
    this.connected.catch(() => {});
    this.socket.on("data", (chunk) => this.onData(chunk));
  }

  onData(chunk) {
    this.bytesIn += chunk.length;
    if (!this.upgraded) {
      this.head = Buffer.concat([this.head, chunk]);
      const end = this.head.indexOf("\r\n\r\n");
      if (end < 0) {
        // An error response may come without an upgrade; record its status.
        const m = /^HTTP\/1\.1 (\d{3})/.exec(this.head.toString("latin1"));
        if (m) this.httpStatus = Number(m[1]);
        return;
      }
      const m = /^HTTP\/1\.1 (\d{3})/.exec(this.head.toString("latin1"));
      this.httpStatus = m ? Number(m[1]) : 0;
      if (this.httpStatus !== 101) return;
      this.upgraded = true;
      chunk = this.head.subarray(end + 4);
      this.head = Buffer.alloc(0);
      this.wake();
    }
    if (this.closeCode !== undefined) return;
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    for (;;) {
      if (this.buffer.length < 2) return;
      const opcode = this.buffer[0] & 0x0f;
      let len = this.buffer[1] & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (this.buffer.length < 4) return;
        len = this.buffer.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (this.buffer.length < 10) return;
        len = Number(this.buffer.readBigUInt64BE(2));
        offset = 10;
      }
      if (this.buffer.length < offset + len) return;
      const payload = this.buffer.subarray(offset, offset + len);
      this.buffer = this.buffer.subarray(offset + len);
      if (opcode === OP.CLOSE) {
        this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : null;
        return;
      }
      if (opcode === OP.TEXT) {
        const text = payload.toString("utf8");
        if (this.autoPong && text === "2") this.sendText("3");
        if (this.recordMessages) {
          this.messages.push(text);
          this.wake();
        }
      }
    }
  }

  wake() {
    this.waiters = this.waiters.filter((w) => !w.check());
  }

  /** Resolves once `check()` is true (re-checked on every message); rejects after `timeoutMs`. */
  waitUntil(check, what, timeoutMs) {
    return new Promise((resolveWait, rejectWait) => {
      const waiter = {
        check: () => {
          const value = check();
          if (!value) return false;
          clearTimeout(waiter.timer);
          resolveWait(value);
          return true;
        },
        fail: (err) => {
          clearTimeout(waiter.timer);
          rejectWait(err);
        },
      };
      if (waiter.check()) return;
      if (this.outcome) {
        rejectWait(new Error(`connection ended (${JSON.stringify(this.outcome)}) before ${what}`));
        return;
      }
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        rejectWait(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  write(data) {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  sendText(text, options) {
    this.write(encodeFrame(OP.TEXT, Buffer.from(text), options));
  }

  /**
   * The WebSocket upgrade and the Engine.IO open packet. Resolves with the
   * open packet's JSON.
   */
  async upgrade(timeoutMs) {
    await this.connected;
    this.write(upgradeRequest(this.host, this.port, this.path));
    await this.waitUntil(() => this.upgraded, "101 upgrade", timeoutMs);
    const open = await this.waitUntil(() => this.messages.find((m) => m.startsWith("0")), "Engine.IO open", timeoutMs);
    return JSON.parse(open.slice(1));
  }

  /** The Socket.IO CONNECT of namespace `/`; resolves with the socket id. */
  async sioConnect(auth, timeoutMs) {
    this.sendText(auth ? `40${JSON.stringify(auth)}` : "40");
    const reply = await this.waitUntil(() => this.messages.find((m) => m.startsWith("40") || m.startsWith("44")),
      "Socket.IO connect reply", timeoutMs);
    if (!reply.startsWith("40")) throw new Error(`Socket.IO connect refused: ${reply}`);
    return JSON.parse(reply.slice(2)).sid;
  }

  /** Emits a Socket.IO event (`42[...]`). */
  emit(event, ...args) {
    this.sendText(`42${JSON.stringify([event, ...args])}`);
  }

  /** Stops reading: the kernel buffers fill and the server's queue grows. */
  stopReading() {
    this.socket.pause();
  }

  /** Reads (and discards) again. */
  resumeReading() {
    this.socket.resume();
  }

  /** Drops the connection at once (RST), without a WebSocket or Engine.IO goodbye. */
  destroy() {
    this.socket.resetAndDestroy();
  }

  /** Closes the write half (FIN) without a WebSocket close. */
  end() {
    this.socket.end();
  }
}
