//! Engine.IO long-polling over raw keep-alive HTTP connections: the
//! session, its requests on the wrong shard (handed to the owner), the
//! upgrade to WebSocket (also across shards) with nothing lost or
//! duplicated, one GET at a time, POST bodies over the limit, unknown sids,
//! clients that vanish, CORS and keep-alive.

use std::time::Duration;

use crate::support::poll::{handshake_target, open_sid, sid_shard, HttpConn, Packet, Polling};
use crate::support::prom::Metrics;
use crate::support::sio::event;
use crate::support::ws::{accept_key, find, random_key, WsClient, OP_TEXT};
use crate::support::{channel_event, connect_on_shard, ShardBarrier, Sio, TestServer};

fn text(s: &str) -> Packet {
    Packet::Text(s.to_string())
}

/// A polling client and a WebSocket client in one channel, on the given
/// shards; the WebSocket client joined first and saw the polling one join.
fn pair_in_channel(
    server: &TestServer,
    polling_shard: u8,
    ws_shard: u8,
    channel: &str,
) -> (Polling, String, Sio) {
    let mut barrier = ShardBarrier::new(server);
    let mut ws = connect_on_shard(server, ws_shard, "{}");
    ws.join(channel);
    ws.sentinel(channel, "joined");
    barrier.sync();
    let mut polling = Polling::open_on_shard(server, polling_shard);
    let id = polling.connect("{}");
    polling.post(&[&format!(r#"42["join",{{"channel":"{channel}"}}]"#)]);
    ws.expect(&channel_event("join", channel, &id, "null"));
    barrier.sync();
    (polling, id, ws)
}

#[test]
fn a_polling_client_is_a_member_like_any_other() {
    let server = TestServer::start(2);
    let (mut polling, id, mut ws) = pair_in_channel(&server, 0, 1, "room");
    // WebSocket → polling, text and binary.
    ws.emit(r#"["message",{"channel":"room","eventName":"hi","message":{"n":1}}]"#);
    assert_eq!(
        polling.poll_n(1),
        vec![text(&event("hi", Some("room"), r#"{"n":1}"#))]
    );
    ws.send(
        r#"451-["message",{"channel":"room","eventName":"blob","message":{"_placeholder":true,"num":0}}]"#,
    );
    ws.ws.send_binary(&[0, 1, 2, 255]);
    assert_eq!(
        polling.poll_n(2),
        vec![
            text(r#"451-["blob",{"channel":"room","message":{"_placeholder":true,"num":0}}]"#),
            Packet::Binary(vec![0, 1, 2, 255])
        ]
    );
    // Polling → WebSocket, text and binary (b + base64), several packets in
    // one POST, handled in order.
    polling.post(&[
        r#"42["message",{"channel":"room","eventName":"one","message":1}]"#,
        r#"451-["message",{"channel":"room","eventName":"two","message":{"_placeholder":true,"num":0}}]"#,
        "bAAEC",
        r#"42["message",{"channel":"room","eventName":"three","message":3}]"#,
    ]);
    ws.expect(&event("one", Some("room"), "1"));
    ws.expect(r#"451-["two",{"channel":"room","message":{"_placeholder":true,"num":0}}]"#);
    ws.expect_binary(&[0, 1, 2]);
    ws.expect(&event("three", Some("room"), "3"));
    // Member lists see it, with the id it was given.
    polling.post(&[r#"421["members",{"channel":"room"}]"#]);
    let members = polling.poll_n(1);
    let Packet::Text(ack) = &members[0] else {
        panic!("{members:?}")
    };
    assert!(
        ack.starts_with("431[") && ack.contains(&id) && ack.contains(&ws.id),
        "{ack}"
    );
    // Leaving over polling is seen by the others.
    polling.post(&["41"]);
    ws.expect(&channel_event("leave", "room", &id, "null"));
}

/// A request for a session of another shard is served by the owner (the
/// connection is handed over), and the connection's later requests are
/// then local: one hand-over, whatever follows.
#[test]
fn requests_on_the_wrong_shard_are_handed_to_the_owner() {
    let server = TestServer::start(2);
    let owner_conn = HttpConn::on_shard(&server, 0);
    let other_conn = HttpConn::on_shard(&server, 1);
    // The session lives on shard 0; its POSTs go to a shard-1 connection.
    let mut polling = Polling::open_on(&server, owner_conn, other_conn);
    assert_eq!(polling.shard(), 0);
    let before = Metrics::scrape(server.addr()).sum("ringcast_handovers_total", &[]);
    let id = polling.connect(r#"{"envId":"default"}"#);
    assert_eq!(
        crate::support::sio::shard_of(&id),
        0,
        "the member lives on the session's shard"
    );
    for n in 0..5 {
        polling.post(&[&format!(
            r#"42["message",{{"eventName":"n","message":{n},"echo":true}}]"#
        )]);
    }
    let got = polling.poll_n(5);
    let want: Vec<Packet> = (0..5).map(|n| text(&event("n", None, &n.to_string()))).collect();
    assert_eq!(got, want, "in order, each once");
    let after = Metrics::scrape(server.addr()).sum("ringcast_handovers_total", &[]);
    assert_eq!(after - before, 1, "the POST connection moved once and stayed");
    // The GETs go to the other shard too, on a new connection.
    polling.get = HttpConn::on_shard(&server, 1);
    polling.post(&[r#"42["message",{"eventName":"x","message":"y","echo":true}]"#]);
    assert_eq!(polling.poll_n(1), vec![text(&event("x", None, r#""y""#))]);
}

#[test]
fn a_second_waiting_get_closes_the_session() {
    let server = TestServer::start(2);
    let mut polling = Polling::open(&server);
    polling.connect("{}");
    let target = polling.target();
    polling.get.send("GET", &target, "", b"");
    // The first GET waits (nothing is queued); a second one arrives.
    let mut second = HttpConn::connect(server.addr());
    second
        .request("GET", &target, "", b"")
        .assert_engineio_error(400, 3);
    let first = polling.get.response();
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "1", "the waiting GET gets the close packet");
    // The session is gone.
    let mut later = HttpConn::connect(server.addr());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = later.request("GET", &target, "", b"");
        if response.status == 400 {
            response.assert_engineio_error(400, 1);
            break;
        }
        assert_eq!(response.body, "1", "{response:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "the session never went away"
        );
    }
}

#[test]
fn a_post_over_the_payload_limit_is_refused_and_ends_the_session() {
    let server = TestServer::start_with(2, &["--max-payload-bytes", "1000"], None);
    let mut barrier = ShardBarrier::new(&server);
    let mut ws = connect_on_shard(&server, 0, "{}");
    ws.join("c");
    ws.sentinel("c", "joined");
    barrier.sync();
    let mut polling = Polling::open(&server);
    let id = polling.connect("{}");
    polling.post(&[r#"42["join",{"channel":"c"}]"#]);
    ws.expect(&channel_event("join", "c", &id, "null"));
    let big = format!(
        r#"42["message",{{"channel":"c","eventName":"e","message":"{}"}}]"#,
        "x".repeat(1200)
    );
    let response = polling.post_raw(big.as_bytes());
    assert_eq!(response.status, 413, "{response:?}");
    // Nothing of it was delivered; the member left.
    ws.expect(&channel_event("leave", "c", &id, "null"));
}

#[test]
fn unknown_sids_are_400_session_id_unknown() {
    let server = TestServer::start(2);
    let mut conn = HttpConn::connect(server.addr());
    let path = server.path();
    // Well-formed sids of both shards that were never handed out, a sid
    // naming a shard that does not exist, and things that are not sids.
    for sid in [
        "AAAAAAAAAAAAAAAAAAAA",
        "AQAAAAAAAAAAAAAAAAAA",
        "BQAAAAAAAAAAAAAAAAAA",
        "nope",
        "%%%",
    ] {
        let target = format!("{path}?EIO=4&transport=polling&sid={sid}");
        conn.request("GET", &target, "", b"")
            .assert_engineio_error(400, 1);
        conn.request("POST", &target, "", b"40")
            .assert_engineio_error(400, 1);
    }
    // A WebSocket upgrade for an unknown session is refused before the 101.
    let key = random_key();
    let target = format!("{path}?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA");
    let headers = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    conn.request("GET", &target, &headers, b"")
        .assert_engineio_error(400, 1);
}

/// A polling client that stops polling stops answering pings: its session
/// ends at the ping timeout and its channels see it leave.
#[test]
fn a_polling_client_that_vanishes_is_timed_out() {
    let server = TestServer::start_with(
        2,
        &["--ping-interval-ms", "200", "--ping-timeout-ms", "300"],
        None,
    );
    let (mut polling, id, mut ws) = pair_in_channel(&server, 1, 0, "v");
    // The heartbeat travels over polling while the client polls.
    assert_eq!(polling.poll(), vec![text("2")]);
    polling.post(&["3"]);
    assert_eq!(polling.poll(), vec![text("2")]);
    polling.post(&["3"]);
    // Then it vanishes without a word.
    drop(polling);
    ws.expect(&channel_event("leave", "v", &id, "null"));
}

/// The upgrade, with the WebSocket on the other shard: messages published
/// before the probe, between the probe and `5`, and after, each arrive
/// exactly once and in order, over polling or the WebSocket.
#[test]
fn the_upgrade_across_shards_loses_and_repeats_nothing() {
    let server = TestServer::start(2);
    let (mut polling, _id, mut sender) = pair_in_channel(&server, 0, 1, "u");
    let publish = |sender: &mut Sio, n: u32| {
        sender.emit(&format!(
            r#"["message",{{"channel":"u","eventName":"n","message":{n}}}]"#
        ));
    };
    let mut received: Vec<u32> = Vec::new();
    let collect = |packets: Vec<Packet>, received: &mut Vec<u32>| {
        for p in packets {
            match p {
                Packet::Text(t) if t.starts_with(r#"42["n","#) => received.push(number(&t)),
                Packet::Text(_) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    for n in 0..3 {
        publish(&mut sender, n);
    }
    collect(polling.poll_n(3), &mut received);
    // The WebSocket of the upgrade lands on shard 1.
    let ws_conn = HttpConn::on_shard(&server, 1);
    let (stream, rest) = ws_conn.into_stream();
    assert!(rest.is_empty());
    let mut ws = upgrade_session(stream, &server, &polling.sid);
    for n in 3..6 {
        publish(&mut sender, n);
    }
    // A GET waits; the probe makes it answer (`6`, or what was queued).
    let target = polling.target();
    polling.get.send("GET", &target, "", b"");
    ws.send_text("2probe");
    let probe = ws.read_frame();
    assert_eq!((probe.opcode, probe.text()), (OP_TEXT, "3probe"));
    let waiting = polling.get.response();
    assert_eq!(waiting.status, 200);
    collect(crate::support::poll::packets(&waiting.body), &mut received);
    for n in 6..9 {
        publish(&mut sender, n);
    }
    // Let those reach the session's queue: a message to ourselves over
    // the sender's shard proves they were handled there, and the barrier
    // that the other shard delivered them.
    let mut barrier = ShardBarrier::new(&server);
    sender.sentinel("u", "fence");
    barrier.sync();
    ws.send_text("5");
    for n in 9..12 {
        publish(&mut sender, n);
    }
    // Everything not yet polled now arrives on the WebSocket.
    while received.len() < 12 {
        let frame = ws.read_frame();
        assert_eq!(frame.opcode, OP_TEXT, "{frame:?}");
        match frame.text() {
            "2" => ws.send_text("3"),
            t if t.starts_with(r#"42["n","#) => received.push(number(t)),
            _ => {}
        }
    }
    assert_eq!(received, (0..12).collect::<Vec<_>>());
    // And the upgraded session still sends: polling's POST path is gone,
    // the WebSocket carries events.
    ws.send_text(r#"42["message",{"channel":"u","eventName":"back","message":true}]"#);
    sender.expect(&event("back", Some("u"), "true"));
    let gone = polling.get.request("GET", &target, "", b"");
    assert_eq!(gone.status, 400, "{gone:?}");
}

/// The number in `42["n",{"channel":"u","message":N}]`.
fn number(packet: &str) -> u32 {
    let start = packet.find(r#""message":"#).unwrap_or_else(|| panic!("{packet}")) + 10;
    packet[start..packet.len() - 2]
        .parse()
        .unwrap_or_else(|_| panic!("{packet}"))
}

/// Sends the WebSocket upgrade of session `sid` on `stream` and returns
/// the WebSocket (no open packet: the session exists).
fn upgrade_session(mut stream: std::net::TcpStream, server: &TestServer, sid: &str) -> WsClient {
    use std::io::{Read, Write};
    let key = random_key();
    let request = format!(
        "GET {}?EIO=4&transport=websocket&sid={sid} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.path(),
        server.addr()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).expect("upgrade answer");
        assert!(
            n > 0,
            "closed before the upgrade answer: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains(&accept_key(&key)), "{head}");
    WsClient::from_upgraded(stream, bytes.split_off(end + 4))
}

#[test]
fn socket_io_client_defaults_upgrade_on_the_same_shard_too() {
    let server = TestServer::start(1);
    let mut polling = Polling::open(&server);
    let id = polling.connect("{}");
    let (stream, _) = HttpConn::connect(server.addr()).into_stream();
    let mut ws = upgrade_session(stream, &server, &polling.sid);
    ws.send_text("2probe");
    assert_eq!(ws.read_frame().text(), "3probe");
    ws.send_text("5");
    ws.send_text(r#"42["message",{"eventName":"me","message":1,"echo":true}]"#);
    let frame = ws.read_frame();
    assert_eq!(
        frame.text(),
        event("me", None, "1"),
        "member {id} answered over the WebSocket"
    );
}

#[test]
fn a_failed_probe_leaves_the_session_polling() {
    let server = TestServer::start(2);
    let mut polling = Polling::open(&server);
    polling.connect("{}");
    let (stream, _) = HttpConn::connect(server.addr()).into_stream();
    let mut ws = upgrade_session(stream, &server, &polling.sid);
    ws.send_text("not a probe");
    ws.expect_close_code(1002);
    polling.post(&[r#"42["message",{"eventName":"still","message":1,"echo":true}]"#]);
    assert_eq!(polling.poll_n(1), vec![text(&event("still", None, "1"))]);
}

#[test]
fn cors_preflight_and_headers() {
    let server = TestServer::start(2);
    let mut conn = HttpConn::connect(server.addr());
    let preflight = conn.request(
        "OPTIONS",
        &handshake_target(&server),
        "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type\r\n",
        b"",
    );
    assert_eq!(preflight.status, 204, "{preflight:?}");
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        preflight.header("access-control-allow-methods"),
        Some("GET, POST, OPTIONS")
    );
    assert_eq!(
        preflight.header("access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(
        preflight.header("access-control-allow-credentials"),
        None,
        "off unless configured"
    );
    let open = conn.request(
        "GET",
        &handshake_target(&server),
        "Origin: https://app.example\r\n",
        b"",
    );
    assert_eq!(open.header("access-control-allow-origin"), Some("*"));
    assert!(sid_shard(&open_sid(&open)) < 2);

    let listed = TestServer::start_with(
        1,
        &[],
        Some("[server]\ncors_origins = [\"https://ok.example\"]\ncors_credentials = true\n"),
    );
    let mut conn = HttpConn::connect(listed.addr());
    let ok = conn.request(
        "GET",
        &handshake_target(&listed),
        "Origin: https://ok.example\r\n",
        b"",
    );
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("https://ok.example")
    );
    assert_eq!(ok.header("access-control-allow-credentials"), Some("true"));
    let other = conn.request(
        "GET",
        &handshake_target(&listed),
        "Origin: https://evil.example\r\n",
        b"",
    );
    assert_eq!(other.status, 200, "CORS is for browsers to enforce");
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[test]
fn http_keep_alive_serves_request_after_request() {
    let server = TestServer::start(2);
    let mut conn = HttpConn::connect(server.addr());
    for _ in 0..3 {
        let health = conn.request("GET", "/health", "", b"");
        assert_eq!(health.status, 200);
        assert_eq!(health.header("connection"), Some("keep-alive"));
    }
    let not_found = conn.request("GET", "/nope", "", b"");
    assert_eq!(not_found.status, 404);
    // A body the answer did not need is skipped, not read as the next request.
    let refused = conn.request("POST", "/nope", "", b"GET /health HTTP/1.1\r\n\r\n");
    assert_eq!(refused.status, 404);
    let health = conn.request("GET", "/metrics", "", b"");
    assert_eq!(health.status, 200, "{health:?}");
    let health = conn.request("GET", "/health", "Connection: close\r\n", b"");
    assert_eq!(health.header("connection"), Some("close"));
    assert!(
        conn.closed_within(Duration::from_secs(5)),
        "closed after Connection: close"
    );
}

/// A kicked polling client gets `41` alone (socket.io-client then reports
/// "io server disconnect" and does not reconnect), and the close packet on
/// its next GET.
#[test]
fn a_kick_reaches_a_polling_client_before_the_close_packet() {
    let server = TestServer::start(2);
    let mut polling = Polling::open(&server);
    polling.connect("{}");
    let mut admin = HttpConn::connect(server.addr());
    let token = crate::support::server::MASTER_TOKEN;
    let put = admin.request(
        "PUT",
        "/api/environments/default",
        &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        br#"{"enabled":false}"#,
    );
    assert_eq!(put.status, 200, "{put:?}");
    assert_eq!(polling.poll_n(1), vec![text("41")]);
    assert_eq!(polling.poll(), vec![text("1")]);
}

/// A kick between the probe and `5`: the client paused polling (its GET
/// was answered `6`) and no GET will come, so the `41` must reach it on
/// the WebSocket once it sends `5` (socket.io-client listens there from
/// then on), before the connection ends.
#[test]
fn a_kick_during_the_upgrade_reaches_the_client_on_the_websocket() {
    let server = TestServer::start(2);
    let mut polling = Polling::open_on_shard(&server, 0);
    polling.connect("{}");
    let (stream, _) = HttpConn::on_shard(&server, 1).into_stream();
    let mut ws = upgrade_session(stream, &server, &polling.sid);
    let target = polling.target();
    polling.get.send("GET", &target, "", b"");
    ws.send_text("2probe");
    assert_eq!(ws.read_frame().text(), "3probe");
    let waiting = polling.get.response();
    assert_eq!((waiting.status, waiting.body.as_str()), (200, "6"));

    let mut admin = HttpConn::connect(server.addr());
    let token = crate::support::server::MASTER_TOKEN;
    let put = admin.request(
        "PUT",
        "/api/environments/default",
        &format!("Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"),
        br#"{"enabled":false}"#,
    );
    assert_eq!(put.status, 200, "{put:?}");
    ws.send_text("5");
    let frame = ws.read_frame();
    assert_eq!((frame.opcode, frame.text()), (OP_TEXT, "41"), "{frame:?}");
    ws.expect_eof();
}
