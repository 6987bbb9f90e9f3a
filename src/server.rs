//! Starts the shards with their shared state.

use std::sync::Arc;

use ringcast_shards::runtime::{self, Driver, Running, RuntimeConfig};

use crate::config::Config;
use crate::shard::{run_shard, Shared};

/// Binds every shard's listener and starts the shards; returns once all of
/// them accept connections.
pub fn start(config: Config) -> std::io::Result<Running> {
    let runtime_config = RuntimeConfig {
        shard_count: config.shard_count,
        listen: config.listen,
        backlog: config.backlog,
        ring_entries: config.ring_entries,
        pin_cores: true,
        driver: if config.epoll { Driver::Epoll } else { Driver::Auto },
    };
    let shared = Arc::new(Shared::new(config));
    runtime::run(&runtime_config, move |shard, listener| {
        run_shard(shard, listener, shared.clone())
    })
}
