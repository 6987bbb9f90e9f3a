//! Thread-per-core plumbing for ringcast.
//!
//! This crate owns the machinery that is independent of any wire protocol:
//! which cores the shards run on ([`topology`]), one pinned thread with its own
//! monoio runtime and `SO_REUSEPORT` listener per shard ([`runtime`]), the
//! bounded lock-free queues through which shards hand each other work
//! ([`mesh`]), connection ids that name their owning shard ([`conn_id`]),
//! draining a listener's backlog in one go ([`accept`]), read readiness of a
//! shard's sockets under io_uring ([`readiness`]), a shard's own ring for
//! its sends under io_uring ([`sendring`]), shard-local wait
//! lists ([`wait`]) and a yield that lets the rest of a shard run
//! ([`yielder`]).
//!
//! It deliberately knows nothing about WebSocket, Engine.IO or Socket.IO:
//! the product crate plugs its per-shard logic in through [`runtime::run`].
//!
//! **Invariant:** a shard's memory is touched only by its own thread; other
//! threads reach it only through its [`mesh::Inbox`].

pub mod accept;
pub mod conn_id;
pub mod mesh;
pub mod readiness;
pub mod runtime;
pub mod sendring;
pub mod topology;
pub mod wait;
pub mod yielder;

pub use conn_id::ConnId;
pub use mesh::{Inbox, Lane, Mesh};
pub use topology::ShardId;
