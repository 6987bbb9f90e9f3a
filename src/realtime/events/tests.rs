//! The Agnost rules as unit tests: a realtime state, members whose sinks
//! record what they receive, and an effects recorder that delivers locally
//! the way the shard's router does and remembers every publish.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use super::*;
use crate::protocol::frames::{payloads, Payload};
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
    fn push(&self, frame: Bytes) {
        for payload in payloads(&frame) {
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
    /// Events counted per (env, limiter) so far: a fake rate table.
    rate_counts: HashMap<(EnvKey, usize), u32>,
}

impl Recorder {
    fn new() -> Self {
        Self {
            stats: Stats::default(),
            limits: Limits {
                channel_name_bytes_max: 16,
            },
            published: Vec::new(),
            member_lists: Vec::new(),
            presence: Vec::new(),
            rate_counts: HashMap::new(),
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
        _ip: IpAddr,
        limiter: usize,
        limit: u32,
        window_s: u32,
    ) -> Verdict {
        let count = self.rate_counts.entry((env, limiter)).or_insert(0);
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
        let sink = TestSink {
            name,
            log: self.log.clone(),
            kicked: Rc::default(),
        };
        let (key, _) = self.rt.register(NewMember {
            sink,
            env,
            echo: false,
            user: None,
            api_key: None,
            client_ip: None,
        });
        key
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

#[test]
fn a_client_over_a_rate_limit_is_dropped_and_told_once_per_window() {
    let mut env = EnvSettings::default_env();
    env.rate_limits = vec![RateLimit {
        limit: 2,
        window_s: 10,
        message: "slow down".into(),
    }];
    let mut w = World::new(env);
    let (a, b) = (w.client("a"), w.client("b"));
    w.event(b, "join", &[r#"{"channel":"c"}"#]).unwrap();
    w.take();
    for n in 0..4 {
        let message = format!(r#"{{"channel":"c","eventName":"m","message":{n}}}"#);
        w.event(a, "message", &[&message]).unwrap();
    }
    let error = r#"42["error",{"code":"rate_limit_exceeded","message":"slow down"}]"#.to_owned();
    assert_eq!(
        w.take(),
        [
            ("b", r#"42["m",{"channel":"c","message":0}]"#.to_owned()),
            ("a", error),
        ]
    );
    assert_eq!(w.fx.stats.rate_limited_events.get(), 3);
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
