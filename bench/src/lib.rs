//! ringcast-bench: load generation and the benchmark suite for ringcast and
//! its peers (Node socket.io, socketioxide).
//!
//! # Layout
//! - [`wire`]: the client side of WebSocket / Engine.IO v4 / Socket.IO v5,
//!   sans-IO, no allocation per received message.
//! - [`engine`]: one generator thread (mio/epoll) owning a share of the
//!   connections; phases, publishing schedule, counting.
//! - [`link`]: a connection's stream, plain TCP or TLS (a rustls client).
//! - [`window`]: closed-loop publishing; completion counting shared by the
//!   workers without locks or per-message allocation.
//! - [`scenario`]: fanout, rooms, broadcast, connect, latency; coordinates
//!   the workers and samples the server around the measured window.
//! - [`procfs`]: server CPU/RSS from /proc, generator CPU from getrusage,
//!   `ksoftirqd` CPU, the I/O driver a server really runs.
//! - [`scrape`]: ringcast's counters from `GET /metrics` (frames per write).
//! - [`report`]: the JSON record and markdown of one run, machine facts.
//! - [`floor`]: the physical floor, the kernel's CPU per loopback write and
//!   per frame at K frames per write, measured by the `floor` binary.
//! - [`check`]: the join/message check a server passes before it is measured.
//! - [`suite`]: starts ringcast at each shard count and each peer, runs the
//!   scenarios through the `load` binary, writes tables, ratios and charts.
//! - [`plot`]: SVG charts (plotters).
//!
//! Binaries: `load` (one scenario against one running server), `floor` (the
//! physical floor) and `suite` (everything; `bench/run.sh` wraps it).

pub mod check;
pub mod engine;
pub mod floor;
pub mod link;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod scrape;
pub mod suite;
pub mod window;
pub mod wire;
