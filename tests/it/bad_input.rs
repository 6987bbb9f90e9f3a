//! Bad input the framing tests (`websocket.rs`) and packet tests
//! (`socketio.rs`) do not cover: wrong attachment counts, event payloads
//! that are not the documented object, channel names over the limit, and
//! JSON nested thousands deep. Each closes only the offending connection
//! with the documented code; a client connected all along keeps working.

use crate::support::http::get;
use crate::support::sio::event;
use crate::support::ws::{OP_CLOSE, OP_TEXT};
use crate::support::{Sio, TestServer};

use Packet::{Binary, Text};

/// The default `channel_name_bytes_max`.
const CHANNEL_BYTES_MAX: usize = 256;

/// A client connected before the bad input, checked after it.
struct Bystander {
    sio: Sio,
}

impl Bystander {
    fn new(server: &TestServer) -> Self {
        let mut sio = Sio::connect_default(server);
        sio.join("bystander");
        sio.sentinel("bystander", "before");
        Self { sio }
    }

    /// Its next frame is the answer to a fresh round trip: nothing else
    /// reached it, and it is still served.
    fn assert_still_served(&mut self) {
        self.sio.sentinel("bystander", "after");
    }
}

/// A fresh client sends `packets` (text, or binary when `Binary`) and must
/// be closed with `code`. A payload the server refuses (1008) is preceded
/// by Socket.IO `41`, so that socket.io-client does not reconnect and send
/// the same payload again; a malformed packet (1002) is not.
fn assert_closes_with(server: &TestServer, packets: &[Packet<'_>], code: u16) {
    let mut sio = Sio::connect_default(server);
    for packet in packets {
        match packet {
            Text(text) => sio.send(text),
            Binary(bytes) => sio.ws.send_binary(bytes),
        }
    }
    if code == 1008 {
        let disconnect = sio.recv();
        assert_eq!(disconnect.opcode, OP_TEXT, "after {packets:?}: {disconnect:?}");
        assert_eq!(disconnect.text(), "41", "after {packets:?}");
    }
    let close = sio.recv();
    assert_eq!(close.opcode, OP_CLOSE, "after {packets:?}: {close:?}");
    assert_eq!(close.close_code(), Some(code), "after {packets:?}: {close:?}");
    sio.ws.expect_eof();
}

#[derive(Debug)]
enum Packet<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

#[test]
fn wrong_attachment_counts_close_1002() {
    let server = TestServer::start(2);
    let mut bystander = Bystander::new(&server);
    let one = r#"{"_placeholder":true,"num":0}"#;
    let two = r#"{"_placeholder":true,"num":1}"#;
    let announces_two_refers_to_one =
        format!(r#"452-["message",{{"channel":"a","eventName":"e","message":{one}}}]"#);
    let same_placeholder_twice =
        format!(r#"452-["message",{{"channel":"a","eventName":"e","message":[{one},{one}]}}]"#);
    let announces_one = format!(r#"451-["message",{{"channel":"a","eventName":"e","message":{one}}}]"#);
    let announces_two =
        format!(r#"452-["message",{{"channel":"a","eventName":"e","message":[{one},{two}]}}]"#);
    let cases: [&[Packet<'_>]; 5] = [
        // Fewer placeholders than announced attachments.
        &[Text(&announces_two_refers_to_one)],
        // Two placeholders, one slot referenced twice, one never.
        &[Text(&same_placeholder_twice)],
        // More binary frames than announced: the second belongs to nothing.
        &[Text(&announces_one), Binary(b"one"), Binary(b"extra")],
        // A text packet while attachments are still owed.
        &[
            Text(&announces_two),
            Binary(b"first"),
            Text(r#"42["join",{"channel":"a"}]"#),
        ],
        &[Text(&announces_one), Text(r#"42["join",{"channel":"a"}]"#)],
    ];
    for packets in cases {
        assert_closes_with(&server, packets, 1002);
    }
    bystander.assert_still_served();
}

#[test]
fn event_payloads_that_are_not_the_documented_object_close_1008() {
    let server = TestServer::start(2);
    let mut bystander = Bystander::new(&server);
    for packet in [
        r#"42["join","str"]"#,
        r#"42["join",5]"#,
        r#"42["join",null]"#,
        r#"42["join",["c"]]"#,
        r#"42["join"]"#,
        r#"42["join",{}]"#,
        r#"42["join",{"channel":5}]"#,
        r#"42["join",{"channel":null}]"#,
        r#"42["join",{"channel":{"name":"c"}}]"#,
        r#"42["join",{"channel":"c","echo":"yes"}]"#,
        r#"42["leave","str"]"#,
        r#"42["leave",{}]"#,
        r#"42["leave",{"channel":["c"]}]"#,
        r#"42["update","str"]"#,
        r#"42["update",7]"#,
        r#"42["update",null]"#,
        r#"42["message",null]"#,
        r#"42["message","hi"]"#,
        r#"42["message",[1,2]]"#,
        r#"42["message",{"channel":"c","message":1}]"#,
        r#"42["message",{"channel":"c","eventName":5,"message":1}]"#,
        r#"42["message",{"channel":5,"eventName":"e","message":1}]"#,
        r#"421["members","c"]"#,
        r#"421["members",{}]"#,
    ] {
        assert_closes_with(&server, &[Text(packet)], 1008);
    }
    bystander.assert_still_served();
}

#[test]
fn channel_names_empty_or_over_256_bytes_close_1008() {
    let server = TestServer::start(2);
    let mut bystander = Bystander::new(&server);
    let over = "c".repeat(CHANNEL_BYTES_MAX + 1);
    // 86 three-byte characters: 86 chars but 258 bytes; the limit is in bytes.
    let over_in_bytes = "€".repeat(86);
    let enormous = "c".repeat(100_000);
    for channel in ["", &over, &over_in_bytes, &enormous] {
        for packet in [
            format!(r#"42["join",{{"channel":"{channel}"}}]"#),
            format!(r#"42["leave",{{"channel":"{channel}"}}]"#),
            format!(r#"42["message",{{"channel":"{channel}","eventName":"e","message":1}}]"#),
            format!(r#"421["members",{{"channel":"{channel}"}}]"#),
        ] {
            assert_closes_with(&server, &[Text(&packet)], 1008);
        }
    }
    bystander.assert_still_served();

    // Exactly at the limit is fine, in ASCII and in multi-byte UTF-8.
    let at_limit = "c".repeat(CHANNEL_BYTES_MAX);
    let at_limit_utf8 = format!("{}a", "€".repeat(85));
    assert_eq!(at_limit_utf8.len(), CHANNEL_BYTES_MAX);
    let mut sio = Sio::connect_default(&server);
    for channel in [&at_limit, &at_limit_utf8] {
        sio.join(channel);
        sio.sentinel(channel, "fits");
    }
}

/// `[[[...]]]` or `{"a":{"a":...}}` nested `depth` deep around `1`.
fn nested(depth: usize, array: bool) -> String {
    let (open, close) = if array { ("[", "]") } else { (r#"{"a":"#, "}") };
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn deeply_nested_json_closes_only_that_connection() {
    let server = TestServer::start(2);
    let mut bystander = Bystander::new(&server);
    // A member of the target channel, so the server cannot skip the
    // message for lack of recipients.
    let mut member = Sio::connect_default(&server);
    member.join("deep");
    member.sentinel("deep", "ready");
    for depth in [10_000, 100_000] {
        for array in [true, false] {
            let value = nested(depth, array);
            let packets = [
                format!(r#"42["message",{{"channel":"deep","eventName":"e","message":{value}}}]"#),
                format!(r#"42["message",{{"eventName":"e","message":{value}}}]"#),
                format!(r#"42["update",{{"data":{value}}}]"#),
                format!(r#"42["join",{{"channel":"deep","x":{value}}}]"#),
                format!(r#"42["e",{value}]"#),
                format!(
                    r#"451-["message",{{"channel":"deep","eventName":"e","message":[{{"_placeholder":true,"num":0}},{value}]}}]"#
                ),
            ];
            for packet in &packets {
                assert_closes_with(&server, &[Text(packet)], 1002);
            }
            // In the Socket.IO connect packet's auth, before any session exists.
            let mut open = crate::support::engine_open(&server);
            open.ws
                .send_text(&format!(r#"40{{"envId":"default","x":{value}}}"#));
            let close = open.ws.read_frame();
            assert_eq!(close.opcode, OP_CLOSE, "deep auth at depth {depth}: {close:?}");
            assert_eq!(
                close.close_code(),
                Some(1002),
                "deep auth at depth {depth}: {close:?}"
            );
            open.ws.expect_eof();
        }
    }
    bystander.assert_still_served();
    // The member got none of it, and is still served too.
    member.sentinel("deep", "after");
    let health = get(server.addr(), "/health");
    assert_eq!(health.status, 200, "{health:?}");
    // A shallow message still goes through.
    let mut sender = Sio::connect_default(&server);
    sender.emit(&format!(
        r#"["message",{{"channel":"deep","eventName":"e","message":{}}}]"#,
        nested(8, true)
    ));
    member.expect(&event("e", Some("deep"), &nested(8, true)));
}
