//! Socket.IO v5 on namespace `/`: connect and its socket id, connect_error
//! for other namespaces, `41` disconnect, and malformed packets closing the
//! connection.

use sonic_rs::{JsonValueTrait, Value};

use crate::support::sio::{assert_socket_id, event};
use crate::support::{channel_event, engine_open, join_all, member, ShardBarrier, Sio, TestServer};

#[test]
fn connect_returns_a_socket_id_distinct_from_the_engine_sid() {
    let server = TestServer::start(2);
    let sio = Sio::connect(&server, "{}");
    assert_socket_id(&sio.id);
    assert_socket_id(&sio.engine_sid);
    assert_ne!(sio.id, sio.engine_sid);
}

#[test]
fn bare_connect_packet_without_auth_connects() {
    let server = TestServer::start(2);
    // socket.io-client sends `40` with no payload when no auth is configured.
    let mut sio = Sio::connect(&server, "");
    assert_ne!(sio.id, sio.engine_sid);
    sio.join("bare");
    sio.sentinel("bare", "ok");
}

#[test]
fn socket_ids_are_unique_and_new_on_every_reconnect() {
    let server = TestServer::start(2);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let sio = Sio::connect_default(&server);
        ids.push(sio.id.clone());
        ids.push(sio.engine_sid.clone());
        // Dropped here: the next iteration is a reconnect of the same client.
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[test]
fn other_namespace_gets_connect_error() {
    let server = TestServer::start(2);
    let mut open = engine_open(&server);
    open.ws.send_text("40/admin,{}");
    let reply = open.ws.read_frame();
    let reply = reply.text();
    let json = reply
        .strip_prefix("44/admin,")
        .unwrap_or_else(|| panic!("expected a connect_error for /admin, got {reply:?}"));
    let value: Value = sonic_rs::from_str(json).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    assert!(
        value.get("message").is_some_and(|m| m.is_str()),
        "connect_error without a string message: {reply:?}"
    );
}

#[test]
fn disconnect_packet_leaves_every_channel() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut stays = Sio::connect_default(&server);
    let mut leaves = Sio::connect_default(&server);
    let mut master = Sio::master(&server);
    join_all(&mut barrier, &mut [&mut stays, &mut leaves], "one");
    join_all(&mut barrier, &mut [&mut leaves, &mut stays], "two");

    leaves.send("41");
    // One leave per channel, in no particular order between channels.
    let mut got = [stays.recv_text(), stays.recv_text()];
    got.sort();
    let mut want = [
        channel_event("leave", "one", &leaves.id, "null"),
        channel_event("leave", "two", &leaves.id, "null"),
    ];
    want.sort();
    assert_eq!(got, want);

    master.send(r#"427["get_members",{"envId":"default","channel":"one"}]"#);
    master.expect(&format!("437[[{}]]", member(&stays.id, "null")));
}

fn assert_packet_closes(server: &TestServer, packet: &str) {
    let mut sio = Sio::connect_default(server);
    sio.send(packet);
    let close = sio.ws.expect_closed();
    if let Some(close) = close {
        // A close frame is optional, but if sent it must not claim success.
        assert_ne!(close.close_code(), Some(1000), "packet {packet:?}: {close:?}");
    }
}

#[test]
fn bad_packet_type_closes_the_connection() {
    let server = TestServer::start(2);
    for packet in ["47[\"x\"]", "49", "4x", "4"] {
        assert_packet_closes(&server, packet);
    }
}

#[test]
fn bad_json_closes_the_connection() {
    let server = TestServer::start(2);
    for packet in [
        r#"42["message",{"#,
        r#"42["join",{"channel":"c"}"#,
        r#"42["join",{"channel":"c"}]x"#,
        "42nope",
        r#"40{"envId":"#,
    ] {
        assert_packet_closes(&server, packet);
    }
}

#[test]
fn event_payload_that_is_not_a_named_array_closes_the_connection() {
    let server = TestServer::start(2);
    for packet in [r#"42{"a":1}"#, "42[]", "42\"join\"", "42"] {
        assert_packet_closes(&server, packet);
    }
}

#[test]
fn bad_ack_id_closes_the_connection() {
    let server = TestServer::start(2);
    for packet in [
        r#"4212a["join",{"channel":"c"}]"#,
        r#"42-1["join",{"channel":"c"}]"#,
    ] {
        assert_packet_closes(&server, packet);
    }
}

// socket.io's `Client.onpacket` closes the connection on any packet for a
// namespace the client is not connected to, and on a second CONNECT for one
// it is ("invalid state"); a drop-in must do the same.

#[test]
fn event_before_connect_closes_the_connection() {
    let server = TestServer::start(2);
    let mut open = engine_open(&server);
    open.ws.send_text(r#"42["join",{"channel":"early"}]"#);
    open.ws.expect_closed();
}

#[test]
fn event_for_another_namespace_closes_the_connection() {
    let server = TestServer::start(2);
    assert_packet_closes(&server, r#"42/admin,["join",{"channel":"c"}]"#);
}

#[test]
fn disconnect_for_another_namespace_closes_the_connection() {
    let server = TestServer::start(2);
    assert_packet_closes(&server, "41/admin,");
}

#[test]
fn second_connect_closes_the_connection() {
    let server = TestServer::start(2);
    assert_packet_closes(&server, "40{}");
}

#[test]
fn unknown_event_is_ignored() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.emit(r#"["no-such-event",{"x":1}]"#);
    sio.emit(r#"["whatever"]"#);
    sio.join("u");
    sio.sentinel("u", "alive");
}

#[test]
fn binary_event_without_its_attachment_is_not_delivered_early() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut sender = Sio::connect_default(&server);
    let mut receiver = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut sender, &mut receiver], "att");
    // Two attachments announced; the event is complete only after both.
    sender.send(
        r#"452-["message",{"channel":"att","eventName":"two","message":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}]"#,
    );
    sender.ws.send_binary(b"first");
    sender.ws.send_binary(b"second");
    receiver.expect(
        r#"452-["two",{"channel":"att","message":[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]}]"#,
    );
    receiver.expect_binary(b"first");
    receiver.expect_binary(b"second");
    receiver.sentinel("att", "after");
    sender.expect(&event("after", Some("att"), "0"));
}

#[test]
fn unannounced_binary_frame_closes_the_connection() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_binary(&[1, 2, 3]);
    sio.ws.expect_closed();
}

#[test]
fn placeholder_out_of_range_closes_the_connection() {
    let server = TestServer::start(2);
    for packet in [
        r#"451-["message",{"eventName":"e","message":{"_placeholder":true,"num":1}}]"#,
        r#"451-["message",{"eventName":"e","message":{"_placeholder":true,"num":-1}}]"#,
        r#"45x-["message",{"eventName":"e","message":1}]"#,
        r#"451["message",{"eventName":"e","message":{"_placeholder":true,"num":0}}]"#,
    ] {
        assert_packet_closes(&server, packet);
    }
}
