//! The Agnost semantics table with exact frames: join / leave / update /
//! message (channel and environment-wide), echo rules, binary messages,
//! channel:leave on disconnect, and environment isolation.
//!
//! "Gets nothing" is asserted with a sentinel: the same sender then
//! publishes something the client must see, and that must be the very next
//! frame (messages from one sender arrive in order).

use crate::support::sio::event;
use crate::support::{channel_event, join_all, ShardBarrier, Sio, TestServer};

/// A channel only `sio` is in, so its sentinels reach nobody else.
fn private_channel(sio: &mut Sio) -> String {
    let channel = format!("private-{}", sio.id);
    sio.join(&channel);
    channel
}

#[test]
fn join_notifies_other_members_but_not_the_joiner() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    a.join("c");
    a.sentinel("c", "a-joined");
    barrier.sync();
    b.join("c");
    a.expect(&channel_event("join", "c", &b.id, "null"));
    b.sentinel("c", "b-joined");
    a.expect(&event("b-joined", Some("c"), "0"));
}

#[test]
fn join_with_echo_notifies_the_joiner_too() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    a.join("c");
    a.sentinel("c", "a-joined");
    barrier.sync();
    b.emit(r#"["join",{"channel":"c","echo":true}]"#);
    b.expect(&channel_event("join", "c", &b.id, "null"));
    a.expect(&channel_event("join", "c", &b.id, "null"));
}

#[test]
fn joining_twice_is_a_noop() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut b], "c");
    b.emit(r#"["join",{"channel":"c","echo":true}]"#);
    b.sentinel("c", "after-rejoin");
    a.expect(&event("after-rejoin", Some("c"), "0"));
}

#[test]
fn leave_notifies_other_members_but_not_the_leaver() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut b], "c");
    let b_private = private_channel(&mut b);
    b.leave("c");
    a.expect(&channel_event("leave", "c", &b.id, "null"));
    b.sentinel(&b_private, "b-left");
    // Messages to the channel no longer reach the leaver.
    a.sentinel("c", "a-alone");
    b.sentinel(&b_private, "b-still-alone");
}

#[test]
fn leave_with_echo_notifies_the_leaver_too() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut b], "c");
    b.emit(r#"["leave",{"channel":"c","echo":true}]"#);
    b.expect(&channel_event("leave", "c", &b.id, "null"));
    a.expect(&channel_event("leave", "c", &b.id, "null"));
}

#[test]
fn leaving_a_channel_not_joined_is_a_noop() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    a.join("c");
    a.sentinel("c", "a-joined");
    barrier.sync();
    b.emit(r#"["leave",{"channel":"c","echo":true}]"#);
    b.join("c");
    // Had the leave done anything, a channel:leave would come first.
    a.expect(&channel_event("join", "c", &b.id, "null"));
    b.sentinel("c", "b-joined");
    a.expect(&event("b-joined", Some("c"), "0"));
}

#[test]
fn update_notifies_every_joined_channel_with_the_raw_data() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    let mut c = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut b], "c1");
    join_all(&mut barrier, &mut [&mut c, &mut b], "c2");
    let data = r#"{"name":"bob","tags":["x",1.50],"nested":{"k":null},"s":"\u00e9"}"#;
    b.emit(&format!(r#"["update",{{"data":{data}}}]"#));
    a.expect(&channel_event("update", "c1", &b.id, data));
    c.expect(&channel_event("update", "c2", &b.id, data));
    b.sentinel("c1", "after-update");
    a.expect(&event("after-update", Some("c1"), "0"));
}

#[test]
fn update_with_echo_notifies_the_updater_too() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut b], "c");
    b.emit(r#"["update",{"data":[1,"two"],"echo":true}]"#);
    b.expect(&channel_event("update", "c", &b.id, r#"[1,"two"]"#));
    a.expect(&channel_event("update", "c", &b.id, r#"[1,"two"]"#));
}

#[test]
fn profile_data_shows_in_later_joins_and_leaves() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    a.join("c");
    a.sentinel("c", "a-joined");
    barrier.sync();
    // Not in any channel yet: the update goes nowhere but is remembered.
    b.emit(r#"["update",{"data":{"name":"bob"}}]"#);
    b.join("c");
    a.expect(&channel_event("join", "c", &b.id, r#"{"name":"bob"}"#));
    b.leave("c");
    a.expect(&channel_event("leave", "c", &b.id, r#"{"name":"bob"}"#));
}

#[test]
fn channel_message_is_spliced_byte_for_byte() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut member = Sio::connect_default(&server);
    let mut sender = Sio::connect_default(&server);
    let mut outsider = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut member, &mut sender], "c");
    outsider.join("elsewhere");
    for message in [
        r#"{"a":[1,2,{"b":"x"}]}"#,
        r#"{"z":1.50,"e":2E3,"s":"\u00e9\"q\\","u":"😀"}"#,
        r#"{ "spaced" : [ 1 , 2 ] }"#,
        "-0.0",
        "\"just a string\"",
        "null",
        "[]",
    ] {
        sender.emit(&format!(
            r#"["message",{{"channel":"c","eventName":"evt","message":{message}}}]"#
        ));
        member.expect(&event("evt", Some("c"), message));
    }
    // Neither the sender nor a non-member got any of them.
    sender.emit(r#"["message",{"eventName":"mark","message":1,"echo":true}]"#);
    sender.expect(&event("mark", None, "1"));
    member.expect(&event("mark", None, "1"));
    outsider.expect(&event("mark", None, "1"));
}

#[test]
fn message_echo_flag_overrides_the_connection_default() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut plain = Sio::connect_default(&server);
    let mut echoing = Sio::connect(&server, r#"{"echoMessages":true}"#);
    plain.join("c");
    plain.sentinel("c", "plain-joined");
    barrier.sync();
    // An explicit echo false, so the join itself does not come back.
    echoing.emit(r#"["join",{"channel":"c","echo":false}]"#);
    plain.expect(&channel_event("join", "c", &echoing.id, "null"));

    // Connection default true: the sender gets its own message.
    echoing.emit(r#"["message",{"channel":"c","eventName":"e1","message":1}]"#);
    echoing.expect(&event("e1", Some("c"), "1"));
    plain.expect(&event("e1", Some("c"), "1"));
    // Per-message false overrides it.
    echoing.emit(r#"["message",{"channel":"c","eventName":"e2","message":2,"echo":false}]"#);
    plain.expect(&event("e2", Some("c"), "2"));
    // Default false (echoMessages omitted): skipped unless echo is true.
    plain.emit(r#"["message",{"channel":"c","eventName":"e3","message":3}]"#);
    echoing.expect(&event("e3", Some("c"), "3"));
    plain.emit(r#"["message",{"channel":"c","eventName":"e4","message":4,"echo":true}]"#);
    plain.expect(&event("e4", Some("c"), "4"));
    echoing.expect(&event("e4", Some("c"), "4"));
    // The echoing connection's next frame proves e2 did not come back to it.
    echoing.emit(r#"["message",{"channel":"c","eventName":"e5","message":5}]"#);
    echoing.expect(&event("e5", Some("c"), "5"));
    plain.expect(&event("e5", Some("c"), "5"));
}

#[test]
fn explicit_echo_messages_false_skips_the_sender() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect(&server, r#"{"envId":"default","echoMessages":false}"#);
    let mut b = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut b], "c");
    a.emit(r#"["message",{"channel":"c","eventName":"e","message":1}]"#);
    b.expect(&event("e", Some("c"), "1"));
    a.sentinel("c", "mark");
    b.expect(&event("mark", Some("c"), "0"));
}

#[test]
fn environment_wide_message_reaches_everyone_but_the_sender() {
    let server = TestServer::start(2);
    let mut in_channel = Sio::connect_default(&server);
    let mut in_none = Sio::connect_default(&server);
    let mut sender = Sio::connect_default(&server);
    in_channel.join("c");
    in_channel.sentinel("c", "joined");
    let sender_private = private_channel(&mut sender);
    sender.emit(r#"["message",{"eventName":"all","message":{"k":[1,"v"]}}]"#);
    in_channel.expect(&event("all", None, r#"{"k":[1,"v"]}"#));
    in_none.expect(&event("all", None, r#"{"k":[1,"v"]}"#));
    sender.sentinel(&sender_private, "sender-mark");
}

#[test]
fn binary_message_is_forwarded_as_an_attachment() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut receiver = Sio::connect_default(&server);
    let mut sender = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut receiver, &mut sender], "c");
    let bytes = [0u8, 1, 2, 0x7F, 0x80, 0xFE, 0xFF];
    sender
        .send(r#"451-["message",{"channel":"c","eventName":"bin","message":{"_placeholder":true,"num":0}}]"#);
    sender.ws.send_binary(&bytes);
    receiver.expect(r#"451-["bin",{"channel":"c","message":{"_placeholder":true,"num":0}}]"#);
    receiver.expect_binary(&bytes);
    // A text message afterwards is a plain event again.
    sender.sentinel("c", "text-again");
    receiver.expect(&event("text-again", Some("c"), "0"));
}

#[test]
fn binary_message_with_echo_and_environment_wide() {
    let server = TestServer::start(2);
    let mut receiver = Sio::connect_default(&server);
    let mut sender = Sio::connect_default(&server);
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    sender.send(r#"451-["message",{"eventName":"bin","message":{"file":{"_placeholder":true,"num":0},"name":"f"},"echo":true}]"#);
    sender.ws.send_binary(&big);
    let expected =
        r#"451-["bin",{"channel":null,"message":{"file":{"_placeholder":true,"num":0},"name":"f"}}]"#;
    for client in [&mut receiver, &mut sender] {
        client.expect(expected);
        client.expect_binary(&big);
    }
}

#[test]
fn disconnect_sends_channel_leave_to_every_channel() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = Sio::connect_default(&server);
    let mut c = Sio::connect_default(&server);
    let mut gone = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut gone], "c1");
    join_all(&mut barrier, &mut [&mut c, &mut gone], "c2");
    gone.emit(r#"["update",{"data":{"bye":true}}]"#);
    a.expect(&channel_event("update", "c1", &gone.id, r#"{"bye":true}"#));
    c.expect(&channel_event("update", "c2", &gone.id, r#"{"bye":true}"#));
    let gone_id = gone.id.clone();
    drop(gone);
    a.expect(&channel_event("leave", "c1", &gone_id, r#"{"bye":true}"#));
    c.expect(&channel_event("leave", "c2", &gone_id, r#"{"bye":true}"#));
}

const TWO_ENVIRONMENTS: &str = r#"
[[environments]]
id = "default"
enabled = true

[[environments]]
id = "other"
enabled = true
echo_messages = true
"#;

#[test]
fn environments_are_isolated() {
    let server = TestServer::start_with(2, &[], Some(TWO_ENVIRONMENTS));
    let mut barrier = ShardBarrier::new(&server);
    let mut default_a = Sio::connect_default(&server);
    let mut default_b = Sio::connect(&server, r#"{"envId":"default"}"#);
    let mut other = Sio::connect(&server, r#"{"envId":"other"}"#);
    join_all(&mut barrier, &mut [&mut default_a, &mut default_b], "c");
    // Same channel name, other environment: a different channel.
    other.emit(r#"["join",{"channel":"c","echo":false}]"#);
    default_b.emit(r#"["message",{"channel":"c","eventName":"ch","message":1}]"#);
    default_b.emit(r#"["message",{"eventName":"env","message":2}]"#);
    default_a.expect(&event("ch", Some("c"), "1"));
    default_a.expect(&event("env", None, "2"));
    // `other` defaults to echo on, so its own message is its next frame.
    other.emit(r#"["message",{"channel":"c","eventName":"mine","message":3}]"#);
    other.expect(&event("mine", Some("c"), "3"));
    default_b.sentinel("c", "mark");
    default_a.expect(&event("mark", Some("c"), "0"));
}
