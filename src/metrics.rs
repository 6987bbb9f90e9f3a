//! Counters and gauges, and `GET /metrics` in Prometheus text format.
//!
//! Counters are shard-local plain cells ([`Stats`]): bumping one is a load
//! and a store on the shard's own cache lines, never a shared atomic. A
//! scrape gathers a [`Snapshot`] from every shard through the mesh and
//! renders them with a `shard` label (and `env` where it applies).

use std::cell::Cell;
use std::fmt::Write as _;

use crate::close::CloseReason;

macro_rules! counters {
    ($( $field:ident => $name:literal, $help:literal; )*) => {
        /// Shard-local counters.
        #[derive(Default)]
        pub(crate) struct Stats {
            $( pub(crate) $field: Cell<u64>, )*
            /// Disconnects, indexed by [`CloseReason::index`].
            pub(crate) disconnects: [Cell<u64>; CloseReason::COUNT],
        }

        /// One shard's counters and gauges at one moment (crosses threads).
        #[derive(Debug, Clone, Default)]
        pub(crate) struct Snapshot {
            pub(crate) shard: u8,
            $( pub(crate) $field: u64, )*
            pub(crate) disconnects: [u64; CloseReason::COUNT],
            pub(crate) gauges: Gauges,
        }

        impl Stats {
            /// The counters' current values.
            pub(crate) fn snapshot(&self, shard: u8, gauges: Gauges) -> Snapshot {
                Snapshot {
                    shard,
                    $( $field: self.$field.get(), )*
                    disconnects: std::array::from_fn(|i| self.disconnects[i].get()),
                    gauges,
                }
            }
        }

        fn render_counters(out: &mut String, shards: &[Snapshot]) {
            $(
                header(out, $name, $help, "counter");
                for s in shards {
                    let _ = writeln!(out, "{}{{shard=\"{}\"}} {}", $name, s.shard, s.$field);
                }
            )*
        }
    };
}

counters! {
    events_in => "ringcast_events_in_total", "Socket.IO events received from clients and master connections.";
    deliveries => "ringcast_messages_out_total", "Frames queued to recipients (one per recipient per publish).";
    publishes => "ringcast_publishes_total", "Messages encoded for fan-out (each once).";
    joins => "ringcast_joins_total", "Channel joins.";
    leaves => "ringcast_leaves_total", "Channel leaves, including those on disconnect.";
    bytes_in => "ringcast_bytes_in_total", "Bytes read from client sockets after the upgrade.";
    bytes_out => "ringcast_bytes_out_total", "Bytes written to client sockets after the upgrade.";
    writes => "ringcast_writes_total", "Vectored writes to client sockets.";
    frames_written => "ringcast_frames_written_total", "Queued frames written; divided by writes, the coalescing factor.";
    shared_copies => "ringcast_shared_copy_writes_total", "Writes of several frames that sent the shard's one copy of those same frames (a fan-out's) instead of copying them.";
    connects => "ringcast_connects_total", "Socket.IO connects accepted.";
    refused_connects => "ringcast_refused_connects_total", "Socket.IO connects refused with connect_error.";
    refused_upgrades => "ringcast_refused_upgrades_total", "WebSocket upgrades refused with 503 over a connection limit.";
    rate_limited_events => "ringcast_rate_limited_events_total", "Client events dropped by a rate limiter.";
    channel_limit_refusals => "ringcast_channel_limit_refusals_total", "Joins refused because the connection was in channels_per_connection_max channels.";
    profile_limit_refusals => "ringcast_profile_limit_refusals_total", "Profile updates refused for being over profile_bytes_max.";
    rate_table_saturated => "ringcast_rate_table_saturated_total", "Client events let through unchecked (fail open) because every rate-limit table slot their key may use was held by another key; raise rate_limit_slots.";
    ignored_master_events => "ringcast_ignored_master_events_total", "Master events from non-master connections, ignored.";
    ignored_events => "ringcast_ignored_events_total", "Events with no meaning to the server, ignored.";
    reserved_event_names => "ringcast_reserved_event_names_total", "Messages with a reserved event name, not delivered.";
    mesh_sent => "ringcast_mesh_sent_total", "Messages this shard sent to other shards.";
    mesh_received => "ringcast_mesh_received_total", "Messages this shard received from other shards.";
    paced_waits => "ringcast_paced_waits_total", "Times a producer waited for a client that reads but was half its queue cap behind.";
    gather_timeouts => "ringcast_gather_timeouts_total", "Member lists, scrapes and settings changes answered at their deadline without every shard's part.";
    mesh_backlog_stalls => "ringcast_mesh_backlog_stalls_total", "Times a connection stopped reading because messages for other shards were backed up to their bound.";
    accept_errors => "ringcast_accept_errors_total", "Failed accepts (e.g. out of file descriptors), each followed by a back-off.";
    polling_requests => "ringcast_polling_requests_total", "Engine.IO long-polling requests (GET and POST) served.";
    handovers => "ringcast_handovers_total", "Client connections handed to the shard that owns their session.";
    upgrades => "ringcast_upgrades_total", "Long-polling sessions upgraded to WebSocket.";
    tls_handshakes => "ringcast_tls_handshakes_total", "TLS handshakes completed.";
    tls_handshake_failures => "ringcast_tls_handshake_failures_total", "TLS handshakes that failed (protocol error, peer gone, or too slow).";
    tls_plain_requests => "ringcast_tls_plain_requests_total", "Plain-HTTP requests to the TLS listener, answered 400 and closed.";
    tls_probes => "ringcast_tls_probes_total", "Connections to the TLS listener closed (or reset) before sending a byte: TCP health checks, not failed handshakes.";
}

impl Stats {
    pub(crate) fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }

    pub(crate) fn bump(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }

    pub(crate) fn add_deliveries(&self, n: u64) {
        Self::add(&self.deliveries, n);
    }

    pub(crate) fn disconnected(&self, reason: CloseReason) {
        Self::bump(&self.disconnects[reason.index()]);
    }
}

/// What `/metrics` shows of the cluster (all zero without `--redis`).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterGauges {
    pub(crate) up: bool,
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) dropped: u64,
    pub(crate) reconnects: u64,
    pub(crate) subscriptions: u64,
    pub(crate) nodes: u64,
    pub(crate) dead_nodes_cleaned: u64,
    pub(crate) rate_syncs: u64,
}

/// Values read off a shard's state at snapshot time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gauges {
    /// Upgraded WebSocket connections.
    pub(crate) sockets: u64,
    /// Socket.IO clients per environment id.
    pub(crate) clients: Vec<(String, u64)>,
    /// Master connections.
    pub(crate) masters: u64,
    /// Channels with at least one member on this shard, per environment id.
    pub(crate) channels: Vec<(String, u64)>,
    /// Messages waiting in this shard's inbox.
    pub(crate) inbox_depth: u64,
    /// Bytes queued to clients and not yet written.
    pub(crate) queued_bytes: u64,
    /// Messages held back for other shards whose inboxes were full.
    pub(crate) mesh_backlog: u64,
}

/// Renders every shard's snapshot, and the node's cluster link, as
/// Prometheus text.
pub(crate) fn render(shards: &[Snapshot], cluster: &ClusterGauges) -> String {
    let mut out = String::with_capacity(8192);
    render_counters(&mut out, shards);
    header(
        &mut out,
        "ringcast_disconnects_total",
        "Connections closed, by reason.",
        "counter",
    );
    for s in shards {
        for reason in CloseReason::ALL {
            let n = s.disconnects[reason.index()];
            let _ = writeln!(
                out,
                "ringcast_disconnects_total{{shard=\"{}\",reason=\"{}\"}} {n}",
                s.shard,
                reason.label()
            );
        }
    }
    gauge(
        &mut out,
        shards,
        "ringcast_sockets",
        "Upgraded WebSocket connections.",
        |g| g.sockets,
    );
    gauge(
        &mut out,
        shards,
        "ringcast_master_connections",
        "App backend connections.",
        |g| g.masters,
    );
    gauge(
        &mut out,
        shards,
        "ringcast_inbox_depth",
        "Messages waiting in the shard's inbox.",
        |g| g.inbox_depth,
    );
    gauge(
        &mut out,
        shards,
        "ringcast_mesh_backlog_messages",
        "Messages held back for other shards whose inboxes are full.",
        |g| g.mesh_backlog,
    );
    gauge(
        &mut out,
        shards,
        "ringcast_queued_bytes",
        "Bytes queued to clients, not yet written.",
        |g| g.queued_bytes,
    );
    env_gauge(
        &mut out,
        shards,
        "ringcast_connections",
        "Socket.IO clients, by environment.",
        |g| &g.clients,
    );
    env_gauge(
        &mut out,
        shards,
        "ringcast_channels",
        "Channels with members on the shard, by environment.",
        |g| &g.channels,
    );
    render_cluster(&mut out, cluster);
    out
}

/// The cluster link's metrics (node-wide, no `shard` label); exported
/// without `--redis` too (`ringcast_cluster_up 0`), so dashboards and alerts
/// need no special case for a node that runs alone.
fn render_cluster(out: &mut String, c: &ClusterGauges) {
    let rows: [(&str, &str, &str, u64); 9] = [
        (
            "ringcast_cluster_up",
            "gauge",
            "1 while the link to Redis is up (0 without --redis).",
            u64::from(c.up),
        ),
        (
            "ringcast_cluster_nodes",
            "gauge",
            "Live nodes of the cluster, this one included (at the last heartbeat).",
            c.nodes,
        ),
        (
            "ringcast_cluster_subscriptions",
            "gauge",
            "Redis topics this node is subscribed to (channels, environments and users with members here).",
            c.subscriptions,
        ),
        (
            "ringcast_cluster_messages_in_total",
            "counter",
            "Channel, broadcast and user messages received from other nodes through Redis.",
            c.messages_in,
        ),
        (
            "ringcast_cluster_messages_out_total",
            "counter",
            "Channel, broadcast and user messages published to Redis (one per message).",
            c.messages_out,
        ),
        (
            "ringcast_cluster_dropped_total",
            "counter",
            "Messages for other nodes dropped because Redis was out of reach or the link's queue was full.",
            c.dropped,
        ),
        (
            "ringcast_cluster_reconnects_total",
            "counter",
            "Times the link connected to Redis again after losing it.",
            c.reconnects,
        ),
        (
            "ringcast_cluster_dead_nodes_total",
            "counter",
            "Dead nodes this node removed from the cluster (their members' leaves published).",
            c.dead_nodes_cleaned,
        ),
        (
            "ringcast_cluster_rate_syncs_total",
            "counter",
            "Rate-limit counts this node added to Redis and whose cluster totals it learned.",
            c.rate_syncs,
        ),
    ];
    for (name, kind, help, value) in rows {
        header(out, name, help, kind);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// A gauge with one value per shard.
fn gauge(out: &mut String, shards: &[Snapshot], name: &str, help: &str, value: impl Fn(&Gauges) -> u64) {
    header(out, name, help, "gauge");
    for s in shards {
        let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, value(&s.gauges));
    }
}

/// A gauge with one value per shard and environment.
fn env_gauge(
    out: &mut String,
    shards: &[Snapshot],
    name: &str,
    help: &str,
    values: impl Fn(&Gauges) -> &Vec<(String, u64)>,
) {
    header(out, name, help, "gauge");
    for s in shards {
        for (env, n) in values(&s.gauges) {
            let _ = writeln!(out, "{name}{{shard=\"{}\",env=\"{}\"}} {n}", s.shard, escape(env));
        }
    }
}

/// The TLS certificate reloads (SIGHUP) of a TLS listener, by outcome:
/// process-wide, appended after the shards' metrics.
pub(crate) fn render_tls_reloads(out: &mut String, applied: u64, refused: u64) {
    header(
        out,
        "ringcast_tls_reloads_total",
        "TLS certificate and key reloads on SIGHUP: applied, or refused (the running pair stays).",
        "counter",
    );
    let _ = writeln!(out, "ringcast_tls_reloads_total{{outcome=\"applied\"}} {applied}");
    let _ = writeln!(out, "ringcast_tls_reloads_total{{outcome=\"refused\"}} {refused}");
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labels_and_types() {
        let stats = Stats::default();
        stats.add_deliveries(5);
        stats.disconnected(CloseReason::SlowConsumer);
        let gauges = Gauges {
            sockets: 2,
            clients: vec![("de\"v".into(), 2)],
            ..Gauges::default()
        };
        let text = render(&[stats.snapshot(1, gauges)], &ClusterGauges::default());
        assert!(text.contains("# TYPE ringcast_cluster_up gauge\nringcast_cluster_up 0\n"));
        assert!(text.contains("# TYPE ringcast_messages_out_total counter\n"));
        assert!(text.contains("ringcast_messages_out_total{shard=\"1\"} 5\n"));
        assert!(text.contains("ringcast_disconnects_total{shard=\"1\",reason=\"slow_consumer\"} 1\n"));
        assert!(text.contains("ringcast_connections{shard=\"1\",env=\"de\\\"v\"} 2\n"));
        assert!(text.contains("ringcast_sockets{shard=\"1\"} 2\n"));
    }
}
