//! The one integration test binary: the real `ringcast` binary on loopback,
//! spoken to over raw sockets with exact-frame assertions.
//!
//! Each area has its own module; `support` holds the server harness and the
//! raw WebSocket / Engine.IO / Socket.IO clients. Every test starts its own
//! server on `127.0.0.1:0`, so tests never see each other's traffic.

mod support;

mod agnost;
mod backlog;
mod bad_input;
mod cluster;
mod connection_state;
mod console;
mod cross_shard;
mod dependencies;
mod deploy_files;
mod doctor;
mod engineio;
mod grafana;
mod handshake;
mod inbound_flood;
mod limits;
mod master;
mod metrics;
mod polling;
mod rate_limits;
mod realtime;
mod shutdown;
mod slow_consumer;
mod slowloris;
mod socketio;
mod tls;
mod websocket;
