//! Starts the shards with their shared state (and, with `--redis`, the
//! cluster link), and reloads settings on SIGHUP.

use std::sync::Arc;

use ringcast_shards::runtime::{self, Driver, Running, RuntimeConfig};
use ringcast_shards::Mesh;

use crate::cluster::{self, AppliedHere, ShardPort};
use crate::config::{reload_environments, Config};
use crate::realtime::settings::EnvSettings;
use crate::shard::inbox::{NodeCountdown, SettingsAck, ShardMessage};
use crate::shard::Shared;

/// The running server.
pub struct Server {
    pub running: Running,
    shared: Arc<Shared>,
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
        send_buffer_bytes: Some(crate::connection::socket::send_buffer_bytes(
            config.send_queue_bytes_max,
        )),
        driver: if config.epoll { Driver::Epoll } else { Driver::Auto },
    };
    let mesh: Mesh<ShardMessage> = Mesh::new(config.shard_count, config.mesh_queue_messages_max);
    let mut environments = config.environments.clone();
    let (cluster, link) = match config.cluster.clone() {
        Some(cluster_config) => {
            let port_mesh = mesh.clone();
            let port: ShardPort = Arc::new(move |shard, event| {
                let message = ShardMessage::Cluster(event);
                let lane = message.lane();
                port_mesh.send(shard, lane, message).map_err(|back| match back {
                    ShardMessage::Cluster(event) => event,
                    // The mesh hands back the message it was given.
                    _ => unreachable!("the mesh returned another message"),
                })
            });
            let (cluster, mut link) = cluster::connect(cluster_config, port, environments.clone());
            if let Some(envs) = link.take_loaded() {
                environments = envs;
            }
            (Some(cluster), Some(link))
        }
        None => (None, None),
    };
    let tls = match &config.tls {
        Some(files) => Some(
            crate::connection::tls::load(files)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("TLS: {e}")))?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared::new(config, mesh, cluster, environments).with_tls(tls));
    if let Some(link) = link {
        let for_link = shared.clone();
        link.spawn(Arc::new(move |envs: Vec<EnvSettings>, applied| {
            apply_cluster_settings(&for_link, envs, applied)
        }))?;
    }
    let for_shards = shared.clone();
    let running = runtime::run(&runtime_config, move |shard, listener| {
        crate::shard::run(
            shard,
            listener,
            for_shards.clone(),
            crate::transport::serve,
            crate::transport::adopt,
        )
    })?;
    Ok(Server { running, shared })
}

impl Server {
    /// Handles SIGHUP, SIGTERM and SIGINT (see [`handle_signals`]).
    pub fn handle_signals(&self) -> std::io::Result<()> {
        handle_signals(self.shared.clone())
    }

    /// Waits until every shard has drained and stopped, then leaves the
    /// cluster (this node's presence is removed from Redis).
    pub fn join(self) {
        self.running.join();
        if let Some(cluster) = &self.shared.cluster {
            cluster.shutdown();
        }
    }
}

/// The cluster's environments changed in Redis (or the link connected):
/// every shard gets them. `applied`: the other node's notice that brought
/// them, confirmed by the last shard to install them (not at all when a
/// shard did not take them: that node's `PUT` then names this one).
fn apply_cluster_settings(shared: &Shared, envs: Vec<EnvSettings>, applied: Option<AppliedHere>) {
    let settings = shared.change_settings(|current| current.replaced_by(envs));
    let countdown = applied.map(|applied| NodeCountdown::new(shared.mesh.shard_count(), applied));
    let sent = shared.broadcast(|| ShardMessage::SettingsChanged {
        settings: settings.clone(),
        ack: countdown.clone().map(SettingsAck::Node),
    });
    if let Err(e) = sent {
        tracing::error!(error = %e, "cluster settings changed, but not every shard took them");
    }
    tracing::info!(version = settings.version, "settings from the cluster applied");
}

/// Handles signals on a thread of its own: SIGHUP re-reads the TLS
/// certificate and key (new handshakes use them; a bad file is logged with
/// file and reason, and the running pair stays) and the configuration
/// file's environments, which it hands to the shards (a bad file is logged
/// with file, line and reason, and the running settings stay); the first SIGTERM or SIGINT starts the graceful shutdown (every
/// shard stops accepting and drains its clients over the drain window); a
/// second one exits at once.
fn handle_signals(shared: Arc<Shared>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                match signal {
                    SIGHUP => reload(&shared),
                    _ if stopping => {
                        tracing::warn!("second stop signal: exiting without draining");
                        std::process::exit(1);
                    }
                    _ => {
                        stopping = true;
                        tracing::info!(
                            drain_window_ms = shared.config.drain_window.as_millis() as u64,
                            "stop signal: draining clients"
                        );
                        if let Err(e) = shared.broadcast(|| ShardMessage::Shutdown) {
                            tracing::error!(error = %e, "a shard did not take the stop signal; exiting");
                            std::process::exit(1);
                        }
                    }
                }
            }
        })?;
    Ok(())
}

fn reload(shared: &Shared) {
    reload_tls(shared);
    reload_settings(shared);
}

/// Re-reads the certificate and key: connections accepted from now on
/// handshake with them; those already up keep the keys they agreed on.
fn reload_tls(shared: &Shared) {
    let Some(files) = &shared.config.tls else {
        return;
    };
    match crate::connection::tls::load(files) {
        Ok(next) => {
            shared.replace_tls(next);
            tracing::info!(cert = %files.cert.display(), "TLS certificate and key reloaded on SIGHUP");
        }
        Err(e) => {
            shared.tls_reload_refused();
            tracing::error!(
                file = %e.file,
                reason = %e.reason,
                "SIGHUP: TLS certificate or key refused; keeping the running pair"
            );
        }
    }
}

fn reload_settings(shared: &Shared) {
    let Some(path) = shared.config.file.clone() else {
        if shared.config.tls.is_none() {
            tracing::warn!("SIGHUP without --config: nothing to reload");
        }
        return;
    };
    match reload_environments(&path) {
        Ok(envs) => {
            if let Some(cluster) = &shared.cluster {
                // In a cluster the file's environments become every node's.
                match cluster.replace_settings(envs.clone(), shared.config.gather_timeout) {
                    Ok(()) => tracing::info!("SIGHUP: the file's environments are the cluster's now"),
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP reload refused: the cluster's settings could not be replaced; keeping the running settings");
                        return;
                    }
                }
            }
            let settings = shared.change_settings(|current| current.replaced_by(envs));
            let sent = shared.broadcast(|| ShardMessage::SettingsChanged {
                settings: settings.clone(),
                ack: None,
            });
            if let Err(e) = sent {
                tracing::error!(error = %e, "settings reloaded, but not every shard took them");
            }
            tracing::info!(version = settings.version, "settings reloaded on SIGHUP");
        }
        Err(e) => tracing::error!(error = %e, "SIGHUP reload refused; keeping the running settings"),
    }
}
