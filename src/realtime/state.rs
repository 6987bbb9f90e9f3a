//! The realtime state of one shard: its members (connected Socket.IO
//! clients) and, per environment, who is in which channel and user room.
//!
//! Generic over the member's [`Sink`], the handle a frame for that member is
//! pushed into: the shard plugs in a connection's outbox, tests plug in a
//! recorder. Nothing here knows about sockets, shards or other nodes; the
//! router (the shard's [`super::events::Effects`]) decides where else a
//! publish goes.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::channels::{EnvIndex, Members, SlabKey};
use super::profile::Profile;
use super::settings::{EnvKey, Settings};
use ringcast_shards::conn_id::ConnIdText;
use ringcast_shards::{ConnId, ShardId};

/// Where a member's frames go.
pub(crate) trait Sink {
    /// Queues `frame` for the member.
    fn push(&self, frame: Bytes);
    /// Tells the client the server disconnected it (Socket.IO `41`, so
    /// socket.io-client does not reconnect) and ends its connection.
    fn kick(&self);
}

/// Who inside an environment a publish goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Channel(Arc<str>),
    /// Every client connection of the environment.
    Environment,
    User(Arc<str>),
}

/// One entry of a member list: the socket id and its profile.
pub(crate) type MemberEntry = (Box<str>, Option<Profile>);

/// One connected Socket.IO client (after its `40` connect).
pub(crate) struct Member<S> {
    pub(crate) sink: S,
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

impl<S> Member<S> {
    pub(crate) fn is_master(&self) -> bool {
        self.env.is_none()
    }
}

/// What a new member is.
pub(crate) struct NewMember<S> {
    pub(crate) sink: S,
    pub(crate) env: Option<EnvKey>,
    pub(crate) echo: bool,
    pub(crate) user: Option<Box<str>>,
    pub(crate) api_key: Option<Box<str>>,
    pub(crate) client_ip: Option<IpAddr>,
}

/// One shard's members and index, and its copy of the settings.
pub(crate) struct Realtime<S> {
    shard: ShardId,
    pub(crate) members: Slab<Member<S>>,
    envs: Vec<EnvIndex>,
    next_generation: u32,
    settings: Arc<Settings>,
}

impl<S: Sink> Realtime<S> {
    pub(crate) fn new(shard: ShardId, settings: Arc<Settings>) -> Self {
        let envs = (0..settings.key_count()).map(|_| EnvIndex::default()).collect();
        Self {
            shard,
            members: Slab::new(),
            envs,
            next_generation: 0,
            settings,
        }
    }

    pub(crate) fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub(crate) fn member(&self, key: SlabKey) -> Option<&Member<S>> {
        self.members.get(key as usize)
    }

    pub(crate) fn member_mut(&mut self, key: SlabKey) -> Option<&mut Member<S>> {
        self.members.get_mut(key as usize)
    }

    /// The index of environment `env` (present for every key the settings
    /// ever gave out).
    pub(crate) fn env_mut(&mut self, env: EnvKey) -> Option<&mut EnvIndex> {
        self.envs.get_mut(env as usize)
    }

    /// Adds a connected client: its slot, its environment room and its user
    /// room. Returns its key and socket id.
    pub(crate) fn register(&mut self, new: NewMember<S>) -> (SlabKey, ConnIdText) {
        let generation = self.next_generation;
        self.next_generation = generation.wrapping_add(1);
        let entry = self.members.vacant_entry();
        // Slab keys stay far below u32::MAX: a process holds at most a few
        // million sockets.
        let key = entry.key() as SlabKey;
        let id = ConnId::new(self.shard, key, generation).encode();
        if let Some(env) = new.env {
            if let Some(index) = self.envs.get_mut(env as usize) {
                index.members.insert(key);
                if let Some(user) = &new.user {
                    index.add_user(user, key);
                }
            }
        }
        entry.insert(Member {
            sink: new.sink,
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
        (key, id)
    }

    /// Removes a client from every index and returns it (the caller tells
    /// its channels it left).
    pub(crate) fn unregister(&mut self, key: SlabKey) -> Option<Member<S>> {
        let member = self.members.try_remove(key as usize)?;
        if let Some(index) = member.env.and_then(|env| self.envs.get_mut(env as usize)) {
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

    /// Installs newer settings (older ones are ignored) and kicks every
    /// client they no longer allow.
    pub(crate) fn apply_settings(&mut self, next: Arc<Settings>, now_unix_s: u64) {
        if next.version < self.settings.version {
            return;
        }
        while self.envs.len() < next.key_count() {
            self.envs.push(EnvIndex::default());
        }
        self.settings = next;
        self.sweep(now_unix_s);
    }

    /// Kicks the clients the current settings no longer allow: their
    /// environment is gone, off or suspended, or their API key was removed,
    /// expired or lost `allow_realtime`. Also run every second, for expiry.
    pub(crate) fn sweep(&self, now_unix_s: u64) {
        for (_, member) in &self.members {
            let Some(env) = member.env else {
                continue;
            };
            if !still_allowed(&self.settings, env, member.api_key.as_deref(), now_unix_s) {
                tracing::debug!(id = %member.id, "settings no longer allow this client; disconnecting");
                member.sink.kick();
            }
        }
    }

    /// Queues `frame` for this shard's members in `target` of `env`, except
    /// `skip`; the number of recipients.
    pub(crate) fn deliver(&self, env: EnvKey, target: &Target, frame: &Bytes, skip: Option<SlabKey>) -> u64 {
        let Some(index) = self.envs.get(env as usize) else {
            return 0;
        };
        let members = match target {
            Target::Channel(name) => index.channel(name),
            Target::Environment => Some(&index.members),
            Target::User(user) => index.user(user),
        };
        members.map_or(0, |members| deliver(&self.members, members, frame, skip))
    }

    /// Queues `frame` for one member; false if it is gone.
    pub(crate) fn deliver_to(&self, key: SlabKey, frame: Bytes) -> bool {
        match self.members.get(key as usize) {
            Some(member) => {
                member.sink.push(frame);
                true
            }
            None => false,
        }
    }

    /// This shard's members in `target` of `env`.
    pub(crate) fn local_count(&self, env: EnvKey, target: &Target) -> usize {
        let Some(index) = self.envs.get(env as usize) else {
            return 0;
        };
        let members = match target {
            Target::Channel(name) => index.channel(name),
            Target::Environment => Some(&index.members),
            Target::User(user) => index.user(user),
        };
        members.map_or(0, |m| m.len())
    }

    /// This shard's members of `channel` with their profiles.
    pub(crate) fn local_members(&self, env: EnvKey, channel: &str) -> Vec<MemberEntry> {
        let Some(members) = self.envs.get(env as usize).and_then(|e| e.channel(channel)) else {
            return Vec::new();
        };
        members
            .iter()
            .filter_map(|&key| self.members.get(key as usize))
            .map(|m| (Box::from(m.id.as_str()), m.profile.clone()))
            .collect()
    }

    /// Per environment key: its clients and channels on this shard.
    pub(crate) fn env_counts(&self) -> impl Iterator<Item = (EnvKey, usize, usize)> + '_ {
        self.envs
            .iter()
            .enumerate()
            .map(|(key, index)| (key as EnvKey, index.members.len(), index.channel_count()))
    }

    pub(crate) fn master_count(&self) -> usize {
        self.members.iter().filter(|(_, m)| m.is_master()).count()
    }
}

/// Queues `frame` on every member in `members` except `skip`.
// PERF: the per-recipient loop. No JSON, no allocation, no formatting here:
// a refcount increment and a queue push per recipient.
fn deliver<S: Sink>(conns: &Slab<Member<S>>, members: &Members, frame: &Bytes, skip: Option<SlabKey>) -> u64 {
    let mut delivered = 0;
    for &key in members {
        if Some(key) == skip {
            continue;
        }
        if let Some(member) = conns.get(key as usize) {
            member.sink.push(frame.clone());
            delivered += 1;
        }
    }
    delivered
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
