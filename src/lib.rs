//! ringcast: a realtime pub/sub server that speaks Socket.IO v5 over
//! Engine.IO v4 over WebSocket, a drop-in replacement for Agnost Realtime.
//!
//! # Layout
//!
//! From the bottom up (each layer uses only those below it):
//! - [`protocol`]: sans-IO codecs (HTTP, WebSocket, Engine.IO, Socket.IO) and
//!   the one encoder of every outbound packet. No I/O, never panics on input.
//! - [`metrics`], [`close`]: shard-local counters and `/metrics`; why a
//!   connection ends; [`node_stats`]: the console's traffic record of a node
//!   and of the cluster (built from shard snapshots, no I/O).
//! - [`realtime`]: the Agnost rules and the per-shard state they change,
//!   handing what must be delivered to an effects sink. No sockets, shards
//!   or other nodes.
//! - [`config`]: command line + TOML file → a validated [`config::Config`].
//! - [`connection`]: one connection's socket handle and bounded outbox.
//! - [`cluster`]: the link to the other nodes through Redis (its own
//!   threads; reaches shards only through their inboxes).
//! - [`shard`]: one shard's state and tasks, and the router that delivers
//!   to local members and other shards.
//! - [`http`]: what a plain HTTP request gets (routes, the backend's API).
//! - [`transport`]: an accepted connection from its HTTP request to its last
//!   frame (the WebSocket session).
//! - [`server`]: wires the shards together and starts them; [`doctor`]:
//!   `ringcast doctor`, the host checks.
//!
//! Threads and queues live in the `ringcast-shards` crate, which knows
//! nothing about any of the protocols here.

pub(crate) mod close;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod connection;
pub mod doctor;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod node_stats;
pub mod protocol;
pub(crate) mod realtime;
pub mod server;
pub(crate) mod shard;
pub(crate) mod transport;
