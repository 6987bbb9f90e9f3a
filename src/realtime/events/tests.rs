//! The Agnost rules as unit tests: a realtime state, members whose sinks
//! record what they receive, and an effects recorder that delivers locally
//! the way the shard's router does and remembers every publish.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;

use super::*;
use crate::protocol::frames::{payloads, Frame, Payload};
use crate::realtime::auth::{Credentials, SessionCheck};
use crate::realtime::settings::{EnvSettings, RateLimit, Settings};
use crate::realtime::state::NewMember;

/// Everything every member received, in order, tagged with the member's
/// name: one log for all, so orderings across members can be checked.
type Log = Rc<RefCell<Vec<(&'static str, String)>>>;

#[derive(Clone)]
struct TestSink {
    name: &'static str,
    log: Log,
    kicked: Rc<Cell<bool>>,
}

impl Sink for TestSink {
    fn push(&self, frame: Frame) {
        for payload in payloads(frame.bytes()) {
            if let Payload::Text(text) = payload {
                let text = String::from_utf8(text.to_vec()).unwrap();
                self.log.borrow_mut().push((self.name, text));
            }
        }
    }

    fn kick(&self) {
        self.kicked.set(true);
    }
}

/// Counts, rate verdicts and publishes; delivers like the router (locally,
/// there being no other shard).
struct Recorder {
    stats: Stats,
    limits: Limits,
    published: Vec<(EnvKey, Target, Option<SlabKey>)>,
    member_lists: Vec<(SlabKey, u64, String)>,
    /// Membership changes the router hears of: `+channel` (first on the
    /// shard: `+channel!`), `-channel` (last: `-channel!`), `~key`.
    presence: Vec<String>,
    /// Events counted per (env, key, limiter) so far: a fake rate table.
    rate_counts: HashMap<(EnvKey, String, usize), u32>,
    /// Answers `Unchecked` (a full table) for every key when set.
    rate_table_full: bool,
}

impl Recorder {
    fn new() -> Self {
        Self {
            stats: Stats::default(),
            limits: Limits {
                channel_name_bytes_max: 16,
                channels_per_connection_max: 3,
                profile_bytes_max: 32,
            },
            published: Vec::new(),
            member_lists: Vec::new(),
            presence: Vec::new(),
            rate_counts: HashMap::new(),
            rate_table_full: false,
        }
    }
}

impl Effects<TestSink> for Recorder {
    fn publish(
        &mut self,
        rt: &Realtime<TestSink>,
        env: EnvKey,
        target: Target,
        frame: Bytes,
        skip: Option<SlabKey>,
    ) {
        let delivered = rt.deliver(env, &target, &frame, skip);
        self.stats.add_deliveries(delivered);
        self.published.push((env, target, skip));
    }

    fn publish_presence(
        &mut self,
        rt: &Realtime<TestSink>,
        env: EnvKey,
        channel: Arc<str>,
        frame: Bytes,
        skip: Option<SlabKey>,
        _seq: u64,
    ) {
        // One shard: every member joined before the event.
        self.publish(rt, env, Target::Channel(channel), frame, skip);
    }

    fn ack_members(
        &mut self,
        _rt: &Realtime<TestSink>,
        to: SlabKey,
        ack_id: u64,
        _env: EnvKey,
        channel: &str,
    ) {
        self.member_lists.push((to, ack_id, channel.to_owned()));
    }

    fn joined(
        &mut self,
        rt: &Realtime<TestSink>,
        _env: EnvKey,
        channel: &Arc<str>,
        key: SlabKey,
        first: bool,
        echo: Option<Bytes>,
    ) {
        self.presence
            .push(format!("+{channel}{}", if first { "!" } else { "" }));
        // Alone, there is nothing to wait for: the echo goes out at once.
        if let Some(frame) = echo {
            if rt.deliver_to(key, frame) {
                self.stats.add_deliveries(1);
            }
        }
    }

    fn left(&mut self, _rt: &Realtime<TestSink>, _env: EnvKey, channel: &Arc<str>, _id: &str, last: bool) {
        self.presence
            .push(format!("-{channel}{}", if last { "!" } else { "" }));
    }

    fn profile_changed(&mut self, _rt: &Realtime<TestSink>, _env: EnvKey, key: SlabKey) {
        self.presence.push(format!("~{key}"));
    }

    fn rate_hit(
        &mut self,
        env: EnvKey,
        _env_id: &str,
        key: RateKey<'_>,
        limiter: usize,
        limit: u32,
        window_s: u32,
    ) -> Verdict {
        if self.rate_table_full {
            return Verdict::Unchecked;
        }
        let count = self
            .rate_counts
            .entry((env, format!("{key:?}"), limiter))
            .or_insert(0);
        *count += 1;
        if *count > limit {
            Verdict::Over {
                window_end: u64::from(window_s),
            }
        } else {
            Verdict::Allowed
        }
    }

    fn now_s(&self) -> u64 {
        0
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn limits(&self) -> &Limits {
        &self.limits
    }
}

struct World {
    rt: Realtime<TestSink>,
    fx: Recorder,
    log: Log,
}

impl World {
    fn new(env: EnvSettings) -> Self {
        Self {
            rt: Realtime::new(0, Arc::new(Settings::new(vec![env]))),
            fx: Recorder::new(),
            log: Log::default(),
        }
    }

    fn default_env() -> Self {
        Self::new(EnvSettings::default_env())
    }

    /// A client of environment 0 (echo off unless asked).
    fn client(&mut self, name: &'static str) -> SlabKey {
        self.connect(name, Some(0))
    }

    fn master(&mut self, name: &'static str) -> SlabKey {
        self.connect(name, None)
    }

    fn connect(&mut self, name: &'static str, env: Option<EnvKey>) -> SlabKey {
        self.connect_as(name, env, None, None)
    }

    /// A client of environment 0 from `ip` (`None`: unknown) signed in as
    /// `user`.
    fn client_as(&mut self, name: &'static str, ip: Option<&str>, user: Option<&str>) -> SlabKey {
        self.connect_as(name, Some(0), ip.map(|ip| ip.parse().unwrap()), user)
    }

    fn connect_as(
        &mut self,
        name: &'static str,
        env: Option<EnvKey>,
        client_ip: Option<IpAddr>,
        user: Option<&str>,
    ) -> SlabKey {
        let session = match user {
            Some(user) => SessionCheck::Valid {
                user: user.into(),
                expires_at_s: None,
                secret: 0,
            },
            None => SessionCheck::Absent,
        };
        let credentials = Credentials {
            ip: client_ip,
            session,
            ..Credentials::default()
        };
        self.register(name, env, credentials)
    }

    /// A client of environment 0 that connected with `credentials` (under
    /// settings that let it in).
    fn client_with(&mut self, name: &'static str, credentials: Credentials) -> SlabKey {
        self.register(name, Some(0), credentials)
    }

    fn register(&mut self, name: &'static str, env: Option<EnvKey>, credentials: Credentials) -> SlabKey {
        let sink = TestSink {
            name,
            log: self.log.clone(),
            kicked: Rc::default(),
        };
        let (key, _) = self.rt.register(NewMember {
            sink,
            env,
            echo: false,
            credentials,
            valid_until_s: u64::MAX,
        });
        key
    }

    fn kicked(&self, key: SlabKey) -> bool {
        self.rt.member(key).unwrap().sink.kicked.get()
    }

    /// Replaces environment 0 with `env` as a settings change does.
    fn change(&mut self, env: EnvSettings, now_unix_s: u64) {
        let next = self.rt.settings().with(env);
        self.rt.apply_settings(Arc::new(next), now_unix_s);
    }

    fn id(&self, key: SlabKey) -> String {
        self.rt.member(key).unwrap().id.as_str().to_owned()
    }

    /// Sends event `name` with `args` (raw JSON) from `key`.
    fn event(&mut self, key: SlabKey, name: &str, args: &[&str]) -> Result<(), Error> {
        self.event_with_ack(key, name, args, None)
    }

    fn event_with_ack(
        &mut self,
        key: SlabKey,
        name: &str,
        args: &[&str],
        ack_id: Option<u64>,
    ) -> Result<(), Error> {
        let incoming = Incoming {
            name,
            args,
            ack_id,
            attachments: &[],
        };
        handle(&mut self.rt, &mut self.fx, key, incoming)
    }

    /// What everyone received, and forget it.
    fn take(&self) -> Vec<(&'static str, String)> {
        std::mem::take(&mut *self.log.borrow_mut())
    }
}

fn presence(event: &str, channel: &str, id: &str) -> String {
    format!(r#"42["{event}",{{"channel":"{channel}","message":{{"id":"{id}","data":null}}}}]"#)
}

#[test]
fn a_join_is_announced_to_the_others_and_echoed_only_when_asked() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    w.event(a, "join", &[r#"{"channel":"c"}"#]).unwrap();
    assert_eq!(w.take(), [], "alone and without echo, nobody hears it");
    w.event(b, "join", &[r#"{"channel":"c","echo":true}"#]).unwrap();
    let join_b = presence("channel:join", "c", &w.id(b));
    let mut got = w.take();
    got.sort();
    assert_eq!(got, [("a", join_b.clone()), ("b", join_b)]);
    // A second join of the same channel changes nothing.
    w.event(b, "join", &[r#"{"channel":"c","echo":true}"#]).unwrap();
    assert_eq!(w.take(), []);
    assert_eq!(w.fx.stats.joins.get(), 2);
}

#[test]
fn a_leaver_with_echo_hears_its_own_leave_before_anyone_else() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    for key in [a, b] {
        w.event(key, "join", &[r#"{"channel":"c"}"#]).unwrap();
    }
    w.take();
    w.event(b, "leave", &[r#"{"channel":"c","echo":true}"#]).unwrap();
    let leave_b = presence("channel:leave", "c", &w.id(b));
    assert_eq!(w.take(), [("b", leave_b.clone()), ("a", leave_b)]);
    // Not a member any more: leaving again, or messages to the channel,
    // reach it no more.
    w.event(b, "leave", &[r#"{"channel":"c","echo":true}"#]).unwrap();
    w.event(
        a,
        "message",
        &[r#"{"channel":"c","eventName":"m","message":1,"echo":true}"#],
    )
    .unwrap();
    assert_eq!(
        w.take(),
        [("a", r#"42["m",{"channel":"c","message":1}]"#.to_owned())]
    );
}

#[test]
fn a_message_goes_to_the_channel_or_to_the_whole_environment_spliced_byte_for_byte() {
    let mut w = World::default_env();
    let (a, b, c) = (w.client("a"), w.client("b"), w.client("c"));
    w.event(b, "join", &[r#"{"channel":"room"}"#]).unwrap();
    w.take();
    w.event(
        a,
        "message",
        &[r#"{"channel":"room","eventName":"chat","message":{"n":1e21}}"#],
    )
    .unwrap();
    assert_eq!(
        w.take(),
        [(
            "b",
            r#"42["chat",{"channel":"room","message":{"n":1e21}}]"#.to_owned()
        )]
    );
    w.event(a, "message", &[r#"{"eventName":"all","message":[1]}"#])
        .unwrap();
    let mut got = w.take();
    got.sort();
    let all = r#"42["all",{"channel":null,"message":[1]}]"#.to_owned();
    assert_eq!(got, [("b", all.clone()), ("c", all)]);
    assert_eq!(w.fx.published.last().unwrap().1, Target::Environment);
    let _ = c;
}

#[test]
fn an_update_reaches_every_joined_channel_and_shows_in_later_joins() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    for channel in ["x", "y"] {
        w.event(b, "join", &[&format!(r#"{{"channel":"{channel}"}}"#)])
            .unwrap();
        w.event(a, "join", &[&format!(r#"{{"channel":"{channel}"}}"#)])
            .unwrap();
    }
    w.take();
    w.event(a, "update", &[r#"{"data":{"name":"ann"}}"#]).unwrap();
    let id = w.id(a);
    let update = |channel: &str| {
        format!(
            r#"42["channel:update",{{"channel":"{channel}","message":{{"id":"{id}","data":{{"name":"ann"}}}}}}]"#
        )
    };
    assert_eq!(w.take(), [("b", update("x")), ("b", update("y"))]);
}

#[test]
fn reserved_event_names_are_never_delivered() {
    let mut w = World::default_env();
    let (a, _b) = (w.client("a"), w.client("b"));
    w.event(a, "message", &[r#"{"eventName":"disconnect","message":1}"#])
        .unwrap();
    assert_eq!(w.take(), []);
    assert_eq!(w.fx.stats.reserved_event_names.get(), 1);
}

#[test]
fn bad_payloads_and_channel_names_are_errors() {
    let mut w = World::default_env();
    let a = w.client("a");
    assert!(matches!(
        w.event(a, "join", &["1"]),
        Err(Error::BadPayload { .. })
    ));
    assert!(matches!(w.event(a, "join", &[]), Err(Error::BadPayload { .. })));
    assert_eq!(
        w.event(a, "join", &[r#"{"channel":""}"#]),
        Err(Error::BadChannel { max: 16 })
    );
    assert_eq!(
        w.event(a, "join", &[r#"{"channel":"seventeen-bytes-x"}"#]),
        Err(Error::BadChannel { max: 16 })
    );
}

#[test]
fn master_events_are_ignored_unless_sent_by_the_master() {
    let mut w = World::default_env();
    let (a, b, m) = (w.client("a"), w.client("b"), w.master("m"));
    w.event(b, "join", &[r#"{"channel":"c"}"#]).unwrap();
    w.take();
    let send = r#"{"envId":"default","channelName":"c","eventName":"news","message":"hi"}"#;
    w.event(a, "send_message", &[send]).unwrap();
    assert_eq!(w.take(), []);
    assert_eq!(w.fx.stats.ignored_master_events.get(), 1);
    w.event(m, "send_message", &[send]).unwrap();
    assert_eq!(
        w.take(),
        [("b", r#"42["news",{"channel":"c","message":"hi"}]"#.to_owned())]
    );
    // An unknown environment: the list is empty, straight away.
    w.event_with_ack(m, "get_members", &[r#"{"envId":"nope","channel":"c"}"#], Some(9))
        .unwrap();
    assert_eq!(w.take(), [("m", "439[[]]".to_owned())]);
    w.event_with_ack(
        m,
        "get_members",
        &[r#"{"envId":"default","channel":"c"}"#],
        Some(10),
    )
    .unwrap();
    assert_eq!(w.fx.member_lists, [(m, 10, "c".to_owned())]);
}

fn rate_limited_env(limits: &[u32]) -> EnvSettings {
    let mut env = EnvSettings::default_env();
    env.rate_limits = limits
        .iter()
        .map(|&limit| RateLimit {
            limit,
            window_s: 10,
            message: "slow down".into(),
        })
        .collect();
    env
}

const RATE_ERROR: &str = r#"42["error",{"code":"rate_limit_exceeded","message":"slow down"}]"#;

#[test]
fn a_client_over_a_rate_limit_is_dropped_and_told_once_per_window() {
    let mut w = World::new(rate_limited_env(&[2]));
    let (a, b) = (w.client_as("a", Some("10.0.0.1"), None), w.client("b"));
    w.event(b, "join", &[r#"{"channel":"c"}"#]).unwrap();
    w.take();
    for n in 0..4 {
        let message = format!(r#"{{"channel":"c","eventName":"m","message":{n}}}"#);
        w.event(a, "message", &[&message]).unwrap();
    }
    assert_eq!(
        w.take(),
        [
            ("b", r#"42["m",{"channel":"c","message":0}]"#.to_owned()),
            ("b", r#"42["m",{"channel":"c","message":1}]"#.to_owned()),
            ("a", RATE_ERROR.to_owned()),
        ]
    );
    assert_eq!(w.fx.stats.rate_limited_events.get(), 2);
}

/// Who shares a budget: clients of one IP do; clients whose IP is unknown
/// (a trusted proxy sent no usable X-Forwarded-For) do not, unless they are
/// one signed-in user. One of them cannot spend the budget of the others.
#[test]
fn clients_of_unknown_ip_have_budgets_of_their_own_and_a_user_has_one() {
    let mut w = World::new(rate_limited_env(&[1]));
    let clients = [
        w.client_as("anon1", None, None),
        w.client_as("anon2", None, None),
        w.client_as("ann1", None, Some("ann")),
        w.client_as("ann2", None, Some("ann")),
        w.client_as("ip1", Some("10.0.0.1"), Some("bob")),
        w.client_as("ip2", Some("10.0.0.1"), Some("carl")),
    ];
    for key in clients {
        w.event(key, "message", &[r#"{"eventName":"m","message":1}"#])
            .unwrap();
    }
    let errors: Vec<&str> = w
        .take()
        .into_iter()
        .filter(|(_, text)| text == RATE_ERROR)
        .map(|(name, _)| name)
        .collect();
    assert_eq!(errors, ["ann2", "ip2"], "who found its budget spent");
    // The first anonymous client's own budget is spent now.
    w.event(clients[0], "message", &[r#"{"eventName":"m","message":2}"#])
        .unwrap();
    assert_eq!(w.take(), [("anon1", RATE_ERROR.to_owned())]);
}

#[test]
fn events_let_through_by_a_full_rate_table_are_counted_once_each() {
    let mut w = World::new(rate_limited_env(&[1, 1]));
    w.fx.rate_table_full = true;
    let (a, b) = (w.client("a"), w.client("b"));
    for n in 0..3 {
        w.event(a, "message", &[&format!(r#"{{"eventName":"m","message":{n}}}"#)])
            .unwrap();
    }
    assert_eq!(
        w.take().iter().filter(|(name, _)| *name == "b").count(),
        3,
        "fail open: all delivered"
    );
    assert_eq!(
        w.fx.stats.rate_table_saturated.get(),
        3,
        "one per event, not per limiter"
    );
    assert_eq!(w.fx.stats.rate_limited_events.get(), 0);
    let _ = b;
}

#[test]
fn a_departed_member_leaves_each_of_its_channels() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    for channel in ["x", "y"] {
        w.event(a, "join", &[&format!(r#"{{"channel":"{channel}"}}"#)])
            .unwrap();
        w.event(b, "join", &[&format!(r#"{{"channel":"{channel}"}}"#)])
            .unwrap();
    }
    w.take();
    let id = w.id(a);
    let member = w.rt.unregister(a).unwrap();
    disconnected(&w.rt, &mut w.fx, member);
    assert_eq!(
        w.take(),
        [
            ("b", presence("channel:leave", "x", &id)),
            ("b", presence("channel:leave", "y", &id))
        ]
    );
    assert_eq!(w.fx.stats.leaves.get(), 2);
}

/// Settings changes hold connected clients to the connect rules, both ways:
/// requiring a key drops the clients without one and keeps those that
/// presented a valid one; removing a key that is no longer required drops
/// no one; requiring a session drops the clients without a valid one.
#[test]
fn settings_changes_kick_exactly_the_clients_the_connect_rules_would_refuse() {
    let key = |k: &str| crate::realtime::settings::ApiKey {
        key: k.into(),
        allow_realtime: true,
        expires_at: None,
        origins: crate::realtime::settings::Rule::All,
        ips: crate::realtime::settings::Rule::All,
    };
    let open = EnvSettings {
        api_keys: vec![key("k")],
        session_secret: Some("s".into()),
        ..EnvSettings::default_env()
    };
    let mut w = World::new(open.clone());
    let signed_in = SessionCheck::Valid {
        user: "u".into(),
        expires_at_s: Some(5000),
        secret: crate::realtime::auth::secret_print("s"),
    };
    let with_key = w.client_with(
        "with_key",
        Credentials {
            api_key: Some("k".into()),
            ..Credentials::default()
        },
    );
    let keyless = w.client_with("keyless", Credentials::default());
    let keyed_user = w.client_with(
        "keyed_user",
        Credentials {
            api_key: Some("k".into()),
            session: signed_in.clone(),
            ..Credentials::default()
        },
    );
    let master = w.master("m");

    w.change(
        EnvSettings {
            api_key_required: true,
            ..open.clone()
        },
        1000,
    );
    assert_eq!(
        [with_key, keyless, keyed_user, master].map(|k| w.kicked(k)),
        [false, true, false, false],
        "requiring a key drops only the client without one"
    );

    w.change(
        EnvSettings {
            api_keys: vec![],
            ..open.clone()
        },
        1000,
    );
    assert_eq!(
        [with_key, keyed_user].map(|k| w.kicked(k)),
        [false, false],
        "a key removed while keys are not required drops no one"
    );

    w.change(
        EnvSettings {
            session_required: true,
            ..open.clone()
        },
        1000,
    );
    assert_eq!(
        [with_key, keyed_user].map(|k| w.kicked(k)),
        [true, false],
        "requiring a session"
    );

    // The session the signed-in client connected with expires at 5000: the
    // sweep every second drops it then, not before.
    w.rt.sweep(4999, crate::realtime::state::Sweep::Expired);
    assert!(!w.kicked(keyed_user));
    w.rt.sweep(5000, crate::realtime::state::Sweep::Expired);
    assert!(w.kicked(keyed_user), "its required session expired");
}

/// A removed environment drops its clients.
#[test]
fn a_removed_environment_drops_its_clients() {
    let mut w = World::default_env();
    let a = w.client("a");
    let next = w.rt.settings().replaced_by(vec![EnvSettings::named("other")]);
    w.rt.apply_settings(Arc::new(next), 1000);
    assert!(w.kicked(a));
}

fn join(w: &mut World, key: SlabKey, channel: &str) {
    w.event(key, "join", &[&format!(r#"{{"channel":"{channel}"}}"#)])
        .unwrap();
}

/// At `channels_per_connection_max` (3 here) a join of another channel is
/// refused with an error event to the joiner alone and joins nothing; the
/// connection stays, a join of a channel it is in is still a no-op, and a
/// leave makes room.
#[test]
fn a_join_beyond_the_channel_limit_is_refused_with_an_error() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    join(&mut w, b, "w");
    for channel in ["x", "y", "z"] {
        join(&mut w, a, channel);
    }
    w.take();
    join(&mut w, a, "w");
    let refused = r#"42["error",{"code":"channel_limit_exceeded","message":"A connection may be in at most 3 channels; leave one first","channel":"w"}]"#;
    assert_eq!(w.take(), [("a", refused.to_owned())], "b hears no join");
    assert_eq!(w.fx.stats.channel_limit_refusals.get(), 1);
    assert_eq!(w.rt.member(a).unwrap().channels.len(), 3);
    join(&mut w, a, "x");
    assert_eq!(w.take(), [], "already in: a no-op, not a refusal");
    w.event(a, "leave", &[r#"{"channel":"y"}"#]).unwrap();
    join(&mut w, a, "w");
    let id = w.id(a);
    assert_eq!(w.take(), [("b", presence("channel:join", "w", &id))]);
    let mut channels: Vec<&str> = w.rt.member(a).unwrap().channels.iter().map(|c| &**c).collect();
    channels.sort();
    assert_eq!(channels, ["w", "x", "z"]);
}

/// Leaves take the named channel out of the member's list wherever it is,
/// and the index agrees (no limit: 0).
#[test]
fn leaves_remove_exactly_the_named_channels() {
    let mut w = World::default_env();
    w.fx.limits.channels_per_connection_max = 0;
    let a = w.client("a");
    let names: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
    for name in &names {
        join(&mut w, a, name);
    }
    for name in names.iter().step_by(3) {
        w.event(a, "leave", &[&format!(r#"{{"channel":"{name}"}}"#)])
            .unwrap();
    }
    assert_eq!(w.rt.member(a).unwrap().channels.len(), 1000 - 334);
    for (i, name) in names.iter().enumerate() {
        let kept = i % 3 != 0;
        let joined = w.rt.member(a).unwrap().channels.contains(name.as_str());
        assert_eq!(joined, kept, "{name}");
        let indexed = w.rt.env_mut(0).unwrap().channel(name).is_some();
        assert_eq!(indexed, kept, "{name} in the index");
    }
}

/// A profile over `profile_bytes_max` (32 here, JSON plus attachments) is
/// refused with an error event and changes nothing: no channel:update, and
/// the old profile stays.
#[test]
fn an_oversize_profile_is_refused_and_changes_nothing() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    join(&mut w, a, "c");
    join(&mut w, b, "c");
    w.event(a, "update", &[r#"{"data":{"name":"ann"}}"#]).unwrap();
    w.take();
    let big = format!(r#"{{"data":{{"name":"{}"}}}}"#, "x".repeat(30));
    w.event(a, "update", &[&big]).unwrap();
    let refused = r#"42["error",{"code":"profile_too_large","message":"The profile is 41 bytes; at most 32 are allowed"}]"#;
    assert_eq!(w.take(), [("a", refused.to_owned())]);
    // JSON within the limit, but not with its attachment.
    let incoming = Incoming {
        name: "update",
        args: &[r#"{"data":{"pic":{"_placeholder":true,"num":0}}}"#],
        ack_id: None,
        attachments: &[Bytes::from(vec![0u8; 16])],
    };
    handle(&mut w.rt, &mut w.fx, a, incoming).unwrap();
    assert_eq!(w.take().len(), 1, "one more refusal to a");
    assert_eq!(w.fx.stats.profile_limit_refusals.get(), 2);
    let profile = w.rt.member(a).unwrap().profile.as_ref().unwrap();
    assert_eq!(&profile.json[..], br#"{"name":"ann"}"#);
    // Exactly at the limit is fine.
    let fits = format!(r#"{{"data":"{}"}}"#, "y".repeat(30));
    w.event(a, "update", &[&fits]).unwrap();
    assert_eq!(w.take().len(), 1, "b hears the update");
}

#[test]
fn the_router_hears_the_first_and_last_member_of_a_channel_on_the_shard() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    w.event(a, "join", &[r#"{"channel":"x"}"#]).unwrap();
    w.event(b, "join", &[r#"{"channel":"x"}"#]).unwrap();
    w.event(b, "join", &[r#"{"channel":"x"}"#]).unwrap();
    w.event(a, "update", &[r#"{"data":{"n":1}}"#]).unwrap();
    w.event(b, "update", &[r#"{"data":{"n":2}}"#]).unwrap();
    w.event(a, "leave", &[r#"{"channel":"x"}"#]).unwrap();
    w.event(a, "leave", &[r#"{"channel":"x"}"#]).unwrap();
    w.event(a, "update", &[r#"{"data":null}"#]).unwrap();
    let member = w.rt.unregister(b).unwrap();
    disconnected(&w.rt, &mut w.fx, member);
    assert_eq!(
        w.fx.presence,
        ["+x!", "+x", &format!("~{a}"), &format!("~{b}"), "-x", "-x!"]
    );
}

#[test]
fn a_joiner_with_echo_gets_its_echo_through_the_router() {
    let mut w = World::default_env();
    let (a, b) = (w.client("a"), w.client("b"));
    w.event(b, "join", &[r#"{"channel":"x"}"#]).unwrap();
    w.take();
    w.event(a, "join", &[r#"{"channel":"x","echo":true}"#]).unwrap();
    let id = w.id(a);
    let join = presence("channel:join", "x", &id);
    // The others first: the join is published before the router is told
    // of the membership, and the joiner's echo comes from the router.
    assert_eq!(w.take(), [("b", join.clone()), ("a", join)]);
    assert_eq!(w.fx.published.last().unwrap().2, Some(a));
}
