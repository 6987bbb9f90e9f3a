//! Everything one shard may ask of another: the closed set of
//! [`ShardMessage`]s, the handler that runs them on the receiving shard, and
//! the task that drains a shard's inbox.
//!
//! Only owned, `Send` data crosses threads: refcounted frames ([`Bytes`]),
//! `Arc<str>` names, plain ids, and the atomic countdown by which a node's
//! shards confirm settings another node changed. A message never carries a
//! reference into another shard's memory.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::cluster::{AppliedHere, ClusterEvent};
use crate::metrics::{Snapshot, Stats};
use crate::realtime::settings::{EnvKey, Settings};
use crate::realtime::state::{MemberEntry, Target};
use crate::shard::gather::{ConsoleAsk, ConsolePart};
use crate::shard::Shard;
use ringcast_shards::{Lane, ShardId};

/// A request or reply between shards.
pub(crate) enum ShardMessage {
    /// Deliver `frame` to this shard's members in `target`.
    Publish {
        env: EnvKey,
        target: Target,
        frame: Bytes,
    },
    /// Deliver the presence notice `frame` of presence event `seq` to this
    /// shard's members of `channel` that joined before it.
    Presence {
        env: EnvKey,
        channel: Arc<str>,
        frame: Bytes,
        seq: u64,
    },
    /// Confirm to `reply_to` that everything it sent before this was
    /// handled (in the data lane, behind its publishes).
    Fence {
        reply_to: ShardId,
        request: u64,
    },
    /// A shard handled everything sent before fence `request`.
    FencePassed {
        request: u64,
    },
    /// List this shard's members of `channel`, replying to `reply_to`.
    MembersRequest {
        env: EnvKey,
        channel: Arc<str>,
        reply_to: ShardId,
        request: u64,
    },
    /// One shard's part of a member list gathered by `request`.
    MembersReply {
        request: u64,
        members: Vec<MemberEntry>,
    },
    /// New settings (SIGHUP, the admin API, or the cluster); when `ack` is
    /// set, the shard confirms once applied.
    SettingsChanged {
        settings: Arc<Settings>,
        ack: Option<SettingsAck>,
    },
    /// A shard applied the settings of request `request`.
    SettingsApplied {
        request: u64,
    },
    /// Send this shard's metrics snapshot to `reply_to`.
    StatsRequest {
        reply_to: ShardId,
        request: u64,
    },
    StatsReply {
        request: u64,
        snapshot: Box<Snapshot>,
    },
    /// The web console asks this shard something; answer `reply_to`.
    ConsoleRequest {
        reply_to: ShardId,
        request: u64,
        ask: ConsoleAsk,
    },
    /// One shard's answer to console request `request`.
    ConsoleReply {
        request: u64,
        part: ConsolePart,
    },
    /// Stop accepting and drain (SIGTERM/SIGINT).
    Shutdown,
    /// From the cluster link: a message from another node, a confirmation
    /// or an answer.
    Cluster(ClusterEvent),
    /// Serve this client connection: its request belongs to a session of
    /// this shard.
    Adopt(Box<Adopted>),
}

impl ShardMessage {
    /// Publishes travel in the data lane (whose drain may wait for a slow
    /// client); everything else (requests, replies, settings, connections
    /// handed over) in the control lane, which is drained promptly whatever
    /// the data lane waits for.
    pub(crate) fn lane(&self) -> Lane {
        match self {
            // Presence notices and messages of one sender keep their order,
            // and a fence follows the publishes sent before it.
            Self::Publish { .. }
            | Self::Presence { .. }
            | Self::Fence { .. }
            | Self::Cluster(ClusterEvent::Publish { .. }) => Lane::Data,
            _ => Lane::Control,
        }
    }
}

/// Who hears that a shard applied new settings.
pub(crate) enum SettingsAck {
    /// Shard `.0`, as request `.1` (a change made through this node's API).
    Shard(ShardId, u64),
    /// The cluster link, once every shard of the node applied them (a
    /// change another node made, whose `PUT` waits for this node).
    Node(Arc<NodeCountdown>),
}

/// The node's shards that have yet to apply settings another node's notice
/// brought; the last one confirms to the link.
pub(crate) struct NodeCountdown {
    remaining: AtomicUsize,
    applied: Mutex<Option<AppliedHere>>,
}

impl NodeCountdown {
    pub(crate) fn new(shards: usize, applied: AppliedHere) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(shards),
            applied: Mutex::new(Some(applied)),
        })
    }

    /// One shard applied them.
    fn applied_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(applied) = applied {
                applied.confirm();
            }
        }
    }
}

/// A client connection another shard accepted and hands over, between two
/// of its requests (nothing in flight on it).
pub(crate) struct Adopted {
    pub(crate) fd: OwnedFd,
    pub(crate) peer: SocketAddr,
    /// What the other shard received but did not handle (the request that
    /// made it hand the connection over, and anything behind it).
    pub(crate) buffered: Vec<u8>,
    /// The connection's TLS state (keys, sequence numbers, anything
    /// received and decrypted but not yet read), on a TLS listener.
    pub(crate) tls: Option<rustls::ServerConnection>,
}

/// Runs `message` on `shard`.
fn handle(shard: &Rc<Shard>, message: ShardMessage) {
    match message {
        ShardMessage::Publish { env, target, frame } => {
            let delivered = shard.realtime.borrow().deliver(env, &target, &frame, None);
            shard.stats.add_deliveries(delivered);
        }
        ShardMessage::Presence {
            env,
            channel,
            frame,
            seq,
        } => {
            let delivered = shard
                .realtime
                .borrow()
                .deliver_presence(env, &channel, &frame, seq);
            shard.stats.add_deliveries(delivered);
        }
        ShardMessage::Fence { reply_to, request } => {
            shard.send_to(reply_to, ShardMessage::FencePassed { request });
        }
        ShardMessage::FencePassed { request } => shard.fence_passed(request),
        ShardMessage::MembersRequest {
            env,
            channel,
            reply_to,
            request,
        } => {
            let members = shard.realtime.borrow().local_members(env, &channel);
            shard.send_to(reply_to, ShardMessage::MembersReply { request, members });
        }
        ShardMessage::MembersReply { request, members } => {
            shard.members_part(&shard.realtime.borrow(), request, members);
        }
        ShardMessage::SettingsChanged { settings, ack } => {
            shard.apply_settings(settings);
            match ack {
                Some(SettingsAck::Shard(reply_to, request)) => {
                    shard.send_to(reply_to, ShardMessage::SettingsApplied { request });
                }
                Some(SettingsAck::Node(countdown)) => countdown.applied_one(),
                None => {}
            }
        }
        ShardMessage::SettingsApplied { request } => shard.settings_applied(request),
        ShardMessage::StatsRequest { reply_to, request } => {
            let snapshot = Box::new(shard.snapshot());
            shard.send_to(reply_to, ShardMessage::StatsReply { request, snapshot });
        }
        ShardMessage::StatsReply { request, snapshot } => shard.stats_part(request, *snapshot),
        ShardMessage::ConsoleRequest {
            reply_to,
            request,
            ask,
        } => {
            let part = shard.console_part(ask);
            shard.send_to(reply_to, ShardMessage::ConsoleReply { request, part });
        }
        ShardMessage::ConsoleReply { request, part } => shard.console_part_in(request, part),
        ShardMessage::Shutdown => shard.begin_shutdown(),
        ShardMessage::Cluster(ClusterEvent::Publish { env, target, frame }) => {
            let delivered = shard.realtime.borrow().deliver(env, &target, &frame, None);
            shard.stats.add_deliveries(delivered);
        }
        ShardMessage::Cluster(ClusterEvent::Confirmed { request }) => shard.release_hold(request),
        ShardMessage::Cluster(ClusterEvent::Reply { request, reply }) => shard.cluster_reply(request, reply),
        ShardMessage::Cluster(ClusterEvent::Kick { id }) => {
            shard.kick_local(&id);
        }
        ShardMessage::Adopt(adopted) => shard.adopt(*adopted),
    }
}

/// Messages handled per drain before yielding to the shard's other tasks.
const INBOX_BATCH_MAX: usize = 256;

/// Drains the shard's data lane for as long as the shard runs. Yields every
/// [`INBOX_BATCH_MAX`] messages (the writers run and their writes are
/// submitted before the next batch, which bounds what one turn queues per
/// client), and waits, in order, for a client that reads but is half its
/// queue cap behind (head-of-line for data only: see
/// `connection::outbox::Egress`; the control lane has its own task).
pub(crate) async fn drain_data_forever(shard: Rc<Shard>) {
    let inbox = shard.shared.mesh.inbox(shard.id, Lane::Data);
    loop {
        inbox.ready().await;
        let mut handled = 0;
        while let Some(message) = inbox.try_recv() {
            Stats::bump(&shard.stats.mesh_received);
            handle(&shard, message);
            handled += 1;
            if let Some(recipient) = shard.egress.take_pace_request() {
                shard.egress.paced(recipient).await;
                handled = 0;
            } else if handled == INBOX_BATCH_MAX {
                shard.yielder.yield_now().await;
                handled = 0;
            }
        }
    }
}

/// Drains the shard's control lane (requests, replies, settings, shutdown)
/// for as long as the shard runs. It never waits for a client: a pacing
/// request its handling leaves (an ack to a client that is behind) is
/// dropped, the frame being queued all the same.
pub(crate) async fn drain_control_forever(shard: Rc<Shard>) {
    let inbox = shard.shared.mesh.inbox(shard.id, Lane::Control);
    loop {
        inbox.ready().await;
        let mut handled = 0;
        while let Some(message) = inbox.try_recv() {
            Stats::bump(&shard.stats.mesh_received);
            handle(&shard, message);
            shard.egress.take_pace_request();
            handled += 1;
            if handled == INBOX_BATCH_MAX {
                shard.yielder.yield_now().await;
                handled = 0;
            }
        }
    }
}
