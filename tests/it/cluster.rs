//! Several nodes joined through a real `redis-server` on loopback: the
//! Agnost semantics across nodes, interest routing (seen in the nodes'
//! metrics), member lists, a node killed with SIGKILL, Redis stopped and
//! started again, settings changed on one node, rate limits across nodes.
//!
//! Every wait is for an event (a frame, a metric, a Redis key) with a
//! deadline; "did not receive" is asserted only after the same traffic's
//! positive deliveries arrived.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::support::http::{get, request};
use crate::support::prom::Metrics;
use crate::support::redis::{RedisServer, Reply};
use crate::support::server::MASTER_TOKEN;
use crate::support::sio::{event, hs256_jwt};
use crate::support::ws::OP_TEXT;
use crate::support::{channel_event, engine_open, Sio, TestServer};

/// Longest wait for anything the cluster does in the background.
const CLUSTER_WAIT: Duration = Duration::from_secs(20);

/// A node of the cluster on `redis`, 2 shards, with `toml` as its file.
fn node(redis: &RedisServer, name: &str, toml: Option<&str>) -> TestServer {
    let url = redis.url();
    TestServer::start_with(2, &["--redis", &url, "--node-id", name], toml)
}

/// Waits until `value(metrics)` satisfies `done`; the last scrape.
fn wait_metrics(addr: SocketAddr, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let metrics = Metrics::scrape(addr);
        if done(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what} on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nodes `a`, `b` and `c` of one cluster, each seeing the other two.
fn three_nodes(redis: &RedisServer, toml: Option<&str>) -> [TestServer; 3] {
    let nodes = [
        node(redis, "a", toml),
        node(redis, "b", toml),
        node(redis, "c", toml),
    ];
    wait_nodes(&[&nodes[0], &nodes[1], &nodes[2]]);
    nodes
}

fn wait_nodes(nodes: &[&TestServer]) {
    for n in nodes {
        let want = nodes.len() as u64;
        wait_metrics(n.addr(), "every node to see the others", |m| {
            m.sum("ringcast_cluster_nodes", &[]) == want && m.sum("ringcast_cluster_up", &[]) == 1
        });
    }
}

/// Joins `channel` with echo and waits for the echo: from then on the
/// member's node receives the channel's messages from every node.
fn join_echo(client: &mut Sio, channel: &str) {
    client.emit(&format!(r#"["join",{{"channel":"{channel}","echo":true}}]"#));
    client.expect(&channel_event("join", channel, &client.id.clone(), "null"));
}

/// The socket ids of a member list `[{id, data}, ...]`, sorted.
fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .expect("a member list")
        .iter()
        .map(|m| m.get("id").and_then(|v| v.as_str()).expect("an id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// The member list a client gets for `channel` (its ack's first argument).
fn members_via(client: &mut Sio, channel: &str) -> Vec<String> {
    client.send(&format!(r#"4277["members",{{"channel":"{channel}"}}]"#));
    let reply = client.recv_text();
    let body = reply
        .strip_prefix("4377")
        .unwrap_or_else(|| panic!("not ack 77: {reply}"));
    let args: Value = sonic_rs::from_str(body).expect("ack JSON");
    let args = args.as_array().expect("ack arguments");
    assert_eq!(args.len(), 1, "complete lists have no second argument: {reply}");
    ids(&args[0])
}

fn api_members(server: &TestServer, channel: &str) -> Vec<String> {
    let body = format!(r#"{{"envId":"default","channel":"{channel}"}}"#);
    let head = format!("POST /api/members HTTP/1.1\r\nAuthorization: Bearer {MASTER_TOKEN}\r\nContent-Type: application/json");
    let response = request(server.addr(), &head, &body);
    assert_eq!(response.status, 200, "{response:?}");
    ids(&response.json())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn channels_broadcasts_user_events_and_member_lists_work_across_nodes() {
    let redis = RedisServer::start();
    let toml = "[[environments]]\nid = \"default\"\nsession_secret = \"s3cret\"\n";
    let [a, b, c] = three_nodes(&redis, Some(toml));
    let session = hs256_jwt("s3cret", r#"{"sub":"u1"}"#);
    let mut x = Sio::connect(&a, &format!(r#"{{"session":"{session}"}}"#));
    let mut y = Sio::connect_default(&b);
    let mut z = Sio::connect_default(&c);

    join_echo(&mut x, "room");
    join_echo(&mut y, "room");
    x.expect(&channel_event("join", "room", &y.id, "null"));
    z.emit(r#"["update",{"data":{"name":"zed"}}]"#);
    join_echo_with(&mut z, "room", r#"{"name":"zed"}"#);
    x.expect(&channel_event("join", "room", &z.id, r#"{"name":"zed"}"#));
    y.expect(&channel_event("join", "room", &z.id, r#"{"name":"zed"}"#));

    // Every node lists every member, with its profile.
    let everyone = sorted(vec![x.id.clone(), y.id.clone(), z.id.clone()]);
    assert_eq!(members_via(&mut x, "room"), everyone);
    assert_eq!(members_via(&mut y, "room"), everyone);
    assert_eq!(api_members(&c, "room"), everyone);

    // A channel message crosses nodes byte for byte (1e21 stays 1e21).
    x.emit(r#"["message",{"channel":"room","eventName":"chat","message":{"n":1e21,"s":"é\u0000"}}]"#);
    let chat = event("chat", Some("room"), r#"{"n":1e21,"s":"é\u0000"}"#);
    y.expect(&chat);
    z.expect(&chat);

    // Binary payloads too.
    x.send(r#"451-["message",{"channel":"room","eventName":"bin","message":{"_placeholder":true,"num":0}}]"#);
    x.ws.send_binary(&[0, 1, 255]);
    for client in [&mut y, &mut z] {
        client.expect(r#"451-["bin",{"channel":"room","message":{"_placeholder":true,"num":0}}]"#);
        client.expect_binary(&[0, 1, 255]);
    }

    // An environment-wide message reaches every node's clients.
    z.emit(r#"["message",{"eventName":"news","message":[1,2],"echo":true}]"#);
    let news = event("news", None, "[1,2]");
    for client in [&mut x, &mut y, &mut z] {
        client.expect(&news);
    }

    // A user event from the master connection on node c reaches the
    // user's socket on node a.
    let mut master = Sio::master(&c);
    master.emit(r#"["user_event",{"envId":"default","userId":"u1","eventName":"user:signin","session":{"k":1},"user":{"id":"u1"}}]"#);
    x.expect(r#"42["user:signin","user:signin",{"k":1},{"id":"u1"}]"#);

    // A leave with echo: the leaver hears it, the others too, and no list
    // has it any more.
    y.emit(r#"["leave",{"channel":"room","echo":true}]"#);
    let leave = channel_event("leave", "room", &y.id, "null");
    y.expect(&leave);
    x.expect(&leave);
    z.expect(&leave);
    let remaining = sorted(vec![x.id.clone(), z.id.clone()]);
    assert_eq!(members_via(&mut x, "room"), remaining);
    assert_eq!(api_members(&b, "room"), remaining);

    // A disconnect: the others hear it left.
    let z_id = z.id.clone();
    drop(z);
    x.expect(&channel_event("leave", "room", &z_id, r#"{"name":"zed"}"#));
    assert_eq!(members_via(&mut x, "room"), vec![x.id.clone()]);
}

/// Joins with echo for a member that has a profile.
fn join_echo_with(client: &mut Sio, channel: &str, data: &str) {
    client.emit(&format!(r#"["join",{{"channel":"{channel}","echo":true}}]"#));
    client.expect(&channel_event("join", channel, &client.id.clone(), data));
}

#[test]
fn a_node_without_members_of_a_channel_receives_none_of_its_traffic() {
    let redis = RedisServer::start();
    let [a, b, c] = three_nodes(&redis, None);
    let mut x = Sio::connect_default(&a);
    let mut y = Sio::connect_default(&b);
    // Node c has a client of the environment, in no channel.
    let _w = Sio::connect_default(&c);
    join_echo(&mut x, "busy");
    join_echo(&mut y, "busy");
    x.expect(&channel_event("join", "busy", &y.id, "null"));
    for i in 0..50 {
        x.emit(&format!(
            r#"["message",{{"channel":"busy","eventName":"m","message":{i}}}]"#
        ));
    }
    for i in 0..50 {
        y.expect(&event("m", Some("busy"), &i.to_string()));
    }
    // One SPUBLISH per message however many nodes: x's join and its 50
    // messages left node a, and node b received exactly those 50.
    let on_a = Metrics::scrape(a.addr());
    assert_eq!(on_a.sum("ringcast_cluster_messages_out_total", &[]), 51);
    let on_b = Metrics::scrape(b.addr());
    assert_eq!(on_b.sum("ringcast_cluster_messages_in_total", &[]), 50);
    // Node c, with no member of the channel, received nothing: it is
    // subscribed to its environment's topic only.
    let on_c = Metrics::scrape(c.addr());
    assert_eq!(on_c.sum("ringcast_cluster_messages_in_total", &[]), 0);
    assert_eq!(on_c.sum("ringcast_cluster_subscriptions", &[]), 1);
    assert_eq!(on_b.sum("ringcast_cluster_subscriptions", &[]), 2);
    // When the last member leaves, the node unsubscribes.
    y.emit(r#"["leave",{"channel":"busy","echo":true}]"#);
    y.expect(&channel_event("leave", "busy", &y.id, "null"));
    wait_metrics(b.addr(), "the channel unsubscribed", |m| {
        m.sum("ringcast_cluster_subscriptions", &[]) == 1
    });
}

#[test]
fn a_killed_node_drops_out_and_its_members_leave_their_channels() {
    let redis = RedisServer::start();
    let toml = "[cluster]\nnode_ttl_ms = 2000\n";
    let (mut a, b) = (node(&redis, "a", Some(toml)), node(&redis, "b", Some(toml)));
    wait_nodes(&[&a, &b]);
    let mut x = Sio::connect_default(&a);
    let mut y = Sio::connect_default(&b);
    x.emit(r#"["update",{"data":{"who":"x"}}]"#);
    join_echo_with(&mut x, "k", r#"{"who":"x"}"#);
    join_echo(&mut y, "k");
    x.expect(&channel_event("join", "k", &y.id, "null"));
    assert_eq!(members_via(&mut y, "k"), sorted(vec![x.id.clone(), y.id.clone()]));

    a.signal(libc::SIGKILL);
    a.wait_exit(CLUSTER_WAIT).expect("node a is gone");
    // Within the TTL (2 s) and a heartbeat (1 s) or so, node b notices, and
    // y hears x left, with x's profile.
    let frame =
        y.ws.read_frame_within(CLUSTER_WAIT)
            .expect("a leave from the survivor");
    assert_eq!(frame.opcode, OP_TEXT);
    assert_eq!(frame.text(), channel_event("leave", "k", &x.id, r#"{"who":"x"}"#));
    assert_eq!(members_via(&mut y, "k"), vec![y.id.clone()]);
    let metrics = Metrics::scrape(b.addr());
    assert_eq!(metrics.sum("ringcast_cluster_nodes", &[]), 1);
    assert_eq!(metrics.sum("ringcast_cluster_dead_nodes_total", &[]), 1);
}

#[test]
fn nodes_serve_their_own_clients_while_redis_is_away_and_recover_after() {
    let mut redis = RedisServer::start();
    let (a, b) = (node(&redis, "a", None), node(&redis, "b", None));
    wait_nodes(&[&a, &b]);
    let mut x = Sio::connect_default(&a);
    let mut x2 = Sio::connect_default(&a);
    let mut y = Sio::connect_default(&b);
    join_echo(&mut x, "r");
    join_echo(&mut x2, "r");
    x.expect(&channel_event("join", "r", &x2.id, "null"));
    join_echo(&mut y, "r");
    x.expect(&channel_event("join", "r", &y.id, "null"));
    x2.expect(&channel_event("join", "r", &y.id, "null"));

    redis.stop();
    wait_metrics(a.addr(), "the link down", |m| {
        m.sum("ringcast_cluster_up", &[]) == 0
    });
    let health = get(a.addr(), "/health");
    assert_eq!(health.status, 200);
    assert_eq!(
        health.body,
        r#"{"status":"degraded","cluster":{"up":false,"nodes":0}}"#
    );
    // Node a's own members still hear each other; what was meant for node
    // b is dropped and counted.
    x.emit(r#"["message",{"channel":"r","eventName":"local","message":1}]"#);
    x2.expect(&event("local", Some("r"), "1"));
    let metrics = Metrics::scrape(a.addr());
    assert!(metrics.sum("ringcast_cluster_dropped_total", &[]) >= 1);
    // A member list says it is this node's only.
    x.send(r#"4278["members",{"channel":"r"}]"#);
    let reply = x.recv_text();
    assert!(
        reply.ends_with(r#",{"error":"incomplete","cluster":"unreachable"}]"#),
        "{reply}"
    );

    // Redis comes back empty: both nodes reconnect, subscribe again and
    // store their members again.
    redis.restart();
    for n in [&a, &b] {
        wait_metrics(n.addr(), "the link back", |m| {
            m.sum("ringcast_cluster_up", &[]) == 1 && m.sum("ringcast_cluster_reconnects_total", &[]) == 1
        });
    }
    let topic = "ringcast:0:c:7:default:r";
    let deadline = Instant::now() + CLUSTER_WAIT;
    while redis.call(&["PUBSUB", "SHARDNUMSUB", topic]) != shard_numsub(topic, 2) {
        assert!(Instant::now() < deadline, "both nodes subscribed again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        members_via(&mut y, "r"),
        sorted(vec![x.id.clone(), x2.id.clone(), y.id.clone()])
    );
    x.emit(r#"["message",{"channel":"r","eventName":"back","message":2}]"#);
    y.expect(&event("back", Some("r"), "2"));
    x2.expect(&event("back", Some("r"), "2"));
}

fn shard_numsub(topic: &str, n: i64) -> Reply {
    Reply::Array(vec![
        Reply::Bulk(Some(topic.as_bytes().to_vec())),
        Reply::Integer(n),
    ])
}

fn put_environment(server: &TestServer, id: &str, body: &str) -> crate::support::http::Response {
    let head = format!(
        "PUT /api/environments/{id} HTTP/1.1\r\nAuthorization: Bearer {MASTER_TOKEN}\r\nContent-Type: application/json"
    );
    request(server.addr(), &head, body)
}

/// Connects to `server` until the connect reply satisfies `done` (settings
/// reach a node's shards a moment after its API answers).
fn connect_until(server: &TestServer, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + CLUSTER_WAIT;
    loop {
        let mut open = engine_open(server);
        open.ws.send_text("40{}");
        let reply = open.ws.read_frame().text().to_owned();
        if done(&reply) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "connect replies never changed: {reply}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_settings_change_on_one_node_applies_on_every_node_and_survives_restarts() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, "a", None), node(&redis, "b", None));
    let mut c = node(&redis, "c", None);
    wait_nodes(&[&a, &b, &c]);
    let mut y = Sio::connect_default(&b);

    let response = put_environment(&a, "default", r#"{"enabled":false}"#);
    assert_eq!(response.status, 200, "{response:?}");
    // Node b kicks its client of the disabled environment (`41`).
    y.expect("41");
    let disabled =
        |reply: &str| reply.starts_with("44{") && reply.contains(r#""code":"realtime_not_allowed""#);
    connect_until(&c, disabled);

    // Node c restarts: its file says nothing, the cluster's settings win.
    c.signal(libc::SIGKILL);
    c.wait_exit(CLUSTER_WAIT).expect("node c is gone");
    drop(c);
    let c = node(&redis, "c", None);
    let mut open = engine_open(&c);
    open.ws.send_text("40{}");
    let reply = open.ws.read_frame().text().to_owned();
    assert!(disabled(&reply), "{reply}");

    let response = put_environment(&b, "default", r#"{"enabled":true}"#);
    assert_eq!(response.status, 200, "{response:?}");
    connect_until(&c, |reply| reply.starts_with(r#"40{"sid":""#));
    connect_until(&a, |reply| reply.starts_with(r#"40{"sid":""#));
}

/// The reply to one Socket.IO connect on `server` with `auth` (no retry).
fn connect_reply(server: &TestServer, auth: &str) -> String {
    let mut open = engine_open(server);
    open.ws.send_text(&format!("40{auth}"));
    open.ws.read_frame().text().to_owned()
}

fn connected(reply: &str) -> bool {
    reply.starts_with(r#"40{"sid":""#)
}

/// Environments besides `default` in the test below.
const TENANTS: usize = 2_000;

#[test]
fn a_settings_put_answers_once_every_node_applies_it() {
    let redis = RedisServer::start();
    let mut toml = String::from(
        "[[environments]]\nid = \"default\"\napi_key_required = true\napi_keys = [{ key = \"k0\" }]\n",
    );
    // A cluster of many tenants: a node takes a few milliseconds to load
    // and apply the settings, far longer than a connect on loopback, so a
    // PUT that answered before the other nodes applied it is caught.
    for tenant in 0..TENANTS {
        let keys: Vec<String> = (0..4)
            .map(|k| format!(r#"{{ key = "t{tenant}-{k}" }}"#))
            .collect();
        toml.push_str(&format!(
            "[[environments]]\nid = \"t{tenant}\"\napi_keys = [{}]\n",
            keys.join(", ")
        ));
    }
    let toml = Some(toml.as_str());
    let nodes = three_nodes(&redis, toml);
    let mut old = Sio::connect(&nodes[1], r#"{"apiKey":"k0"}"#);
    for round in 1..=6 {
        // A new key on one node, the old one removed: the moment the PUT
        // answers, every other node admits the new key and refuses the old.
        let (via, others) = (round % 3, [(round + 1) % 3, (round + 2) % 3]);
        let body = format!(r#"{{"api_key_required":true,"api_keys":[{{"key":"k{round}"}}]}}"#);
        let response = put_environment(&nodes[via], "default", &body);
        assert_eq!(response.status, 200, "round {round}: {response:?}");
        for other in others {
            let reply = connect_reply(&nodes[other], &format!(r#"{{"apiKey":"k{round}"}}"#));
            assert!(
                connected(&reply),
                "round {round}: node {other} refused the key node {via} just stored: {reply}"
            );
            let reply = connect_reply(&nodes[other], &format!(r#"{{"apiKey":"k{}"}}"#, round - 1));
            assert!(
                reply.starts_with("44{"),
                "round {round}: node {other} still admits the removed key: {reply}"
            );
        }
        if round == 1 {
            // Node b's client of the removed key was already told.
            old.expect("41");
        }
    }
}

#[test]
fn a_settings_put_names_the_nodes_that_did_not_confirm_it_in_time() {
    let redis = RedisServer::start();
    let [a, b, c] = three_nodes(&redis, None);
    // Node c is frozen: alive by its heartbeat (its key outlives the
    // wait), but it cannot apply anything.
    c.signal(libc::SIGSTOP);
    let response = put_environment(&a, "default", r#"{"enabled":false}"#);
    c.signal(libc::SIGCONT);
    response.assert_json_error(503);
    let json = response.json();
    assert_eq!(
        json.get("code").and_then(|v| v.as_str()),
        Some("settings_unconfirmed"),
        "{response:?}"
    );
    let unconfirmed: Vec<&str> = json
        .get("nodes")
        .and_then(|v| v.as_array())
        .expect("the nodes that did not confirm")
        .iter()
        .map(|n| n.get("node").and_then(|v| v.as_str()).expect("a node id"))
        .collect();
    assert_eq!(unconfirmed, ["c"], "{response:?}");
    // The change is stored and was confirmed by node b: it applies it.
    let disabled =
        |reply: &str| reply.starts_with("44{") && reply.contains(r#""code":"realtime_not_allowed""#);
    let reply = connect_reply(&b, "{}");
    assert!(disabled(&reply), "{reply}");
    // Thawed, node c reads the notice it missed and applies the change.
    connect_until(&c, disabled);
}

#[test]
fn rate_limits_count_across_nodes_within_the_documented_bound() {
    let redis = RedisServer::start();
    let toml = "[[environments]]\nid = \"default\"\nrate_limits = [{ limit = 5, window_s = 3600, message = \"slow down\" }]\n";
    let (a, b) = (node(&redis, "a", Some(toml)), node(&redis, "b", Some(toml)));
    wait_nodes(&[&a, &b]);
    // Both from 127.0.0.1: one budget across the cluster.
    let mut x = Sio::connect_default(&a);
    let mut y = Sio::connect_default(&b);
    let limited = r#"42["error",{"code":"rate_limit_exceeded","message":"slow down"}]"#;
    for i in 0..5 {
        x.emit(&format!(
            r#"["message",{{"eventName":"m","message":{i},"echo":true}}]"#
        ));
        x.expect(&event("m", None, &i.to_string()));
        y.expect(&event("m", None, &i.to_string()));
    }
    let count = || -> Option<i64> {
        let keys = redis.call(&["KEYS", "ringcast:0:rl:*"]).strings();
        let key = keys.first()?;
        match redis.call(&["GET", key]) {
            Reply::Bulk(Some(n)) => String::from_utf8(n).ok()?.parse().ok(),
            _ => None,
        }
    };
    let wait_count = |n: i64| {
        let deadline = Instant::now() + CLUSTER_WAIT;
        while count() != Some(n) {
            assert!(
                Instant::now() < deadline,
                "the cluster count never reached {n}: {:?}",
                count()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_count(5);
    let syncs_b = || Metrics::scrape(b.addr()).sum("ringcast_cluster_rate_syncs_total", &[]);
    let synced_before = syncs_b();
    // Node b has not counted this client yet: its first event is admitted,
    // the overshoot the bound allows (what one node admits before its first
    // sync of the key).
    y.emit(r#"["message",{"eventName":"m","message":5,"echo":true}]"#);
    y.expect(&event("m", None, "5"));
    x.expect(&event("m", None, "5"));
    wait_count(6);
    // Node b learned the cluster's count (the answer to its add, not just
    // Redis holding the sum).
    wait_metrics(b.addr(), "node b's sync", |m| {
        m.sum("ringcast_cluster_rate_syncs_total", &[]) > synced_before
    });
    // From its sync on, node b knows the cluster's count: refused.
    y.emit(r#"["message",{"eventName":"m","message":6,"echo":true}]"#);
    y.expect(limited);
    x.emit(r#"["message",{"eventName":"m","message":7,"echo":true}]"#);
    x.expect(limited);
    // Nothing more was admitted anywhere.
    let refused_a = Metrics::scrape(a.addr()).sum("ringcast_rate_limited_events_total", &[]);
    let refused_b = Metrics::scrape(b.addr()).sum("ringcast_rate_limited_events_total", &[]);
    assert_eq!((refused_a, refused_b), (1, 1));
    assert_eq!(count(), Some(6), "admitted in the cluster: limit + 1");
}

#[test]
fn a_node_starts_without_redis_and_survives_a_frozen_redis() {
    let mut redis = RedisServer::not_started();
    // Redis is not there: the node starts and serves its own clients.
    let a = node(&redis, "a", None);
    let mut x = Sio::connect_default(&a);
    let mut x2 = Sio::connect_default(&a);
    join_echo(&mut x, "f");
    join_echo(&mut x2, "f");
    x.expect(&channel_event("join", "f", &x2.id, "null"));
    assert_eq!(Metrics::scrape(a.addr()).sum("ringcast_cluster_up", &[]), 0);
    // Redis arrives: the node joins (retrying with backoff) and stores its
    // members, so a node started now lists them.
    redis.restart();
    wait_metrics(a.addr(), "the link up", |m| {
        m.sum("ringcast_cluster_up", &[]) == 1
    });
    let b = node(&redis, "b", None);
    wait_nodes(&[&a, &b]);
    let mut y = Sio::connect_default(&b);
    assert_eq!(
        members_via(&mut y, "f"),
        sorted(vec![x.id.clone(), x2.id.clone()])
    );

    // Redis freezes (nothing answers, nothing is closed): the nodes notice
    // within their I/O timeouts and keep serving their own clients.
    redis.signal(libc::SIGSTOP);
    for n in [&a, &b] {
        wait_metrics(n.addr(), "the link down", |m| {
            m.sum("ringcast_cluster_up", &[]) == 0
        });
    }
    x.emit(r#"["message",{"channel":"f","eventName":"local","message":1}]"#);
    x2.expect(&event("local", Some("f"), "1"));
    // It thaws: both reconnect, and cross-node traffic flows again once
    // both are subscribed.
    redis.signal(libc::SIGCONT);
    for n in [&a, &b] {
        wait_metrics(n.addr(), "the link back", |m| {
            m.sum("ringcast_cluster_up", &[]) == 1
        });
    }
    join_echo(&mut y, "f");
    x.expect(&channel_event("join", "f", &y.id, "null"));
    x2.expect(&channel_event("join", "f", &y.id, "null"));
    x.emit(r#"["message",{"channel":"f","eventName":"back","message":2}]"#);
    y.expect(&event("back", Some("f"), "2"));
}
