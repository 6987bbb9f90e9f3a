//! Engine.IO v4 over WebSocket: the open packet, the server's heartbeat,
//! `1` close, `6` noop, unknown packet types and maxPayload.

use std::time::{Duration, Instant};

use crate::support::sio::{assert_socket_id, event};
use crate::support::ws::{OP_CONTINUATION, OP_TEXT};
use crate::support::{channel_event, engine_open, join_all, ShardBarrier, Sio, TestServer};

/// Small heartbeat so timing tests run in well under a second per cycle.
const FAST_HEARTBEAT: [&str; 4] = ["--ping-interval-ms", "200", "--ping-timeout-ms", "300"];

fn open_packet(sid: &str, ping_interval_ms: u64, ping_timeout_ms: u64, max_payload: u64) -> String {
    format!(
        r#"0{{"sid":"{sid}","upgrades":[],"pingInterval":{ping_interval_ms},"pingTimeout":{ping_timeout_ms},"maxPayload":{max_payload}}}"#
    )
}

#[test]
fn open_packet_has_the_configured_fields() {
    let server = TestServer::start_with(
        2,
        &[
            "--ping-interval-ms",
            "1500",
            "--ping-timeout-ms",
            "2500",
            "--max-payload-bytes",
            "4321",
        ],
        None,
    );
    let open = engine_open(&server);
    assert_socket_id(&open.sid);
    assert_eq!(open.packet, open_packet(&open.sid, 1500, 2500, 4321));
}

#[test]
fn open_packet_defaults_follow_socket_io() {
    let server = TestServer::start(2);
    let open = engine_open(&server);
    assert_socket_id(&open.sid);
    assert_eq!(open.packet, open_packet(&open.sid, 25000, 20000, 1_000_000));
}

#[test]
fn engine_sids_are_unique() {
    let server = TestServer::start(2);
    let mut sids: Vec<String> = (0..20).map(|_| engine_open(&server).sid).collect();
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), 20, "{sids:?}");
}

#[test]
fn server_pings_every_interval_and_keeps_a_ponging_client() {
    let server = TestServer::start_with(2, &FAST_HEARTBEAT, None);
    let mut open = engine_open(&server);
    let mut last_ping = Instant::now();
    // Six cycles: ~1.2 s, four times the ping timeout, so a server that
    // ignored our pongs would have dropped us by now.
    for cycle in 0..6 {
        let frame = open.ws.read_frame_within(Duration::from_secs(3));
        let frame = frame.unwrap_or_else(|error| panic!("ping {cycle}: {error:?}"));
        assert_eq!(
            (frame.opcode, frame.payload.as_slice()),
            (OP_TEXT, &b"2"[..]),
            "ping {cycle}"
        );
        let gap = last_ping.elapsed();
        // The first gap is measured from the open packet.
        assert!(
            gap >= Duration::from_millis(120),
            "ping {cycle} after only {gap:?}"
        );
        last_ping = Instant::now();
        open.ws.send_text("3");
    }
    // Still a working session.
    let sio = Sio::connect_after_open(open, "{}");
    assert_socket_id(&sio.id);
}

#[test]
fn missing_pong_drops_the_connection() {
    let server = TestServer::start_with(2, &FAST_HEARTBEAT, None);
    let mut open = engine_open(&server);
    let frame = open
        .ws
        .read_frame_within(Duration::from_secs(3))
        .expect("first ping");
    assert_eq!(frame.text(), "2");
    let ping_received = Instant::now();
    open.ws.expect_closed();
    let waited = ping_received.elapsed();
    // The server measures from sending; we from receiving, so allow some slack below 300 ms.
    assert!(
        waited >= Duration::from_millis(150),
        "dropped after only {waited:?}"
    );
    assert!(waited <= Duration::from_secs(3), "dropped after {waited:?}");
}

#[test]
fn missing_pong_after_socket_io_connect_sends_channel_leave() {
    let server = TestServer::start_with(2, &FAST_HEARTBEAT, None);
    // The barrier's listeners get dropped too once idle; they are only
    // needed for the first few milliseconds.
    let mut barrier = ShardBarrier::new(&server);
    // A answers pings (Sio::recv does), B never reads and never pongs.
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    a.join("hb");
    a.sentinel("hb", "a-joined");
    barrier.sync();
    b.join("hb");
    a.expect(&channel_event("join", "hb", &b.id, "null"));
    let b_id = b.id.clone();
    a.expect(&channel_event("leave", "hb", &b_id, "null"));
    b.ws.expect_closed();
}

#[test]
fn close_packet_closes_the_connection_and_leaves_channels() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut stays = Sio::connect_default(&server);
    let mut closes = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut stays, &mut closes], "c");
    closes.send("1");
    closes.ws.expect_closed();
    stays.expect(&channel_event("leave", "c", &closes.id, "null"));
}

#[test]
fn noop_packet_is_ignored() {
    let server = TestServer::start(2);
    let mut open = engine_open(&server);
    open.ws.send_text("6");
    let mut sio = Sio::connect_after_open(open, "{}");
    sio.send("6");
    sio.join("noop");
    sio.sentinel("noop", "after-noop");
}

#[test]
fn unknown_engine_packet_type_closes_the_connection() {
    let server = TestServer::start(2);
    for packet in ["9", "7x", "x"] {
        let mut sio = Sio::connect_default(&server);
        sio.send(packet);
        sio.ws.expect_closed();
    }
}

#[test]
fn message_over_max_payload_closes_1009() {
    let server = TestServer::start_with(2, &["--max-payload-bytes", "1000"], None);
    let mut sio = Sio::connect_default(&server);
    sio.join("big");
    // Just under the limit: delivered like any other message.
    let under = format!("\"{}\"", "u".repeat(850));
    sio.emit(&format!(
        r#"["message",{{"channel":"big","eventName":"e","message":{under},"echo":true}}]"#
    ));
    sio.expect(&event("e", Some("big"), &under));
    let over = format!("\"{}\"", "o".repeat(2000));
    sio.emit(&format!(
        r#"["message",{{"channel":"big","eventName":"e","message":{over}}}]"#
    ));
    sio.ws.expect_close_code(1009);
}

#[test]
fn binary_frame_over_max_payload_closes_1009() {
    let server = TestServer::start_with(2, &["--max-payload-bytes", "1000"], None);
    let mut sio = Sio::connect_default(&server);
    sio.send(r#"451-["message",{"channel":"big","eventName":"b","message":{"_placeholder":true,"num":0}}]"#);
    sio.ws.send_binary(&[7u8; 2000]);
    sio.ws.expect_close_code(1009);
}

#[test]
fn message_of_exactly_max_payload_is_accepted() {
    let server = TestServer::start_with(2, &["--max-payload-bytes", "1000"], None);
    let mut sio = Sio::connect_default(&server);
    sio.join("edge");
    let envelope = r#"42["message",{"channel":"edge","eventName":"e","message":"","echo":true}]"#;
    let filler = "m".repeat(1000 - envelope.len());
    let packet = envelope.replace(r#""message":"""#, &format!(r#""message":"{filler}""#));
    assert_eq!(packet.len(), 1000);
    sio.send(&packet);
    sio.expect(&event("e", Some("edge"), &format!("\"{filler}\"")));
    // One byte more is over the limit.
    sio.send(&format!("{packet} "));
    sio.ws.expect_close_code(1009);
}

#[test]
fn fragmented_message_over_max_payload_closes_1009() {
    let server = TestServer::start_with(2, &["--max-payload-bytes", "1000"], None);
    let mut sio = Sio::connect_default(&server);
    // Each fragment is small; only their sum is over the limit.
    sio.ws
        .send_frame_with(false, 0, OP_TEXT, br#"42["message",{"eventName":"e","message":""#);
    for _ in 0..3 {
        sio.ws
            .send_frame_with(false, 0, OP_CONTINUATION, "f".repeat(400).as_bytes());
    }
    sio.ws.send_frame_with(true, 0, OP_CONTINUATION, br#""}]"#);
    sio.ws.expect_close_code(1009);
}
