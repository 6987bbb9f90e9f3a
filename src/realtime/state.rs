//! The realtime state of one shard: its members (connected Socket.IO
//! clients) and, per environment, who is in which channel and user room.
//!
//! Generic over the member's [`Sink`], the handle a frame for that member is
//! pushed into: the shard plugs in a connection's outbox, tests plug in a
//! recorder. Nothing here knows about sockets, shards or other nodes; the
//! router (the shard's [`super::events::Effects`]) decides where else a
//! publish goes.

use std::sync::Arc;

use bytes::Bytes;
use slab::Slab;

use super::auth::{self, Credentials};
use super::channels::{EnvIndex, Joined, Members, SlabKey};
use super::profile::Profile;
use super::rate_limit::RateKey;
use super::settings::{EnvKey, Settings};
use crate::protocol::frames::Frame;
use ringcast_shards::conn_id::ConnIdText;
use ringcast_shards::{ConnId, ShardId};

/// Where a member's frames go.
pub(crate) trait Sink {
    /// Queues `frame` for the member.
    fn push(&self, frame: Frame);
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
    /// What it connected with, asked again of [`auth::admit`] when the
    /// settings change (default for the master connection).
    pub(crate) credentials: Credentials,
    /// When (Unix seconds) its admission must be asked again although the
    /// settings did not change: the earliest expiry it depended on.
    pub(crate) valid_until_s: u64,
    /// Channels joined (at most `channels_per_connection_max`), in join
    /// order but for leaves, which move the last-joined into the leaver's
    /// place (O(1)).
    pub(crate) channels: Joined,
    /// Profile set by `update`; `None` shows as `null`.
    pub(crate) profile: Option<Profile>,
    /// Until when (rate-limit clock) no further rate-limit error is sent.
    pub(crate) rate_error_until_s: u64,
}

impl<S> Member<S> {
    pub(crate) fn is_master(&self) -> bool {
        self.env.is_none()
    }

    /// Whose rate-limit budget the member's events draw on: its IP's; when
    /// the IP is unknown, its user's; else its own connection's (see
    /// [`RateKey`]).
    pub(crate) fn rate_key(&self) -> RateKey<'_> {
        match (self.credentials.ip, self.user()) {
            (Some(ip), _) => RateKey::Ip(ip),
            (None, Some(user)) => RateKey::User(user),
            (None, None) => RateKey::Connection(self.id.as_str()),
        }
    }

    /// The user of its verified session: it is in that user's room.
    pub(crate) fn user(&self) -> Option<&str> {
        self.credentials.session.user()
    }
}

/// What a new member is.
pub(crate) struct NewMember<S> {
    pub(crate) sink: S,
    /// `None` for the app backend's master connection.
    pub(crate) env: Option<EnvKey>,
    pub(crate) echo: bool,
    pub(crate) credentials: Credentials,
    /// See [`Member::valid_until_s`].
    pub(crate) valid_until_s: u64,
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
                if let Some(user) = new.credentials.session.user() {
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
            credentials: new.credentials,
            valid_until_s: new.valid_until_s,
            channels: Joined::default(),
            profile: None,
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
            if let Some(user) = member.user() {
                index.remove_user(user, key);
            }
            for channel in member.channels.iter() {
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
        self.sweep(now_unix_s, Sweep::Everyone);
    }

    /// Kicks the clients the connection rules ([`auth::admit`]) no longer let
    /// in: their environment is gone, off or suspended, or what they
    /// connected with (API key, origin, IP, session) does not pass the
    /// current settings. [`Sweep::Everyone`] after a settings change;
    /// [`Sweep::Expired`] every second, for the members whose admission
    /// depended on something that has expired since.
    pub(crate) fn sweep(&mut self, now_unix_s: u64, which: Sweep) {
        let settings = &self.settings;
        for (_, member) in &mut self.members {
            let Some(env) = member.env else {
                continue;
            };
            if which == Sweep::Expired && member.valid_until_s > now_unix_s {
                continue;
            }
            let verdict = match settings.get(env) {
                Some(env) => auth::admit(env, &member.credentials, now_unix_s),
                None => Err(auth::no_environment("(removed)")),
            };
            match verdict {
                Ok(valid_until_s) => member.valid_until_s = valid_until_s,
                Err(refusal) => {
                    tracing::debug!(id = %member.id, code = refusal.code, "the settings no longer let this client in; disconnecting");
                    // Once is enough: its reader unregisters it shortly.
                    member.valid_until_s = u64::MAX;
                    member.sink.kick();
                }
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
        members.map_or(0, |members| {
            deliver(&self.members, members, &frame.clone().into(), skip)
        })
    }

    /// Queues the presence notice `frame` of presence event `seq` for this
    /// shard's members of `channel` that joined it before that event; the
    /// number of recipients. (A notice from another shard can arrive after
    /// a later join here; that member learnt the state from its own join.)
    pub(crate) fn deliver_presence(&self, env: EnvKey, channel: &str, frame: &Bytes, seq: u64) -> u64 {
        let Some(members) = self.envs.get(env as usize).and_then(|e| e.channel(channel)) else {
            return 0;
        };
        let frame = Frame::from(frame.clone());
        let mut delivered = 0;
        for &key in members {
            let Some(member) = self.members.get(key as usize) else {
                continue;
            };
            if member.channels.joined_at(channel).is_some_and(|at| at < seq) {
                member.sink.push(frame.clone());
                delivered += 1;
            }
        }
        delivered
    }

    /// Queues `frame` for one member; false if it is gone.
    pub(crate) fn deliver_to(&self, key: SlabKey, frame: Bytes) -> bool {
        match self.members.get(key as usize) {
            Some(member) => {
                member.sink.push(frame.into());
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

    /// The channels of `env` on this shard with their local member counts.
    pub(crate) fn channels_of(&self, env: EnvKey) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.envs
            .get(env as usize)
            .into_iter()
            .flat_map(EnvIndex::channels)
    }

    /// Member `key` if it is still the connection of `generation` (a slab
    /// key is reused by later connections).
    pub(crate) fn member_of_generation(&self, key: SlabKey, generation: u32) -> Option<&Member<S>> {
        self.member(key).filter(|m| m.generation == generation)
    }

    pub(crate) fn master_count(&self) -> usize {
        self.members.iter().filter(|(_, m)| m.is_master()).count()
    }
}

/// Queues `frame` on every member in `members` except `skip`.
// PERF: the per-recipient loop. No JSON, no allocation, no formatting here:
// a plain (non-atomic) refcount increment and a queue push per recipient.
fn deliver<S: Sink>(conns: &Slab<Member<S>>, members: &Members, frame: &Frame, skip: Option<SlabKey>) -> u64 {
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

/// Which members [`Realtime::sweep`] asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// Every member (the settings changed).
    Everyone,
    /// Members whose admission depended on something that expired.
    Expired,
}
