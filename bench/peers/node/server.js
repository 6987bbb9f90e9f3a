// Reference peer for the ringcast benchmark: a plain socket.io 4.x server that
// implements the Agnost Realtime client events (join / leave / update /
// message, disconnect notifications) with the same payload shapes as
// ringcast (see /work/shared/DESIGN.md "Semantics").
//
// It is what Agnost runs minus the Redis adapter, so it is the fastest honest
// single-process socket.io setup: both transports (the polling scenarios long-poll), no
// per-message-deflate, native bufferutil/utf-8-validate for `ws`, and the same
// listen backlog as ringcast (1024).
//
// With --redis URL it joins the other processes started with the same URL
// through @socket.io/redis-adapter (classic PUBLISH/SUBSCRIBE, its default
// notepack codec), which is how Agnost runs several pods.
//
// Usage: node server.js [--listen 127.0.0.1:0] [--path /realtime/] [--redis redis://127.0.0.1:6379]
// Prints `node-socket.io listening on http://IP:PORT/PATH` once listening.
'use strict';

const http = require('node:http');
const { Server } = require('socket.io');

function parseArgs(argv) {
  const opts = { listen: '127.0.0.1:4000', path: '/realtime/', backlog: 1024 };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (flag === '--listen') opts.listen = value;
    else if (flag === '--path') opts.path = value;
    else if (flag === '--backlog') opts.backlog = Number(value);
    else if (flag === '--redis') opts.redis = value;
    else throw new Error(`unknown flag ${flag}`);
    i += 1;
  }
  const colon = opts.listen.lastIndexOf(':');
  opts.host = opts.listen.slice(0, colon);
  opts.port = Number(opts.listen.slice(colon + 1));
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const httpServer = http.createServer((req, res) => {
  if (req.url === '/health') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"status":"ok"}');
    return;
  }
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"error":"not found","code":"not_found"}');
});

const io = new Server(httpServer, {
  path: opts.path,
  // Both transports, as socket.io's default: the polling scenarios
  // long-poll, the others connect with WebSocket only.
  transports: ['polling', 'websocket'],
  serveClient: false,
  perMessageDeflate: false,
  pingInterval: 25000,
  pingTimeout: 20000,
  maxHttpBufferSize: 1e6,
});

// Channel rooms and environment rooms live in one namespace, so they get
// prefixes that cannot collide with each other or with socket ids.
const channelRoom = (channel) => `ch:${channel}`;
const envRoom = (envId) => `env:${envId}`;

io.on('connection', (socket) => {
  const auth = socket.handshake.auth || {};
  const envId = typeof auth.envId === 'string' ? auth.envId : 'default';
  const echoDefault = auth.echoMessages === true;
  let profile = null;
  socket.join(envRoom(envId));

  const echoOf = (payload) => (typeof payload.echo === 'boolean' ? payload.echo : echoDefault);
  // `echo` decides whether the sender gets its own notification too.
  const emitTo = (room, echo, event, body) => {
    if (echo) io.to(room).emit(event, body);
    else socket.to(room).emit(event, body);
  };
  const member = () => ({ id: socket.id, data: profile });

  socket.on('join', (payload) => {
    if (!payload || typeof payload.channel !== 'string') return;
    const room = channelRoom(payload.channel);
    if (socket.rooms.has(room)) return;
    socket.join(room);
    emitTo(room, echoOf(payload), 'channel:join', { channel: payload.channel, message: member() });
  });

  socket.on('leave', (payload) => {
    if (!payload || typeof payload.channel !== 'string') return;
    const room = channelRoom(payload.channel);
    if (!socket.rooms.has(room)) return;
    const echo = echoOf(payload);
    const body = { channel: payload.channel, message: member() };
    if (echo) socket.emit('channel:leave', body);
    socket.leave(room);
    socket.to(room).emit('channel:leave', body);
  });

  socket.on('update', (payload) => {
    if (!payload) return;
    profile = payload.data === undefined ? null : payload.data;
    const echo = echoOf(payload);
    for (const room of socket.rooms) {
      if (!room.startsWith('ch:')) continue;
      emitTo(room, echo, 'channel:update', { channel: room.slice(3), message: member() });
    }
  });

  socket.on('message', (payload) => {
    if (!payload || typeof payload.eventName !== 'string') return;
    const hasChannel = typeof payload.channel === 'string';
    const room = hasChannel ? channelRoom(payload.channel) : envRoom(envId);
    const body = { channel: hasChannel ? payload.channel : null, message: payload.message };
    emitTo(room, echoOf(payload), payload.eventName, body);
  });

  socket.on('disconnecting', () => {
    for (const room of socket.rooms) {
      if (!room.startsWith('ch:')) continue;
      socket.to(room).emit('channel:leave', { channel: room.slice(3), message: member() });
    }
  });
});

async function listen() {
  if (opts.redis) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pubClient = createClient({ url: opts.redis });
    const subClient = pubClient.duplicate();
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
  }
  httpServer.listen(opts.port, opts.host, opts.backlog, () => {
    const { address, port } = httpServer.address();
    process.stdout.write(`node-socket.io listening on http://${address}:${port}${opts.path}\n`);
  });
}

listen().catch((error) => {
  process.stderr.write(`node-socket.io: ${error.stack || error}\n`);
  process.exit(1);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    io.close();
    process.exit(0);
  });
}
