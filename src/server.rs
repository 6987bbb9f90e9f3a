//! Starts the shards with their shared state, and reloads settings on
//! SIGHUP.

use std::sync::Arc;

use ringcast_shards::runtime::{self, Driver, Running, RuntimeConfig};

use crate::config::{reload_environments, Config};
use crate::shard::{run_shard, Shared};

/// The running server.
pub struct Server {
    pub running: Running,
    pub shared: Arc<Shared>,
}

/// Binds every shard's listener and starts the shards; returns once all of
/// them accept connections.
pub fn start(config: Config) -> std::io::Result<Server> {
    let runtime_config = RuntimeConfig {
        shard_count: config.shard_count,
        listen: config.listen,
        backlog: config.backlog,
        ring_entries: config.ring_entries,
        pin_cores: true,
        driver: if config.epoll { Driver::Epoll } else { Driver::Auto },
    };
    let shared = Arc::new(Shared::new(config));
    let for_shards = shared.clone();
    let running = runtime::run(&runtime_config, move |shard, listener| {
        run_shard(shard, listener, for_shards.clone())
    })?;
    Ok(Server { running, shared })
}

/// Re-reads the environments of the configuration file on every SIGHUP and
/// hands them to the shards. A bad file is logged (with file, line and
/// reason) and the running settings stay as they were.
pub fn reload_on_sighup(shared: Arc<Shared>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new().name("sighup".into()).spawn(move || {
        for _ in signals.forever() {
            let Some(path) = shared.config.file.clone() else {
                tracing::warn!("SIGHUP without --config: nothing to reload");
                continue;
            };
            match reload_environments(&path) {
                Ok(envs) => {
                    let settings = shared.change_settings(|current| current.replaced_by(envs));
                    tracing::info!(version = settings.version, "settings reloaded on SIGHUP");
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP reload refused; keeping the running settings"),
            }
        }
    })?;
    Ok(())
}
