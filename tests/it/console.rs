//! The web console's server side: the embedded page and its headers, the
//! token checks (admin token, wrong tokens limited per client IP), the
//! traffic JSON, settings changed through the console (the session secret
//! write-only, errors naming their field), channels, members, a test
//! message, disconnecting one socket, and all of it across a cluster.
//!
//! The page itself runs in Chromium in `tests/console/`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::support::http::{get, parse_response, request, Response};
use crate::support::net::connect_from;
use crate::support::redis::RedisServer;
use crate::support::server::MASTER_TOKEN;
use crate::support::sio::{engine_open, event};
use crate::support::{channel_event, connect_on_shard, Sio, TestServer};

const ADMIN_TOKEN: &str = "it-admin-token";
/// Longest wait for what the console samples in the background.
const WAIT: Duration = Duration::from_secs(20);

fn console_server(shards: usize, toml: Option<&str>) -> TestServer {
    TestServer::start_with(shards, &["--admin-token", ADMIN_TOKEN], toml)
}

/// `method path` with a bearer `token` and a JSON `body`.
fn call(server: &TestServer, method: &str, path: &str, token: &str, body: &str) -> Response {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json"
    );
    request(server.addr(), &head, body)
}

fn admin(server: &TestServer, method: &str, path: &str, body: &str) -> Value {
    let response = call(server, method, path, ADMIN_TOKEN, body);
    assert_eq!(response.status, 200, "{method} {path}: {response:?}");
    response.json()
}

/// Polls `GET /api/stats` until `done` holds; the last answer.
fn stats_until(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = admin(server, "GET", "/api/stats", "");
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn u64_at(value: &Value, path: &[&str]) -> u64 {
    let mut v = value;
    for key in path {
        v = v.get(*key).unwrap_or_else(|| panic!("no {key} in {value:?}"));
    }
    v.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a number in {value:?}"))
}

/// A plain request from client address `source`, read to the end.
fn request_from(source: IpAddr, addr: SocketAddr, head: &str) -> Response {
    let mut stream = connect_from(source, addr);
    stream
        .write_all(format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut bytes = Vec::new();
    let _ = stream.read_to_end(&mut bytes);
    parse_response(&bytes).unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&bytes)))
}

#[test]
fn the_page_is_embedded_and_served_with_a_strict_policy() {
    let server = console_server(1, None);
    let page = get(server.addr(), "/admin/");
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = page.header("content-security-policy").expect("a CSP");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(page.body.contains("<title>ringcast console</title>"));
    // Everything the page loads comes from this server.
    assert!(!page.body.contains("http://") && !page.body.contains("https://"));
    let script = get(server.addr(), "/admin/console.js");
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(script.body.contains("sessionStorage"));
    let moved = get(server.addr(), "/admin");
    assert_eq!((moved.status, moved.header("location")), (308, Some("/admin/")));
    get(server.addr(), "/admin/secret.txt").assert_json_error(404);
    // The files need no token; the API does.
    call(&server, "GET", "/api/stats", "", "").assert_json_error(401);
}

#[test]
fn tokens_are_checked_and_wrong_ones_are_limited_per_client() {
    let server = console_server(2, None);
    for token in [MASTER_TOKEN, ADMIN_TOKEN] {
        let session = call(&server, "GET", "/api/admin/session", token, "");
        assert_eq!(session.status, 200, "{session:?}");
        assert_eq!(session.header("cache-control"), Some("no-store"));
        let role = if token == MASTER_TOKEN { "master" } else { "admin" };
        assert_eq!(session.json().get("role").and_then(|r| r.as_str()), Some(role));
    }
    // The admin token is the console's only: not the backend's API.
    let send = r#"{"envId":"default","channel":"c","eventName":"e","message":1}"#;
    call(&server, "POST", "/api/send", ADMIN_TOKEN, send).assert_json_error(401);
    assert_eq!(call(&server, "POST", "/api/send", MASTER_TOKEN, send).status, 200);

    let local: IpAddr = [127, 0, 0, 1].into();
    let elsewhere: IpAddr = [127, 0, 0, 2].into();
    let head = |token: &str| format!("GET /api/admin/session HTTP/1.1\r\nAuthorization: Bearer {token}");
    for attempt in 1..=10 {
        let refused = request_from(local, server.addr(), &head("guess"));
        assert_eq!(refused.status, 401, "attempt {attempt}: {refused:?}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    }
    // The eleventh is refused whatever it holds, the right token included,
    // on the console and on the backend's API alike.
    let limited = request_from(local, server.addr(), &head(ADMIN_TOKEN));
    limited.assert_json_error(429);
    assert_eq!(
        limited.json().get("code").and_then(|c| c.as_str()),
        Some("too_many_attempts")
    );
    let retry_s: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_s), "{retry_s}");
    call(&server, "POST", "/api/send", MASTER_TOKEN, send).assert_json_error(429);
    // Another client is not affected.
    assert_eq!(
        request_from(elsewhere, server.addr(), &head(ADMIN_TOKEN)).status,
        200
    );
}

#[test]
fn the_traffic_counts_connections_channels_and_messages_per_environment_and_shard() {
    let toml = "[[environments]]\nid = \"default\"\n[[environments]]\nid = \"other\"\n";
    let server = console_server(2, Some(toml));
    let mut a = connect_on_shard(&server, 0, "{}");
    let mut b = connect_on_shard(&server, 1, "{}");
    let mut c = connect_on_shard(&server, 1, r#"{"envId":"other"}"#);
    // "both" has members on both shards: the node counts it once.
    for (client, channels) in [
        (&mut a, &["both", "only-a"][..]),
        (&mut b, &["both"][..]),
        (&mut c, &["x"][..]),
    ] {
        for channel in channels {
            client.join(channel);
            client.sentinel(channel, "joined");
        }
    }
    let stats = stats_until(&server, "three connections", |s| u64_at(s, &["connections"]) == 3);
    assert_eq!(u64_at(&stats, &["environments", "default", "connections"]), 2);
    assert_eq!(u64_at(&stats, &["environments", "default", "channels"]), 2);
    assert_eq!(u64_at(&stats, &["environments", "other", "connections"]), 1);
    assert_eq!(u64_at(&stats, &["environments", "other", "channels"]), 1);
    assert_eq!(u64_at(&stats, &["cluster", "nodes"]), 1);
    assert_eq!(
        stats
            .get("cluster")
            .and_then(|c| c.get("enabled"))
            .and_then(|e| e.as_bool()),
        Some(false)
    );
    let shards = stats.get("shards").and_then(|s| s.as_array()).expect("shards");
    let per_shard: Vec<(u64, u64)> = shards
        .iter()
        .map(|s| (u64_at(s, &["shard"]), u64_at(s, &["connections"])))
        .collect();
    assert_eq!(per_shard, [(0, 1), (1, 2)]);
    let nodes = stats.get("nodes").and_then(|n| n.as_array()).expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].get("this_node").and_then(|t| t.as_bool()), Some(true));
    // Eight events so far (four joins, each followed by a sentinel
    // message); more arrive in the next records, with rates.
    let before = u64_at(&stats, &["messages_in"]);
    assert!(before >= 8, "{stats:?}");
    let closed_before = disconnects(&stats);
    for i in 0..5 {
        a.emit(&format!(
            r#"["message",{{"channel":"both","eventName":"m","message":{i}}}]"#
        ));
        b.expect(&event("m", Some("both"), &i.to_string()));
    }
    let stats = stats_until(&server, "the messages and a rate", |s| {
        u64_at(s, &["messages_in"]) >= before + 5 && s.get("messages_in_per_s").is_some_and(|r| r.is_number())
    });
    assert!(u64_at(&stats, &["deliveries_out"]) >= 5);

    // A disconnect is counted by reason (the connections connect_on_shard
    // dropped are counted already: the counts went down with them).
    drop(c);
    let stats = stats_until(&server, "the disconnect", |s| u64_at(s, &["connections"]) == 2);
    assert_eq!(disconnects(&stats) - closed_before, 1, "{stats:?}");
    assert_eq!(u64_at(&stats, &["environments", "other", "channels"]), 0);
}

/// Every disconnect so far, whatever its reason (every reason is listed).
fn disconnects(stats: &Value) -> u64 {
    let reasons = stats
        .get("disconnects")
        .and_then(|d| d.as_object())
        .expect("disconnects");
    assert!(
        reasons.iter().any(|(reason, _)| reason == "slow_consumer"),
        "{stats:?}"
    );
    reasons.iter().map(|(_, n)| n.as_u64().expect("a count")).sum()
}

#[test]
fn settings_change_through_the_console_like_the_api_with_a_write_only_secret() {
    let toml = "[[environments]]\nid = \"default\"\nsession_secret = \"s3cret\"\n";
    let server = console_server(2, Some(toml));
    let list = admin(&server, "GET", "/api/admin/environments", "");
    let envs = list
        .get("environments")
        .and_then(|e| e.as_array())
        .expect("a list");
    assert_eq!(envs.len(), 1);
    assert_eq!(
        envs[0].get("session_secret_set").and_then(|s| s.as_bool()),
        Some(true)
    );
    assert!(
        envs[0].get("session_secret").is_none(),
        "the secret never leaves the server: {list:?}"
    );

    // API key required: a client without one is refused, with one it connects.
    let mut open = engine_open(&server);
    open.ws.send_text("40{}");
    assert!(open.ws.read_frame().text().starts_with(r#"40{"sid":""#));
    let body = r#"{"id":"default","api_key_required":true,"api_keys":[{"key":"k1"}]}"#;
    let saved = admin(&server, "PUT", "/api/admin/environments/default", body);
    assert_eq!(
        saved.get("api_key_required").and_then(|v| v.as_bool()),
        Some(true)
    );
    assert_eq!(
        saved.get("session_secret_set").and_then(|v| v.as_bool()),
        Some(true),
        "kept: {saved:?}"
    );
    assert!(saved.get("session_secret").is_none());
    let mut refused = engine_open(&server);
    refused.ws.send_text("40{}");
    let reply = refused.ws.read_frame().text().to_owned();
    assert!(
        reply.starts_with("44{") && reply.contains(r#""code":"missing_api_key""#),
        "{reply}"
    );
    let keyed = Sio::connect(&server, r#"{"apiKey":"k1"}"#);
    assert_eq!(keyed.id.len(), 20);
    // The backend's API (master token) sees the secret the console kept.
    let stored = call(&server, "GET", "/api/environments/default", MASTER_TOKEN, "").json();
    assert_eq!(
        stored.get("session_secret").and_then(|s| s.as_str()),
        Some("s3cret")
    );

    // A bad value is refused with the path of its field; nothing changes.
    let bad = r#"{"api_key_required":true,"api_keys":[{"key":"k1","ips":["10.0.0.0/8","nonsense"]}]}"#;
    let refused = call(
        &server,
        "PUT",
        "/api/admin/environments/default",
        ADMIN_TOKEN,
        bad,
    );
    refused.assert_json_error(400);
    assert_eq!(
        refused.json().get("field").and_then(|f| f.as_str()),
        Some("api_keys[0].ips[1]")
    );
    let bad = r#"{"rate_limits":[{"limit":5,"window_s":0}]}"#;
    let refused = call(
        &server,
        "PUT",
        "/api/admin/environments/default",
        ADMIN_TOKEN,
        bad,
    );
    assert_eq!(
        refused.json().get("field").and_then(|f| f.as_str()),
        Some("rate_limits[0].window_s")
    );
    assert!(
        Sio::connect(&server, r#"{"apiKey":"k1"}"#).id.len() == 20,
        "still the saved settings"
    );

    // A new secret replaces it, null removes it; a new environment is created.
    admin(
        &server,
        "PUT",
        "/api/admin/environments/default",
        r#"{"session_secret":"new"}"#,
    );
    let stored = call(&server, "GET", "/api/environments/default", MASTER_TOKEN, "").json();
    assert_eq!(stored.get("session_secret").and_then(|s| s.as_str()), Some("new"));
    let cleared = admin(
        &server,
        "PUT",
        "/api/admin/environments/default",
        r#"{"session_secret":null}"#,
    );
    assert_eq!(
        cleared.get("session_secret_set").and_then(|v| v.as_bool()),
        Some(false)
    );
    admin(
        &server,
        "PUT",
        "/api/admin/environments/new%20env",
        r#"{"echo_messages":true}"#,
    );
    let list = admin(&server, "GET", "/api/admin/environments", "");
    let ids: Vec<&str> = list
        .get("environments")
        .and_then(|e| e.as_array())
        .expect("a list")
        .iter()
        .filter_map(|e| e.get("id").and_then(|i| i.as_str()))
        .collect();
    assert_eq!(ids, ["default", "new env"]);
}

#[test]
fn channels_members_a_test_message_and_disconnecting_one_socket() {
    let server = console_server(2, None);
    let mut a = connect_on_shard(&server, 0, "{}");
    let mut b = connect_on_shard(&server, 1, "{}");
    a.emit(r#"["update",{"data":{"name":"Ann"}}]"#);
    a.emit(r#"["join",{"channel":"room","echo":true}]"#);
    a.expect(&channel_event("join", "room", &a.id.clone(), r#"{"name":"Ann"}"#));
    b.emit(r#"["join",{"channel":"room","echo":true}]"#);
    b.expect(&channel_event("join", "room", &b.id.clone(), "null"));
    a.expect(&channel_event("join", "room", &b.id.clone(), "null"));
    b.join("side");
    b.sentinel("side", "joined");

    let list = admin(&server, "POST", "/api/admin/channels", r#"{"envId":"default"}"#);
    let channels = list.get("channels").and_then(|c| c.as_array()).expect("channels");
    let pairs: Vec<(String, u64)> = channels
        .iter()
        .map(|c| {
            (
                c.get("name").and_then(|n| n.as_str()).unwrap().to_owned(),
                u64_at(c, &["members"]),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [("room".to_owned(), 2), ("side".to_owned(), 1)],
        "busiest first"
    );
    assert_eq!(list.get("complete").and_then(|c| c.as_bool()), Some(true));
    let filtered = admin(
        &server,
        "POST",
        "/api/admin/channels",
        r#"{"envId":"default","filter":"sid"}"#,
    );
    assert_eq!(
        filtered
            .get("channels")
            .and_then(|c| c.as_array())
            .map(|c| c.len()),
        Some(1)
    );
    call(
        &server,
        "POST",
        "/api/admin/channels",
        ADMIN_TOKEN,
        r#"{"envId":"nope"}"#,
    )
    .assert_json_error(404);

    let members = admin(
        &server,
        "POST",
        "/api/admin/members",
        r#"{"envId":"default","channel":"room"}"#,
    );
    assert_eq!(members.get("complete").and_then(|c| c.as_bool()), Some(true));
    let list = members
        .get("members")
        .and_then(|m| m.as_array())
        .expect("members");
    let ann = list
        .iter()
        .find(|m| m.get("id").and_then(|i| i.as_str()) == Some(a.id.as_str()))
        .expect("Ann is listed");
    assert_eq!(
        ann.get("data")
            .and_then(|d| d.get("name"))
            .and_then(|n| n.as_str()),
        Some("Ann")
    );
    assert_eq!(list.len(), 2);

    let publish = r#"{"envId":"default","channel":"room","eventName":"console:test","message":{"n":1}}"#;
    admin(&server, "POST", "/api/admin/publish", publish);
    a.expect(&event("console:test", Some("room"), r#"{"n":1}"#));
    b.expect(&event("console:test", Some("room"), r#"{"n":1}"#));

    // Ann is on shard 0; the request may be served by either shard.
    let answer = admin(
        &server,
        "POST",
        "/api/admin/disconnect",
        &format!(r#"{{"id":"{}"}}"#, a.id),
    );
    assert_eq!(
        answer.get("result").and_then(|r| r.as_str()),
        Some("disconnected")
    );
    a.expect("41");
    b.expect(&channel_event(
        "leave",
        "room",
        &a.id.clone(),
        r#"{"name":"Ann"}"#,
    ));
    let again = format!(r#"{{"id":"{}"}}"#, a.id);
    call(&server, "POST", "/api/admin/disconnect", ADMIN_TOKEN, &again).assert_json_error(404);
    call(
        &server,
        "POST",
        "/api/admin/disconnect",
        ADMIN_TOKEN,
        r#"{"id":"nope"}"#,
    )
    .assert_json_error(400);
}

#[test]
fn a_console_turned_off_serves_nothing() {
    let server = console_server(1, Some("[server]\nconsole = false\n"));
    get(server.addr(), "/admin/").assert_json_error(404);
    call(&server, "GET", "/api/stats", ADMIN_TOKEN, "").assert_json_error(404);
    // The backend's API is not the console's.
    let send = r#"{"envId":"default","channel":"c","eventName":"e","message":1}"#;
    assert_eq!(call(&server, "POST", "/api/send", MASTER_TOKEN, send).status, 200);
}

fn cluster_node(redis: &RedisServer, name: &str) -> TestServer {
    let url = redis.url();
    TestServer::start_with(
        2,
        &["--redis", &url, "--node-id", name, "--admin-token", ADMIN_TOKEN],
        None,
    )
}

#[test]
fn in_a_cluster_the_console_shows_every_node_and_reaches_every_socket() {
    let redis = RedisServer::start();
    let (a, b) = (cluster_node(&redis, "node-a"), cluster_node(&redis, "node-b"));
    let nodes_up = |s: &Value| u64_at(s, &["cluster", "nodes"]) == 2;
    stats_until(&a, "node a to see node b", nodes_up);
    stats_until(&b, "node b to see node a", nodes_up);

    let mut x = Sio::connect_default(&b);
    let mut y = Sio::connect_default(&b);
    let mut z = Sio::connect_default(&a);
    x.emit(r#"["update",{"data":{"name":"Xena"}}]"#);
    x.emit(r#"["join",{"channel":"far","echo":true}]"#);
    x.expect(&channel_event("join", "far", &x.id.clone(), r#"{"name":"Xena"}"#));
    z.emit(r#"["join",{"channel":"near","echo":true}]"#);
    z.expect(&channel_event("join", "near", &z.id.clone(), "null"));

    // Node a's console: the cluster's totals and a row per node.
    let stats = stats_until(&a, "both nodes' connections", |s| {
        u64_at(s, &["connections"]) == 3
            && s.get("nodes")
                .and_then(|n| n.as_array())
                .is_some_and(|n| n.len() == 2)
    });
    assert_eq!(
        stats
            .get("cluster")
            .and_then(|c| c.get("enabled"))
            .and_then(|e| e.as_bool()),
        Some(true)
    );
    let nodes = stats.get("nodes").and_then(|n| n.as_array()).expect("nodes");
    let rows: Vec<(&str, u64, bool)> = nodes
        .iter()
        .map(|n| {
            let name = n.get("node").and_then(|v| v.as_str()).unwrap();
            (
                name,
                u64_at(n, &["connections"]),
                n.get("this_node").and_then(|t| t.as_bool()).unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("node-a", 1, true), ("node-b", 2, false)]);
    assert_eq!(u64_at(&stats, &["environments", "default", "channels"]), 2);
    assert_eq!(u64_at(&nodes[1], &["missing_shards"]), 0);

    // Channels from Redis: node a lists node b's channel and its members.
    let list = admin(&a, "POST", "/api/admin/channels", r#"{"envId":"default"}"#);
    let mut names: Vec<&str> = list
        .get("channels")
        .and_then(|c| c.as_array())
        .expect("channels")
        .iter()
        .filter_map(|c| c.get("name").and_then(|n| n.as_str()))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["far", "near"], "{list:?}");
    let members = admin(
        &a,
        "POST",
        "/api/admin/members",
        r#"{"envId":"default","channel":"far"}"#,
    );
    let list = members
        .get("members")
        .and_then(|m| m.as_array())
        .expect("members");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].get("id").and_then(|i| i.as_str()), Some(x.id.as_str()));
    assert_eq!(
        list[0]
            .get("data")
            .and_then(|d| d.get("name"))
            .and_then(|n| n.as_str()),
        Some("Xena")
    );

    // Disconnecting node b's socket from node a: handed on, carried out there.
    let response = call(
        &a,
        "POST",
        "/api/admin/disconnect",
        ADMIN_TOKEN,
        &format!(r#"{{"id":"{}"}}"#, x.id),
    );
    assert_eq!(response.status, 202, "{response:?}");
    assert_eq!(
        response.json().get("result").and_then(|r| r.as_str()),
        Some("sent_to_cluster")
    );
    x.expect("41");
    // Only x: y, on the same node, is still served.
    y.emit(r#"["join",{"channel":"still-here","echo":true}]"#);
    y.expect(&channel_event("join", "still-here", &y.id.clone(), "null"));
    stats_until(&a, "the kick to be counted", |s| u64_at(s, &["connections"]) == 2);
}
