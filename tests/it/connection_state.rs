//! Bounded per-connection state: `channels_per_connection_max` and
//! `profile_bytes_max`. Over either, the client gets an `error` event with a
//! code, nothing changes, and the connection stays and keeps working.

use crate::support::sio::event;
use crate::support::{channel_event, member, Sio, TestServer};

fn join_echo(sio: &mut Sio, channel: &str) {
    sio.emit(&format!(r#"["join",{{"channel":"{channel}","echo":true}}]"#));
}

fn channel_limit_error(max: usize, channel: &str) -> String {
    format!(
        r#"42["error",{{"code":"channel_limit_exceeded","message":"A connection may be in at most {max} channels; leave one first","channel":"{channel}"}}]"#
    )
}

#[test]
fn a_join_beyond_the_channel_limit_gets_an_error_and_joins_nothing() {
    let server = TestServer::start_with(2, &[], Some("[server]\nchannels_per_connection_max = 2\n"));
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    join_echo(&mut b, "third");
    b.expect(&channel_event("join", "third", &b.id.clone(), "null"));

    for channel in ["first", "second"] {
        join_echo(&mut a, channel);
        a.expect(&channel_event("join", channel, &a.id.clone(), "null"));
    }
    join_echo(&mut a, "third");
    a.expect(&channel_limit_error(2, "third"));
    // The connection stays and works; b never heard a join, and a is not a
    // member of "third": a message there reaches b only.
    a.sentinel("first", "alive");
    a.emit(r#"["message",{"channel":"third","eventName":"m","message":1,"echo":true}]"#);
    b.expect(&event("m", Some("third"), "1"));
    a.sentinel("first", "nothing-from-third");

    // A leave makes room.
    a.emit(r#"["leave",{"channel":"second"}]"#);
    join_echo(&mut a, "third");
    let a_id = a.id.clone();
    a.expect(&channel_event("join", "third", &a_id, "null"));
    b.expect(&channel_event("join", "third", &a_id, "null"));
}

#[test]
fn by_default_a_connection_may_be_in_128_channels() {
    let server = TestServer::start(2);
    let mut a = Sio::connect_default(&server);
    let id = a.id.clone();
    for i in 0..128 {
        let channel = format!("c{i}");
        join_echo(&mut a, &channel);
        a.expect(&channel_event("join", &channel, &id, "null"));
    }
    join_echo(&mut a, "c128");
    a.expect(&channel_limit_error(128, "c128"));
}

#[test]
fn a_profile_over_the_limit_gets_an_error_and_changes_nothing() {
    let server = TestServer::start(2);
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    let a_id = a.id.clone();
    join_echo(&mut a, "room");
    a.expect(&channel_event("join", "room", &a_id, "null"));
    join_echo(&mut b, "room");
    b.expect(&channel_event("join", "room", &b.id.clone(), "null"));
    a.expect(&channel_event("join", "room", &b.id.clone(), "null"));

    a.emit(r#"["update",{"data":{"name":"ann"}}]"#);
    b.expect(&channel_event("update", "room", &a_id, r#"{"name":"ann"}"#));

    // 8,193 bytes of JSON: one over the default 8 KiB.
    let data = format!(r#""{}""#, "x".repeat(8191));
    a.emit(&format!(r#"["update",{{"data":{data}}}]"#));
    a.expect(
        r#"42["error",{"code":"profile_too_large","message":"The profile is 8193 bytes; at most 8192 are allowed"}]"#,
    );
    // Nothing changed: b heard no update, and the member list shows the old
    // profile.
    a.send(r#"421["members",{"channel":"room"}]"#);
    let ack = a.recv_text();
    let listed = [member(&a_id, r#"{"name":"ann"}"#), member(&b.id, "null")];
    let either = [
        format!("431[[{},{}]]", listed[0], listed[1]),
        format!("431[[{},{}]]", listed[1], listed[0]),
    ];
    assert!(either.contains(&ack), "member list {ack}");
    a.sentinel("room", "after");
    b.expect(&event("after", Some("room"), "0"));

    // At the limit exactly it is accepted.
    let data = format!(r#""{}""#, "y".repeat(8190));
    a.emit(&format!(r#"["update",{{"data":{data}}}]"#));
    b.expect(&channel_event("update", "room", &a_id, &data));
}
