//! ringcast: a realtime pub/sub server that speaks Socket.IO v5 over
//! Engine.IO v4 over WebSocket, a drop-in replacement for Agnost Realtime.
//!
//! # Layout
//!
//! - [`config`]: command line + TOML file → a validated [`config::Config`].
//! - [`protocol`]: sans-IO codecs (HTTP upgrade, WebSocket, Engine.IO,
//!   Socket.IO). No I/O, never panics on input.
//! - [`http`]: what a plain HTTP request gets (upgrade, health, JSON errors).
//! - [`connection`]: one client socket: the reader (ingress hot path), the
//!   writer (egress, vectored writes, heartbeat) and its bounded outbox.
//! - [`realtime`]: Agnost semantics: auth, the channel index, event handlers.
//! - [`fanout`]: encode a publish once, deliver refcounted clones.
//! - [`shard`]: one shard's state, accept loop and inbox drain.
//! - [`inbox`]: the closed set of messages shards send each other.
//! - [`metrics`]: shard-local counters and the Prometheus `/metrics` page.
//! - [`server`]: wires the shards together and starts them.
//! - [`doctor`]: `ringcast doctor`, the host checks (sans-IO over a
//!   snapshot of `/proc` and `/sys`, plus one io_uring probe).
//!
//! Threads and queues live in the `ringcast-shards` crate, which knows
//! nothing about any of the protocols here.

pub mod config;
pub(crate) mod connection;
pub mod doctor;
pub(crate) mod fanout;
pub(crate) mod http;
pub(crate) mod inbox;
pub(crate) mod metrics;
pub mod protocol;
pub(crate) mod realtime;
pub mod server;
pub(crate) mod shard;
