//! The link's two threads and their Redis connections.
//!
//! - `cluster-link` owns the command connection: it takes [`Command`]s off
//!   the queue in batches, writes each batch as one pipeline, reads the
//!   replies in order, and runs the periodic work (heartbeat, dead-node
//!   check, rate-limit sync, reconnecting with backoff). It also writes
//!   `SSUBSCRIBE`/`SUNSUBSCRIBE` on the subscriber connection.
//! - `cluster-sub` reads the subscriber connection: messages from other
//!   nodes go to the interested shards' inboxes, subscription confirmations
//!   release the holds waiting for them, settings notices and the other
//!   nodes' confirmations of this node's notices go to `cluster-link`.
//!
//! A settings `PUT` on this node waits for the other live nodes (asked at
//! the `PUT`: node set, heartbeat, subscribed) to confirm they applied it,
//! at most [`SETTINGS_CONFIRM_TIMEOUT`]; a node confirms a numbered notice
//! once all its shards installed what it loaded because of it.
//!
//! While Redis is out of reach, local members are served as usual:
//! messages for other nodes are dropped and counted, holds are released at
//! once, presence and interest changes are recorded and replayed when the
//! link is back (every topic subscribed again, every member stored again).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis_protocol::resp2::types::BytesFrame;

use super::presence::{self, Mirror};
use super::resp::{self, Conn, Writer};
use super::subs::{Subs, Wire};
use super::{
    AppliedHere, ChannelPage, ClusterConfig, ClusterEvent, Command, NodeName, Reply, SettingsSink, ShardPort,
    Topic,
};
use crate::cluster::Cluster;
use crate::realtime::events::presence_frame;
use crate::realtime::settings::EnvSettings;
use ringcast_shards::{ConnId, ShardId};

/// Commands taken off the queue per pipeline.
const BATCH_COMMANDS_MAX: usize = 1024;
/// Read/write timeout of the command connection.
const COMMAND_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The subscriber connection is pinged this often, and declared lost after
/// three times as long without a byte.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Version byte of a message on a topic.
const WIRE_VERSION: u8 = 1;
/// Kind byte of a settings notice that asks to be confirmed (followed by
/// the notice's number, u64 LE). A notice of the header alone asks for
/// nothing (`SIGHUP`, and nodes of earlier versions, which also ignore
/// what follows the header).
const SETTINGS_NOTICE: u8 = b'n';
/// Kind byte of a confirmation on a node's `…:s:applied:<instance>` topic
/// (followed by the number of the notice it confirms, u64 LE).
const SETTINGS_APPLIED: u8 = b'a';
/// Longest a settings `PUT` waits for the other live nodes to confirm
/// that they applied it; those that did not are named in its answer.
pub(crate) const SETTINGS_CONFIRM_TIMEOUT: Duration = Duration::from_millis(2_500);
/// Longest a link thread retries a full shard inbox before dropping.
const DELIVER_PATIENCE: Duration = Duration::from_secs(5);
/// A node's console traffic record lives this long in Redis unless
/// refreshed (every second while a console watches).
const NODE_STATS_TTL_MS: u64 = 5_000;
/// A console's `GET /api/stats` keeps every node's record fresh this long.
const CONSOLE_WATCH_TTL_MS: u64 = 30_000;
/// One page of the channel list: the walk over the member hashes stops
/// after this many `SCAN` calls of [`SCAN_COUNT`] keys, or once it found
/// [`CHANNEL_PAGE_MIN`] channels, so a console request holds the link for
/// milliseconds whatever the size of the keyspace.
const SCAN_CALLS_MAX: usize = 16;
const SCAN_COUNT: &[u8] = b"1000";
const CHANNEL_PAGE_MIN: usize = 200;

pub(crate) struct LinkSetup {
    pub(crate) config: ClusterConfig,
    pub(crate) prefix: Arc<str>,
    pub(crate) port: ShardPort,
    pub(crate) seed: Vec<EnvSettings>,
    pub(crate) queue: Receiver<Command>,
    pub(crate) commands: Sender<Command>,
    pub(crate) cluster: Arc<Cluster>,
}

/// The link before its thread runs: connected once (or not), holding the
/// cluster's settings if it could read them.
pub(crate) struct Link {
    config: ClusterConfig,
    prefix: Arc<str>,
    instance: u64,
    port: ShardPort,
    settings: Option<SettingsSink>,
    seed: Vec<EnvSettings>,
    queue: Receiver<Command>,
    commands: Sender<Command>,
    cluster: Arc<Cluster>,
    subs: Arc<Mutex<Subs>>,
    mirror: Mirror,
    conn: Option<Conn>,
    sub_writer: Option<Writer>,
    /// Which subscriber connection is current (a lost old one is ignored).
    sub_generation: u64,
    backoff: Duration,
    next_attempt: Instant,
    next_heartbeat: Instant,
    next_rate_sync: Instant,
    ever_connected: bool,
    /// The first heartbeat on a connection adds this node to the node set;
    /// later ones that find it missing mean a survivor removed it.
    first_heartbeat: bool,
    /// Environments read from Redis at the last connect, not yet handed on.
    loaded: Option<Vec<EnvSettings>>,
    /// The other live nodes at the last heartbeat.
    other_nodes: Vec<u64>,
    /// Number of this node's last settings notice.
    last_notice: u64,
    /// This node's settings changes waiting for the other nodes to confirm.
    settings_waits: Vec<SettingsWait>,
}

/// A settings change of this node waiting for the other live nodes to
/// confirm they applied it.
struct SettingsWait {
    notice: u64,
    shard: ShardId,
    /// The request the answer goes to.
    request: u64,
    /// The nodes that have not confirmed yet.
    waiting: Vec<NodeName>,
    deadline: Instant,
}

/// What to do with the reply to one pipelined command.
enum Pending {
    Ignore,
    /// A membership is stored: confirm `request` once `topic` is subscribed.
    JoinStored {
        shard: ShardId,
        topic: Arc<str>,
        request: u64,
    },
    Members {
        shard: ShardId,
        request: u64,
    },
    /// `HSET` of a settings change; once stored, `wait` waits for the
    /// other nodes' confirmations.
    Stored {
        shard: ShardId,
        request: u64,
        wait: SettingsWait,
    },
    /// `SADD nodes` of the heartbeat: 1 means a survivor had removed this
    /// node (declared dead): store the presence again.
    Heartbeat,
    /// `INCRBY` of a rate-limit window.
    RateSynced(super::rates::Delta),
    /// `MGET` of the other nodes' traffic records.
    NodeStats {
        shard: ShardId,
        request: u64,
    },
    /// `EXISTS` of the console's watch key.
    ConsoleWatched,
}

impl Link {
    /// Makes the link and tries the first connection (bounded by the
    /// connect timeout).
    pub(crate) fn connect(setup: LinkSetup) -> Self {
        let mut instance_bytes = [0u8; 8];
        getrandom::fill(&mut instance_bytes).unwrap_or_else(|_| {
            instance_bytes = (super::rates::unix_ms() ^ u64::from(std::process::id())).to_le_bytes();
        });
        let now = Instant::now();
        let mut link = Self {
            config: setup.config,
            prefix: setup.prefix,
            instance: u64::from_le_bytes(instance_bytes),
            port: setup.port,
            settings: None,
            seed: setup.seed,
            queue: setup.queue,
            commands: setup.commands,
            cluster: setup.cluster,
            subs: Arc::default(),
            mirror: Mirror::default(),
            conn: None,
            sub_writer: None,
            sub_generation: 0,
            backoff: BACKOFF_MIN,
            next_attempt: now,
            next_heartbeat: now,
            next_rate_sync: now,
            ever_connected: false,
            first_heartbeat: true,
            loaded: None,
            other_nodes: Vec::new(),
            last_notice: 0,
            settings_waits: Vec::new(),
        };
        link.try_connect();
        link
    }

    /// The cluster's environments, if the first connection read them.
    pub(crate) fn take_loaded(&mut self) -> Option<Vec<EnvSettings>> {
        let envs = self.loaded.take();
        if let Some(envs) = &envs {
            self.seed.clone_from(envs);
        }
        envs
    }

    /// Starts the link thread; `settings` gets every later change.
    pub(crate) fn spawn(mut self, settings: SettingsSink) -> std::io::Result<()> {
        self.settings = Some(settings);
        std::thread::Builder::new()
            .name("cluster-link".into())
            .spawn(move || self.run())?;
        Ok(())
    }

    fn stats(&self) -> &super::ClusterStats {
        &self.cluster.stats
    }

    fn subs(&self) -> MutexGuard<'_, Subs> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(mut self) {
        if let Some(envs) = self.loaded.take() {
            self.seed.clone_from(&envs);
        }
        let mut batch = Vec::with_capacity(BATCH_COMMANDS_MAX);
        loop {
            let wait = self.next_deadline().saturating_duration_since(Instant::now());
            match self.queue.recv_timeout(wait) {
                Ok(command) => batch.push(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < BATCH_COMMANDS_MAX {
                match self.queue.try_recv() {
                    Ok(command) => batch.push(command),
                    Err(_) => break,
                }
            }
            let stop = batch.iter().any(|c| matches!(c, Command::Shutdown));
            self.handle_batch(&mut batch);
            if stop {
                self.leave();
                return;
            }
            self.periodic();
        }
    }

    fn next_deadline(&self) -> Instant {
        let waits = self.settings_waits.iter().map(|w| w.deadline);
        if self.conn.is_none() {
            return waits.fold(self.next_attempt, Instant::min);
        }
        waits.fold(self.next_heartbeat.min(self.next_rate_sync), Instant::min)
    }

    // ---------------------------------------------------------------
    // Commands

    fn handle_batch(&mut self, batch: &mut Vec<Command>) {
        let mut pending = Vec::new();
        for command in batch.drain(..) {
            match command {
                Command::Publish { topic, frame } => self.publish(&mut pending, &topic, &frame),
                Command::Watch {
                    shard,
                    topic,
                    confirm,
                } => {
                    self.watch(shard, &topic);
                    if let Some(request) = confirm {
                        self.confirm_when_subscribed(shard, &topic.name, request);
                    }
                }
                Command::Unwatch { shard, topic } => self.unwatch(shard, &topic),
                Command::Join {
                    shard,
                    topic,
                    watch,
                    env_id,
                    channel,
                    id,
                    profile,
                    confirm,
                } => {
                    if watch {
                        self.watch(shard, &topic);
                    }
                    let key = presence::members_key(&self.prefix, &env_id, &channel);
                    let entry = presence::encode_entry(self.instance, profile.as_ref());
                    self.mirror.insert(key.clone(), &id, entry.clone());
                    match self.conn.as_mut() {
                        Some(conn) => {
                            conn.push(&[b"HSET", &key, id.as_bytes(), &entry]);
                            pending.push(match confirm {
                                Some(request) => Pending::JoinStored {
                                    shard,
                                    topic: topic.name.clone(),
                                    request,
                                },
                                None => Pending::Ignore,
                            });
                            let node_key = presence::node_key(&self.prefix, self.instance);
                            conn.push(&[b"SADD", &node_key, &presence::node_entry(&key, &id)]);
                            pending.push(Pending::Ignore);
                        }
                        None => {
                            if let Some(request) = confirm {
                                self.confirm(shard, request);
                            }
                        }
                    }
                }
                Command::Leave {
                    shard,
                    topic,
                    unwatch,
                    env_id,
                    channel,
                    id,
                } => {
                    let key = presence::members_key(&self.prefix, &env_id, &channel);
                    self.mirror.remove(&key, &id);
                    if let Some(conn) = self.conn.as_mut() {
                        conn.push(&[b"HDEL", &key, id.as_bytes()]);
                        let node_key = presence::node_key(&self.prefix, self.instance);
                        conn.push(&[b"SREM", &node_key, &presence::node_entry(&key, &id)]);
                        pending.extend([Pending::Ignore, Pending::Ignore]);
                    }
                    if unwatch {
                        self.unwatch(shard, &topic);
                    }
                }
                Command::Members {
                    shard,
                    request,
                    env_id,
                    channel,
                } => match self.conn.as_mut() {
                    Some(conn) => {
                        let key = presence::members_key(&self.prefix, &env_id, &channel);
                        conn.push(&[b"HGETALL", &key]);
                        pending.push(Pending::Members { shard, request });
                    }
                    None => self.reply(shard, request, Reply::Members(None)),
                },
                Command::PutSettings {
                    shard,
                    request,
                    confirmed,
                    env,
                } => self.put_settings(&mut pending, shard, (request, confirmed), &env),
                Command::PutNodeStats { json } => {
                    if let Some(conn) = self.conn.as_mut() {
                        let key = stats_key(&self.prefix, self.instance);
                        let ttl = NODE_STATS_TTL_MS.to_string();
                        conn.push(&[b"SET", &key, &json, b"PX", ttl.as_bytes()]);
                        pending.push(Pending::Ignore);
                    }
                }
                Command::NodeStats { shard, request } => {
                    let keys: Vec<Vec<u8>> = self
                        .other_nodes
                        .iter()
                        .map(|&node| stats_key(&self.prefix, node))
                        .collect();
                    let watched = format!("{}console:watched", self.prefix);
                    let Some(conn) = self.conn.as_mut() else {
                        self.reply(shard, request, Reply::NodeStats(None));
                        continue;
                    };
                    let ttl = CONSOLE_WATCH_TTL_MS.to_string();
                    conn.push(&[b"SET", watched.as_bytes(), b"1", b"PX", ttl.as_bytes()]);
                    pending.push(Pending::Ignore);
                    if keys.is_empty() {
                        self.reply(shard, request, Reply::NodeStats(Some(Vec::new())));
                        continue;
                    }
                    let mut args: Vec<&[u8]> = vec![b"MGET"];
                    args.extend(keys.iter().map(Vec::as_slice));
                    conn.push(&args);
                    pending.push(Pending::NodeStats { shard, request });
                }
                Command::Channels {
                    shard,
                    request,
                    env_id,
                    filter,
                    cursor,
                } => {
                    self.complete(&mut pending);
                    let page = match self.conn.as_mut() {
                        Some(conn) => {
                            match scan_channels(
                                conn,
                                &self.prefix,
                                &env_id,
                                filter.as_deref(),
                                cursor.as_deref(),
                            ) {
                                Ok(page) => Some(page),
                                Err(e) => {
                                    self.lost(&e.to_string());
                                    None
                                }
                            }
                        }
                        None => None,
                    };
                    self.reply(shard, request, Reply::Channels(page));
                }
                Command::Kick { id } => {
                    if let Some(conn) = self.conn.as_mut() {
                        let mut notice = header(self.instance, 1 + id.len());
                        notice.push(ADMIN_KICK);
                        notice.extend_from_slice(id.as_bytes());
                        conn.push(&[b"SPUBLISH", &admin_topic(&self.prefix), &notice]);
                        pending.push(Pending::Ignore);
                    }
                }
                Command::ReplaceSettings { envs, reply } => {
                    self.complete(&mut pending);
                    let result = match self.conn.as_mut() {
                        Some(conn) => replace_settings(conn, &self.prefix, &envs, self.instance)
                            .map_err(|e| e.to_string()),
                        None => Err("Redis is out of reach".to_owned()),
                    };
                    if let Err(e) = &result {
                        if self.conn.is_some() {
                            tracing::warn!(error = %e, "storing the reloaded settings in Redis failed");
                            self.lost("settings write failed");
                        }
                    }
                    let _ = reply.send(result);
                }
                Command::SettingsChanged { notice } => {
                    self.complete(&mut pending);
                    if let Some(conn) = self.conn.as_mut() {
                        match load_settings(conn, &self.prefix) {
                            Ok(envs) => {
                                let applied = notice.map(|(origin, notice)| AppliedHere {
                                    commands: self.commands.clone(),
                                    stats: self.cluster.stats.clone(),
                                    origin,
                                    notice,
                                });
                                self.hand_on(envs, applied);
                            }
                            Err(e) => self.lost(&e.to_string()),
                        }
                    }
                }
                Command::ConfirmSettings { origin, notice } => {
                    let mut payload = header(self.instance, 9);
                    payload.push(SETTINGS_APPLIED);
                    payload.extend_from_slice(&notice.to_le_bytes());
                    if let Some(conn) = self.conn.as_mut() {
                        conn.push(&[b"SPUBLISH", &applied_topic(&self.prefix, origin), &payload]);
                        pending.push(Pending::Ignore);
                    }
                }
                Command::SettingsConfirmed { node, notice } => self.settings_confirmed(node, notice),
                Command::SubscriberLost { generation } => {
                    if generation == self.sub_generation && self.conn.is_some() {
                        self.complete(&mut pending);
                        self.lost("subscriber connection lost");
                    }
                }
                Command::Shutdown => {}
            }
        }
        self.complete(&mut pending);
    }

    /// Stores one environment's settings in Redis and notifies every node
    /// (answering `requests.0` once stored), then waits for the other live
    /// nodes to confirm they applied it (answering `requests.1` once all
    /// did, or at [`SETTINGS_CONFIRM_TIMEOUT`] with those that did not).
    fn put_settings(
        &mut self,
        pending: &mut Vec<Pending>,
        shard: ShardId,
        (request, confirmed): (u64, u64),
        env: &EnvSettings,
    ) {
        let json = match sonic_rs::to_string(env) {
            Ok(json) => json,
            Err(e) => return self.reply(shard, request, Reply::Stored(Err(e.to_string()))),
        };
        // Who must confirm: the nodes alive now, asked before the notice
        // goes out (a node that joins later loads the settings itself).
        self.complete(pending);
        let live = match self.live_nodes() {
            Ok(live) => live,
            Err(e) => {
                self.lost(&e.to_string());
                Vec::new()
            }
        };
        let Some(conn) = self.conn.as_mut() else {
            let why = "Redis is out of reach; the change was not made".to_owned();
            return self.reply(shard, request, Reply::Stored(Err(why)));
        };
        match self.seed.iter_mut().find(|e| e.id == env.id) {
            Some(known) => known.clone_from(env),
            None => self.seed.push(env.clone()),
        }
        self.last_notice += 1;
        let key = settings_key(&self.prefix);
        conn.push(&[b"HSET", &key, env.id.as_bytes(), json.as_bytes()]);
        pending.push(Pending::Stored {
            shard,
            request,
            wait: SettingsWait {
                notice: self.last_notice,
                shard,
                request: confirmed,
                waiting: live,
                deadline: Instant::now() + SETTINGS_CONFIRM_TIMEOUT,
            },
        });
        let notice = settings_notice(self.instance, Some(self.last_notice));
        conn.push(&[b"SPUBLISH", &settings_topic(&self.prefix), &notice]);
        pending.push(Pending::Ignore);
    }

    /// The other nodes that can confirm a settings change now: in the node
    /// set, with a heartbeat key (whose value is the node's id), and
    /// subscribed to their confirmation topic (so connected to Redis). A
    /// node that is not (it crashed within its heartbeat's TTL, or lost
    /// Redis: it loads the settings when its link connects again, or it
    /// runs a version that does not confirm) is not waited for.
    fn live_nodes(&mut self) -> Result<Vec<NodeName>, resp::Error> {
        let nodes = presence::nodes_key(&self.prefix);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let others = other_instances(&resp::array(conn.call(&[b"SMEMBERS", &nodes])?), self.instance);
        if others.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<Vec<u8>> = others
            .iter()
            .map(|&other| presence::alive_key(&self.prefix, other))
            .collect();
        let topics: Vec<Vec<u8>> = others
            .iter()
            .map(|&other| applied_topic(&self.prefix, other))
            .collect();
        let mut mget: Vec<&[u8]> = vec![b"MGET"];
        mget.extend(keys.iter().map(Vec::as_slice));
        conn.push(&mget);
        let mut numsub: Vec<&[u8]> = vec![b"PUBSUB", b"SHARDNUMSUB"];
        numsub.extend(topics.iter().map(Vec::as_slice));
        conn.push(&numsub);
        let mut replies = conn.replies(2)?.into_iter();
        let (Some(ids), Some(subscribed)) = (replies.next(), replies.next()) else {
            return Err(resp::Error::Protocol("MGET or PUBSUB answered nothing".into()));
        };
        let ids = resp::array(ids);
        // `[topic, count, topic, count, ...]`, in the order asked.
        let subscribed = resp::array(subscribed);
        let mut live = Vec::with_capacity(others.len());
        for (i, &instance) in others.iter().enumerate() {
            let Some(id) = ids.get(i).and_then(resp::bytes) else {
                continue;
            };
            let node_id = String::from_utf8_lossy(id).into_owned();
            if subscribed.get(2 * i + 1).and_then(resp::integer).unwrap_or(0) == 0 {
                tracing::info!(
                    node = %node_id,
                    instance = format_args!("{instance:016x}"),
                    "a node not connected to Redis does not confirm settings changes; not waiting for it"
                );
                continue;
            }
            live.push(NodeName { node_id, instance });
        }
        Ok(live)
    }

    /// Node `node` applied this node's notice `notice`; the change's
    /// answer goes out once the last node confirmed.
    fn settings_confirmed(&mut self, node: u64, notice: u64) {
        let Some(at) = self.settings_waits.iter().position(|w| w.notice == notice) else {
            return;
        };
        let wait = &mut self.settings_waits[at];
        wait.waiting.retain(|n| n.instance != node);
        if wait.waiting.is_empty() {
            let wait = self.settings_waits.swap_remove(at);
            self.reply(wait.shard, wait.request, Reply::SettingsConfirmed(Vec::new()));
        }
    }

    /// Answers the settings changes whose deadline passed (every one when
    /// `all`: no confirmation can come in any more), naming the nodes that
    /// did not confirm.
    fn settings_overdue(&mut self, all: bool) {
        let now = Instant::now();
        let (overdue, waiting) = std::mem::take(&mut self.settings_waits)
            .into_iter()
            .partition(|w| all || w.deadline <= now);
        self.settings_waits = waiting;
        for wait in overdue {
            let SettingsWait {
                notice,
                shard,
                request,
                waiting,
                ..
            } = wait;
            tracing::warn!(
                notice,
                nodes = ?waiting.iter().map(|n| &n.node_id).collect::<Vec<_>>(),
                "settings change not confirmed by every node in time"
            );
            self.reply(shard, request, Reply::SettingsConfirmed(waiting));
        }
    }

    fn wire_payload(&self, frame: &[u8]) -> Vec<u8> {
        let mut payload = header(self.instance, frame.len());
        payload.extend_from_slice(frame);
        payload
    }

    fn publish(&mut self, pending: &mut Vec<Pending>, topic: &str, frame: &Bytes) {
        let payload = self.wire_payload(frame);
        match self.conn.as_mut() {
            Some(conn) => {
                conn.push(&[b"SPUBLISH", topic.as_bytes(), &payload]);
                pending.push(Pending::Ignore);
                self.stats().messages_out.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.stats().dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn watch(&mut self, shard: ShardId, topic: &Topic) {
        let wire = self.subs().watch(shard, topic);
        if wire == Wire::Subscribe {
            self.write_sub(b"SSUBSCRIBE", &topic.name);
        }
        self.update_subscription_gauge();
    }

    fn unwatch(&mut self, shard: ShardId, topic: &Arc<str>) {
        let (wire, released) = self.subs().unwatch(shard, topic);
        if wire == Wire::Unsubscribe {
            self.write_sub(b"SUNSUBSCRIBE", topic);
        }
        for (shard, request) in released {
            self.confirm(shard, request);
        }
        self.update_subscription_gauge();
    }

    fn update_subscription_gauge(&self) {
        let n = self.subs().len() as u64;
        self.stats().subscriptions.store(n, Ordering::Relaxed);
    }

    /// Writes a (un)subscribe on the subscriber connection, when there is one.
    fn write_sub(&mut self, verb: &[u8], topic: &Arc<str>) {
        let Some(writer) = self.sub_writer.as_mut() else {
            return;
        };
        self.subs.lock().unwrap_or_else(|e| e.into_inner()).written(topic);
        if let Err(e) = writer.send(&[verb, topic.as_bytes()]) {
            tracing::warn!(error = %e, "subscriber connection write failed");
            self.lost("subscriber write failed");
        }
    }

    fn confirm_when_subscribed(&mut self, shard: ShardId, topic: &str, request: u64) {
        let waiting = self.conn.is_some() && self.subs().wait(topic, shard, request);
        if !waiting {
            self.confirm(shard, request);
        }
    }

    fn confirm(&self, shard: ShardId, request: u64) {
        deliver(&self.port, shard, ClusterEvent::Confirmed { request });
    }

    fn reply(&self, shard: ShardId, request: u64, reply: Reply) {
        deliver(&self.port, shard, ClusterEvent::Reply { request, reply });
    }

    /// Writes the pipeline and handles every reply, in order. A failure
    /// loses the connection; what was waiting is answered as if Redis were
    /// away.
    fn complete(&mut self, pending: &mut Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        let replies = match self.conn.as_mut() {
            Some(conn) => conn.replies(pending.len()),
            None => Err(resp::Error::Closed),
        };
        match replies {
            Ok(replies) => {
                for (what, reply) in pending.drain(..).zip(replies) {
                    self.dispatch(what, reply);
                }
            }
            Err(e) => {
                self.lost(&e.to_string());
                for what in pending.drain(..) {
                    self.dispatch_unanswered(what);
                }
            }
        }
    }

    fn dispatch(&mut self, what: Pending, reply: BytesFrame) {
        if let BytesFrame::Error(e) = &reply {
            tracing::warn!(error = %e, "redis refused a command");
        }
        match what {
            Pending::Ignore => {}
            Pending::JoinStored {
                shard,
                topic,
                request,
            } => self.confirm_when_subscribed(shard, &topic, request),
            Pending::Members { shard, request } => {
                let pairs = resp::array(reply)
                    .iter()
                    .filter_map(resp::bytes)
                    .cloned()
                    .collect();
                self.reply(shard, request, Reply::Members(Some(presence::member_list(pairs))));
            }
            Pending::Stored { shard, request, wait } => {
                let result = match &reply {
                    BytesFrame::Error(e) => Err(e.to_string()),
                    _ => Ok(()),
                };
                let stored = result.is_ok();
                self.reply(shard, request, Reply::Stored(result));
                if stored {
                    if wait.waiting.is_empty() {
                        self.reply(wait.shard, wait.request, Reply::SettingsConfirmed(Vec::new()));
                    } else {
                        self.settings_waits.push(wait);
                    }
                }
            }
            Pending::Heartbeat => {
                let first = std::mem::replace(&mut self.first_heartbeat, false);
                if !first && resp::integer(&reply) == Some(1) {
                    tracing::warn!("this node had been declared dead; storing its presence again");
                    if let Err(e) = self.store_presence() {
                        self.lost(&e.to_string());
                    }
                }
            }
            Pending::RateSynced(delta) => {
                if let Some(total) = resp::integer(&reply) {
                    self.cluster.rates.synced(&delta, total);
                    self.stats().rate_syncs.fetch_add(1, Ordering::Relaxed);
                }
            }
            Pending::NodeStats { shard, request } => {
                // Nodes without a record (no one watched them yet) are
                // `nil`s, left out.
                let records = resp::array(reply)
                    .iter()
                    .filter_map(resp::bytes)
                    .cloned()
                    .collect();
                self.reply(shard, request, Reply::NodeStats(Some(records)));
            }
            Pending::ConsoleWatched => {
                let watched = resp::integer(&reply) == Some(1);
                self.stats().console_watched.store(watched, Ordering::Relaxed);
            }
        }
    }

    fn dispatch_unanswered(&mut self, what: Pending) {
        match what {
            Pending::JoinStored { shard, request, .. } => self.confirm(shard, request),
            Pending::Members { shard, request } => self.reply(shard, request, Reply::Members(None)),
            Pending::Stored { shard, request, .. } => {
                let why = "Redis did not answer; the change may not be stored".to_owned();
                self.reply(shard, request, Reply::Stored(Err(why)));
            }
            Pending::NodeStats { shard, request } => self.reply(shard, request, Reply::NodeStats(None)),
            Pending::Ignore | Pending::Heartbeat | Pending::RateSynced(_) | Pending::ConsoleWatched => {}
        }
    }

    /// Applies the cluster's environments on this node; they are also what
    /// this node seeds an empty Redis with (one restarted without
    /// persistence), so a restart of Redis does not undo changes.
    /// `applied`: the notice that made this node load them, confirmed
    /// once its shards installed them.
    fn hand_on(&mut self, envs: Vec<EnvSettings>, applied: Option<AppliedHere>) {
        self.seed.clone_from(&envs);
        if let Some(sink) = &self.settings {
            sink(envs, applied);
        }
    }

    // ---------------------------------------------------------------
    // Connection

    /// The connection is gone: everything waiting is released, and the
    /// next attempt is scheduled.
    fn lost(&mut self, why: &str) {
        if self.conn.is_none() {
            return;
        }
        tracing::warn!(
            reason = why,
            "lost the connection to Redis; serving local members only until it is back"
        );
        self.conn = None;
        if let Some(writer) = self.sub_writer.take() {
            writer.shutdown();
        }
        self.stats().up.store(false, Ordering::Relaxed);
        let (_, waiters) = self.subs().reset();
        for (shard, request) in waiters {
            self.confirm(shard, request);
        }
        // Confirmations come in on the subscriber connection, which is gone.
        self.settings_overdue(true);
        self.backoff = BACKOFF_MIN;
        self.next_attempt = Instant::now() + self.backoff;
    }

    fn try_connect(&mut self) {
        match self.open() {
            Ok(()) => {
                self.backoff = BACKOFF_MIN;
                if self.ever_connected {
                    self.stats().reconnects.fetch_add(1, Ordering::Relaxed);
                }
                self.ever_connected = true;
                self.stats().up.store(true, Ordering::Relaxed);
                tracing::info!(
                    node = %self.config.node_id,
                    instance = format_args!("{:016x}", self.instance),
                    redis = format_args!("{}:{}", self.config.redis.host, self.config.redis.port),
                    "joined the cluster"
                );
            }
            Err(e) => {
                if let Some(writer) = self.sub_writer.take() {
                    writer.shutdown();
                }
                self.conn = None;
                if self.backoff == BACKOFF_MIN {
                    tracing::warn!(error = %e, "cannot reach Redis; retrying with backoff");
                }
                self.next_attempt = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    /// Connects both sockets, learns the epoch and the settings, subscribes
    /// again to every topic and stores this node's presence again.
    fn open(&mut self) -> Result<(), resp::Error> {
        let url = &self.config.redis;
        let mut conn = Conn::open(url, COMMAND_IO_TIMEOUT)?;
        let sub = Conn::open(url, HEARTBEAT_INTERVAL * 3)?;
        // The cluster's clock: the first node's start, kept in Redis.
        let epoch_key = format!("{}epoch", self.prefix);
        let now_ms = super::rates::unix_ms().to_string();
        conn.call(&[b"SET", epoch_key.as_bytes(), now_ms.as_bytes(), b"NX"])?;
        let epoch = conn.call(&[b"GET", epoch_key.as_bytes()])?;
        if let Some(ms) = resp::bytes(&epoch).and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()) {
            self.cluster.rates.set_epoch_ms(ms);
        }
        // The settings: Redis holds them; an empty cluster takes this
        // node's configuration file.
        let key = settings_key(&self.prefix);
        if resp::integer(&conn.call(&[b"EXISTS", &key])?) == Some(0) {
            for env in &self.seed {
                if let Ok(json) = sonic_rs::to_string(env) {
                    conn.call(&[b"HSETNX", &key, env.id.as_bytes(), json.as_bytes()])?;
                }
            }
            tracing::info!(
                environments = self.seed.len(),
                "seeded the cluster's settings from the configuration"
            );
        }
        let envs = load_settings(&mut conn, &self.prefix)?;
        // Subscriptions, on the new subscriber connection.
        let mut writer = sub.writer()?;
        self.sub_generation += 1;
        let (topics, waiters) = self.subs().reset();
        writer.send(&[b"SSUBSCRIBE", &settings_topic(&self.prefix)])?;
        writer.send(&[b"SSUBSCRIBE", &admin_topic(&self.prefix)])?;
        writer.send(&[b"SSUBSCRIBE", &applied_topic(&self.prefix, self.instance)])?;
        for topic in &topics {
            self.subs().written(topic);
            writer.send(&[b"SSUBSCRIBE", topic.as_bytes()])?;
        }
        let reader = Reader {
            conn: sub,
            subs: self.subs.clone(),
            port: self.port.clone(),
            instance: self.instance,
            settings_topic: Bytes::from(settings_topic(&self.prefix)),
            admin_topic: Bytes::from(admin_topic(&self.prefix)),
            applied_topic: Bytes::from(applied_topic(&self.prefix, self.instance)),
            commands: self.commands.clone(),
            cluster: self.cluster.clone(),
            generation: self.sub_generation,
        };
        std::thread::Builder::new()
            .name("cluster-sub".into())
            .spawn(move || reader.run())?;
        self.conn = Some(conn);
        self.sub_writer = Some(writer);
        // Holds are released while Redis is away, so none should be
        // waiting here; any that are do not wait for a new connection.
        for (shard, request) in waiters {
            self.confirm(shard, request);
        }
        self.store_presence()?;
        self.first_heartbeat = true;
        self.heartbeat()?;
        if self.ever_connected {
            // Settings may have changed while this node was away.
            self.hand_on(envs, None);
        } else {
            self.loaded = Some(envs);
        }
        Ok(())
    }

    /// Stores this node's presence again: removes what Redis holds for it
    /// but the mirror does not (members that left while Redis was away),
    /// then writes every member the mirror holds.
    fn store_presence(&mut self) -> Result<(), resp::Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let node_key = presence::node_key(&self.prefix, self.instance);
        let stored = resp::array(conn.call(&[b"SMEMBERS", &node_key])?);
        let mut count = 0;
        for entry in stored.iter().filter_map(resp::bytes) {
            let Some((key, id)) = presence::split_node_entry(entry) else {
                continue;
            };
            let key = Bytes::copy_from_slice(key);
            let kept = self.mirror.iter().any(|(k, i, _)| *k == key && &**i == id);
            if !kept {
                conn.push(&[b"HDEL", &key, id.as_bytes()]);
                conn.push(&[b"SREM", &node_key, entry]);
                count += 2;
            }
        }
        for (key, id, entry) in self.mirror.iter() {
            conn.push(&[b"HSET", key, id.as_bytes(), entry]);
            conn.push(&[b"SADD", &node_key, &presence::node_entry(key, id)]);
            count += 2;
            if conn.pending_bytes() > 256 * 1024 {
                conn.replies(count)?;
                count = 0;
            }
        }
        conn.replies(count)?;
        tracing::debug!(members = self.mirror.len(), "presence stored");
        Ok(())
    }

    // ---------------------------------------------------------------
    // Periodic work

    fn periodic(&mut self) {
        self.settings_overdue(false);
        let now = Instant::now();
        if self.conn.is_none() {
            if now >= self.next_attempt {
                self.try_connect();
            }
            return;
        }
        if now >= self.next_rate_sync {
            self.next_rate_sync = now + self.config.rate_sync_interval;
            self.sync_rates();
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + HEARTBEAT_INTERVAL;
            if let Err(e) = self.heartbeat() {
                self.lost(&e.to_string());
                return;
            }
            if let Err(e) = self.reap_dead_nodes() {
                self.lost(&e.to_string());
            }
        }
    }

    fn sync_rates(&mut self) {
        let deltas = self.cluster.rates.take_deltas(&self.prefix);
        if deltas.is_empty() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let mut pending = Vec::with_capacity(deltas.len() * 2);
        for delta in deltas {
            conn.push(&[b"INCRBY", &delta.redis_key, delta.add.to_string().as_bytes()]);
            conn.push(&[b"PEXPIRE", &delta.redis_key, delta.ttl_ms.to_string().as_bytes()]);
            pending.push(Pending::RateSynced(delta));
            pending.push(Pending::Ignore);
        }
        self.complete(&mut pending);
    }

    /// Refreshes this node's heartbeat key and its place in the node set;
    /// pings the subscriber connection so its reader sees traffic.
    fn heartbeat(&mut self) -> Result<(), resp::Error> {
        let ttl_ms = self.config.node_ttl.as_millis().to_string();
        let alive = presence::alive_key(&self.prefix, self.instance);
        let nodes = presence::nodes_key(&self.prefix);
        let instance = format!("{:016x}", self.instance);
        let node_id = self.config.node_id.clone();
        if let Some(writer) = self.sub_writer.as_mut() {
            writer.send(&[b"PING"])?;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        conn.push(&[b"SET", &alive, node_id.as_bytes(), b"PX", ttl_ms.as_bytes()]);
        conn.push(&[b"SADD", &nodes, instance.as_bytes()]);
        conn.push(&[b"EXISTS", format!("{}console:watched", self.prefix).as_bytes()]);
        let mut pending = vec![Pending::Ignore, Pending::Heartbeat, Pending::ConsoleWatched];
        self.complete(&mut pending);
        Ok(())
    }

    /// Finds nodes whose heartbeat expired; the survivor that removes one
    /// from the node set (only one can) removes its members from every
    /// channel and tells the channels they left.
    fn reap_dead_nodes(&mut self) -> Result<(), resp::Error> {
        let nodes = presence::nodes_key(&self.prefix);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let others = other_instances(&resp::array(conn.call(&[b"SMEMBERS", &nodes])?), self.instance);
        for &other in &others {
            conn.push(&[b"EXISTS", &presence::alive_key(&self.prefix, other)]);
        }
        let alive = conn.replies(others.len())?;
        let mut live = Vec::with_capacity(others.len());
        let mut dead = Vec::new();
        for (&other, reply) in others.iter().zip(alive) {
            match resp::integer(&reply) {
                Some(0) => dead.push(other),
                _ => live.push(other),
            }
        }
        self.stats().nodes.store(live.len() as u64 + 1, Ordering::Relaxed);
        self.other_nodes = live;
        for other in dead {
            let hex = format!("{other:016x}");
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            if resp::integer(&conn.call(&[b"SREM", &nodes, hex.as_bytes()])?) == Some(1) {
                self.clean_up_after(other)?;
            }
        }
        Ok(())
    }

    /// Removes dead node `dead`'s members and publishes their leaves (to
    /// the other nodes through Redis, and to this node's shards directly).
    fn clean_up_after(&mut self, dead: u64) -> Result<(), resp::Error> {
        let node_key = presence::node_key(&self.prefix, dead);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let entries = resp::array(conn.call(&[b"SMEMBERS", &node_key])?);
        let entries: Vec<Bytes> = entries.iter().filter_map(resp::bytes).cloned().collect();
        for entry in &entries {
            if let Some((key, id)) = presence::split_node_entry(entry) {
                conn.push(&[b"HGET", key, id.as_bytes()]);
                conn.push(&[b"HDEL", key, id.as_bytes()]);
            }
        }
        let replies = conn.replies(entries.len() * 2)?;
        let mut leaves = 0;
        let mut publishes = Vec::new();
        for (entry, pair) in entries.iter().zip(replies.chunks(2)) {
            let (Some((key, id)), Some(value)) = (presence::split_node_entry(entry), resp::bytes(&pair[0]))
            else {
                continue;
            };
            let Some((owner, profile)) = presence::decode_entry(value) else {
                continue;
            };
            let Some((env_id, channel)) = presence::parse_members_key(&self.prefix, key) else {
                continue;
            };
            if owner != dead {
                continue;
            }
            let frame = presence_frame("channel:leave", channel, id, profile.as_ref());
            let topic = self.cluster.channel_topic(env_id, channel);
            publishes.push((topic, frame));
            leaves += 1;
        }
        let mut pending = Vec::new();
        for (topic, frame) in publishes {
            self.deliver_locally(&topic, &frame);
            self.publish(&mut pending, &topic, &frame);
        }
        if let Some(conn) = self.conn.as_mut() {
            conn.push(&[b"DEL", &node_key]);
            pending.push(Pending::Ignore);
        }
        self.complete(&mut pending);
        self.stats().dead_nodes_cleaned.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            instance = format_args!("{dead:016x}"),
            members = leaves,
            "a node stopped its heartbeat: its members left"
        );
        Ok(())
    }

    /// Delivers a frame this node made for `topic` to its own interested
    /// shards (its own publishes do not come back from Redis).
    fn deliver_locally(&self, topic: &str, frame: &Bytes) {
        let route = self.subs().route(topic.as_bytes());
        if let Some((env, target, shards)) = route {
            for shard in shards.iter() {
                let event = ClusterEvent::Publish {
                    env,
                    target: target.clone(),
                    frame: frame.clone(),
                };
                deliver(&self.port, shard, event);
            }
        }
    }

    /// Leaves the cluster on shutdown: this node's presence is removed.
    fn leave(&mut self) {
        let keys: Vec<(Bytes, Arc<str>)> = self
            .mirror
            .iter()
            .map(|(k, i, _)| (k.clone(), i.clone()))
            .collect();
        let node_key = presence::node_key(&self.prefix, self.instance);
        let alive = presence::alive_key(&self.prefix, self.instance);
        let nodes = presence::nodes_key(&self.prefix);
        let instance = format!("{:016x}", self.instance);
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        for (key, id) in &keys {
            conn.push(&[b"HDEL", key, id.as_bytes()]);
        }
        conn.push(&[b"DEL", &node_key, &alive, &stats_key(&self.prefix, self.instance)]);
        conn.push(&[b"SREM", &nodes, instance.as_bytes()]);
        let _ = conn.replies(keys.len() + 2);
        self.stats().up.store(false, Ordering::Relaxed);
        tracing::info!("left the cluster");
    }
}

/// The subscriber connection's reader.
struct Reader {
    conn: Conn,
    subs: Arc<Mutex<Subs>>,
    port: ShardPort,
    instance: u64,
    settings_topic: Bytes,
    admin_topic: Bytes,
    /// Where the other nodes confirm this node's settings notices.
    applied_topic: Bytes,
    commands: Sender<Command>,
    cluster: Arc<Cluster>,
    generation: u64,
}

impl Reader {
    fn run(mut self) {
        loop {
            let frame = match self.conn.read() {
                Ok(frame) => frame,
                Err(e) => {
                    tracing::debug!(error = %e, "subscriber connection ended");
                    let lost = Command::SubscriberLost {
                        generation: self.generation,
                    };
                    let _ = self.commands.send_timeout(lost, Duration::from_secs(1));
                    return;
                }
            };
            self.handle(frame);
        }
    }

    fn subs(&self) -> MutexGuard<'_, Subs> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&mut self, frame: BytesFrame) {
        let mut items = resp::array(frame).into_iter();
        let (Some(kind), Some(topic)) = (items.next(), items.next()) else {
            return;
        };
        let (Some(kind), Some(topic)) = (resp::bytes(&kind), resp::bytes(&topic)) else {
            return;
        };
        match &kind[..] {
            b"smessage" | b"message" => {
                let Some(payload) = items.next().as_ref().and_then(resp::bytes).cloned() else {
                    return;
                };
                self.message(topic, payload);
            }
            b"ssubscribe" | b"subscribe" => {
                if *topic == self.settings_topic {
                    // The link loaded the settings before this subscription
                    // took effect: a change stored in between would go
                    // unnoticed until the next one, so load them again.
                    let reload = Command::SettingsChanged { notice: None };
                    let _ = self.commands.send_timeout(reload, Duration::from_secs(1));
                }
                let released = self.subs().answered(topic, true);
                for (shard, request) in released {
                    deliver(&self.port, shard, ClusterEvent::Confirmed { request });
                }
            }
            b"sunsubscribe" | b"unsubscribe" => {
                self.subs().answered(topic, false);
            }
            _ => {}
        }
    }

    fn message(&self, topic: &Bytes, payload: Bytes) {
        if payload.len() < 9 || payload[0] != WIRE_VERSION {
            tracing::debug!("message in an unknown format ignored");
            return;
        }
        let sender = u64::from_le_bytes(payload[1..9].try_into().unwrap_or_default());
        if sender == self.instance {
            return;
        }
        if *topic == self.settings_topic {
            let notice = numbered(&payload[9..], SETTINGS_NOTICE).map(|notice| (sender, notice));
            let _ = self
                .commands
                .send_timeout(Command::SettingsChanged { notice }, Duration::from_secs(1));
            return;
        }
        if *topic == self.applied_topic {
            if let Some(notice) = numbered(&payload[9..], SETTINGS_APPLIED) {
                let confirmed = Command::SettingsConfirmed { node: sender, notice };
                let _ = self.commands.send_timeout(confirmed, Duration::from_secs(1));
            }
            return;
        }
        if *topic == self.admin_topic {
            self.admin_notice(&payload[9..]);
            return;
        }
        self.cluster.stats.messages_in.fetch_add(1, Ordering::Relaxed);
        let Some((env, target, shards)) = self.subs().route(topic) else {
            return;
        };
        let frame = payload.slice(9..);
        for shard in shards.iter() {
            let event = ClusterEvent::Publish {
                env,
                target: target.clone(),
                frame: frame.clone(),
            };
            deliver(&self.port, shard, event);
        }
    }
}

impl Reader {
    /// A console's request to all nodes: a kick is carried out by the node
    /// whose process made the socket id (the id names the process and its
    /// shard), ignored by every other.
    fn admin_notice(&self, notice: &[u8]) {
        let Some((&ADMIN_KICK, id)) = notice.split_first() else {
            return;
        };
        let Some(conn) = std::str::from_utf8(id).ok().and_then(ConnId::decode) else {
            return;
        };
        if conn.nonce != *ringcast_shards::conn_id::process_nonce() {
            return;
        }
        let id = String::from_utf8_lossy(id).into();
        deliver(&self.port, conn.shard, ClusterEvent::Kick { id });
    }
}

/// Hands `event` to `shard`, waiting while its inbox is full (up to
/// [`DELIVER_PATIENCE`], then dropped with an error: a shard that drains
/// nothing for seconds is stuck).
fn deliver(port: &ShardPort, shard: ShardId, mut event: ClusterEvent) {
    let started = Instant::now();
    loop {
        match port(shard, event) {
            Ok(()) => return,
            Err(back) => {
                if started.elapsed() > DELIVER_PATIENCE {
                    tracing::error!(shard, "shard inbox full for too long; cluster event dropped");
                    return;
                }
                event = back;
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// Kind byte of a kick on the admin topic (followed by the socket id).
const ADMIN_KICK: u8 = b'k';

/// Topic of the consoles' requests to every node.
fn admin_topic(prefix: &str) -> Vec<u8> {
    format!("{prefix}s:admin").into_bytes()
}

/// Key of node `instance`'s console traffic record.
fn stats_key(prefix: &str, instance: u64) -> Vec<u8> {
    format!("{prefix}stats:{instance:016x}").into_bytes()
}

/// `text` with Redis glob characters escaped, for a `MATCH` pattern.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One page of the channels of `env_id` (names containing `filter`) and
/// their members on every node: a bounded walk of `SCAN` over the member
/// hashes from `cursor`, then one `HLEN` per hash found.
fn scan_channels(
    conn: &mut Conn,
    prefix: &str,
    env_id: &str,
    filter: Option<&str>,
    cursor: Option<&str>,
) -> Result<ChannelPage, resp::Error> {
    let key_prefix = presence::members_key(prefix, env_id, "");
    let mut pattern = glob_escape(&String::from_utf8_lossy(&key_prefix));
    if let Some(filter) = filter {
        pattern.push('*');
        pattern.push_str(&glob_escape(filter));
    }
    pattern.push('*');
    let mut cursor = cursor.unwrap_or("0").to_owned();
    let mut keys: Vec<Bytes> = Vec::new();
    for _ in 0..SCAN_CALLS_MAX {
        let reply = resp::array(conn.call(&[
            b"SCAN",
            cursor.as_bytes(),
            b"MATCH",
            pattern.as_bytes(),
            b"COUNT",
            SCAN_COUNT,
        ])?);
        let mut parts = reply.into_iter();
        let (Some(next), Some(found)) = (parts.next(), parts.next()) else {
            return Err(resp::Error::Protocol("SCAN answered something else".into()));
        };
        cursor =
            resp::bytes(&next).map_or_else(|| "0".to_owned(), |b| String::from_utf8_lossy(b).into_owned());
        keys.extend(resp::array(found).iter().filter_map(resp::bytes).cloned());
        if cursor == "0" || keys.len() >= CHANNEL_PAGE_MIN {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    for key in &keys {
        conn.push(&[b"HLEN", key]);
    }
    let counts = conn.replies(keys.len())?;
    let mut channels = Vec::with_capacity(keys.len());
    for (key, count) in keys.iter().zip(counts) {
        let Some((env, channel)) = presence::parse_members_key(prefix, key) else {
            continue;
        };
        // A prefix match may belong to another environment whose id
        // starts like this one's: the parsed key says.
        match resp::integer(&count) {
            Some(n) if env == env_id && n > 0 => channels.push((channel.to_owned(), n as u64)),
            _ => {}
        }
    }
    Ok(ChannelPage {
        channels,
        next: (cursor != "0").then_some(cursor),
    })
}

fn settings_key(prefix: &str) -> Vec<u8> {
    format!("{prefix}settings").into_bytes()
}

fn settings_topic(prefix: &str) -> Vec<u8> {
    format!("{prefix}s:settings").into_bytes()
}

/// `[version][instance nonce]`, the header of every message node
/// `instance` publishes, with room for `body` more bytes.
fn header(instance: u64, body: usize) -> Vec<u8> {
    let mut header = Vec::with_capacity(9 + body);
    header.push(WIRE_VERSION);
    header.extend_from_slice(&instance.to_le_bytes());
    header
}

/// Topic on which the other nodes confirm node `instance`'s settings
/// notices (only that node subscribes to it).
fn applied_topic(prefix: &str, instance: u64) -> Vec<u8> {
    format!("{prefix}s:applied:{instance:016x}").into_bytes()
}

/// A settings notice of node `instance`; with `number`, the nodes that
/// apply it confirm it.
fn settings_notice(instance: u64, number: Option<u64>) -> Vec<u8> {
    let mut notice = header(instance, 9);
    if let Some(number) = number {
        notice.push(SETTINGS_NOTICE);
        notice.extend_from_slice(&number.to_le_bytes());
    }
    notice
}

/// The number after kind byte `kind` in what follows a message's header
/// (`None`: another kind, or none).
fn numbered(body: &[u8], kind: u8) -> Option<u64> {
    match body {
        [k, number @ ..] if *k == kind => Some(u64::from_le_bytes(number.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// The instance nonces of node-set `members` (hex), `own` left out.
fn other_instances(members: &[BytesFrame], own: u64) -> Vec<u64> {
    members
        .iter()
        .filter_map(resp::bytes)
        .filter_map(|b| std::str::from_utf8(b).ok())
        .filter_map(|s| u64::from_str_radix(s, 16).ok())
        .filter(|&instance| instance != own)
        .collect()
}

/// Every environment stored in Redis (entries that do not parse or
/// validate are logged and skipped).
fn load_settings(conn: &mut Conn, prefix: &str) -> Result<Vec<EnvSettings>, resp::Error> {
    let pairs = resp::array(conn.call(&[b"HGETALL", &settings_key(prefix)])?);
    let mut envs = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        let [id, json] = pair else {
            continue;
        };
        let (Some(id), Some(json)) = (resp::bytes(id), resp::bytes(json)) else {
            continue;
        };
        match sonic_rs::from_slice::<EnvSettings>(json) {
            Ok(env) if env.validate().is_ok() => envs.push(env),
            _ => {
                tracing::error!(env = %String::from_utf8_lossy(id), "environment stored in Redis is invalid; skipped")
            }
        }
    }
    envs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(envs)
}

/// SIGHUP in a cluster: the file's environments become the cluster's.
fn replace_settings(
    conn: &mut Conn,
    prefix: &str,
    envs: &[EnvSettings],
    instance: u64,
) -> Result<(), resp::Error> {
    let key = settings_key(prefix);
    let stored = resp::array(conn.call(&[b"HKEYS", &key])?);
    let mut count = 0;
    for id in stored.iter().filter_map(resp::bytes) {
        if !envs.iter().any(|e| e.id.as_bytes() == &id[..]) {
            conn.push(&[b"HDEL", &key, id]);
            count += 1;
        }
    }
    for env in envs {
        let json = sonic_rs::to_string(env).map_err(|e| resp::Error::Protocol(e.to_string()))?;
        conn.push(&[b"HSET", &key, env.id.as_bytes(), json.as_bytes()]);
        count += 1;
    }
    let notice = settings_notice(instance, None);
    conn.push(&[b"SPUBLISH", &settings_topic(prefix), &notice]);
    count += 1;
    for reply in conn.replies(count)? {
        if let BytesFrame::Error(e) = reply {
            return Err(resp::Error::Reply(e.to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_notices_carry_their_number_and_stay_readable_by_earlier_nodes() {
        let numbered_notice = settings_notice(7, Some(42));
        // The header earlier nodes read: version, then the sender's nonce.
        assert_eq!(numbered_notice[0], WIRE_VERSION);
        assert_eq!(numbered_notice[1..9], 7u64.to_le_bytes());
        assert_eq!(numbered(&numbered_notice[9..], SETTINGS_NOTICE), Some(42));
        assert_eq!(numbered(&numbered_notice[9..], SETTINGS_APPLIED), None);
        // SIGHUP's notice (and an earlier node's) asks for no confirmation.
        let bare = settings_notice(7, None);
        assert_eq!(bare.len(), 9);
        assert_eq!(numbered(&bare[9..], SETTINGS_NOTICE), None);
        // A truncated number is no number.
        assert_eq!(numbered(&numbered_notice[9..13], SETTINGS_NOTICE), None);
    }

    #[test]
    fn other_instances_leave_this_node_and_junk_out() {
        let members = [
            BytesFrame::BulkString(Bytes::from_static(b"000000000000000a")),
            BytesFrame::BulkString(Bytes::from_static(b"000000000000000b")),
            BytesFrame::BulkString(Bytes::from_static(b"not hex")),
        ];
        assert_eq!(other_instances(&members, 0xa), [0xb]);
    }
}
