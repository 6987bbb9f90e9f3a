//! Scatter/gather across shards: member lists, metrics snapshots, the
//! confirmation that every shard applied new settings, the fence that
//! says every other shard delivered what this one published before it, and
//! the web console's requests (traffic samples, channel lists, disconnecting
//! one socket on the shard that owns it).
//!
//! A gather asks every other shard through its inbox, adds this shard's own
//! part, and completes when every part is in, or at its deadline
//! (`gather_timeout_ms`) with what arrived, marked incomplete and counted:
//! a shard that stopped draining its inbox delays an answer, never loses it.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use ahash::AHashMap;
use bytes::Bytes;

use crate::connection::outbox::Outbox;
use crate::metrics::{Snapshot, Stats};
use crate::node_stats::ShardSample;
use crate::protocol::frames;
use crate::protocol::socketio::write_json_str;
use crate::realtime::channels::SlabKey;
use crate::realtime::profile::{write_buffers_inline, write_renumbered};
use crate::realtime::settings::{EnvKey, Settings};
use crate::realtime::state::{MemberEntry, Realtime};
use crate::shard::inbox::{SettingsAck, ShardMessage};
use crate::shard::Shard;
use ringcast_shards::ShardId;

/// A one-shot, shard-local reply slot.
pub(crate) struct LocalReply<T> {
    value: RefCell<Option<T>>,
    waker: Cell<Option<Waker>>,
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
    pub(crate) fn set(&self, value: T) {
        *self.value.borrow_mut() = Some(value);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Resolves with the value once set.
    pub(crate) async fn take(&self) -> T {
        std::future::poll_fn(|cx| match self.value.borrow_mut().take() {
            Some(v) => Poll::Ready(v),
            None => {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// A gathered result and whether every shard contributed to it.
#[derive(Debug)]
pub(crate) struct Gathered<T> {
    pub(crate) value: T,
    /// Shards that did not answer before the deadline.
    pub(crate) missing: usize,
}

/// Where a gathered member list goes.
pub(crate) enum MembersReply {
    /// Socket.IO ack `ack_id` on member `to` (if it is still the same
    /// connection: `generation`), with Buffers as attachments.
    Ack {
        to: SlabKey,
        generation: u32,
        ack_id: u64,
    },
    /// A task on this shard awaiting the JSON text (the HTTP API), with
    /// Buffers inlined as `{"type":"Buffer","data":[...]}`.
    Local(Rc<LocalReply<Gathered<Vec<u8>>>>),
}

struct MembersGather {
    reply: MembersReply,
    env: EnvKey,
    channel: Arc<str>,
    parts_remaining: usize,
    /// Set when the cluster could not answer and the list holds only this
    /// node's members.
    cluster_missing: bool,
    /// JSON array body so far, without the closing `]`.
    body: Vec<u8>,
    entries: usize,
    /// Binary profile data of the members so far, in placeholder order.
    attachments: Vec<Bytes>,
}

struct StatsGather {
    remaining: usize,
    snapshots: Vec<Snapshot>,
    reply: Rc<LocalReply<Gathered<Vec<Snapshot>>>>,
}

/// Confirmations still expected (settings applied, fences passed).
struct Confirmations {
    remaining: usize,
    reply: Rc<LocalReply<Gathered<()>>>,
}

/// What the web console asks of a shard.
#[derive(Debug)]
pub(crate) enum ConsoleAsk {
    /// Its counters and a digest of its channel names.
    Sample,
    /// Its channels of `env` whose names contain `filter`, with their
    /// member counts on this shard.
    Channels { env: EnvKey, filter: Option<Arc<str>> },
    /// Disconnect member `key` (Socket.IO `41`) if it is still the
    /// connection of `generation`.
    Disconnect { key: SlabKey, generation: u32 },
}

/// One shard's answer to a [`ConsoleAsk`].
#[derive(Debug)]
pub(crate) enum ConsolePart {
    Sample(Box<ShardSample>),
    Channels(ChannelPart),
    /// Whether the member was there (and is being disconnected).
    Disconnected(bool),
}

/// One shard's channels of an environment.
#[derive(Debug, Default)]
pub(crate) struct ChannelPart {
    /// Name and members on the shard.
    pub(crate) channels: Vec<(Arc<str>, u32)>,
    /// The shard had more than it sent.
    pub(crate) truncated: bool,
}

struct ConsoleGather {
    remaining: usize,
    parts: Vec<ConsolePart>,
    reply: Rc<LocalReply<Gathered<Vec<ConsolePart>>>>,
}

/// The gathers of one shard in progress, by request id.
#[derive(Default)]
pub(crate) struct Gathers {
    next_request: u64,
    members: AHashMap<u64, MembersGather>,
    stats: AHashMap<u64, StatsGather>,
    settings: AHashMap<u64, Confirmations>,
    fences: AHashMap<u64, Confirmations>,
    console: AHashMap<u64, ConsoleGather>,
}

/// What a gather of [`Confirmations`] waits for.
#[derive(Debug, Clone, Copy)]
enum Confirming {
    /// Every shard applied new settings.
    Settings,
    /// Every other shard handled what this one sent before a fence.
    Fence,
}

impl Confirming {
    /// What was not confirmed in time, for the log.
    fn late(self) -> &'static str {
        match self {
            Self::Settings => "settings not confirmed by every shard at the deadline",
            Self::Fence => "an API call's message not delivered by every shard at the deadline",
        }
    }
}

impl Gathers {
    fn next_request(&mut self) -> u64 {
        self.next_request += 1;
        self.next_request
    }

    fn confirmations(&mut self, which: Confirming) -> &mut AHashMap<u64, Confirmations> {
        match which {
            Confirming::Settings => &mut self.settings,
            Confirming::Fence => &mut self.fences,
        }
    }
}

/// Which kind of gather a deadline is for.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Members,
    Stats,
    Confirmations(Confirming),
    Console,
}

impl Shard {
    /// Starts gathering the members of `channel` of `env` from every shard;
    /// `reply` gets the list when all parts are in (or at the deadline).
    pub(crate) fn gather_members(
        self: &Rc<Self>,
        rt: &Realtime<Rc<Outbox>>,
        reply: MembersReply,
        env: EnvKey,
        channel: &str,
    ) {
        let channel: Arc<str> = Arc::from(channel);
        let in_cluster = self.shared.cluster.is_some();
        let request = {
            let mut gathers = self.gathers.borrow_mut();
            let request = gathers.next_request();
            gathers.members.insert(
                request,
                MembersGather {
                    reply,
                    env,
                    channel: channel.clone(),
                    // In a cluster, Redis holds every node's members (this
                    // one's included): one part.
                    parts_remaining: if in_cluster { 1 } else { self.shard_count() },
                    cluster_missing: false,
                    body: b"[".to_vec(),
                    entries: 0,
                    attachments: Vec::new(),
                },
            );
            request
        };
        self.expire_later(Kind::Members, request);
        if let Some(cluster) = &self.shared.cluster {
            let env_id = rt.settings().get(env).map(|e| Arc::<str>::from(e.id.as_str()));
            let sent = env_id.is_some_and(|env_id| {
                cluster.send_request(crate::cluster::Command::Members {
                    shard: self.id,
                    request,
                    env_id,
                    channel: channel.clone(),
                })
            });
            if !sent {
                self.gather_locally(rt, request);
            }
            return;
        }
        self.scatter_members(rt, request, env, &channel);
    }

    /// Asks every other shard for its part of gather `request` and adds
    /// this shard's.
    fn scatter_members(&self, rt: &Realtime<Rc<Outbox>>, request: u64, env: EnvKey, channel: &Arc<str>) {
        for other in self.other_shards() {
            let message = ShardMessage::MembersRequest {
                env,
                channel: channel.clone(),
                reply_to: self.id,
                request,
            };
            self.send_to(other, message);
        }
        let local = rt.local_members(env, channel);
        self.members_part(rt, request, local);
    }

    /// The cluster could not answer gather `request`: this node's members
    /// only, marked incomplete.
    fn gather_locally(&self, rt: &Realtime<Rc<Outbox>>, request: u64) {
        let (env, channel) = {
            let mut gathers = self.gathers.borrow_mut();
            let Some(gather) = gathers.members.get_mut(&request) else {
                return;
            };
            gather.parts_remaining = self.shard_count();
            gather.cluster_missing = true;
            (gather.env, gather.channel.clone())
        };
        self.scatter_members(rt, request, env, &channel);
    }

    /// The cluster's answer to member gather `request`.
    pub(crate) fn cluster_members(&self, request: u64, members: Option<Vec<MemberEntry>>) {
        let rt = self.realtime.borrow();
        match members {
            Some(members) => self.members_part(&rt, request, members),
            None => self.gather_locally(&rt, request),
        }
    }

    /// The members of `channel` of `env` from every shard as JSON text
    /// `[{"id":..,"data":..},...]` (for the HTTP API).
    pub(crate) async fn members_json(self: &Rc<Self>, env: EnvKey, channel: &str) -> Gathered<Vec<u8>> {
        let slot = Rc::new(LocalReply::default());
        {
            let rt = self.realtime.borrow();
            self.gather_members(&rt, MembersReply::Local(slot.clone()), env, channel);
        }
        slot.take().await
    }

    /// Adds one shard's part to member gather `request`, and answers when
    /// it is complete.
    pub(crate) fn members_part(&self, rt: &Realtime<Rc<Outbox>>, request: u64, members: Vec<MemberEntry>) {
        let mut gathers = self.gathers.borrow_mut();
        let Some(gather) = gathers.members.get_mut(&request) else {
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
                (Some(profile), MembersReply::Ack { .. }) => {
                    write_renumbered(&mut gather.body, profile, gather.attachments.len());
                    gather.attachments.extend(profile.attachments.iter().cloned());
                }
                (Some(profile), MembersReply::Local(_)) => write_buffers_inline(&mut gather.body, profile),
                (None, _) => gather.body.extend_from_slice(b"null"),
            }
            gather.body.push(b'}');
        }
        gather.parts_remaining -= 1;
        if gather.parts_remaining > 0 {
            return;
        }
        if let Some(gather) = gathers.members.remove(&request) {
            drop(gathers);
            self.answer_members(rt, gather);
        }
    }

    fn answer_members(&self, rt: &Realtime<Rc<Outbox>>, mut gather: MembersGather) {
        gather.body.push(b']');
        let missing = gather.parts_remaining + usize::from(gather.cluster_missing);
        match gather.reply {
            MembersReply::Local(slot) => slot.set(Gathered {
                value: gather.body,
                missing,
            }),
            MembersReply::Ack {
                to,
                generation,
                ack_id,
            } => {
                if rt.member(to).is_none_or(|m| m.generation != generation) {
                    return;
                }
                let frame = frames::ack(ack_id, &gather.attachments, |out| {
                    out.extend_from_slice(&gather.body);
                    if gather.cluster_missing {
                        // Redis is out of reach: this node's members only.
                        out.extend_from_slice(b",{\"error\":\"incomplete\",\"cluster\":\"unreachable\"}");
                    } else if missing > 0 {
                        // What arrived, and why it may not be everyone:
                        // clients that read only the list are unaffected.
                        out.extend_from_slice(b",{\"error\":\"incomplete\",\"missingShards\":");
                        crate::protocol::socketio::push_decimal(out, missing as u64);
                        out.push(b'}');
                    }
                });
                if rt.deliver_to(to, frame) {
                    self.stats.add_deliveries(1);
                }
            }
        }
    }

    /// Every shard's metrics snapshot, gathered through the mesh.
    pub(crate) async fn gather_stats(self: &Rc<Self>) -> Gathered<Vec<Snapshot>> {
        let reply = Rc::new(LocalReply::default());
        let request = {
            let mut gathers = self.gathers.borrow_mut();
            let request = gathers.next_request();
            gathers.stats.insert(
                request,
                StatsGather {
                    remaining: self.shard_count(),
                    snapshots: Vec::with_capacity(self.shard_count()),
                    reply: reply.clone(),
                },
            );
            request
        };
        self.expire_later(Kind::Stats, request);
        for other in self.other_shards() {
            let message = ShardMessage::StatsRequest {
                reply_to: self.id,
                request,
            };
            self.send_to(other, message);
        }
        self.stats_part(request, self.snapshot());
        let mut gathered = reply.take().await;
        gathered.value.sort_by_key(|s| s.shard);
        gathered
    }

    /// Adds one shard's snapshot to scrape `request`.
    pub(crate) fn stats_part(&self, request: u64, snapshot: Snapshot) {
        let mut gathers = self.gathers.borrow_mut();
        let Some(gather) = gathers.stats.get_mut(&request) else {
            return;
        };
        gather.snapshots.push(snapshot);
        gather.remaining -= 1;
        if gather.remaining == 0 {
            if let Some(gather) = gathers.stats.remove(&request) {
                gather.reply.set(Gathered {
                    value: gather.snapshots,
                    missing: 0,
                });
            }
        }
    }

    /// Sends `settings` to every shard (this one included) and resolves once
    /// all of them applied it, or at the deadline (with the shards that did
    /// not confirm).
    pub(crate) async fn apply_everywhere(self: &Rc<Self>, settings: Arc<Settings>) -> Gathered<()> {
        let (request, reply) = self.open_confirmations(Confirming::Settings, self.shard_count());
        for target in self.all_shards() {
            let message = ShardMessage::SettingsChanged {
                settings: settings.clone(),
                ack: Some(SettingsAck::Shard(self.id, request)),
            };
            self.send_to(target, message);
        }
        reply.take().await
    }

    /// One shard confirmed settings change `request`.
    pub(crate) fn settings_applied(&self, request: u64) {
        confirm(&mut self.gathers.borrow_mut().settings, request);
    }

    /// Resolves once every other shard handled everything this shard sent
    /// it before the call (each one's data lane is in order, so a fence
    /// sent behind this shard's publishes passes them all), or at the
    /// deadline (with the shards that did not confirm).
    ///
    /// What a publishing API call awaits before it answers: its message is
    /// then queued for every recipient on this node, so the caller's next
    /// call, whichever shard serves it, is delivered after it. At the
    /// deadline it answers all the same (counted): the message is still
    /// delivered, only that order is no longer promised. Other nodes are
    /// not waited for (calls served by different nodes are ordered as Redis
    /// receives them, as with socket.io's Redis adapter).
    pub(crate) async fn fence_everywhere(self: &Rc<Self>) -> Gathered<()> {
        if self.shard_count() == 1 {
            return Gathered {
                value: (),
                missing: 0,
            };
        }
        let (request, reply) = self.open_confirmations(Confirming::Fence, self.shard_count() - 1);
        for target in self.other_shards() {
            let message = ShardMessage::Fence {
                reply_to: self.id,
                request,
            };
            self.send_to(target, message);
        }
        reply.take().await
    }

    /// One shard passed fence `request`.
    pub(crate) fn fence_passed(&self, request: u64) {
        confirm(&mut self.gathers.borrow_mut().fences, request);
    }

    /// Starts waiting for `remaining` confirmations of `which` (until the
    /// deadline); the request id to send with the asks, and the reply.
    fn open_confirmations(
        self: &Rc<Self>,
        which: Confirming,
        remaining: usize,
    ) -> (u64, Rc<LocalReply<Gathered<()>>>) {
        let reply = Rc::new(LocalReply::default());
        let request = {
            let mut gathers = self.gathers.borrow_mut();
            let request = gathers.next_request();
            let reply = reply.clone();
            gathers
                .confirmations(which)
                .insert(request, Confirmations { remaining, reply });
            request
        };
        self.expire_later(Kind::Confirmations(which), request);
        (request, reply)
    }

    /// Asks `targets` (this shard may be one of them) the console's
    /// question `ask()` and resolves with their answers: all of them, or at
    /// the deadline what arrived (`missing` says how many did not).
    pub(crate) async fn gather_console(
        self: &Rc<Self>,
        targets: &[ShardId],
        ask: impl Fn() -> ConsoleAsk,
    ) -> Gathered<Vec<ConsolePart>> {
        let reply = Rc::new(LocalReply::default());
        let request = {
            let mut gathers = self.gathers.borrow_mut();
            let request = gathers.next_request();
            gathers.console.insert(
                request,
                ConsoleGather {
                    remaining: targets.len(),
                    parts: Vec::with_capacity(targets.len()),
                    reply: reply.clone(),
                },
            );
            request
        };
        self.expire_later(Kind::Console, request);
        for &target in targets.iter().filter(|&&t| t != self.id) {
            let message = ShardMessage::ConsoleRequest {
                reply_to: self.id,
                request,
                ask: ask(),
            };
            self.send_to(target, message);
        }
        if targets.contains(&self.id) {
            let part = self.console_part(ask());
            self.console_part_in(request, part);
        }
        reply.take().await
    }

    /// One shard's answer to console gather `request`.
    pub(crate) fn console_part_in(&self, request: u64, part: ConsolePart) {
        let mut gathers = self.gathers.borrow_mut();
        let Some(gather) = gathers.console.get_mut(&request) else {
            return;
        };
        gather.parts.push(part);
        gather.remaining -= 1;
        if gather.remaining == 0 {
            if let Some(gather) = gathers.console.remove(&request) {
                gather.reply.set(Gathered {
                    value: gather.parts,
                    missing: 0,
                });
            }
        }
    }

    /// Completes gather `request` of `kind` at the deadline if it is still
    /// open, with what arrived.
    fn expire_later(self: &Rc<Self>, kind: Kind, request: u64) {
        let shard = self.clone();
        let deadline = self.shared.config.gather_timeout;
        monoio::spawn(async move {
            monoio::time::sleep(deadline).await;
            shard.expire(kind, request);
        });
    }

    fn expire(&self, kind: Kind, request: u64) {
        let mut gathers = self.gathers.borrow_mut();
        match kind {
            Kind::Members => {
                let Some(gather) = gathers.members.remove(&request) else {
                    return;
                };
                drop(gathers);
                Stats::bump(&self.stats.gather_timeouts);
                tracing::warn!(
                    missing = gather.parts_remaining,
                    "member list incomplete at its deadline"
                );
                self.answer_members(&self.realtime.borrow(), gather);
            }
            Kind::Stats => {
                let Some(gather) = gathers.stats.remove(&request) else {
                    return;
                };
                Stats::bump(&self.stats.gather_timeouts);
                tracing::warn!(missing = gather.remaining, "metrics incomplete at their deadline");
                gather.reply.set(Gathered {
                    value: gather.snapshots,
                    missing: gather.remaining,
                });
            }
            Kind::Console => {
                let Some(gather) = gathers.console.remove(&request) else {
                    return;
                };
                Stats::bump(&self.stats.gather_timeouts);
                tracing::warn!(
                    missing = gather.remaining,
                    "console request incomplete at its deadline"
                );
                gather.reply.set(Gathered {
                    value: gather.parts,
                    missing: gather.remaining,
                });
            }
            Kind::Confirmations(which) => {
                let Some(gather) = gathers.confirmations(which).remove(&request) else {
                    return;
                };
                Stats::bump(&self.stats.gather_timeouts);
                tracing::warn!(missing = gather.remaining, "{}", which.late());
                gather.reply.set(Gathered {
                    value: (),
                    missing: gather.remaining,
                });
            }
        }
    }
}

/// One confirmation of `request` in `open`; its reply is set when it was
/// the last one expected.
fn confirm(open: &mut AHashMap<u64, Confirmations>, request: u64) {
    let Some(gather) = open.get_mut(&request) else {
        return;
    };
    gather.remaining -= 1;
    if gather.remaining == 0 {
        if let Some(gather) = open.remove(&request) {
            gather.reply.set(Gathered {
                value: (),
                missing: 0,
            });
        }
    }
}

#[cfg(test)]
mod tests;
