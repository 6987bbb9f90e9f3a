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

use crate::metrics::Stats;
use crate::protocol::frames;
use crate::protocol::socketio::write_json_str;
use crate::realtime::channels::{presence_seq, SlabKey};
use crate::realtime::profile::Profile;
use crate::realtime::rate_limit::{RateKey, Verdict};
use crate::realtime::settings::EnvKey;
use crate::realtime::state::{Member, Realtime, Sink, Target};

/// What the handlers need from the world beyond the shard's realtime state:
/// the router that takes a publish everywhere it must go, the scatter/gather
/// of member lists, the shared rate limits, the counters and the limits.
/// The shard implements it; tests implement it with a recorder. Methods that
/// deliver get the state read-only, after the handler's changes.
pub(crate) trait Effects<S> {
    /// Delivers `frame` to `target` of `env`: this shard's members (except
    /// `skip`), and every other shard and node.
    fn publish(&mut self, rt: &Realtime<S>, env: EnvKey, target: Target, frame: Bytes, skip: Option<SlabKey>);
    /// Delivers the presence notice `frame` (`channel:join`, `leave` or
    /// `update`) of presence event `seq` to `channel` like
    /// [`Effects::publish`], except to members that joined the channel
    /// after that event (see [`presence_seq`]).
    fn publish_presence(
        &mut self,
        rt: &Realtime<S>,
        env: EnvKey,
        channel: Arc<str>,
        frame: Bytes,
        skip: Option<SlabKey>,
        seq: u64,
    );
    /// Starts gathering the members of `channel` from everywhere; member
    /// `to` gets ack `ack_id` with the list.
    fn ack_members(&mut self, rt: &Realtime<S>, to: SlabKey, ack_id: u64, env: EnvKey, channel: &str);
    /// Member `key` is in `channel` now (the index has it, its join is
    /// published); `first`: no other member of this shard was. The router
    /// makes the node receive the channel's messages from other nodes and
    /// makes the membership visible to member lists everywhere, and queues
    /// the member's own `echo` only once both are done (so a message
    /// published after the member saw its echo cannot miss it).
    fn joined(
        &mut self,
        rt: &Realtime<S>,
        env: EnvKey,
        channel: &Arc<str>,
        key: SlabKey,
        first: bool,
        echo: Option<Bytes>,
    );
    /// Member `id` is out of `channel` (and of the index); `last`: no member
    /// of this shard is left in it. Called before the leave is published.
    fn left(&mut self, rt: &Realtime<S>, env: EnvKey, channel: &Arc<str>, id: &str, last: bool);
    /// Member `key`'s profile changed: member lists must show the new one.
    fn profile_changed(&mut self, rt: &Realtime<S>, env: EnvKey, key: SlabKey);
    /// Counts one event of `key` against limiter `limiter` of environment
    /// `env` (named `env_id`).
    #[allow(clippy::too_many_arguments)]
    fn rate_hit(
        &mut self,
        env: EnvKey,
        env_id: &str,
        key: RateKey<'_>,
        limiter: usize,
        limit: u32,
        window_s: u32,
    ) -> Verdict;
    /// Seconds on the rate-limit clock.
    fn now_s(&self) -> u64;
    fn stats(&self) -> &Stats;
    fn limits(&self) -> &Limits;
}

/// Bounds on what a client may ask for (from the configuration).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Longest channel name accepted, in bytes.
    pub(crate) channel_name_bytes_max: usize,
    /// Channels one connection may be in at once (0: no limit).
    pub(crate) channels_per_connection_max: usize,
    /// Largest profile `update` accepts: its JSON plus its binary
    /// attachments, in bytes (0: no limit beyond `max_payload_bytes`).
    pub(crate) profile_bytes_max: usize,
}

/// Why an event was refused; the connection that sent it is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum Error {
    #[error("`{event}` expects an object payload: {reason}")]
    BadPayload { event: &'static str, reason: String },
    #[error("channel name is empty or longer than {max} bytes")]
    BadChannel { max: usize },
    /// Not a reason to close: the event is dropped (and counted).
    #[error("`{0}` is reserved by socket.io and cannot be sent to clients")]
    ReservedEventName(String),
}

/// One decoded event from a connected member.
pub(crate) struct Incoming<'a> {
    pub(crate) name: &'a str,
    /// Raw JSON of each argument after the name.
    pub(crate) args: &'a [&'a str],
    pub(crate) ack_id: Option<u64>,
    pub(crate) attachments: &'a [Bytes],
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

/// The payload of a master event; also the HTTP API's body.
#[derive(Deserialize)]
pub(crate) struct BroadcastArgs<'a> {
    #[serde(borrow, rename = "envId")]
    pub(crate) env_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "eventName")]
    pub(crate) event_name: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) message: Option<LazyValue<'a>>,
}

/// The payload of a master event; also the HTTP API's body.
#[derive(Deserialize)]
pub(crate) struct UserEventArgs<'a> {
    #[serde(borrow, rename = "envId")]
    pub(crate) env_id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "userId")]
    pub(crate) user_id: Cow<'a, str>,
    #[serde(borrow, rename = "eventName")]
    pub(crate) event_name: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) session: Option<LazyValue<'a>>,
    #[serde(borrow)]
    pub(crate) user: Option<LazyValue<'a>>,
}

/// The payload of a master event; also the HTTP API's body.
#[derive(Deserialize)]
pub(crate) struct MembersArgs<'a> {
    #[serde(borrow, rename = "envId")]
    pub(crate) env_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(crate) channel: Cow<'a, str>,
}

/// Runs one event from member `key`.
pub(crate) fn handle<S: Sink>(
    rt: &mut Realtime<S>,
    fx: &mut impl Effects<S>,
    key: SlabKey,
    event: Incoming<'_>,
) -> Result<(), Error> {
    let Some(member) = rt.member(key) else {
        return Ok(());
    };
    let (env, echo_default, master) = (member.env, member.echo, member.is_master());
    let client_event = matches!(event.name, "join" | "leave" | "update" | "message" | "members");
    if let (true, Some(env)) = (client_event, env) {
        if rate_limited(rt, fx, key, env) {
            return Ok(());
        }
    }
    let outcome = match (event.name, env) {
        ("join", Some(env)) => join(rt, fx, key, env, echo_default, &event),
        ("leave", Some(env)) => leave(rt, fx, key, env, echo_default, &event),
        ("update", Some(env)) => update(rt, fx, key, env, echo_default, &event),
        ("message", Some(env)) => message(rt, fx, key, env, echo_default, &event),
        ("members", Some(env)) => members(rt, fx, key, env, &event),
        ("send_message" | "broadcast_message" | "user_event" | "get_members", None) if master => {
            master_event(rt, fx, key, &event)
        }
        ("send_message" | "broadcast_message" | "user_event" | "get_members", _) => {
            tracing::debug!(
                event = event.name,
                "master event from a client connection ignored"
            );
            Stats::bump(&fx.stats().ignored_master_events);
            Ok(())
        }
        _ => {
            Stats::bump(&fx.stats().ignored_events);
            Ok(())
        }
    };
    match outcome {
        Err(Error::ReservedEventName(name)) => {
            tracing::debug!(event = %name, "reserved event name not delivered");
            Ok(())
        }
        other => other,
    }
}

/// Checks a client event against its environment's rate limiters, in
/// order, under the member's [`Member::rate_key`]. An event over a limit is
/// dropped and counted; the client gets one `error` event
/// `{code: "rate_limit_exceeded", message}` per window. An event let through
/// unchecked because the shared table was full is counted too.
fn rate_limited<S: Sink>(rt: &mut Realtime<S>, fx: &mut impl Effects<S>, key: SlabKey, env: EnvKey) -> bool {
    let settings = rt.settings().clone();
    let Some(env_settings) = settings.get(env) else {
        return false;
    };
    if env_settings.rate_limits.is_empty() {
        return false;
    }
    let Some(member) = rt.member_mut(key) else {
        return false;
    };
    let now = fx.now_s();
    let mut unchecked = false;
    for (index, limit) in env_settings.rate_limits.iter().enumerate() {
        let verdict = fx.rate_hit(
            env,
            &env_settings.id,
            member.rate_key(),
            index,
            limit.limit,
            limit.window_s,
        );
        let window_end = match verdict {
            Verdict::Allowed => continue,
            Verdict::Unchecked => {
                unchecked = true;
                continue;
            }
            Verdict::Over { window_end } => window_end,
        };
        Stats::bump(&fx.stats().rate_limited_events);
        if member.rate_error_until_s <= now {
            member.rate_error_until_s = window_end;
            member
                .sink
                .push(error_frame("rate_limit_exceeded", &limit.message, None).into());
        }
        return true;
    }
    if unchecked {
        Stats::bump(&fx.stats().rate_table_saturated);
    }
    false
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

fn check_channel(limits: &Limits, channel: &str) -> Result<(), Error> {
    let max = limits.channel_name_bytes_max;
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

/// Refuses (and counts) event names clients must never receive.
fn deliverable(stats: &Stats, name: &str) -> Result<(), Error> {
    if RESERVED_EVENT_NAMES.contains(&name) {
        Stats::bump(&stats.reserved_event_names);
        return Err(Error::ReservedEventName(name.to_owned()));
    }
    Ok(())
}

/// An `error` event `{"code":<code>,"message":<message>[,"channel":<channel>]}`
/// for a request the server did not carry out (the connection stays).
fn error_frame(code: &str, message: &str, channel: Option<&str>) -> Bytes {
    frames::event("error", &[], |out| {
        out.extend_from_slice(b",{\"code\":");
        write_json_str(out, code);
        out.extend_from_slice(b",\"message\":");
        write_json_str(out, message);
        if let Some(channel) = channel {
            out.extend_from_slice(b",\"channel\":");
            write_json_str(out, channel);
        }
        out.push(b'}');
    })
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
pub(crate) fn presence_frame(name: &str, channel: &str, id: &str, profile: Option<&Profile>) -> Bytes {
    let attachments = profile.map_or(&[][..], |p| &p.attachments[..]);
    frames::event(name, attachments, |out| {
        out.extend_from_slice(b",{\"channel\":");
        write_json_str(out, channel);
        out.extend_from_slice(b",\"message\":{\"id\":");
        write_json_str(out, id);
        out.extend_from_slice(b",\"data\":");
        out.extend_from_slice(profile.map_or(&b"null"[..], |p| &p.json[..]));
        out.extend_from_slice(b"}}");
    })
}

/// Joins a channel; a join beyond `channels_per_connection_max` is refused
/// with an `error` event `{code: "channel_limit_exceeded", message, channel}`
/// (the connection stays, and a join of a channel it is in is still a no-op).
fn join<S: Sink>(
    rt: &mut Realtime<S>,
    fx: &mut impl Effects<S>,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: JoinArgs = args("join", event.args)?;
    check_channel(fx.limits(), &a.channel)?;
    let Some(member) = rt.member(key) else {
        return Ok(());
    };
    if member.channels.contains(a.channel.as_ref()) {
        return Ok(());
    }
    let max = fx.limits().channels_per_connection_max;
    if max != 0 && member.channels.len() >= max {
        Stats::bump(&fx.stats().channel_limit_refusals);
        let message = format!("A connection may be in at most {max} channels; leave one first");
        member
            .sink
            .push(error_frame("channel_limit_exceeded", &message, Some(&a.channel)).into());
        return Ok(());
    }
    let Some(index) = rt.env_mut(env) else {
        return Ok(());
    };
    let first = index.channel(&a.channel).is_none();
    let Some(channel) = index.join(&a.channel, key) else {
        return Ok(());
    };
    let Some(member) = rt.member_mut(key) else {
        return Ok(());
    };
    let seq = presence_seq();
    member.channels.insert(channel.clone(), seq);
    Stats::bump(&fx.stats().joins);
    let frame = presence_frame(
        "channel:join",
        &channel,
        member.id.as_str(),
        member.profile.as_ref(),
    );
    let echo = a.echo.unwrap_or(echo).then(|| frame.clone());
    // Published before the membership is recorded: in a cluster the
    // joiner's echo waits for the record, which the link sends after the
    // notice, so a member that joins after seeing this echo never hears
    // this join late (and across shards of a node, the join's number keeps
    // it from members that joined after it).
    fx.publish_presence(rt, env, channel.clone(), frame, Some(key), seq);
    fx.joined(rt, env, &channel, key, first, echo);
    Ok(())
}

fn leave<S: Sink>(
    rt: &mut Realtime<S>,
    fx: &mut impl Effects<S>,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: JoinArgs = args("leave", event.args)?;
    check_channel(fx.limits(), &a.channel)?;
    let echo = a.echo.unwrap_or(echo);
    let Some(member) = rt.member(key) else {
        return Ok(());
    };
    let Some(channel) = member.channels.get(a.channel.as_ref()).cloned() else {
        return Ok(());
    };
    let frame = presence_frame(
        "channel:leave",
        &channel,
        member.id.as_str(),
        member.profile.as_ref(),
    );
    if echo {
        // The leaver hears its own leave only while it is still a member,
        // and before anyone else does.
        member.sink.push(frame.clone().into());
        fx.stats().add_deliveries(1);
    }
    let id = member.id;
    let mut last = false;
    if let Some(index) = rt.env_mut(env) {
        index.leave(&channel, key);
        last = index.channel(&channel).is_none();
    }
    Stats::bump(&fx.stats().leaves);
    if let Some(member) = rt.member_mut(key) {
        member.channels.remove(&channel);
    }
    fx.left(rt, env, &channel, id.as_str(), last);
    fx.publish_presence(rt, env, channel, frame, Some(key), presence_seq());
    Ok(())
}

/// Sets the member's profile and tells each of its channels. A profile over
/// `profile_bytes_max` (JSON plus attachments) is refused with an `error`
/// event `{code: "profile_too_large", message}` and changes nothing.
fn update<S: Sink>(
    rt: &mut Realtime<S>,
    fx: &mut impl Effects<S>,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: UpdateArgs = args("update", event.args)?;
    let data = a.data.as_ref().map(|d| d.as_raw_str());
    let Some(member) = rt.member_mut(key) else {
        return Ok(());
    };
    let bytes = data.map_or(0, str::len) + event.attachments.iter().map(Bytes::len).sum::<usize>();
    let max = fx.limits().profile_bytes_max;
    if max != 0 && bytes > max {
        Stats::bump(&fx.stats().profile_limit_refusals);
        let message = format!("The profile is {bytes} bytes; at most {max} are allowed");
        member
            .sink
            .push(error_frame("profile_too_large", &message, None).into());
        return Ok(());
    }
    member.profile = Profile::new(data, event.attachments);
    let in_channels = !member.channels.is_empty();
    if in_channels {
        fx.profile_changed(rt, env, key);
    }
    let skip = skip_unless(a.echo.unwrap_or(echo), key);
    let Some(member) = rt.member(key) else {
        return Ok(());
    };
    let seq = presence_seq();
    for channel in member.channels.iter() {
        let frame = presence_frame(
            "channel:update",
            channel,
            member.id.as_str(),
            member.profile.as_ref(),
        );
        fx.publish_presence(rt, env, channel.clone(), frame, skip, seq);
    }
    Ok(())
}

fn message<S: Sink>(
    rt: &mut Realtime<S>,
    fx: &mut impl Effects<S>,
    key: SlabKey,
    env: EnvKey,
    echo: bool,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let a: MessageArgs = args("message", event.args)?;
    if let Some(channel) = &a.channel {
        check_channel(fx.limits(), channel)?;
    }
    deliverable(fx.stats(), &a.event_name)?;
    let frame = message_frame(
        &a.event_name,
        a.channel.as_deref(),
        raw_or_null(&a.message),
        event.attachments,
    );
    let target = match &a.channel {
        Some(channel) => Target::Channel(Arc::from(channel.as_ref())),
        None => Target::Environment,
    };
    fx.publish(rt, env, target, frame, skip_unless(a.echo.unwrap_or(echo), key));
    Ok(())
}

/// A client's own member-list request (the client library's `getMembers`):
/// `members {channel}` with an ack, answered with `[{id, data}, ...]` from
/// everywhere, within the client's own environment.
fn members<S: Sink>(
    rt: &mut Realtime<S>,
    fx: &mut impl Effects<S>,
    key: SlabKey,
    env: EnvKey,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    #[derive(Deserialize)]
    struct MembersOf<'a> {
        #[serde(borrow)]
        channel: Cow<'a, str>,
    }
    let a: MembersOf = args("members", event.args)?;
    check_channel(fx.limits(), &a.channel)?;
    if let Some(ack_id) = event.ack_id {
        fx.ack_members(rt, key, ack_id, env, &a.channel);
    }
    Ok(())
}

/// `["<event>",{"channel":<channel|null>,"message":<raw>}]`
fn message_frame(event: &str, channel: Option<&str>, message_raw: &str, attachments: &[Bytes]) -> Bytes {
    frames::event(event, attachments, |out| {
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

/// The live environment named `env_id` (absent: `default`).
pub(crate) fn env_key<S: Sink>(rt: &Realtime<S>, env_id: Option<&str>) -> Option<EnvKey> {
    let settings = rt.settings();
    let key = settings.key(env_id.unwrap_or("default"))?;
    settings.get(key).is_some().then_some(key)
}

/// The app backend's `send`: event `event_name` with
/// `{channel, message: <raw>}` to every member of `channel`.
pub(crate) fn send<S: Sink>(
    rt: &Realtime<S>,
    fx: &mut impl Effects<S>,
    env: EnvKey,
    channel: &str,
    event_name: &str,
    message_raw: &str,
    attachments: &[Bytes],
) -> Result<(), Error> {
    check_channel(fx.limits(), channel)?;
    deliverable(fx.stats(), event_name)?;
    let frame = message_frame(event_name, Some(channel), message_raw, attachments);
    fx.publish(rt, env, Target::Channel(Arc::from(channel)), frame, None);
    Ok(())
}

/// The app backend's `broadcast`: event `event_name` with
/// `{channel: null, message: <raw>}` to the whole environment.
pub(crate) fn broadcast<S: Sink>(
    rt: &Realtime<S>,
    fx: &mut impl Effects<S>,
    env: EnvKey,
    event_name: &str,
    message_raw: &str,
    attachments: &[Bytes],
) -> Result<(), Error> {
    deliverable(fx.stats(), event_name)?;
    let frame = message_frame(event_name, None, message_raw, attachments);
    fx.publish(rt, env, Target::Environment, frame, None);
    Ok(())
}

/// A user event: every connection of `user_id` in `env` gets event
/// `event_name` with arguments `(event_name, session, user)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn user_event<S: Sink>(
    rt: &Realtime<S>,
    fx: &mut impl Effects<S>,
    env: EnvKey,
    user_id: &str,
    event_name: &str,
    session_raw: &str,
    user_raw: &str,
    attachments: &[Bytes],
) -> Result<(), Error> {
    deliverable(fx.stats(), event_name)?;
    let frame = frames::event(event_name, attachments, |out| {
        out.push(b',');
        write_json_str(out, event_name);
        out.push(b',');
        out.extend_from_slice(session_raw.as_bytes());
        out.push(b',');
        out.extend_from_slice(user_raw.as_bytes());
    });
    fx.publish(rt, env, Target::User(Arc::from(user_id)), frame, None);
    Ok(())
}

/// The raw JSON text of an optional payload field; `null` when absent.
pub(crate) fn raw_or_null<'a>(value: &'a Option<LazyValue<'_>>) -> &'a str {
    value.as_ref().map_or("null", |v| v.as_raw_str())
}

/// The master connection's events. An unknown environment makes them no-ops
/// (and `get_members` answers an empty list).
fn master_event<S: Sink>(
    rt: &mut Realtime<S>,
    fx: &mut impl Effects<S>,
    key: SlabKey,
    event: &Incoming<'_>,
) -> Result<(), Error> {
    let raw = raw_or_null;
    match event.name {
        "send_message" => {
            let a: SendMessageArgs = args("send_message", event.args)?;
            if let Some(env) = env_key(rt, a.env_id.as_deref()) {
                let message = raw(&a.message);
                send(
                    rt,
                    fx,
                    env,
                    &a.channel_name,
                    &a.event_name,
                    message,
                    event.attachments,
                )?;
            }
        }
        "broadcast_message" => {
            let a: BroadcastArgs = args("broadcast_message", event.args)?;
            if let Some(env) = env_key(rt, a.env_id.as_deref()) {
                let message = raw(&a.message);
                broadcast(rt, fx, env, &a.event_name, message, event.attachments)?;
            }
        }
        "user_event" => {
            let a: UserEventArgs = args("user_event", event.args)?;
            if let Some(env) = env_key(rt, a.env_id.as_deref()) {
                let (session, user) = (raw(&a.session), raw(&a.user));
                let name = &a.event_name;
                user_event(rt, fx, env, &a.user_id, name, session, user, event.attachments)?;
            }
        }
        "get_members" => {
            let a: MembersArgs = args("get_members", event.args)?;
            let Some(ack_id) = event.ack_id else {
                return Ok(());
            };
            match env_key(rt, a.env_id.as_deref()) {
                Some(env) => fx.ack_members(rt, key, ack_id, env, &a.channel),
                None => {
                    let frame = frames::ack(ack_id, &[], |out| out.extend_from_slice(b"[]"));
                    if rt.deliver_to(key, frame) {
                        fx.stats().add_deliveries(1);
                    }
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Tells every channel a departed member had joined that it left.
pub(crate) fn disconnected<S: Sink>(rt: &Realtime<S>, fx: &mut impl Effects<S>, member: Member<S>) {
    let Some(env) = member.env else {
        return;
    };
    Stats::add(&fx.stats().leaves, member.channels.len() as u64);
    let seq = presence_seq();
    for channel in member.channels {
        let frame = presence_frame(
            "channel:leave",
            &channel,
            member.id.as_str(),
            member.profile.as_ref(),
        );
        let last = rt.local_count(env, &Target::Channel(channel.clone())) == 0;
        fx.left(rt, env, &channel, member.id.as_str(), last);
        fx.publish_presence(rt, env, channel, frame, None, seq);
    }
}

#[cfg(test)]
mod tests;
