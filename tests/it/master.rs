//! The app backend's master connection (`accessToken` auth): get_members
//! with its ack, send_message, broadcast_message, user_event; and the same
//! events from ordinary connections being ignored.

use crate::support::sio::{event, hs256_jwt, parse_connect_reply};
use crate::support::{
    channel_event, connect_on_shard, engine_open, join_all, member, ShardBarrier, Sio, TestServer,
};

/// Asserts `reply` is `43<ack_id>[[...]]` listing exactly `members`, in any order.
fn assert_members_ack(reply: &str, ack_id: u64, members: &[String]) {
    let mut orders: Vec<Vec<&String>> = vec![Vec::new()];
    for _ in 0..members.len() {
        orders = orders
            .into_iter()
            .flat_map(|prefix| {
                members
                    .iter()
                    .filter(|m| !prefix.contains(m))
                    .map(|m| {
                        let mut next = prefix.clone();
                        next.push(m);
                        next
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    let candidates: Vec<String> = orders
        .iter()
        .map(|order| {
            let list: Vec<&str> = order.iter().map(|m| m.as_str()).collect();
            format!("43{ack_id}[[{}]]", list.join(","))
        })
        .collect();
    assert!(
        candidates.iter().any(|c| c == reply),
        "get_members ack {reply:?} is none of {candidates:?}"
    );
}

#[test]
fn get_members_acks_members_on_both_shards() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = connect_on_shard(&server, 0, "{}");
    let mut b = connect_on_shard(&server, 1, "{}");
    join_all(&mut barrier, &mut [&mut a, &mut b], "c");
    b.emit(r#"["update",{"data":{"name":"bob","n":[1,2]}}]"#);
    a.expect(&channel_event(
        "update",
        "c",
        &b.id,
        r#"{"name":"bob","n":[1,2]}"#,
    ));

    let mut master = Sio::master(&server);
    master.send(r#"421["get_members",{"envId":"default","channel":"c"}]"#);
    let reply = master.recv_text();
    assert_members_ack(
        &reply,
        1,
        &[
            member(&a.id, "null"),
            member(&b.id, r#"{"name":"bob","n":[1,2]}"#),
        ],
    );
}

#[test]
fn get_members_of_an_empty_channel_acks_an_empty_list() {
    let server = TestServer::start(2);
    let mut master = Sio::master(&server);
    master.send(r#"420["get_members",{"envId":"default","channel":"nobody"}]"#);
    master.expect("430[[]]");
    master.send(r#"424294967296["get_members",{"envId":"default","channel":"nobody"}]"#);
    master.expect("434294967296[[]]");
}

#[test]
fn get_members_follows_joins_and_leaves() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut master = Sio::master(&server);
    let mut a = connect_on_shard(&server, 1, "{}");
    let mut b = connect_on_shard(&server, 0, "{}");
    let mut c = connect_on_shard(&server, 1, "{}");
    join_all(&mut barrier, &mut [&mut a, &mut b, &mut c], "c");
    master.send(r#"427["get_members",{"envId":"default","channel":"c"}]"#);
    let reply = master.recv_text();
    let all = [
        member(&a.id, "null"),
        member(&b.id, "null"),
        member(&c.id, "null"),
    ];
    assert_members_ack(&reply, 7, &all);

    c.leave("c");
    a.expect(&channel_event("leave", "c", &c.id, "null"));
    b.expect(&channel_event("leave", "c", &c.id, "null"));
    master.send(r#"428["get_members",{"envId":"default","channel":"c"}]"#);
    let reply = master.recv_text();
    assert_members_ack(&reply, 8, &all[..2]);
}

#[test]
fn send_message_reaches_the_channel_members_only() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut a = connect_on_shard(&server, 0, "{}");
    let mut b = connect_on_shard(&server, 1, "{}");
    let mut outsider = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut a, &mut b], "c");
    let mut master = Sio::master(&server);
    master.emit(
        r#"["send_message",{"envId":"default","channelName":"c","eventName":"srv","message":{"x":[1,2.50,"y"]}}]"#,
    );
    a.expect(&event("srv", Some("c"), r#"{"x":[1,2.50,"y"]}"#));
    b.expect(&event("srv", Some("c"), r#"{"x":[1,2.50,"y"]}"#));
    master.emit(r#"["broadcast_message",{"envId":"default","eventName":"mark","message":0}]"#);
    outsider.expect(&event("mark", None, "0"));
    a.expect(&event("mark", None, "0"));
    b.expect(&event("mark", None, "0"));
}

#[test]
fn broadcast_message_reaches_the_whole_environment() {
    let server = TestServer::start(2);
    let mut a = connect_on_shard(&server, 0, "{}");
    let mut b = connect_on_shard(&server, 1, "{}");
    let mut master = Sio::master(&server);
    master.emit(r#"["broadcast_message",{"envId":"default","eventName":"news","message":"hi \"all\""}]"#);
    a.expect(&event("news", None, r#""hi \"all\"""#));
    b.expect(&event("news", None, r#""hi \"all\"""#));
}

const SESSION_SECRET: &str = "it-session-secret";

fn session_config() -> String {
    format!(
        r#"
[[environments]]
id = "default"
enabled = true
session_secret = "{SESSION_SECRET}"
"#
    )
}

fn user_auth(user_id: &str) -> String {
    let jwt = hs256_jwt(SESSION_SECRET, &format!(r#"{{"sub":"{user_id}"}}"#));
    format!(r#"{{"session":"{jwt}"}}"#)
}

#[test]
fn user_event_reaches_every_socket_of_that_user_only() {
    let config = session_config();
    let server = TestServer::start_with(2, &[], Some(&config));
    let mut user1_first = connect_on_shard(&server, 0, &user_auth("user-1"));
    let mut user1_second = connect_on_shard(&server, 1, &user_auth("user-1"));
    let mut user2 = Sio::connect(&server, &user_auth("user-2"));
    let mut master = Sio::master(&server);

    master.emit(
        r#"["user_event",{"envId":"default","userId":"user-1","eventName":"user:signin","session":{"token":"t1"},"user":{"_id":"user-1","name":"Ann"}}]"#,
    );
    let expected = r#"42["user:signin","user:signin",{"token":"t1"},{"_id":"user-1","name":"Ann"}]"#;
    user1_first.expect(expected);
    user1_second.expect(expected);

    master.emit(
        r#"["user_event",{"envId":"default","userId":"user-2","eventName":"user:signout","session":null,"user":{"_id":"user-2"}}]"#,
    );
    user2.expect(r#"42["user:signout","user:signout",null,{"_id":"user-2"}]"#);
}

#[test]
fn master_events_from_ordinary_connections_are_ignored() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut member_a = connect_on_shard(&server, 0, "{}");
    let mut intruder = connect_on_shard(&server, 1, "{}");
    join_all(&mut barrier, &mut [&mut member_a, &mut intruder], "c");

    intruder.emit(r#"["send_message",{"envId":"default","channelName":"c","eventName":"fake","message":1}]"#);
    intruder.emit(r#"["broadcast_message",{"envId":"default","eventName":"fake","message":2}]"#);
    intruder.emit(
        r#"["user_event",{"envId":"default","userId":"u","eventName":"user:signin","session":{},"user":{}}]"#,
    );
    // An ignored get_members gets no ack either.
    intruder.send(r#"429["get_members",{"envId":"default","channel":"c"}]"#);
    intruder.sentinel("c", "mark");
    member_a.expect(&event("mark", Some("c"), "0"));
}

#[test]
fn wrong_access_token_is_not_a_master() {
    let server = TestServer::start(2);
    let mut member_a = Sio::connect_default(&server);
    member_a.join("c");
    member_a.sentinel("c", "joined");
    // Whether the server refuses the connection (44) or accepts it as an
    // ordinary client is its choice; it must never act as a master.
    let mut open = engine_open(&server);
    open.ws.send_text(r#"40{"accessToken":"not-the-token"}"#);
    let reply = open.ws.read_frame();
    let reply = reply.text().to_string();
    if reply.starts_with("44") {
        return;
    }
    let mut pretender = Sio {
        ws: open.ws,
        engine_sid: open.sid,
        id: parse_connect_reply(&reply),
    };
    let private = format!("private-{}", pretender.id);
    pretender.join(&private);
    pretender
        .emit(r#"["send_message",{"envId":"default","channelName":"c","eventName":"fake","message":1}]"#);
    pretender.send(r#"423["get_members",{"envId":"default","channel":"c"}]"#);
    // No ack: the pretender's next frame is its own sentinel.
    pretender.sentinel(&private, "mark");
    // The only thing member_a may see next is the real master's message.
    let mut master = Sio::master(&server);
    master.emit(r#"["send_message",{"envId":"default","channelName":"c","eventName":"real","message":2}]"#);
    member_a.expect(&event("real", Some("c"), "2"));
}
