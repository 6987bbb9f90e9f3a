//! The link's two threads and their Redis connections.
//!
//! - `cluster-link` owns the command connection: it takes [`Command`]s off
//!   the queue in batches, writes each batch as one pipeline, reads the
//!   replies in order, and runs the periodic work (heartbeat, dead-node
//!   check, rate-limit sync, reconnecting with backoff). It also writes
//!   `SSUBSCRIBE`/`SUNSUBSCRIBE` on the subscriber connection.
//! - `cluster-sub` reads the subscriber connection: messages from other
//!   nodes go to the interested shards' inboxes, subscription confirmations
//!   release the holds waiting for them.
//!
//! While Redis is out of reach, local members are served as usual:
//! messages for other nodes are dropped and counted, holds are released at
//! once, presence and interest changes are recorded and replayed when the
//! link is back (every topic subscribed again, every member stored again).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use redis_protocol::resp2::types::BytesFrame;

use super::presence::{self, Mirror};
use super::resp::{self, Conn, Writer};
use super::subs::{Subs, Wire};
use super::{ChannelPage, ClusterConfig, ClusterEvent, Command, Reply, SettingsSink, ShardPort, Topic};
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
    Stored {
        shard: ShardId,
        request: u64,
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
        if self.conn.is_none() {
            return self.next_attempt;
        }
        self.next_heartbeat.min(self.next_rate_sync)
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
                Command::PutSettings { shard, request, env } => match self.conn.as_mut() {
                    Some(conn) => match sonic_rs::to_string(&*env) {
                        Ok(json) => {
                            match self.seed.iter_mut().find(|e| e.id == env.id) {
                                Some(known) => known.clone_from(&env),
                                None => self.seed.push((*env).clone()),
                            }
                            let key = settings_key(&self.prefix);
                            conn.push(&[b"HSET", &key, env.id.as_bytes(), json.as_bytes()]);
                            pending.push(Pending::Stored { shard, request });
                            let mut notice = vec![WIRE_VERSION];
                            notice.extend_from_slice(&self.instance.to_le_bytes());
                            conn.push(&[b"SPUBLISH", &settings_topic(&self.prefix), &notice]);
                            pending.push(Pending::Ignore);
                        }
                        Err(e) => self.reply(shard, request, Reply::Stored(Err(e.to_string()))),
                    },
                    None => {
                        let why = "Redis is out of reach; the change was not made".to_owned();
                        self.reply(shard, request, Reply::Stored(Err(why)));
                    }
                },
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
                        let mut notice = vec![WIRE_VERSION];
                        notice.extend_from_slice(&self.instance.to_le_bytes());
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
                Command::SettingsChanged => {
                    self.complete(&mut pending);
                    if let Some(conn) = self.conn.as_mut() {
                        match load_settings(conn, &self.prefix) {
                            Ok(envs) => self.hand_on(envs),
                            Err(e) => self.lost(&e.to_string()),
                        }
                    }
                }
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

    fn wire_payload(&self, frame: &[u8]) -> Vec<u8> {
        let mut payload = Vec::with_capacity(9 + frame.len());
        payload.push(WIRE_VERSION);
        payload.extend_from_slice(&self.instance.to_le_bytes());
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
            Pending::Stored { shard, request } => {
                let result = match &reply {
                    BytesFrame::Error(e) => Err(e.to_string()),
                    _ => Ok(()),
                };
                self.reply(shard, request, Reply::Stored(result));
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
            Pending::Stored { shard, request } => {
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
    fn hand_on(&mut self, envs: Vec<EnvSettings>) {
        self.seed.clone_from(&envs);
        if let Some(sink) = &self.settings {
            sink(envs);
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
            self.hand_on(envs);
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
        let own = format!("{:016x}", self.instance);
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let members = resp::array(conn.call(&[b"SMEMBERS", &nodes])?);
        let others: Vec<u64> = members
            .iter()
            .filter_map(resp::bytes)
            .filter_map(|b| std::str::from_utf8(b).ok())
            .filter(|s| *s != own)
            .filter_map(|s| u64::from_str_radix(s, 16).ok())
            .collect();
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
            let _ = self
                .commands
                .send_timeout(Command::SettingsChanged, Duration::from_secs(1));
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
    let mut notice = BytesMut::with_capacity(9);
    notice.put_u8(WIRE_VERSION);
    notice.put_slice(&instance.to_le_bytes());
    conn.push(&[b"SPUBLISH", &settings_topic(prefix), &notice]);
    count += 1;
    for reply in conn.replies(count)? {
        if let BytesFrame::Error(e) = reply {
            return Err(resp::Error::Reply(e.to_string()));
        }
    }
    Ok(())
}
