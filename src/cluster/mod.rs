//! The cluster link: several ringcast nodes joined through Redis.
//!
//! Owns: the connection to Redis (two sockets on two threads of their own,
//! [`link`]), the topics this node is subscribed to and which shards want
//! each ([`subs`]), the presence of this node's members in Redis and the
//! clean-up of dead nodes ([`presence`]), the cluster-wide rate-limit
//! counts ([`rates`]), and the RESP codec glue ([`resp`]).
//! Does not own: what a message means or who gets it on this node (the
//! shard's router decides, and delivers locally itself).
//!
//! Shards talk to the link through [`Cluster`], a `Send + Sync` handle whose
//! methods never block: they put a [`Command`] on one bounded queue, which
//! the link thread turns into pipelined Redis commands, in order. The link
//! talks back to shards only through the [`ShardPort`] it was given (the
//! shard's inbox), with [`ClusterEvent`]s; it knows nothing of shards
//! beyond their ids.
//!
//! **Invariant:** one `SPUBLISH` per published message, whatever the number
//! of nodes and members. A message carries this node's instance nonce and is
//! ignored when it comes back.
//! **Invariant:** per-sender order: a sender lives on one shard, its
//! commands enter the one queue in order, go out on one Redis connection in
//! order, and come in on each node's one subscriber connection in order.
//!
//! A settings change made on this node is answered once every other node
//! connected to Redis confirmed it applied it on all its shards (each
//! publishes an [`AppliedHere`] confirmation on this node's own topic), or
//! at `link::SETTINGS_CONFIRM_TIMEOUT` with the nodes that did not
//! ([`Reply::SettingsConfirmed`]).

pub(crate) mod link;
pub(crate) mod presence;
pub(crate) mod rates;
pub(crate) mod resp;
pub(crate) mod subs;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

pub(crate) use crate::config::ClusterConfig;
pub(crate) use crate::metrics::ClusterGauges;
use crate::realtime::profile::Profile;
use crate::realtime::rate_limit::{RateKey, Verdict};
use crate::realtime::settings::{EnvKey, EnvSettings};
use crate::realtime::state::{MemberEntry, Target};
use ringcast_shards::ShardId;

/// What the link tells a shard (through the shard's inbox).
#[derive(Debug)]
pub(crate) enum ClusterEvent {
    /// A message from another node: deliver `frame` to `target` of `env`.
    Publish {
        env: EnvKey,
        target: Target,
        frame: Bytes,
    },
    /// The node is subscribed (and the membership stored) for hold
    /// `request`: release what it held.
    Confirmed { request: u64 },
    /// The answer to request `request`.
    Reply { request: u64, reply: Reply },
    /// The web console of some node asked to disconnect socket `id`, which
    /// is this node's (on the shard its id names).
    Kick { id: Box<str> },
}

/// Answers to a shard's requests.
#[derive(Debug)]
pub(crate) enum Reply {
    /// The members of a channel on every node; `None` when Redis is out of
    /// reach.
    Members(Option<Vec<MemberEntry>>),
    /// A settings change stored in Redis (or why not).
    Stored(Result<(), String>),
    /// The other live nodes confirmed a settings change (every one of
    /// them applied it on all its shards), or the deadline came: the ones
    /// that did not confirm (empty: all did).
    SettingsConfirmed(Vec<NodeName>),
    /// The traffic records (JSON) the other nodes stored; `None` when Redis
    /// is out of reach.
    NodeStats(Option<Vec<Bytes>>),
    /// A page of an environment's channels across the cluster; `None` when
    /// Redis is out of reach.
    Channels(Option<ChannelPage>),
}

/// A node of the cluster as its heartbeat names it: its `--node-id` and its
/// process's instance nonce (node ids need not be unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeName {
    pub(crate) node_id: String,
    pub(crate) instance: u64,
}

/// Channels found by one bounded walk over the member hashes in Redis.
#[derive(Debug, Default)]
pub(crate) struct ChannelPage {
    /// Channel name and its members on every node.
    pub(crate) channels: Vec<(String, u64)>,
    /// Where the next page starts (`None`: this was the last).
    pub(crate) next: Option<String>,
}

/// How the link reaches a shard: the shard's inbox. Hands the event back
/// when the inbox is full.
pub(crate) type ShardPort = Arc<dyn Fn(ShardId, ClusterEvent) -> Result<(), ClusterEvent> + Send + Sync>;

/// Called with the cluster's environments whenever they change in Redis
/// (and when the link connects). When another node's notice made the link
/// load them, the [`AppliedHere`] is to be confirmed once every shard of
/// this node installed them (and dropped otherwise).
pub(crate) type SettingsSink = Arc<dyn Fn(Vec<EnvSettings>, Option<AppliedHere>) + Send + Sync>;

/// Tells the node whose `PUT` sent notice `notice` that this node applied
/// the settings it loaded because of it. Confirmed by whoever sees the
/// last shard install them; dropping it unconfirmed leaves that node to
/// its deadline, which then names this one.
pub(crate) struct AppliedHere {
    commands: Sender<Command>,
    stats: Arc<ClusterStats>,
    origin: u64,
    notice: u64,
}

impl AppliedHere {
    /// Queues the confirmation without blocking (it may be called on a
    /// shard's thread); a full queue loses it, counted.
    pub(crate) fn confirm(self) {
        let command = Command::ConfirmSettings {
            origin: self.origin,
            notice: self.notice,
        };
        if self.commands.try_send(command).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A topic this node may subscribe to, with what its messages are for here.
#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub(crate) name: Arc<str>,
    pub(crate) env: EnvKey,
    pub(crate) target: Target,
}

/// A request to the link thread.
pub(crate) enum Command {
    /// `SPUBLISH topic payload` (a message for the other nodes).
    Publish { topic: Arc<str>, frame: Bytes },
    /// Shard `shard` wants `topic`'s messages; confirm `confirm` once the
    /// node is subscribed.
    Watch {
        shard: ShardId,
        topic: Topic,
        confirm: Option<u64>,
    },
    /// Shard `shard` no longer wants `topic`'s messages.
    Unwatch { shard: ShardId, topic: Arc<str> },
    /// Member `id` of this node is in channel `channel` of environment
    /// `env_id` with `profile`; confirm `confirm` once that is stored and
    /// the node is subscribed to `topic`.
    Join {
        shard: ShardId,
        topic: Topic,
        watch: bool,
        env_id: Arc<str>,
        channel: Arc<str>,
        id: Box<str>,
        profile: Option<Profile>,
        confirm: Option<u64>,
    },
    /// Member `id` left `channel`; `unwatch`: shard `shard` has no member
    /// left in it.
    Leave {
        shard: ShardId,
        topic: Arc<str>,
        unwatch: bool,
        env_id: Arc<str>,
        channel: Arc<str>,
        id: Box<str>,
    },
    /// Every member of `env_id` + `channel` on every node, for `request` of
    /// shard `shard`.
    Members {
        shard: ShardId,
        request: u64,
        env_id: Arc<str>,
        channel: Arc<str>,
    },
    /// Store one environment's settings and tell every node; answer
    /// `request` once Redis stored them, then `confirmed` once every other
    /// live node applied them (or at the deadline).
    PutSettings {
        shard: ShardId,
        request: u64,
        confirmed: u64,
        env: Box<EnvSettings>,
    },
    /// Store this node's traffic record (the console's, JSON) for the
    /// other nodes, for a few seconds.
    PutNodeStats { json: Bytes },
    /// The other nodes' traffic records, for `request` of shard `shard`;
    /// also tells every node that a console watches (they keep their
    /// records fresh while it does).
    NodeStats { shard: ShardId, request: u64 },
    /// A page of the channels of `env_id` whose names contain `filter`,
    /// starting at `cursor`, for `request` of shard `shard`.
    Channels {
        shard: ShardId,
        request: u64,
        env_id: Arc<str>,
        filter: Option<Arc<str>>,
        cursor: Option<Box<str>>,
    },
    /// Disconnect socket `id`, which lives on another node.
    Kick { id: Box<str> },
    /// Replace the cluster's environments (SIGHUP); the answer goes to
    /// `reply`.
    ReplaceSettings {
        envs: Vec<EnvSettings>,
        reply: Sender<Result<(), String>>,
    },
    /// The cluster's settings changed (a notice came in); `notice` names
    /// the node that sent it and its number, when it asks to be confirmed.
    SettingsChanged { notice: Option<(u64, u64)> },
    /// This node applied the settings of notice `notice` of node `origin`:
    /// tell that node.
    ConfirmSettings { origin: u64, notice: u64 },
    /// Node `node` confirmed this node's notice `notice`.
    SettingsConfirmed { node: u64, notice: u64 },
    /// Subscriber connection `generation` failed.
    SubscriberLost { generation: u64 },
    /// Leave the cluster: remove this node's presence, stop.
    Shutdown,
}

/// Node-wide counters and gauges of the link (atomics: the link threads and
/// every shard update them).
#[derive(Default)]
pub(crate) struct ClusterStats {
    pub(crate) up: AtomicBool,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) nodes: AtomicU64,
    pub(crate) dead_nodes_cleaned: AtomicU64,
    /// A web console on some node watched the traffic within the last
    /// seconds (seen at the last heartbeat).
    pub(crate) console_watched: AtomicBool,
    /// Rate-limit counts added to Redis whose cluster totals this node now
    /// knows.
    pub(crate) rate_syncs: AtomicU64,
}

/// The handle shards hold (shared by all of them).
pub(crate) struct Cluster {
    commands: Sender<Command>,
    pub(crate) stats: Arc<ClusterStats>,
    pub(crate) rates: rates::ClusterRates,
    /// Prefix of every key and topic (`ringcast:<db>:`).
    prefix: Arc<str>,
}

impl Cluster {
    /// Whether Redis is reachable right now.
    pub(crate) fn is_up(&self) -> bool {
        self.stats.up.load(Ordering::Relaxed)
    }

    /// Queues a command; false (and counted) when the queue is full.
    fn send(&self, command: Command) -> bool {
        match self.commands.try_send(command) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Sends `frame` to the other nodes interested in `topic`.
    pub(crate) fn publish(&self, topic: Arc<str>, frame: Bytes) {
        if !self.is_up() {
            // Bounded loss while Redis is out of reach: counted, not queued.
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.send(Command::Publish { topic, frame });
    }

    /// Queues a command that must not be lost (presence and interest): it
    /// waits for room rather than being dropped. The queue drains at Redis
    /// speed, or at once while Redis is down.
    pub(crate) fn send_control(&self, command: Command) {
        if let Err(e) = self.commands.send_timeout(command, Duration::from_secs(2)) {
            tracing::error!(error = %e, "cluster link does not take commands; presence may be stale");
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn send_request(&self, command: Command) -> bool {
        self.send(command)
    }

    /// Rate-limit hit counted across the cluster (see [`rates`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rate_hit(
        &self,
        env: EnvKey,
        env_id: &str,
        key: RateKey<'_>,
        limiter: usize,
        limit: u32,
        window_s: u32,
        now_s: u64,
    ) -> Verdict {
        self.rates.hit(env, env_id, key, limiter, limit, window_s, now_s)
    }

    /// The cluster's clock in seconds (see [`rates::ClusterRates::now_s`]).
    pub(crate) fn now_s(&self) -> u64 {
        self.rates.now_s()
    }

    pub(crate) fn gauges(&self) -> ClusterGauges {
        let s = &self.stats;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ClusterGauges {
            up: s.up.load(Ordering::Relaxed),
            messages_in: load(&s.messages_in),
            messages_out: load(&s.messages_out),
            dropped: load(&s.dropped),
            reconnects: load(&s.reconnects),
            subscriptions: load(&s.subscriptions),
            nodes: load(&s.nodes),
            dead_nodes_cleaned: load(&s.dead_nodes_cleaned),
            rate_syncs: load(&s.rate_syncs),
        }
    }

    /// Asks the link to leave the cluster and waits (up to a second) for it
    /// to remove this node's presence.
    pub(crate) fn shutdown(&self) {
        if self
            .commands
            .send_timeout(Command::Shutdown, Duration::from_millis(500))
            .is_err()
        {
            return;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while self.stats.up.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Makes `envs` the cluster's environments (SIGHUP); blocks the calling
    /// (non-shard) thread up to `timeout`.
    pub(crate) fn replace_settings(&self, envs: Vec<EnvSettings>, timeout: Duration) -> Result<(), String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send_timeout(Command::ReplaceSettings { envs, reply }, timeout)
            .map_err(|_| "the cluster link does not take commands".to_owned())?;
        answer
            .recv_timeout(timeout)
            .map_err(|_| "Redis did not answer in time".to_owned())?
    }

    pub(crate) fn channel_topic(&self, env_id: &str, channel: &str) -> Arc<str> {
        topic_name(&self.prefix, 'c', env_id, Some(channel))
    }

    pub(crate) fn environment_topic(&self, env_id: &str) -> Arc<str> {
        topic_name(&self.prefix, 'e', env_id, None)
    }

    pub(crate) fn user_topic(&self, env_id: &str, user: &str) -> Arc<str> {
        topic_name(&self.prefix, 'u', env_id, Some(user))
    }

    /// The topic a publish to `target` of environment `env_id` goes to.
    pub(crate) fn topic_of(&self, env_id: &str, target: &Target) -> Arc<str> {
        match target {
            Target::Channel(c) => self.channel_topic(env_id, c),
            Target::Environment => self.environment_topic(env_id),
            Target::User(u) => self.user_topic(env_id, u),
        }
    }
}

/// `<prefix><kind>:<len(env)>:<env>[:<name>]`: the environment's length
/// makes every (environment, name) pair a different topic whatever bytes
/// the names hold.
fn topic_name(prefix: &str, kind: char, env_id: &str, name: Option<&str>) -> Arc<str> {
    let mut topic = String::with_capacity(prefix.len() + env_id.len() + name.map_or(0, str::len) + 12);
    topic.push_str(prefix);
    topic.push(kind);
    let _ = write!(topic, ":{}:{env_id}", env_id.len());
    if let Some(name) = name {
        topic.push(':');
        topic.push_str(name);
    }
    Arc::from(topic)
}

/// Makes the cluster handle and its link, and tries the first connection
/// (bounded by the connect timeout), so a node starting next to a live
/// Redis serves its first client with the cluster's settings. The caller
/// starts the link with [`link::Link::spawn`] once the shards can take
/// events; [`link::Link::take_loaded`] has the cluster's environments when
/// the first connection read them.
pub(crate) fn connect(
    config: ClusterConfig,
    port: ShardPort,
    seed: Vec<EnvSettings>,
) -> (Arc<Cluster>, link::Link) {
    let (commands, queue) = crossbeam_channel::bounded(config.queue_commands_max.max(16));
    let prefix: Arc<str> = Arc::from(format!("ringcast:{}:", config.redis.db));
    let cluster = Arc::new(Cluster {
        commands: commands.clone(),
        stats: Arc::default(),
        rates: rates::ClusterRates::default(),
        prefix: prefix.clone(),
    });
    let link = link::Link::connect(link::LinkSetup {
        config,
        prefix,
        port,
        seed,
        queue,
        commands,
        cluster: cluster.clone(),
    });
    (cluster, link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_cannot_collide() {
        let a = topic_name("p:", 'c', "a:1", Some("b"));
        let b = topic_name("p:", 'c', "a", Some("1:b"));
        assert_ne!(a, b);
        assert_eq!(&*a, "p:c:3:a:1:b");
        assert_eq!(&*topic_name("p:", 'e', "env", None), "p:e:3:env");
    }
}
