//! One shard's state and its two long-lived tasks: the accept loop and the
//! inbox drain.
//!
//! A [`Shard`] is `!Send`: it lives on its own thread, inside its own monoio
//! runtime, and is shared between that thread's tasks through `Rc`. Its
//! mutable state sits in one `RefCell` that is borrowed only between awaits,
//! never across one. Other shards reach it only through [`ShardMessage`]s in
//! its inbox.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use ahash::AHashMap;

use bytes::Bytes;
use slab::Slab;

use crate::config::Config;
use crate::connection::outbox::{CloseReason, Egress, Outbox};
use crate::fanout::deliver;
use crate::inbox::{self, MemberEntry, ShardMessage, Target};
pub(crate) use crate::metrics::Stats;
use crate::metrics::{Gauges, Snapshot};
use crate::protocol::frames;
use crate::protocol::socketio::write_json_str;
use crate::realtime::channels::{EnvIndex, SlabKey};
use crate::realtime::profile::{write_buffers_inline, write_renumbered, Profile};
use crate::realtime::rate_limit::RateTable;
pub(crate) use crate::realtime::settings::EnvKey;
use crate::realtime::settings::Settings;
use ringcast_shards::conn_id::ConnIdText;
use ringcast_shards::wait::WaitList;
use ringcast_shards::yielder::Yielder;
use ringcast_shards::{ConnId, Mesh, ShardId};

/// State every shard shares. Read-only but for the two places that are
/// written from any thread without locks on the hot path: the rate-limit
/// table (atomics) and the settings writers' lock (taken only by SIGHUP and
/// the admin API, never by a shard reading settings).
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) mesh: Mesh<ShardMessage>,
    pub(crate) rates: RateTable,
    pub(crate) limits: ConnLimits,
    /// The latest settings, for writers: a change is computed from this,
    /// stored here, then sent to every shard.
    settings: Mutex<Arc<Settings>>,
    /// Clock of rate-limit windows.
    started: std::time::Instant,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let mesh = Mesh::new(config.shard_count, config.mesh_queue_messages_max);
        let settings = Arc::new(Settings::new(config.environments.clone()));
        Self {
            rates: RateTable::new(config.rate_limit_slots),
            limits: ConnLimits::new(config.connections_max, config.connections_per_ip_max),
            mesh,
            settings: Mutex::new(settings),
            started: std::time::Instant::now(),
            config,
        }
    }

    /// The latest settings (for writers and start-up; shards use their own
    /// copy, [`Shard::settings`]).
    pub(crate) fn settings(&self) -> Arc<Settings> {
        // A poisoned lock only means a writer panicked mid-change; the
        // stored value is still a complete Settings.
        self.settings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Applies `change` to the latest settings and returns the result, which
    /// the caller sends to every shard ([`Shared::broadcast`] from a plain
    /// thread, [`Shard::broadcast`] from a shard). Writers are serialized by
    /// the lock; shards never take it to read settings.
    pub(crate) fn change_settings(&self, change: impl FnOnce(&Settings) -> Settings) -> Arc<Settings> {
        let mut guard = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        let next = Arc::new(change(&guard));
        *guard = next.clone();
        drop(guard);
        next
    }

    /// Sends `make()` to every shard from a thread that is not a shard's.
    /// For rare control messages that must not be lost: sleeps this thread
    /// while an inbox is full (a shard must use [`Shard::broadcast`]).
    pub(crate) fn broadcast(&self, make: impl Fn() -> ShardMessage) {
        for shard in 0..self.mesh.shard_count() {
            // unwrap: shard_count <= SHARDS_MAX = 255.
            let shard = ShardId::try_from(shard).unwrap();
            let mut message = make();
            while let Err(back) = self.mesh.send(shard, message) {
                message = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Seconds on the rate-limit clock.
    pub(crate) fn now_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// The global and per-IP caps on WebSocket connections. Taken once per
/// connection (upgrade and close), never per message: the global count is an
/// atomic, the per-IP counts a map behind a lock used only when a per-IP cap
/// is set.
pub(crate) struct ConnLimits {
    total: AtomicUsize,
    total_max: usize,
    per_ip: Mutex<AHashMap<IpAddr, usize>>,
    per_ip_max: usize,
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitExceeded {
    Total,
    PerIp,
}

impl ConnLimits {
    pub(crate) fn new(total_max: usize, per_ip_max: usize) -> Self {
        Self {
            total: AtomicUsize::new(0),
            total_max,
            per_ip: Mutex::new(AHashMap::new()),
            per_ip_max,
        }
    }

    /// Counts one more connection from `ip`, or refuses it.
    pub(crate) fn acquire(&self, ip: IpAddr) -> Result<(), LimitExceeded> {
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        if self.total_max > 0 && total > self.total_max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitExceeded::Total);
        }
        if self.per_ip_max > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = per_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip_max {
                drop(per_ip);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(LimitExceeded::PerIp);
            }
            *n += 1;
        }
        Ok(())
    }

    /// Undoes one [`ConnLimits::acquire`] of `ip`.
    pub(crate) fn release(&self, ip: IpAddr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if self.per_ip_max > 0 {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

/// One counted connection; released when dropped.
pub(crate) struct ConnPermit {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl ConnPermit {
    pub(crate) fn acquire(shared: &Arc<Shared>, ip: IpAddr) -> Result<Self, LimitExceeded> {
        shared.limits.acquire(ip)?;
        Ok(Self {
            shared: shared.clone(),
            ip,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.shared.limits.release(self.ip);
    }
}

/// One connected Socket.IO client (after its `40` connect).
pub(crate) struct Member {
    pub(crate) outbox: Rc<Outbox>,
    pub(crate) id: ConnIdText,
    pub(crate) generation: u32,
    /// `None` for the app backend's master connection.
    pub(crate) env: Option<EnvKey>,
    pub(crate) echo: bool,
    pub(crate) user: Option<Box<str>>,
    /// Channels joined, in join order.
    pub(crate) channels: Vec<Box<str>>,
    /// Profile set by `update`; `None` shows as `null`.
    pub(crate) profile: Option<Profile>,
    /// The API key it connected with (checked again when settings change).
    pub(crate) api_key: Option<Box<str>>,
    pub(crate) client_ip: Option<IpAddr>,
    /// Until when (rate-limit clock) no further rate-limit error is sent.
    pub(crate) rate_error_until_s: u64,
}

impl Member {
    pub(crate) fn is_master(&self) -> bool {
        self.env.is_none()
    }
}

/// A member list being gathered from every shard for one ack.
struct Gather {
    reply: GatherReply,
    parts_remaining: usize,
    /// JSON array body so far, without the closing `]`.
    body: Vec<u8>,
    entries: usize,
    /// Binary profile data of the members so far, in placeholder order.
    attachments: Vec<Bytes>,
}

/// Where a gathered member list goes.
pub(crate) enum GatherReply {
    /// Socket.IO ack `ack_id` on connection `conn` (if it is still the same
    /// connection: `generation`), with Buffers as attachments.
    Ack {
        conn: SlabKey,
        generation: u32,
        ack_id: u64,
    },
    /// A task on this shard awaiting the JSON text (the HTTP API), with
    /// Buffers inlined as `{"type":"Buffer","data":[...]}`.
    Local(Rc<LocalReply<Vec<u8>>>),
}

/// A one-shot, shard-local reply slot.
pub(crate) struct LocalReply<T> {
    value: RefCell<Option<T>>,
    waker: Cell<Option<std::task::Waker>>,
}

impl<T> Default for LocalReply<T> {
    fn default() -> Self {
        Self {
            value: RefCell::new(None),
            waker: Cell::new(None),
        }
    }
}

impl<T> LocalReply<T> {
    fn set(&self, value: T) {
        *self.value.borrow_mut() = Some(value);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Resolves with the value once set.
    pub(crate) async fn take(&self) -> T {
        std::future::poll_fn(|cx| match self.value.borrow_mut().take() {
            Some(v) => std::task::Poll::Ready(v),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }
}

/// A metrics scrape being gathered from every shard.
struct StatsGather {
    remaining: usize,
    snapshots: Vec<Snapshot>,
    reply: Rc<LocalReply<Vec<Snapshot>>>,
}

/// Mutable shard state.
pub(crate) struct State {
    pub(crate) conns: Slab<Member>,
    pub(crate) envs: Vec<EnvIndex>,
    next_generation: u32,
    gathers: Slab<Gather>,
    stats_gathers: Slab<StatsGather>,
    /// Settings changes awaiting every shard's confirmation.
    settings_acks: Slab<(usize, Rc<LocalReply<()>>)>,
}

pub(crate) struct Shard {
    pub(crate) id: ShardId,
    pub(crate) shared: Arc<Shared>,
    /// This shard's copy of the settings, replaced by `SettingsChanged`.
    pub(crate) settings: RefCell<Arc<Settings>>,
    pub(crate) state: RefCell<State>,
    /// Every upgraded connection's outbox (connected to Socket.IO or not),
    /// for the heartbeat.
    pub(crate) sockets: RefCell<Slab<Rc<Outbox>>>,
    pub(crate) stats: Rc<Stats>,
    /// What this shard's outboxes share (the same counters, and pacing).
    pub(crate) egress: Rc<Egress>,
    /// The receive buffer every connection of this shard reads into; a
    /// connection keeps only the unhandled tail of what it received.
    pub(crate) read_buffer: RefCell<Box<[u8]>>,
    /// Yields that let the rest of the shard run (see [`Yielder`]).
    pub(crate) yielder: Rc<Yielder>,
    shutting_down: Cell<bool>,
    shutdown_waker: Cell<Option<std::task::Waker>>,
    /// Messages for other shards whose inboxes were full, per target shard,
    /// in send order.
    outgoing: RefCell<Vec<VecDeque<ShardMessage>>>,
    outgoing_len: Cell<usize>,
    /// The flusher task, parked while `outgoing` is empty.
    flusher: Cell<Option<std::task::Waker>>,
    /// Readers waiting for `outgoing` to shrink below its bound.
    backlog_waiters: WaitList,
}

/// Bytes of a shard's receive buffer: enough for everything a busy client
/// sends in one turn (a bigger frame is received into its connection's own
/// buffer).
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What a new member is.
pub(crate) struct NewMember {
    pub(crate) outbox: Rc<Outbox>,
    pub(crate) env: Option<EnvKey>,
    pub(crate) echo: bool,
    pub(crate) user: Option<Box<str>>,
    pub(crate) api_key: Option<Box<str>>,
    pub(crate) client_ip: Option<IpAddr>,
}

impl Shard {
    pub(crate) fn new(id: ShardId, shared: Arc<Shared>) -> Self {
        let settings = shared.settings();
        let shard_count = shared.mesh.shard_count();
        let envs = (0..settings.key_count()).map(|_| EnvIndex::default()).collect();
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), shared.config.send_stall_timeout));
        Self {
            id,
            shared,
            settings: RefCell::new(settings),
            state: RefCell::new(State {
                conns: Slab::new(),
                envs,
                next_generation: 0,
                gathers: Slab::new(),
                stats_gathers: Slab::new(),
                settings_acks: Slab::new(),
            }),
            sockets: RefCell::new(Slab::new()),
            stats,
            egress,
            read_buffer: RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice()),
            yielder: Rc::default(),
            shutting_down: Cell::new(false),
            shutdown_waker: Cell::new(None),
            outgoing: RefCell::new((0..shard_count).map(|_| VecDeque::new()).collect()),
            outgoing_len: Cell::new(0),
            flusher: Cell::new(None),
            backlog_waiters: WaitList::default(),
        }
    }

    /// Adds a connected client: its slab slot, its environment room and its
    /// user room. Returns its slab key and socket id.
    pub(crate) fn register(&self, new: NewMember) -> (SlabKey, ConnIdText) {
        let mut state = self.state.borrow_mut();
        let generation = state.next_generation;
        state.next_generation = generation.wrapping_add(1);
        let entry = state.conns.vacant_entry();
        // Slab keys stay far below u32::MAX: a process holds at most a few
        // million sockets.
        let key = entry.key() as SlabKey;
        let id = ConnId::new(self.id, key, generation).encode();
        let env = new.env;
        let user = new.user.clone();
        entry.insert(Member {
            outbox: new.outbox,
            id,
            generation,
            env: new.env,
            echo: new.echo,
            user: new.user,
            channels: Vec::new(),
            profile: None,
            api_key: new.api_key,
            client_ip: new.client_ip,
            rate_error_until_s: 0,
        });
        if let Some(env) = env {
            let index = &mut state.envs[env as usize];
            index.members.insert(key);
            if let Some(user) = &user {
                index.add_user(user, key);
            }
        }
        (key, id)
    }

    /// Removes a client from every index and returns it, so the caller can
    /// tell its channels it left.
    pub(crate) fn unregister(&self, key: SlabKey) -> Option<Member> {
        let mut state = self.state.borrow_mut();
        let member = state.conns.try_remove(key as usize)?;
        if let Some(env) = member.env {
            let index = &mut state.envs[env as usize];
            index.members.swap_remove(&key);
            if let Some(user) = &member.user {
                index.remove_user(user, key);
            }
            for channel in &member.channels {
                index.leave(channel, key);
            }
        }
        Some(member)
    }

    /// Every shard but this one.
    fn other_shards(&self) -> impl Iterator<Item = ShardId> {
        let own = self.id;
        // unwrap: shard_count <= SHARDS_MAX = 255.
        (0..self.shared.mesh.shard_count())
            .map(|s| ShardId::try_from(s).unwrap())
            .filter(move |&s| s != own)
    }

    /// Queues `frame` on this shard's connections in `target` (except
    /// `skip`): the local half of a publish, and all of one from another shard.
    pub(crate) fn deliver_local(&self, env: EnvKey, target: &Target, frame: &Bytes, skip: Option<SlabKey>) {
        let state = self.state.borrow();
        let Some(index) = state.envs.get(env as usize) else {
            return;
        };
        let members = match target {
            Target::Channel(name) => index.channel(name),
            Target::Environment => Some(&index.members),
            Target::User(user) => index.user(user),
        };
        if let Some(members) = members {
            let n = deliver(&state.conns, members, frame, skip);
            self.stats.add_deliveries(n);
        }
    }

    /// Delivers `frame` to `target` on this shard (except `skip`) and hands
    /// it to every other shard. Waits (without blocking the thread) when a
    /// shard's inbox is full, so nothing is dropped and per-sender order
    /// holds.
    pub(crate) fn publish(&self, env: EnvKey, target: Target, frame: Bytes, skip: Option<SlabKey>) {
        Stats::bump(&self.stats.publishes);
        self.deliver_local(env, &target, &frame, skip);
        for other in self.other_shards() {
            let message = ShardMessage::Publish {
                env,
                target: target.clone(),
                frame: frame.clone(),
            };
            self.send_to(other, message);
        }
    }

    /// Installs newer settings from a `SettingsChanged` message: grows the
    /// environment index and disconnects (with `41`, so clients do not come
    /// back) every client whose environment is gone, off or suspended, or
    /// whose API key was removed, expired or lost `allow_realtime`.
    pub(crate) fn apply_settings(&self, next: Arc<Settings>) {
        if next.version < self.settings.borrow().version {
            return;
        }
        *self.settings.borrow_mut() = next;
        {
            let settings = self.settings.borrow();
            let mut state = self.state.borrow_mut();
            while state.envs.len() < settings.key_count() {
                state.envs.push(EnvIndex::default());
            }
        }
        self.sweep_members();
    }

    /// Sends `settings` to every shard (this one included) and resolves once
    /// all of them applied it.
    pub(crate) async fn apply_everywhere(&self, settings: Arc<Settings>) {
        let shard_count = self.shared.mesh.shard_count();
        let reply = Rc::new(LocalReply::default());
        let request = self
            .state
            .borrow_mut()
            .settings_acks
            .insert((shard_count, reply.clone())) as u32;
        self.broadcast(|| ShardMessage::SettingsChanged {
            settings: settings.clone(),
            ack: Some((self.id, request)),
        });
        reply.take().await;
    }

    /// One shard confirmed settings change `request`.
    pub(crate) fn settings_applied(&self, request: u32) {
        let mut state = self.state.borrow_mut();
        let Some((remaining, _)) = state.settings_acks.get_mut(request as usize) else {
            return;
        };
        *remaining -= 1;
        if *remaining == 0 {
            let (_, reply) = state.settings_acks.remove(request as usize);
            reply.set(());
        }
    }

    /// Disconnects the clients the current settings no longer allow (see
    /// [`Shard::apply_settings`]); also run every second for key expiry.
    pub(crate) fn sweep_members(&self) {
        let settings = self.settings.borrow();
        let state = self.state.borrow();
        let now = crate::realtime::auth::now_unix_s();
        for (_, member) in state.conns.iter() {
            let Some(env) = member.env else {
                continue;
            };
            if !still_allowed(&settings, env, member.api_key.as_deref(), now) {
                tracing::debug!(id = %member.id, "settings no longer allow this client; disconnecting");
                kick(member);
            }
        }
    }

    /// Starts the graceful shutdown (a `Shutdown` message): the accept loop
    /// stops and the drain begins.
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        if let Some(w) = self.shutdown_waker.take() {
            w.wake();
        }
    }

    /// Resolves once shutdown has begun.
    async fn shutdown_requested(&self) {
        std::future::poll_fn(|cx| {
            if self.shutting_down.get() {
                std::task::Poll::Ready(())
            } else {
                self.shutdown_waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// This shard's counters and gauges.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let settings = self.settings.borrow();
        let state = self.state.borrow();
        let sockets = self.sockets.borrow();
        let mut gauges = Gauges {
            sockets: sockets.len() as u64,
            inbox_depth: self.shared.mesh.inbox(self.id).len() as u64,
            queued_bytes: sockets.iter().map(|(_, o)| o.queued_bytes() as u64).sum(),
            mesh_backlog: self.outgoing_len.get() as u64,
            ..Gauges::default()
        };
        for (key, index) in state.envs.iter().enumerate() {
            let Some(env) = settings.get(key as EnvKey) else {
                continue;
            };
            gauges.clients.push((env.id.clone(), index.members.len() as u64));
            gauges
                .channels
                .push((env.id.clone(), index.channel_count() as u64));
        }
        gauges.masters = state.conns.iter().filter(|(_, m)| m.is_master()).count() as u64;
        self.stats.snapshot(self.id, gauges)
    }

    /// Every shard's snapshot, gathered through the mesh.
    pub(crate) async fn gather_stats(&self) -> Vec<Snapshot> {
        let shard_count = self.shared.mesh.shard_count();
        let reply = Rc::new(LocalReply::default());
        let request = self.state.borrow_mut().stats_gathers.insert(StatsGather {
            remaining: shard_count,
            snapshots: Vec::with_capacity(shard_count),
            reply: reply.clone(),
        }) as u32;
        for other in self.other_shards() {
            let message = ShardMessage::StatsRequest {
                reply_to: self.id,
                request,
            };
            self.send_to(other, message);
        }
        self.stats_part(request, self.snapshot());
        let mut snapshots = reply.take().await;
        snapshots.sort_by_key(|s| s.shard);
        snapshots
    }

    /// Adds one shard's snapshot to scrape `request`.
    pub(crate) fn stats_part(&self, request: u32, snapshot: Snapshot) {
        let mut state = self.state.borrow_mut();
        let Some(gather) = state.stats_gathers.get_mut(request as usize) else {
            return;
        };
        gather.snapshots.push(snapshot);
        gather.remaining -= 1;
        if gather.remaining == 0 {
            let gather = state.stats_gathers.remove(request as usize);
            gather.reply.set(gather.snapshots);
        }
    }

    /// Sends `make()` to every shard, this one included (see
    /// [`Shard::send_to`]).
    pub(crate) fn broadcast(&self, make: impl Fn() -> ShardMessage) {
        for target in 0..self.shared.mesh.shard_count() {
            // unwrap: shard_count <= SHARDS_MAX = 255.
            self.send_to(ShardId::try_from(target).unwrap(), make());
        }
    }

    /// Sends `message` to shard `target` without waiting: straight into its
    /// inbox, or, when that is full (or earlier messages to it are still
    /// waiting), into this shard's outgoing queue for `target`, which the
    /// flusher task drains in order. Readers stop reading while the queue
    /// is at its bound ([`Shard::mesh_backlogged`]), so it stays bounded and
    /// the publishers slow down instead of anything being dropped.
    pub(crate) fn send_to(&self, target: ShardId, message: ShardMessage) {
        Stats::bump(&self.stats.mesh_sent);
        let mut outgoing = self.outgoing.borrow_mut();
        let Some(queue) = outgoing.get_mut(usize::from(target)) else {
            tracing::error!(target, "message to a shard that does not exist");
            return;
        };
        let message = if queue.is_empty() {
            match self.shared.mesh.send(target, message) {
                Ok(()) => return,
                Err(back) => back,
            }
        } else {
            message
        };
        queue.push_back(message);
        self.outgoing_len.set(self.outgoing_len.get() + 1);
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
    }

    /// Whether messages held back for other shards reached their bound:
    /// readers then stop reading from their clients (checked after every
    /// message they handle) until [`Shard::backlog_cleared`].
    pub(crate) fn mesh_backlogged(&self) -> bool {
        self.outgoing_len.get() >= self.shared.config.mesh_backlog_messages_max
    }

    /// Resolves once the held-back messages are below their bound again.
    pub(crate) async fn backlog_cleared(&self) {
        self.backlog_waiters.wait_until(|| !self.mesh_backlogged()).await
    }

    /// This shard's members of `channel` with their profiles.
    pub(crate) fn local_members(&self, env: EnvKey, channel: &str) -> Vec<MemberEntry> {
        let state = self.state.borrow();
        let Some(members) = state.envs.get(env as usize).and_then(|e| e.channel(channel)) else {
            return Vec::new();
        };
        members
            .iter()
            .filter_map(|&key| state.conns.get(key as usize))
            .map(|m| (Box::from(m.id.as_str()), m.profile.clone()))
            .collect()
    }

    /// Starts gathering the members of `channel` from every shard; when all
    /// parts are in, connection `conn` gets ack `ack_id` with the list
    /// `[{id, data}, ...]`.
    pub(crate) fn ack_members(&self, conn: SlabKey, ack_id: u64, env: EnvKey, channel: &str) {
        let generation = self.state.borrow().conns.get(conn as usize).map(|m| m.generation);
        let Some(generation) = generation else {
            return;
        };
        let reply = GatherReply::Ack {
            conn,
            generation,
            ack_id,
        };
        self.gather_members(reply, env, channel);
    }

    /// The members of `channel` from every shard as JSON text
    /// `[{"id":..,"data":..},...]`.
    pub(crate) async fn members_json(&self, env: EnvKey, channel: &str) -> Vec<u8> {
        let slot = Rc::new(LocalReply::default());
        self.gather_members(GatherReply::Local(slot.clone()), env, channel);
        slot.take().await
    }

    fn gather_members(&self, reply: GatherReply, env: EnvKey, channel: &str) {
        let shard_count = self.shared.mesh.shard_count();
        let request = {
            let mut state = self.state.borrow_mut();
            state.gathers.insert(Gather {
                reply,
                parts_remaining: shard_count,
                body: b"[".to_vec(),
                entries: 0,
                attachments: Vec::new(),
            }) as u32
        };
        let channel: Arc<str> = Arc::from(channel);
        for other in self.other_shards() {
            let message = ShardMessage::MembersRequest {
                env,
                channel: channel.clone(),
                reply_to: self.id,
                request,
            };
            self.send_to(other, message);
        }
        let local = self.local_members(env, &channel);
        self.gather_part(request, local);
    }

    /// Adds one shard's part to gather `request`, and answers when complete.
    pub(crate) fn gather_part(&self, request: u32, members: Vec<MemberEntry>) {
        let mut state = self.state.borrow_mut();
        let Some(gather) = state.gathers.get_mut(request as usize) else {
            return;
        };
        for (id, profile) in &members {
            if gather.entries > 0 {
                gather.body.push(b',');
            }
            gather.entries += 1;
            gather.body.extend_from_slice(b"{\"id\":");
            write_json_str(&mut gather.body, id);
            gather.body.extend_from_slice(b",\"data\":");
            match (profile, &gather.reply) {
                (Some(profile), GatherReply::Ack { .. }) => {
                    write_renumbered(&mut gather.body, profile, gather.attachments.len());
                    gather.attachments.extend(profile.attachments.iter().cloned());
                }
                (Some(profile), GatherReply::Local(_)) => write_buffers_inline(&mut gather.body, profile),
                (None, _) => gather.body.extend_from_slice(b"null"),
            }
            gather.body.push(b'}');
        }
        gather.parts_remaining -= 1;
        if gather.parts_remaining > 0 {
            return;
        }
        let mut gather = state.gathers.remove(request as usize);
        let (conn, generation, ack_id) = match gather.reply {
            GatherReply::Local(slot) => {
                gather.body.push(b']');
                slot.set(gather.body);
                return;
            }
            GatherReply::Ack {
                conn,
                generation,
                ack_id,
            } => (conn, generation, ack_id),
        };
        let Some(member) = state.conns.get(conn as usize) else {
            return;
        };
        if member.generation != generation {
            return;
        }
        let frame = frames::ack(ack_id, &gather.attachments, |out| {
            out.extend_from_slice(&gather.body);
            out.push(b']');
        });
        member.outbox.push(frame);
    }
}

/// Whether a client of `env` that connected with `api_key` may stay.
fn still_allowed(settings: &Settings, env: EnvKey, api_key: Option<&str>, now_unix_s: u64) -> bool {
    let Some(env) = settings.get(env) else {
        return false;
    };
    if env.suspended || !env.enabled {
        return false;
    }
    match api_key {
        Some(key) => env.api_key(key).is_some_and(|k| k.still_valid(now_unix_s)),
        None => true,
    }
}

/// Tells a client the server disconnected it (`41`: socket.io-client will
/// not reconnect) and closes the connection.
pub(crate) fn kick(member: &Member) {
    member.outbox.push(frames::disconnect());
    member.outbox.close(CloseReason::ServerDisconnect);
}

/// Runs one shard: drains its inbox, keeps the heartbeat and accepts
/// connections until shutdown, then drains its clients and returns.
pub(crate) async fn run_shard(shard_id: ShardId, listener: monoio::net::TcpListener, shared: Arc<Shared>) {
    let shard = Rc::new(Shard::new(shard_id, shared));
    monoio::spawn(drain_inbox(shard.clone()));
    monoio::spawn(flush_outgoing(shard.clone()));
    monoio::spawn(heartbeat(shard.clone()));
    let mut accept_errors: u64 = 0;
    loop {
        let accepted = monoio::select! {
            accepted = listener.accept() => accepted,
            _ = shard.shutdown_requested() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(crate::connection::driver::serve(shard.clone(), stream, peer));
                // Take the rest of the backlog without a trip through the
                // ring per connection.
                for _ in 1..ACCEPT_BATCH_MAX {
                    match ringcast_shards::accept::accept_queued(&listener) {
                        Ok(Some((stream, peer))) => {
                            monoio::spawn(crate::connection::driver::serve(shard.clone(), stream, peer));
                        }
                        Ok(None) => break,
                        Err(e) => {
                            accept_failed(&shard, &mut accept_errors, &e);
                            monoio::time::sleep(ACCEPT_BACKOFF).await;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                accept_failed(&shard, &mut accept_errors, &e);
                monoio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    // Closing the listener makes the kernel stop handing this shard new
    // connections.
    drop(listener);
    drain(&shard).await;
}

/// Connections accepted per turn of the accept loop.
const ACCEPT_BATCH_MAX: usize = 64;
/// Pause after a failed accept (out of descriptors, or transient).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Counts a failed accept and logs the first of a burst and every 100th
/// (the caller backs off instead of spinning on the listener).
fn accept_failed(shard: &Shard, failures: &mut u64, error: &std::io::Error) {
    Stats::bump(&shard.stats.accept_errors);
    if *failures % 100 == 0 {
        tracing::warn!(shard = shard.id, error = %error, failures = *failures + 1, "accept failed; backing off");
    }
    *failures += 1;
}

/// Closes every client with a WebSocket close 1001 ("going away"), which
/// socket.io-client treats as a transport close and reconnects after, spread
/// evenly over the drain window so the reconnects do not arrive at once;
/// returns when all are gone or at the shutdown deadline.
async fn drain(shard: &Shard) {
    let config = &shard.shared.config;
    let started = monoio::time::Instant::now();
    let deadline = started + config.shutdown_deadline;
    let outboxes: Vec<Rc<Outbox>> = shard.sockets.borrow().iter().map(|(_, o)| o.clone()).collect();
    let total = outboxes.len().max(1) as u32;
    tracing::info!(shard = shard.id, clients = outboxes.len(), "draining");
    for (i, outbox) in outboxes.iter().enumerate() {
        let at = started + config.drain_window * i as u32 / total;
        if at > monoio::time::Instant::now() {
            monoio::time::sleep_until(at.min(deadline)).await;
        }
        outbox.push(crate::protocol::websocket::close_frame(
            1001,
            "server shutting down",
        ));
        outbox.close(CloseReason::ServerShutdown);
    }
    while !shard.sockets.borrow().is_empty() && monoio::time::Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!(shard = shard.id, left = shard.sockets.borrow().len(), "drained");
}

/// Pings every connection each ping interval and drops those whose pong is
/// overdue: one timer per shard, ticking at a quarter of the shorter of the
/// two periods (at most once a second), instead of one timer per connection.
async fn heartbeat(shard: Rc<Shard>) {
    let config = &shard.shared.config;
    let (interval, timeout) = (config.ping_interval, config.ping_timeout);
    let shortest = interval.min(timeout).min(config.connect_timeout);
    let tick = (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    let ping = frames::engineio("2");
    let mut last_sweep = std::time::Instant::now();
    loop {
        monoio::time::sleep(tick).await;
        let now = std::time::Instant::now();
        let connect_timeout = shard.shared.config.connect_timeout;
        for (_, outbox) in shard.sockets.borrow().iter() {
            outbox.heartbeat(now, &ping, interval, timeout);
            outbox.enforce_connect_deadline(now, connect_timeout);
        }
        if now.duration_since(last_sweep) >= Duration::from_secs(1) {
            // API keys expire with time, not only with settings changes.
            last_sweep = now;
            shard.sweep_members();
        }
    }
}

/// Moves messages from this shard's outgoing queues into the other shards'
/// inboxes as room appears, in order per target, and releases the readers
/// waiting in [`Shard::backlog_cleared`] once the backlog is below its
/// bound.
async fn flush_outgoing(shard: Rc<Shard>) {
    loop {
        std::future::poll_fn(|cx| {
            if shard.outgoing_len.get() > 0 {
                std::task::Poll::Ready(())
            } else {
                shard.flusher.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await;
        let mut attempts: u32 = 0;
        while shard.outgoing_len.get() > 0 {
            let mut progressed = false;
            for target in 0..shard.shared.mesh.shard_count() {
                // unwrap: shard_count <= SHARDS_MAX = 255.
                let target_id = ShardId::try_from(target).unwrap();
                let mut outgoing = shard.outgoing.borrow_mut();
                let queue = &mut outgoing[target];
                while let Some(message) = queue.pop_front() {
                    match shard.shared.mesh.send(target_id, message) {
                        Ok(()) => {
                            progressed = true;
                            shard.outgoing_len.set(shard.outgoing_len.get() - 1);
                        }
                        Err(back) => {
                            queue.push_front(back);
                            break;
                        }
                    }
                }
            }
            if !progressed {
                // The other shard is busy: yield, then sleep briefly, so this
                // thread keeps draining its own inbox meanwhile.
                attempts = attempts.saturating_add(1);
                if attempts < 64 {
                    shard.yielder.yield_now().await;
                } else {
                    monoio::time::sleep(Duration::from_micros(200)).await;
                }
            } else {
                attempts = 0;
                if !shard.mesh_backlogged() && !shard.backlog_waiters.is_empty() {
                    shard.backlog_waiters.wake_all();
                }
            }
        }
    }
}

/// Messages handled per drain before yielding to the shard's other tasks.
const INBOX_BATCH_MAX: usize = 256;

async fn drain_inbox(shard: Rc<Shard>) {
    let inbox = shard.shared.mesh.inbox(shard.id);
    loop {
        inbox.ready().await;
        let mut handled = 0;
        while let Some(message) = inbox.try_recv() {
            Stats::bump(&shard.stats.mesh_received);
            inbox::handle(&shard, message);
            handled += 1;
            if let Some(recipient) = shard.egress.take_pace_request() {
                // Head-of-line: traffic from other shards waits, in order,
                // while a client that reads catches up (or stalls).
                shard.egress.paced(recipient).await;
                handled = 0;
            } else if handled == INBOX_BATCH_MAX {
                // Writers run (and their writes are submitted) before the
                // next batch, which bounds what one turn queues per client.
                shard.yielder.yield_now().await;
                handled = 0;
            }
        }
    }
}
