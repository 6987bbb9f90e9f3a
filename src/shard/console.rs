//! The shard's side of the web console: the node's traffic sampler (on
//! shard 0, and only while a console watches), this shard's answers to the
//! console's questions, and the node-wide operations the console API calls:
//! the traffic of the node (and of the cluster), an environment's channels,
//! and disconnecting one socket wherever it lives.
//!
//! Nothing here runs per message. While no console watches, the sampler
//! only looks at two flags once a second; while one does, a sample costs a
//! control message to every shard and a pass over each shard's channel
//! names, once a second per node whatever the number of consoles.
//!
//! In a cluster every watched node stores its record in Redis for a few
//! seconds (`cluster::link`), and a node answering `GET /api/stats` reads
//! the others' records from there; a console on any node thereby makes
//! every node sample (the link sees a watch key at its heartbeat).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;

use crate::cluster::{Command, Reply};
use crate::node_stats::{channel_digest, ClusterInfo, ClusterView, NodeStats, ShardSample};
use crate::realtime::settings::EnvKey;
use crate::shard::gather::{ChannelPart, ConsoleAsk, ConsolePart};
use crate::shard::Shard;
use ringcast_shards::conn_id::{process_nonce, ConnId};
use ringcast_shards::ShardId;

/// How often the sampler takes a record while someone watches.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// A record at most this old answers a request as it is.
const FRESH_MS: u64 = 1_500;
/// Channels one shard sends for a listing; beyond, the list says it is
/// truncated.
const CHANNELS_PER_SHARD_MAX: usize = 10_000;
/// Channels in one answer of a node alone (the busiest first).
pub(crate) const CHANNEL_LIST_MAX: usize = 500;

/// An environment's channels and their members.
#[derive(Debug, Default)]
pub(crate) struct ChannelList {
    /// Name and members, the busiest first.
    pub(crate) channels: Vec<(String, u64)>,
    /// In a cluster, where the next page starts.
    pub(crate) next: Option<String>,
    /// Every channel is listed (no next page, nothing truncated, every
    /// shard answered).
    pub(crate) complete: bool,
    /// In a cluster whose Redis is out of reach: this node's channels only.
    pub(crate) cluster_unreachable: bool,
}

/// What became of a request to disconnect a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disconnect {
    /// It was here and got Socket.IO `41`.
    Disconnected,
    /// No such socket on this node (it left, or it never was).
    NotFound,
    /// Not a socket id at all.
    NotAnId,
    /// Another node's: the request went to every node through Redis, and
    /// its owner carries it out.
    SentToCluster,
    /// Another node's, and Redis is out of reach.
    ClusterUnavailable,
    /// Its shard did not answer in time.
    Unconfirmed,
}

/// Unix milliseconds.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Shard {
    /// This shard's answer to the console's `ask`.
    pub(crate) fn console_part(&self, ask: ConsoleAsk) -> ConsolePart {
        match ask {
            ConsoleAsk::Sample => ConsolePart::Sample(Box::new(self.sample())),
            ConsoleAsk::Channels { env, filter } => {
                let rt = self.realtime.borrow();
                let mut part = ChannelPart::default();
                for (name, members) in rt.channels_of(env) {
                    if filter.as_deref().is_some_and(|f| !name.contains(f)) {
                        continue;
                    }
                    if part.channels.len() == CHANNELS_PER_SHARD_MAX {
                        part.truncated = true;
                        break;
                    }
                    part.channels.push((name.clone(), members as u32));
                }
                ConsolePart::Channels(part)
            }
            ConsoleAsk::Disconnect { key, generation } => {
                let rt = self.realtime.borrow();
                let member = rt.member_of_generation(key, generation);
                if let Some(member) = member {
                    tracing::info!(id = %member.id, "disconnected from the web console");
                    crate::realtime::state::Sink::kick(&member.sink);
                }
                ConsolePart::Disconnected(member.is_some())
            }
        }
    }

    /// This shard's counters and, per environment, a digest of its channel
    /// names.
    fn sample(&self) -> ShardSample {
        let snapshot = self.snapshot();
        let rt = self.realtime.borrow();
        let settings = rt.settings().clone();
        let channel_digests = (0..settings.key_count() as EnvKey)
            .filter_map(|key| {
                let env = settings.get(key)?;
                let hashes = rt
                    .channels_of(key)
                    .map(|(name, _)| channel_digest(name))
                    .collect();
                Some((env.id.clone(), hashes))
            })
            .collect();
        ShardSample {
            snapshot,
            channel_digests,
        }
    }

    /// Disconnects socket `id` if it is one of this shard's (a kick another
    /// node's console sent through Redis).
    pub(crate) fn kick_local(&self, id: &str) -> bool {
        let Some(conn) = ConnId::decode(id) else {
            return false;
        };
        if conn.shard != self.id || conn.nonce != *process_nonce() {
            return false;
        }
        let ask = ConsoleAsk::Disconnect {
            key: conn.key,
            generation: conn.generation,
        };
        matches!(self.console_part(ask), ConsolePart::Disconnected(true))
    }

    /// The name of this node in the console: its cluster node id, else its
    /// listen address.
    pub(crate) fn node_name(&self) -> String {
        match &self.shared.config.cluster {
            Some(cluster) => cluster.node_id.clone(),
            None => self.shared.config.listen.to_string(),
        }
    }

    /// Samples every shard into a new record of this node (rates against
    /// the latest one), keeps it, and in a cluster stores it in Redis for
    /// the other nodes.
    pub(crate) async fn take_sample(self: &Rc<Self>) -> Arc<NodeStats> {
        let targets: Vec<ShardId> = self.all_shards().collect();
        let gathered = self.gather_console(&targets, || ConsoleAsk::Sample).await;
        let samples: Vec<ShardSample> = gathered
            .value
            .into_iter()
            .filter_map(|part| match part {
                ConsolePart::Sample(sample) => Some(*sample),
                _ => None,
            })
            .collect();
        let previous = self.shared.console.latest();
        let record = Arc::new(NodeStats::build(
            &self.node_name(),
            unix_ms(),
            &samples,
            gathered.missing,
            previous.as_deref(),
        ));
        self.shared.console.store(record.clone());
        if let Some(cluster) = &self.shared.cluster {
            match sonic_rs::to_vec(&*record) {
                Ok(json) => {
                    cluster.send_request(Command::PutNodeStats {
                        json: Bytes::from(json),
                    });
                }
                Err(e) => tracing::warn!(error = %e, "traffic record not serialized"),
            }
        }
        record
    }

    /// `GET /api/stats`: this node's latest record (taken now when there is
    /// no fresh one) and, in a cluster, every other node's from Redis.
    pub(crate) async fn traffic(self: &Rc<Self>) -> ClusterView {
        self.shared.console.watch(unix_ms());
        let own = match self.shared.console.latest() {
            Some(record) if unix_ms().saturating_sub(record.time_ms) <= FRESH_MS => record,
            _ => self.take_sample().await,
        };
        let (info, others) = match &self.shared.cluster {
            None => (
                ClusterInfo {
                    enabled: false,
                    up: false,
                    nodes: 1,
                },
                None,
            ),
            Some(cluster) => {
                let gauges = cluster.gauges();
                let info = ClusterInfo {
                    enabled: true,
                    up: gauges.up,
                    nodes: gauges.nodes.max(1),
                };
                let others = match self
                    .ask_link(|shard, request| Command::NodeStats { shard, request })
                    .await
                {
                    Some(Reply::NodeStats(Some(records))) => Some(
                        records
                            .iter()
                            .filter_map(|json| sonic_rs::from_slice::<NodeStats>(json).ok())
                            .collect(),
                    ),
                    _ => None,
                };
                (info, others)
            }
        };
        ClusterView::merge((*own).clone(), others, info, unix_ms())
    }

    /// The channels of `env` whose names contain `filter`, with their
    /// members: in a cluster one page of the cluster's list from Redis
    /// (from `cursor`), else every shard's, added up.
    pub(crate) async fn channel_list(
        self: &Rc<Self>,
        env: EnvKey,
        filter: Option<&str>,
        cursor: Option<&str>,
    ) -> ChannelList {
        let env_id = self.settings().get(env).map(|e| Arc::<str>::from(e.id.as_str()));
        let mut cluster_unreachable = false;
        if let (Some(_), Some(env_id)) = (&self.shared.cluster, env_id) {
            let reply = self
                .ask_link(|shard, request| Command::Channels {
                    shard,
                    request,
                    env_id,
                    filter: filter.map(Arc::from),
                    cursor: cursor.map(Box::from),
                })
                .await;
            if let Some(Reply::Channels(Some(page))) = reply {
                let mut channels = page.channels;
                sort_busiest_first(&mut channels);
                return ChannelList {
                    complete: page.next.is_none(),
                    next: page.next,
                    channels,
                    cluster_unreachable: false,
                };
            }
            cluster_unreachable = true;
        }
        let targets: Vec<ShardId> = self.all_shards().collect();
        let filter: Option<Arc<str>> = filter.map(Arc::from);
        let gathered = self
            .gather_console(&targets, || ConsoleAsk::Channels {
                env,
                filter: filter.clone(),
            })
            .await;
        let mut truncated = false;
        let mut merged: AHashMap<Arc<str>, u64> = AHashMap::new();
        for part in gathered.value {
            if let ConsolePart::Channels(part) = part {
                truncated |= part.truncated;
                for (name, members) in part.channels {
                    *merged.entry(name).or_default() += u64::from(members);
                }
            }
        }
        let mut channels: Vec<(String, u64)> = merged.into_iter().map(|(n, m)| (n.to_string(), m)).collect();
        sort_busiest_first(&mut channels);
        truncated |= channels.len() > CHANNEL_LIST_MAX;
        channels.truncate(CHANNEL_LIST_MAX);
        ChannelList {
            channels,
            next: None,
            complete: !truncated && gathered.missing == 0 && !cluster_unreachable,
            cluster_unreachable,
        }
    }

    /// Disconnects socket `id` (Socket.IO `41`: socket.io-client does not
    /// come back by itself) on whichever shard, or node, it lives.
    pub(crate) async fn disconnect_socket(self: &Rc<Self>, id: &str) -> Disconnect {
        let Some(conn) = ConnId::decode(id) else {
            return Disconnect::NotAnId;
        };
        if conn.nonce != *process_nonce() {
            return match &self.shared.cluster {
                None => Disconnect::NotFound,
                Some(cluster)
                    if cluster.is_up() && cluster.send_request(Command::Kick { id: Box::from(id) }) =>
                {
                    Disconnect::SentToCluster
                }
                Some(_) => Disconnect::ClusterUnavailable,
            };
        }
        if usize::from(conn.shard) >= self.shard_count() {
            return Disconnect::NotFound;
        }
        let ask = || ConsoleAsk::Disconnect {
            key: conn.key,
            generation: conn.generation,
        };
        let gathered = self.gather_console(&[conn.shard], ask).await;
        match gathered.value.first() {
            Some(ConsolePart::Disconnected(true)) => Disconnect::Disconnected,
            Some(_) => Disconnect::NotFound,
            None => Disconnect::Unconfirmed,
        }
    }
}

fn sort_busiest_first(channels: &mut [(String, u64)]) {
    channels.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
}

/// Shard 0's sampler: once a second, while a console on this node (or, in
/// a cluster, on any node) watched the traffic lately, a new record.
pub(crate) async fn sample_forever(shard: Rc<Shard>) {
    loop {
        monoio::time::sleep(SAMPLE_INTERVAL).await;
        let watched_here = shard.shared.console.watched(unix_ms());
        let watched_elsewhere = shard
            .shared
            .cluster
            .as_ref()
            .is_some_and(|c| c.stats.console_watched.load(Ordering::Relaxed));
        if watched_here || watched_elsewhere {
            shard.take_sample().await;
        }
    }
}
