//! Everything one shard may ask of another: the closed set of
//! [`ShardMessage`]s and the handler that runs them on the receiving shard.
//!
//! Only owned, `Send` data crosses threads: refcounted frames ([`Bytes`]),
//! `Arc<str>` names, and plain ids. A message never carries a reference into
//! another shard's memory.

use std::sync::Arc;

use bytes::Bytes;

use crate::metrics::Snapshot;
use crate::realtime::profile::Profile;
use crate::realtime::settings::Settings;
use crate::shard::{EnvKey, Shard};
use ringcast_shards::ShardId;

/// Who inside an environment a publish goes to.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Channel(Arc<str>),
    /// Every client connection of the environment.
    Environment,
    User(Arc<str>),
}

/// One profile in a member list: the socket id and its profile.
pub(crate) type MemberEntry = (Box<str>, Option<Profile>);

/// A request or reply between shards.
pub(crate) enum ShardMessage {
    /// Deliver `frame` to this shard's connections in `target`.
    Publish {
        env: EnvKey,
        target: Target,
        frame: Bytes,
    },
    /// List this shard's members of `channel`, replying to `reply_to`.
    MembersRequest {
        env: EnvKey,
        channel: Arc<str>,
        reply_to: ShardId,
        request: u32,
    },
    /// One shard's part of a member list gathered by `request`.
    MembersReply {
        request: u32,
        members: Vec<MemberEntry>,
    },
    /// New settings (SIGHUP or the admin API); when `ack` is set, the shard
    /// confirms to `ack.0` with request id `ack.1` once applied.
    SettingsChanged {
        settings: Arc<Settings>,
        ack: Option<(ShardId, u32)>,
    },
    /// A shard applied the settings of request `request`.
    SettingsApplied {
        request: u32,
    },
    /// Send this shard's metrics snapshot to `reply_to`.
    StatsRequest {
        reply_to: ShardId,
        request: u32,
    },
    StatsReply {
        request: u32,
        snapshot: Box<Snapshot>,
    },
    /// Stop accepting and drain (SIGTERM/SIGINT).
    Shutdown,
}

/// Runs `message` on `shard`.
pub(crate) fn handle(shard: &Shard, message: ShardMessage) {
    match message {
        ShardMessage::Publish { env, target, frame } => shard.deliver_local(env, &target, &frame, None),
        ShardMessage::MembersRequest {
            env,
            channel,
            reply_to,
            request,
        } => {
            let members = shard.local_members(env, &channel);
            let reply = ShardMessage::MembersReply { request, members };
            shard.send_to(reply_to, reply);
        }
        ShardMessage::MembersReply { request, members } => {
            shard.gather_part(request, members);
        }
        ShardMessage::SettingsChanged { settings, ack } => {
            shard.apply_settings(settings);
            if let Some((reply_to, request)) = ack {
                shard.send_to(reply_to, ShardMessage::SettingsApplied { request });
            }
        }
        ShardMessage::SettingsApplied { request } => shard.settings_applied(request),
        ShardMessage::StatsRequest { reply_to, request } => {
            let snapshot = Box::new(shard.snapshot());
            shard.send_to(reply_to, ShardMessage::StatsReply { request, snapshot });
        }
        ShardMessage::StatsReply { request, snapshot } => shard.stats_part(request, *snapshot),
        ShardMessage::Shutdown => shard.begin_shutdown(),
    }
}
