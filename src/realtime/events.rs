//! Agnost's client and master events, run on the sender's shard.
//!
//! Client events (`join`, `leave`, `update`, `message`) act for one member;
//! master events (`send_message`, `broadcast_message`, `user_event`,
//! `get_members`) come only from the app backend's master connection and are
//! ignored, and counted, when anyone else sends them. Every outgoing payload
//! is built once here and handed to [`Shard::publish`]; the values clients
//! send (`message`, profile `data`, `session`, `user`) are spliced in as raw
//! JSON text, never re-serialized.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use sonic_rs::LazyValue;

use crate::fanout::event_frame;
use crate::inbox::Target;
use crate::protocol::socketio::write_json_str;
use crate::realtime::channels::SlabKey;
use crate::realtime::profile::Profile;
use crate::shard::{EnvKey, Shard, Stats};

/// Why an event was refused; the connection that sent it is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("`{event}` expects an object payload: {reason}")]
    BadPayload { event: &'static str, reason: String },
    #[error("channel name is empty or longer than {max} bytes")]
    BadChannel { max: usize },
}

/// One decoded event from a connected member.
pub struct Incoming<'a> {
    pub name: &'a str,
    /// Raw JSON of each argument after the name.
    pub args: &'a [&'a str],
    pub ack_id: Option<u64>,
    pub attachments: &'a [Bytes],
}

#[derive(Deserialize)]
struct JoinArgs<'a> {
    #[serde(borrow)]
    channel: Cow<'a, str>,
    echo: Option<bool>,
}

#[derive(Deserialize)]
struct UpdateArgs<'a> {
    #[serde(borrow)]
    data: Option<LazyValue<'a>>,
    echo: Option<bool>,
}

#[derive(Deserialize)]
struct MessageArgs<'a> {
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "eventName")]
    event_name: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<LazyValue<'a>>,
    echo: Option<bool>,
}

#[derive(Deserialize)]
struct SendMessageArgs<'a> {
    #[serde(borrow, rename = "envId")]
    env_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "channelName")]
    channel_name: Cow<'a, str>,
    #[serde(borrow, rename = "eventName")]
    event_name: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<LazyValue<'a>>,
}

#[derive(Deserialize)]
struct BroadcastArgs<'a> {
    #[serde(borrow, rename = "envId")]
    env_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "eventName")]
    event_name: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<LazyValue<'a>>,
}

#[derive(Deserialize)]
struct UserEventArgs<'a> {
    #[serde(borrow, rename = "envId")]
    env_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "userId")]
    user_id: Cow<'a, str>,
    #[serde(borrow, rename = "eventName")]
    event_name: Cow<'a, str>,
    #[serde(borrow)]
    session: Option<LazyValue<'a>>,
    #[serde(borrow)]
    user: Option<LazyValue<'a>>,
}

#[derive(Deserialize)]
struct MembersArgs<'a> {
    #[serde(borrow, rename = "envId")]
    env_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    channel: Cow<'a, str>,
}

/// Runs one event from connection `key`.
pub async fn handle(shard: &Shard, key: SlabKey, event: Incoming<'_>) -> Result<(), Error> {
    let (env, echo_default, master) = {
        let state = shard.state.borrow();
        let Some(member) = state.conns.get(key as usize) else {
            return Ok(());
        };
        (member.env, member.echo, member.is_master())
    };
    match (event.name, env) {
        ("join", Some(env)) => join(shard, key, env, echo_default, &event).await,
        ("leave", Some(env)) => leave(shard, key, env, echo_default, &event).await,
        ("update", Some(env)) => update(shard, key, env, echo_default, &event).await,
        ("message", Some(env)) => message(shard, key, env, echo_default, &event).await,
        ("send_message" | "broadcast_message" | "user_event" | "get_members", None) if master => {
            master_event(shard, key, &event).await
        }
        ("send_message" | "broadcast_message" | "user_event" | "get_members", _) => {
            tracing::debug!(
                event = event.name,
                "master event from a client connection ignored"
            );
            Stats::bump(&shard.stats.ignored_master_events);
            Ok(())
        }
        _ => {
            Stats::bump(&shard.stats.ignored_events);
            Ok(())
        }
    }
}

fn args<'a, T: Deserialize<'a>>(event: &'static str, raw: &[&'a str]) -> Result<T, Error> {
    let Some(first) = raw.first() else {
        return Err(Error::BadPayload {
            event,
            reason: "no payload".into(),
        });
    };
    sonic_rs::from_str(first).map_err(|e| Error::BadPayload {
        event,
        reason: e.to_string(),
    })
}

fn check_channel(shard: &Shard, channel: &str) -> Result<(), Error> {
    let max = shard.shared.config.channel_name_bytes_max;
    if channel.is_empty() || channel.len() > max {
        return Err(Error::BadChannel { max });
    }
    Ok(())
}

/// Event names socket.io-client reserves for itself: receiving one is a
/// parse error that drops the receiver's connection, so they are never
/// delivered (socket.io's server refuses to emit them too).
const RESERVED_EVENT_NAMES: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Whether `name` may be delivered to clients; counts the refusals.
fn deliverable(shard: &Shard, name: &str) -> bool {
    if RESERVED_EVENT_NAMES.contains(&name) {
        tracing::debug!(event = name, "reserved event name not delivered");
        Stats::bump(&shard.stats.reserved_event_names);
        return false;
    }
    true
}

fn skip_unless(echo: bool, key: SlabKey) -> Option<SlabKey> {
    if echo {
        None
    } else {
        Some(key)
    }
}

/// `{"channel":<channel>,"message":{"id":<id>,"data":<profile>}}` as the
/// single argument of a presence event (a binary event when the profile
/// carries attachments).
fn presence_frame(name: &str, channel: &str, id: &str, profile: Option<&Profile>) -> Bytes {
    let attachments = profile.map_or(&[][..], |p| &p.attachments[..]);
    event_frame(name, attachments, |out| {
        out.extend_from_slice(b",{\"channel\":");
        write_json_str(out, channel);
        out.extend_from_slice(b",\"message\":{\"id\":");
        write_json_str(out, id);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(profile.map_or(&b"null"[..], |p| &p.json[..]));
        out.extend_from_slice(b"}}");
    })
}

async fn join(
    shard: &Shard,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: JoinArgs = args("join", event.args)?;
    check_channel(shard, &a.channel)?;
    let frame = {
        let mut state = shard.state.borrow_mut();
        if !state.envs[env as usize].join(&a.channel, key) {
            return Ok(());
        }
        let Some(member) = state.conns.get_mut(key as usize) else {
            return Ok(());
        };
        member.channels.push(a.channel.as_ref().into());
        presence_frame(
            "channel:join",
            &a.channel,
            member.id.as_str(),
            member.profile.as_ref(),
        )
    };
    let skip = skip_unless(a.echo.unwrap_or(echo), key);
    shard
        .publish(env, Target::Channel(Arc::from(a.channel.as_ref())), frame, skip)
        .await;
    Ok(())
}

async fn leave(
    shard: &Shard,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: JoinArgs = args("leave", event.args)?;
    check_channel(shard, &a.channel)?;
    let echo = a.echo.unwrap_or(echo);
    let frame = {
        let state = shard.state.borrow();
        let Some(member) = state.conns.get(key as usize) else {
            return Ok(());
        };
        if !member.channels.iter().any(|c| **c == *a.channel) {
            return Ok(());
        }
        presence_frame(
            "channel:leave",
            &a.channel,
            member.id.as_str(),
            member.profile.as_ref(),
        )
    };
    let channel: Arc<str> = Arc::from(a.channel.as_ref());
    if echo {
        // The leaver hears its own leave only while it is still a member.
        deliver_to(shard, key, &frame);
    }
    {
        let mut state = shard.state.borrow_mut();
        state.envs[env as usize].leave(&channel, key);
        if let Some(member) = state.conns.get_mut(key as usize) {
            member.channels.retain(|c| **c != *channel);
        }
    }
    shard
        .publish(env, Target::Channel(channel), frame, Some(key))
        .await;
    Ok(())
}

async fn update(
    shard: &Shard,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: UpdateArgs = args("update", event.args)?;
    let profile = Profile::new(a.data.as_ref().map(|d| d.as_raw_str()), event.attachments);
    let (id, channels) = {
        let mut state = shard.state.borrow_mut();
        let Some(member) = state.conns.get_mut(key as usize) else {
            return Ok(());
        };
        member.profile = profile.clone();
        (member.id, member.channels.clone())
    };
    let skip = skip_unless(a.echo.unwrap_or(echo), key);
    for channel in channels {
        let frame = presence_frame("channel:update", &channel, id.as_str(), profile.as_ref());
        shard
            .publish(env, Target::Channel(Arc::from(channel)), frame, skip)
            .await;
    }
    Ok(())
}

async fn message(
    shard: &Shard,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: MessageArgs = args("message", event.args)?;
    if let Some(channel) = &a.channel {
        check_channel(shard, channel)?;
    }
    if !deliverable(shard, &a.event_name) {
        return Ok(());
    }
    let raw = a.message.as_ref().map_or("null", |m| m.as_raw_str());
    let frame = message_frame(&a.event_name, a.channel.as_deref(), raw, event.attachments);
    let target = match &a.channel {
        Some(channel) => Target::Channel(Arc::from(channel.as_ref())),
        None => Target::Environment,
    };
    shard
        .publish(env, target, frame, skip_unless(a.echo.unwrap_or(echo), key))
        .await;
    Ok(())
}

/// `["<event>",{"channel":<channel|null>,"message":<raw>}]`
fn message_frame(event: &str, channel: Option<&str>, message_raw: &str, attachments: &[Bytes]) -> Bytes {
    event_frame(event, attachments, |out| {
        out.extend_from_slice(b",{\"channel\":");
        match channel {
            Some(c) => write_json_str(out, c),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"message\":");
        out.extend_from_slice(message_raw.as_bytes());
        out.push(b'}');
    })
}

fn deliver_to(shard: &Shard, key: SlabKey, frame: &Bytes) {
    let state = shard.state.borrow();
    if let Some(member) = state.conns.get(key as usize) {
        member.outbox.push(frame.clone());
        shard.stats.add_deliveries(1);
    }
}

/// Resolves a master event's `envId` (absent: `default`). Unknown
/// environments make the event a no-op.
fn master_env(shard: &Shard, env_id: Option<&str>) -> Option<EnvKey> {
    let key = shard.shared.env_key(env_id.unwrap_or("default"));
    if key.is_none() {
        tracing::debug!(env = env_id, "master event for an unknown environment");
    }
    key
}

async fn master_event(shard: &Shard, key: SlabKey, event: &Incoming<'_>) -> Result<(), Error> {
    match event.name {
        "send_message" => {
            let a: SendMessageArgs = args("send_message", event.args)?;
            check_channel(shard, &a.channel_name)?;
            let Some(env) = master_env(shard, a.env_id.as_deref()) else {
                return Ok(());
            };
            if !deliverable(shard, &a.event_name) {
                return Ok(());
            }
            let raw = a.message.as_ref().map_or("null", |m| m.as_raw_str());
            let frame = message_frame(&a.event_name, Some(&a.channel_name), raw, event.attachments);
            let target = Target::Channel(Arc::from(a.channel_name.as_ref()));
            shard.publish(env, target, frame, None).await;
        }
        "broadcast_message" => {
            let a: BroadcastArgs = args("broadcast_message", event.args)?;
            let Some(env) = master_env(shard, a.env_id.as_deref()) else {
                return Ok(());
            };
            if !deliverable(shard, &a.event_name) {
                return Ok(());
            }
            let raw = a.message.as_ref().map_or("null", |m| m.as_raw_str());
            let frame = message_frame(&a.event_name, None, raw, event.attachments);
            shard.publish(env, Target::Environment, frame, None).await;
        }
        "user_event" => {
            let a: UserEventArgs = args("user_event", event.args)?;
            let Some(env) = master_env(shard, a.env_id.as_deref()) else {
                return Ok(());
            };
            if !deliverable(shard, &a.event_name) {
                return Ok(());
            }
            let session = a.session.as_ref().map_or("null", |v| v.as_raw_str());
            let user = a.user.as_ref().map_or("null", |v| v.as_raw_str());
            let frame = event_frame(&a.event_name, event.attachments, |out| {
                out.push(b',');
                write_json_str(out, &a.event_name);
                out.push(b',');
                out.extend_from_slice(session.as_bytes());
                out.push(b',');
                out.extend_from_slice(user.as_bytes());
            });
            shard
                .publish(env, Target::User(Arc::from(a.user_id.as_ref())), frame, None)
                .await;
        }
        "get_members" => {
            let a: MembersArgs = args("get_members", event.args)?;
            let Some(ack_id) = event.ack_id else {
                return Ok(());
            };
            match master_env(shard, a.env_id.as_deref()) {
                Some(env) => shard.gather_members(key, ack_id, env, &a.channel).await,
                None => {
                    let frame = crate::fanout::text_packet(&[], |out| {
                        out.extend_from_slice(b"43");
                        crate::fanout::push_decimal(out, ack_id);
                        out.extend_from_slice(b"[[]]");
                    });
                    deliver_to(shard, key, &frame);
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Tells every channel a departed member had joined that it left.
pub async fn disconnected(shard: &Shard, member: crate::shard::Member) {
    let Some(env) = member.env else {
        return;
    };
    for channel in member.channels {
        let frame = presence_frame(
            "channel:leave",
            &channel,
            member.id.as_str(),
            member.profile.as_ref(),
        );
        shard
            .publish(env, Target::Channel(Arc::from(channel)), frame, None)
            .await;
    }
}
