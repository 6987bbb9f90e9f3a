//! Test harness: the real server on loopback and raw clients for it.
//!
//! `server` starts and kills the binary, `ws` speaks RFC 6455 byte by byte,
//! `sio` adds Engine.IO / Socket.IO handshakes and exact-frame builders,
//! `http` sends plain HTTP requests, `barrier` waits out cross-shard queues,
//! `redis` runs a real redis-server, `net` makes sockets with chosen options (source address, receive buffer)
//! and upgrades that may be refused, `prom` scrapes `/metrics`, `poll`
//! speaks Engine.IO long-polling over keep-alive connections, `tls` makes
//! self-signed certificates and speaks HTTP and WebSocket over rustls. Everything
//! blocks with deadlines.

pub(crate) mod barrier;
pub(crate) mod http;
pub(crate) mod net;
pub(crate) mod poll;
pub(crate) mod prom;
pub(crate) mod redis;
pub(crate) mod server;
pub(crate) mod sio;
pub(crate) mod tls;
pub(crate) mod ws;

pub(crate) use barrier::ShardBarrier;
pub(crate) use server::TestServer;
pub(crate) use sio::{channel_event, connect_on_shard, engine_open, join_all, member, Sio};
pub(crate) use ws::{encode_frame, random_mask, WsClient};
