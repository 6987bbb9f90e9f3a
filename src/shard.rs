//! One shard's state and its two long-lived tasks: the accept loop and the
//! inbox drain.
//!
//! A [`Shard`] is `!Send`: it lives on its own thread, inside its own monoio
//! runtime, and is shared between that thread's tasks through `Rc`. Its
//! mutable state sits in one `RefCell` that is borrowed only between awaits,
//! never across one. Other shards reach it only through [`ShardMessage`]s in
//! its inbox.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;
use slab::Slab;

use crate::config::{Config, EnvConfig};
use crate::connection::outbox::Outbox;
use crate::fanout::{deliver, push_decimal, text_packet};
use crate::inbox::{self, MemberEntry, ShardMessage, Target};
use crate::protocol::socketio::write_json_str;
use crate::realtime::channels::{EnvIndex, SlabKey};
use crate::realtime::profile::{write_renumbered, Profile};
use ringcast_shards::conn_id::ConnIdText;
use ringcast_shards::{ConnId, Mesh, ShardId};

/// Index of an environment in [`Config::environments`].
pub type EnvKey = u32;

/// Read-only state every shard shares.
pub struct Shared {
    pub config: Config,
    pub mesh: Mesh<ShardMessage>,
    env_keys: AHashMap<String, EnvKey>,
}

impl Shared {
    pub fn new(config: Config) -> Self {
        let mesh = Mesh::new(config.shard_count, config.mesh_queue_messages_max);
        let env_keys = config
            .environments
            .iter()
            .enumerate()
            .map(|(i, e)| (e.id.clone(), i as EnvKey))
            .collect();
        Self {
            config,
            mesh,
            env_keys,
        }
    }

    pub fn env_key(&self, id: &str) -> Option<EnvKey> {
        self.env_keys.get(id).copied()
    }

    pub fn env(&self, key: EnvKey) -> &EnvConfig {
        &self.config.environments[key as usize]
    }
}

/// One connected Socket.IO client (after its `40` connect).
pub struct Member {
    pub outbox: Rc<Outbox>,
    pub id: ConnIdText,
    pub generation: u32,
    /// `None` for the app backend's master connection.
    pub env: Option<EnvKey>,
    pub echo: bool,
    pub user: Option<Box<str>>,
    /// Channels joined, in join order.
    pub channels: Vec<Box<str>>,
    /// Profile set by `update`; `None` shows as `null`.
    pub profile: Option<Profile>,
}

impl Member {
    pub fn is_master(&self) -> bool {
        self.env.is_none()
    }
}

/// A member list being gathered from every shard for one ack.
struct Gather {
    conn: SlabKey,
    generation: u32,
    ack_id: u64,
    parts_remaining: usize,
    /// JSON array body so far, without the closing `]`.
    body: Vec<u8>,
    entries: usize,
    /// Binary profile data of the members so far, in placeholder order.
    attachments: Vec<Bytes>,
}

/// Mutable shard state.
pub struct State {
    pub conns: Slab<Member>,
    pub envs: Vec<EnvIndex>,
    next_generation: u32,
    gathers: Slab<Gather>,
}

/// Shard-local counters: plain cells, no shared atomics on the hot path.
#[derive(Default)]
pub struct Stats {
    pub deliveries: Cell<u64>,
    pub ignored_master_events: Cell<u64>,
    pub ignored_events: Cell<u64>,
    pub reserved_event_names: Cell<u64>,
}

impl Stats {
    pub fn add_deliveries(&self, n: u64) {
        self.deliveries.set(self.deliveries.get() + n);
    }

    pub fn bump(cell: &Cell<u64>) {
        cell.set(cell.get() + 1);
    }
}

pub struct Shard {
    pub id: ShardId,
    pub shared: Arc<Shared>,
    pub state: RefCell<State>,
    /// Every upgraded connection's outbox (connected to Socket.IO or not),
    /// for the heartbeat.
    pub sockets: RefCell<Slab<Rc<Outbox>>>,
    pub stats: Stats,
}

/// What a new member is.
pub struct NewMember {
    pub outbox: Rc<Outbox>,
    pub env: Option<EnvKey>,
    pub echo: bool,
    pub user: Option<Box<str>>,
}

impl Shard {
    pub fn new(id: ShardId, shared: Arc<Shared>) -> Self {
        let envs = shared
            .config
            .environments
            .iter()
            .map(|_| EnvIndex::default())
            .collect();
        Self {
            id,
            shared,
            state: RefCell::new(State {
                conns: Slab::new(),
                envs,
                next_generation: 0,
                gathers: Slab::new(),
            }),
            sockets: RefCell::new(Slab::new()),
            stats: Stats::default(),
        }
    }

    /// Adds a connected client: its slab slot, its environment room and its
    /// user room. Returns its slab key and socket id.
    pub fn register(&self, new: NewMember) -> (SlabKey, ConnIdText) {
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
    pub fn unregister(&self, key: SlabKey) -> Option<Member> {
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

    /// Delivers `frame` to `target` on this shard (except `skip`) and hands
    /// it to every other shard. Waits (without blocking the thread) when a
    /// shard's inbox is full, so nothing is dropped and per-sender order
    /// holds.
    pub async fn publish(&self, env: EnvKey, target: Target, frame: Bytes, skip: Option<SlabKey>) {
        {
            let state = self.state.borrow();
            let index = &state.envs[env as usize];
            let members = match &target {
                Target::Channel(name) => index.channel(name),
                Target::Environment => Some(&index.members),
                Target::User(user) => index.user(user),
            };
            if let Some(members) = members {
                let n = deliver(&state.conns, members, &frame, skip);
                self.stats.add_deliveries(n);
            }
        }
        let shard_count = self.shared.mesh.shard_count();
        for other in 0..shard_count {
            // unwrap: shard_count <= SHARDS_MAX = 255.
            let other = ShardId::try_from(other).unwrap();
            if other == self.id {
                continue;
            }
            let message = ShardMessage::Publish {
                env,
                target: target.clone(),
                frame: frame.clone(),
            };
            let _ = self.shared.mesh.send_wait(other, message).await;
        }
    }

    /// This shard's members of `channel` with their profiles.
    pub fn local_members(&self, env: EnvKey, channel: &str) -> Vec<MemberEntry> {
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
    pub async fn gather_members(&self, conn: SlabKey, ack_id: u64, env: EnvKey, channel: &str) {
        let shard_count = self.shared.mesh.shard_count();
        let request = {
            let mut state = self.state.borrow_mut();
            let Some(generation) = state.conns.get(conn as usize).map(|m| m.generation) else {
                return;
            };
            state.gathers.insert(Gather {
                conn,
                generation,
                ack_id,
                parts_remaining: shard_count,
                body: b"[".to_vec(),
                entries: 0,
                attachments: Vec::new(),
            }) as u32
        };
        let channel: Arc<str> = Arc::from(channel);
        for other in 0..shard_count {
            // unwrap: shard_count <= SHARDS_MAX = 255.
            let other = ShardId::try_from(other).unwrap();
            if other == self.id {
                continue;
            }
            let message = ShardMessage::MembersRequest {
                env,
                channel: channel.clone(),
                reply_to: self.id,
                request,
            };
            let _ = self.shared.mesh.send_wait(other, message).await;
        }
        let local = self.local_members(env, &channel);
        self.gather_part(request, local);
    }

    /// Adds one shard's part to gather `request`, and answers when complete.
    pub fn gather_part(&self, request: u32, members: Vec<MemberEntry>) {
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
            match profile {
                Some(profile) => {
                    write_renumbered(&mut gather.body, profile, gather.attachments.len());
                    gather.attachments.extend(profile.attachments.iter().cloned());
                }
                None => gather.body.extend_from_slice(b"null"),
            }
            gather.body.push(b'}');
        }
        gather.parts_remaining -= 1;
        if gather.parts_remaining > 0 {
            return;
        }
        let gather = state.gathers.remove(request as usize);
        let Some(member) = state.conns.get(gather.conn as usize) else {
            return;
        };
        if member.generation != gather.generation {
            return;
        }
        let frame = text_packet(&gather.attachments, |out| {
            if gather.attachments.is_empty() {
                out.extend_from_slice(b"43");
            } else {
                out.extend_from_slice(b"46");
                push_decimal(out, gather.attachments.len() as u64);
                out.push(b'-');
            }
            push_decimal(out, gather.ack_id);
            out.push(b'[');
            out.extend_from_slice(&gather.body);
            out.extend_from_slice(b"]]");
        });
        member.outbox.push(frame);
    }
}

/// Runs one shard until the process exits: drains its inbox and accepts
/// connections from its listener.
pub async fn run_shard(shard_id: ShardId, listener: monoio::net::TcpListener, shared: Arc<Shared>) {
    let shard = Rc::new(Shard::new(shard_id, shared));
    monoio::spawn(drain_inbox(shard.clone()));
    monoio::spawn(heartbeat(shard.clone()));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(crate::connection::driver::serve(shard.clone(), stream, peer));
            }
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a transient accept
                // error: back off instead of spinning on the listener.
                tracing::warn!(shard = shard_id, error = %e, "accept failed; backing off");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Pings every connection each ping interval and drops those whose pong is
/// overdue: one timer per shard, ticking at a quarter of the shorter of the
/// two periods (at most once a second), instead of one timer per connection.
async fn heartbeat(shard: Rc<Shard>) {
    let config = &shard.shared.config;
    let (interval, timeout) = (config.ping_interval, config.ping_timeout);
    let tick = (interval.min(timeout) / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    let ping = crate::fanout::text_frame("2");
    loop {
        monoio::time::sleep(tick).await;
        let now = std::time::Instant::now();
        for (_, outbox) in shard.sockets.borrow().iter() {
            outbox.heartbeat(now, &ping, interval, timeout);
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
            inbox::handle(&shard, message).await;
            handled += 1;
            if handled == INBOX_BATCH_MAX {
                ringcast_shards::mesh::yield_now().await;
                handled = 0;
            }
        }
    }
}
