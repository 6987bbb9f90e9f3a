//! The web console's traffic record (`GET /api/stats`): one node's totals,
//! its environments, its shards, its disconnects by reason, and rates per
//! second between two samples; and the cluster's view, which adds up the
//! records of every node.
//!
//! Owns: building a [`NodeStats`] from the shards' [`ShardSample`]s (exact
//! channel counts across shards, rates against the previous record) and
//! merging records into a [`ClusterView`]. The records are what nodes store
//! in Redis for one another, so they are serde types.
//! Does not own: sampling (the shard's console task), Redis (the cluster
//! link) or HTTP. No I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::close::CloseReason;
use crate::metrics::Snapshot;

/// A record older than this is shown as stale and left out of the totals
/// (records are refreshed every second while someone watches).
pub(crate) const STALE_AFTER_MS: u64 = 3_000;
/// Rates are computed against a previous record at most this old; an older
/// one (the console was closed meanwhile) gives no rate rather than an
/// average over minutes.
const RATE_WINDOW_MAX_MS: u64 = 3_000;
/// A previous record younger than this (two samples taken at once) is too
/// close for a rate: its own rates are kept instead.
const RATE_WINDOW_MIN_MS: u64 = 500;

/// One shard's part of a sample: its snapshot, and a digest of its channel
/// names per environment (so a node counts a channel with members on
/// several shards once).
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardSample {
    pub(crate) snapshot: Snapshot,
    /// Per environment id: a 64-bit hash of each channel name (see
    /// [`channel_digest`]).
    pub(crate) channel_digests: Vec<(String, Vec<u64>)>,
}

/// The hash every shard uses for [`ShardSample::channel_digests`]: fixed
/// seeds, so equal names hash equally on every shard of the process.
pub(crate) fn channel_digest(name: &str) -> u64 {
    const SEEDS: ahash::RandomState = ahash::RandomState::with_seeds(
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
        0x082e_fa98_ec4e_6c89,
    );
    SEEDS.hash_one(name)
}

/// Connections and channels of one environment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EnvCounts {
    /// Socket.IO clients of the environment.
    pub(crate) connections: u64,
    /// Distinct channels with at least one member.
    pub(crate) channels: u64,
}

/// One shard of one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ShardRow {
    pub(crate) shard: u8,
    /// Socket.IO clients (all environments; master connections not included).
    pub(crate) connections: u64,
    /// Upgraded WebSocket connections (connected to Socket.IO or not yet).
    pub(crate) sockets: u64,
    /// Channels with members on this shard (all environments).
    pub(crate) channels: u64,
    pub(crate) messages_in: u64,
    pub(crate) deliveries_out: u64,
    pub(crate) messages_in_per_s: Option<f64>,
    pub(crate) deliveries_out_per_s: Option<f64>,
    pub(crate) queued_bytes: u64,
    pub(crate) inbox_depth: u64,
    pub(crate) mesh_backlog: u64,
}

/// One node's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeStats {
    /// The node's name (`--node-id`, or its listen address when alone).
    pub(crate) node: String,
    /// When the record was taken (Unix milliseconds).
    pub(crate) time_ms: u64,
    /// Socket.IO clients in environments.
    pub(crate) connections: u64,
    /// App backend (master) connections.
    pub(crate) masters: u64,
    pub(crate) sockets: u64,
    /// Socket.IO events received (clients and master connections).
    pub(crate) messages_in: u64,
    /// Frames queued to recipients.
    pub(crate) deliveries_out: u64,
    pub(crate) messages_in_per_s: Option<f64>,
    pub(crate) deliveries_out_per_s: Option<f64>,
    /// Connections closed since start, by reason (every reason listed).
    pub(crate) disconnects: BTreeMap<String, u64>,
    pub(crate) environments: BTreeMap<String, EnvCounts>,
    pub(crate) shards: Vec<ShardRow>,
    /// Shards that did not answer in time (their numbers are missing).
    pub(crate) missing_shards: u64,
    /// Age of the record when it was read (set in a [`ClusterView`]).
    #[serde(default)]
    pub(crate) age_ms: u64,
    /// Older than [`STALE_AFTER_MS`]: left out of the totals.
    #[serde(default)]
    pub(crate) stale: bool,
    /// The node that answered the request.
    #[serde(default)]
    pub(crate) this_node: bool,
}

impl NodeStats {
    /// The record of samples taken at `time_ms` (`missing` shards did not
    /// answer), with rates against `previous` when it is recent enough.
    pub(crate) fn build(
        node: &str,
        time_ms: u64,
        samples: &[ShardSample],
        missing: usize,
        previous: Option<&Self>,
    ) -> Self {
        let mut stats = Self {
            node: node.to_owned(),
            time_ms,
            missing_shards: missing as u64,
            disconnects: CloseReason::ALL
                .iter()
                .map(|r| (r.label().to_owned(), 0))
                .collect(),
            ..Self::default()
        };
        let mut digests: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
        for sample in samples {
            let s = &sample.snapshot;
            let g = &s.gauges;
            let connections: u64 = g.clients.iter().map(|(_, n)| n).sum();
            stats.shards.push(ShardRow {
                shard: s.shard,
                connections,
                sockets: g.sockets,
                channels: g.channels.iter().map(|(_, n)| n).sum(),
                messages_in: s.events_in,
                deliveries_out: s.deliveries,
                queued_bytes: g.queued_bytes,
                inbox_depth: g.inbox_depth,
                mesh_backlog: g.mesh_backlog,
                ..ShardRow::default()
            });
            stats.connections += connections;
            stats.masters += g.masters;
            stats.sockets += g.sockets;
            stats.messages_in += s.events_in;
            stats.deliveries_out += s.deliveries;
            for reason in CloseReason::ALL {
                *stats.disconnects.entry(reason.label().to_owned()).or_default() +=
                    s.disconnects[reason.index()];
            }
            for (env, n) in &g.clients {
                stats.environments.entry(env.clone()).or_default().connections += n;
            }
            for (env, hashes) in &sample.channel_digests {
                stats.environments.entry(env.clone()).or_default();
                digests.entry(env).or_default().extend_from_slice(hashes);
            }
        }
        for (env, mut hashes) in digests {
            hashes.sort_unstable();
            hashes.dedup();
            if let Some(counts) = stats.environments.get_mut(env) {
                counts.channels = hashes.len() as u64;
            }
        }
        stats.shards.sort_by_key(|s| s.shard);
        if let Some(previous) = previous {
            stats.rates_since(previous);
        }
        stats
    }

    /// Sets the rates per second against an earlier record of the same
    /// node (none when it is too old, or not earlier).
    fn rates_since(&mut self, previous: &Self) {
        let elapsed_ms = self.time_ms.saturating_sub(previous.time_ms);
        if elapsed_ms < RATE_WINDOW_MIN_MS {
            self.messages_in_per_s = previous.messages_in_per_s;
            self.deliveries_out_per_s = previous.deliveries_out_per_s;
            for row in &mut self.shards {
                if let Some(before) = previous.shards.iter().find(|s| s.shard == row.shard) {
                    row.messages_in_per_s = before.messages_in_per_s;
                    row.deliveries_out_per_s = before.deliveries_out_per_s;
                }
            }
            return;
        }
        if elapsed_ms > RATE_WINDOW_MAX_MS {
            return;
        }
        let rate = |now: u64, then: u64| Some(now.saturating_sub(then) as f64 * 1000.0 / elapsed_ms as f64);
        self.messages_in_per_s = rate(self.messages_in, previous.messages_in);
        self.deliveries_out_per_s = rate(self.deliveries_out, previous.deliveries_out);
        for row in &mut self.shards {
            if let Some(before) = previous.shards.iter().find(|s| s.shard == row.shard) {
                row.messages_in_per_s = rate(row.messages_in, before.messages_in);
                row.deliveries_out_per_s = rate(row.deliveries_out, before.deliveries_out);
            }
        }
    }
}

/// What the cluster link says about the cluster, for the view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ClusterInfo {
    /// The node runs in a cluster (`--redis`).
    pub(crate) enabled: bool,
    /// Its link to Redis is up.
    pub(crate) up: bool,
    /// Live nodes at the last heartbeat (1 alone).
    pub(crate) nodes: u64,
}

/// `GET /api/stats`: the cluster's totals (this node's alone), one row per
/// node, this node's shards.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ClusterView {
    pub(crate) time_ms: u64,
    /// The node that answered.
    pub(crate) node: String,
    pub(crate) cluster: ClusterInfo,
    pub(crate) connections: u64,
    pub(crate) masters: u64,
    pub(crate) sockets: u64,
    pub(crate) messages_in: u64,
    pub(crate) deliveries_out: u64,
    pub(crate) messages_in_per_s: Option<f64>,
    pub(crate) deliveries_out_per_s: Option<f64>,
    pub(crate) disconnects: BTreeMap<String, u64>,
    /// Connections summed over nodes; channels summed over nodes too (a
    /// channel with members on k nodes counts k times; the channel list
    /// counts it once).
    pub(crate) environments: BTreeMap<String, EnvCounts>,
    /// This node's shards.
    pub(crate) shards: Vec<ShardRow>,
    /// Every node whose record could be read, this one first.
    pub(crate) nodes: Vec<NodeStats>,
    /// True when a shard did not answer, a node's record is stale, or the
    /// other nodes' records could not be read.
    pub(crate) incomplete: bool,
}

impl ClusterView {
    /// Adds up `own` (this node, fresh) and `others` (read from Redis;
    /// `None` when they could not be read) at `now_ms`.
    pub(crate) fn merge(
        own: NodeStats,
        others: Option<Vec<NodeStats>>,
        cluster: ClusterInfo,
        now_ms: u64,
    ) -> Self {
        let mut incomplete = own.missing_shards > 0 || (cluster.enabled && others.is_none());
        let mut nodes = vec![NodeStats {
            this_node: true,
            age_ms: now_ms.saturating_sub(own.time_ms),
            ..own
        }];
        let mut others = others.unwrap_or_default();
        others.sort_by(|a, b| a.node.cmp(&b.node));
        for mut other in others {
            other.this_node = false;
            other.age_ms = now_ms.saturating_sub(other.time_ms);
            other.stale = other.age_ms > STALE_AFTER_MS;
            incomplete |= other.stale || other.missing_shards > 0;
            nodes.push(other);
        }
        let mut view = Self {
            time_ms: now_ms,
            node: nodes[0].node.clone(),
            cluster,
            connections: 0,
            masters: 0,
            sockets: 0,
            messages_in: 0,
            deliveries_out: 0,
            messages_in_per_s: None,
            deliveries_out_per_s: None,
            disconnects: BTreeMap::new(),
            environments: BTreeMap::new(),
            shards: nodes[0].shards.clone(),
            nodes: Vec::new(),
            incomplete,
        };
        let add = |total: &mut Option<f64>, part: Option<f64>| {
            if let Some(part) = part {
                *total = Some(total.unwrap_or(0.0) + part);
            }
        };
        for node in nodes.iter().filter(|n| !n.stale) {
            view.connections += node.connections;
            view.masters += node.masters;
            view.sockets += node.sockets;
            view.messages_in += node.messages_in;
            view.deliveries_out += node.deliveries_out;
            add(&mut view.messages_in_per_s, node.messages_in_per_s);
            add(&mut view.deliveries_out_per_s, node.deliveries_out_per_s);
            for (reason, n) in &node.disconnects {
                *view.disconnects.entry(reason.clone()).or_default() += n;
            }
            for (env, counts) in &node.environments {
                let total = view.environments.entry(env.clone()).or_default();
                total.connections += counts.connections;
                total.channels += counts.channels;
            }
        }
        view.nodes = nodes;
        view
    }
}

#[cfg(test)]
mod tests;
