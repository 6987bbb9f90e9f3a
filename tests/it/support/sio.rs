//! Engine.IO v4 / Socket.IO v5 on top of the raw [`WsClient`].
//!
//! Handshake helpers (`0{...}` open packet, `40{auth}` → `40{"sid":...}`),
//! emitting events, asserting exact frames, shard placement by socket id,
//! and builders for the exact frames the Agnost semantics produce.
//! Engine.IO pings (`2`) that arrive while a test waits for something else
//! are answered with `3` and skipped, so exact assertions see only what the
//! test is about.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sonic_rs::{JsonValueTrait, Value};

use super::barrier::ShardBarrier;
use super::server::{TestServer, MASTER_TOKEN};
use super::ws::{encode_frame, random_mask, Frame, WsClient, OP_BINARY, OP_TEXT};

/// Connection attempts `connect_on_shard` makes before giving up; with two
/// shards and kernel spreading, 64 misses in a row has odds of 2^-64.
const SHARD_ATTEMPTS_MAX: usize = 64;

/// Engine.IO pings skipped while waiting for one expected frame.
const PINGS_SKIPPED_MAX: usize = 1000;

/// The WebSocket right after the Engine.IO open packet.
pub(crate) struct EngineOpen {
    pub(crate) ws: WsClient,
    /// The open packet exactly as received, `0{...}` included.
    pub(crate) packet: String,
    pub(crate) sid: String,
}

/// Upgrades `{path}?EIO=4&transport=websocket` and reads the open packet.
pub(crate) fn engine_open(server: &TestServer) -> EngineOpen {
    let target = format!("{}?EIO=4&transport=websocket", server.path());
    engine_open_over(WsClient::connect(server.addr(), &target))
}

/// Reads the open packet on an already upgraded WebSocket (one made by
/// `net::upgrade`, say).
pub(crate) fn engine_open_over(mut ws: WsClient) -> EngineOpen {
    let frame = ws.read_frame();
    let packet = frame.text().to_string();
    let json = packet
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("expected an open packet, got {packet:?}"));
    let value: Value = sonic_rs::from_str(json)
        .unwrap_or_else(|error| panic!("open packet {packet:?} is not JSON: {error}"));
    let sid = value
        .get("sid")
        .and_then(|sid| sid.as_str())
        .unwrap_or_else(|| panic!("open packet {packet:?} has no string sid"))
        .to_string();
    EngineOpen { ws, packet, sid }
}

/// A Socket.IO client connected to namespace `/`.
pub(crate) struct Sio {
    pub(crate) ws: WsClient,
    pub(crate) engine_sid: String,
    /// `socket.id`, from the server's `40{"sid":...}`.
    pub(crate) id: String,
}

impl Sio {
    /// Connects with `40{auth}`; an empty `auth` sends a bare `40`.
    pub(crate) fn connect(server: &TestServer, auth: &str) -> Self {
        Self::connect_after_open(engine_open(server), auth)
    }

    /// Connects with `40{}`: environment `default`, echo off.
    pub(crate) fn connect_default(server: &TestServer) -> Self {
        Self::connect(server, "{}")
    }

    /// The app backend's master connection.
    pub(crate) fn master(server: &TestServer) -> Self {
        Self::connect(server, &format!(r#"{{"accessToken":"{MASTER_TOKEN}"}}"#))
    }

    pub(crate) fn connect_after_open(open: EngineOpen, auth: &str) -> Self {
        let EngineOpen { ws, sid, .. } = open;
        let mut sio = Self {
            ws,
            engine_sid: sid,
            id: String::new(),
        };
        sio.send(&format!("40{auth}"));
        let reply = sio.recv_text();
        sio.id = parse_connect_reply(&reply);
        sio
    }

    /// The shard that owns this connection, from its socket id.
    pub(crate) fn shard(&self) -> u8 {
        shard_of(&self.id)
    }

    /// Sends one Engine.IO text packet as it is (`42[...]`, `1`, `3`, ...).
    pub(crate) fn send(&mut self, packet: &str) {
        self.ws.send_text(packet);
    }

    /// Emits an event: `42` + `array`, e.g. `["join",{"channel":"c"}]`.
    pub(crate) fn emit(&mut self, array: &str) {
        self.send(&format!("42{array}"));
    }

    pub(crate) fn join(&mut self, channel: &str) {
        self.emit(&format!(r#"["join",{{"channel":"{channel}"}}]"#));
    }

    pub(crate) fn leave(&mut self, channel: &str) {
        self.emit(&format!(r#"["leave",{{"channel":"{channel}"}}]"#));
    }

    /// Publishes `0` to `channel` as `event_name` with echo on and waits for
    /// the sender's own copy as its very next frame. That proves nothing else
    /// was queued for this client, and that everything it sent before (a
    /// join, say) has been handled; other members see it after anything this
    /// client published earlier.
    pub(crate) fn sentinel(&mut self, channel: &str, event_name: &str) {
        self.emit(&format!(
            r#"["message",{{"channel":"{channel}","eventName":"{event_name}","message":0,"echo":true}}]"#
        ));
        self.expect(&event(event_name, Some(channel), "0"));
    }

    /// The next data frame, answering and skipping Engine.IO pings.
    pub(crate) fn recv(&mut self) -> Frame {
        for _ in 0..PINGS_SKIPPED_MAX {
            let frame = self.ws.read_frame();
            if frame.opcode == OP_TEXT && frame.payload == b"2" {
                self.send("3");
                continue;
            }
            return frame;
        }
        panic!("only Engine.IO pings for {PINGS_SKIPPED_MAX} frames");
    }

    /// The next text packet.
    pub(crate) fn recv_text(&mut self) -> String {
        let frame = self.recv();
        assert_eq!(frame.opcode, OP_TEXT, "expected a text frame, got {frame:?}");
        frame.text().to_string()
    }

    /// Asserts the next text packet is exactly `expected`.
    pub(crate) fn expect(&mut self, expected: &str) {
        let actual = self.recv_text();
        assert_eq!(actual, expected, "frame received by {}", self.id);
    }

    /// Asserts the next frame is binary with exactly `expected` as payload.
    pub(crate) fn expect_binary(&mut self, expected: &[u8]) {
        let frame = self.recv();
        assert_eq!(frame.opcode, OP_BINARY, "expected a binary frame, got {frame:?}");
        assert!(frame.fin, "binary frame without FIN: {frame:?}");
        assert_eq!(frame.payload, expected, "binary payload received by {}", self.id);
    }
}

/// Parses `40{"sid":"<socket id>"}` exactly and returns the socket id.
pub(crate) fn parse_connect_reply(reply: &str) -> String {
    let id = reply
        .strip_prefix(r#"40{"sid":""#)
        .and_then(|rest| rest.strip_suffix(r#""}"#))
        .unwrap_or_else(|| panic!(r#"expected 40{{"sid":"..."}}, got {reply:?}"#));
    assert_socket_id(id);
    id.to_string()
}

/// A socket id is 20 chars of `[A-Za-z0-9_-]`.
pub(crate) fn assert_socket_id(id: &str) {
    assert_eq!(id.len(), 20, "socket id {id:?} length");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "socket id {id:?} is not base64url"
    );
}

/// The shard owning a socket id: byte 0 of its 15 base64url-decoded bytes.
pub(crate) fn shard_of(id: &str) -> u8 {
    let bytes = URL_SAFE_NO_PAD
        .decode(id)
        .unwrap_or_else(|error| panic!("socket id {id:?} is not base64url: {error}"));
    assert_eq!(bytes.len(), 15, "socket id {id:?} decodes to {bytes:?}");
    bytes[0]
}

/// Connects with `auth` until the connection lands on `shard` (bounded attempts).
pub(crate) fn connect_on_shard(server: &TestServer, shard: u8, auth: &str) -> Sio {
    assert!(usize::from(shard) < server.shards(), "shard {shard} out of range");
    for _ in 0..SHARD_ATTEMPTS_MAX {
        let sio = Sio::connect(server, auth);
        let owner = sio.shard();
        assert!(
            usize::from(owner) < server.shards(),
            "socket id {} names shard {owner} of {}",
            sio.id,
            server.shards()
        );
        if owner == shard {
            return sio;
        }
    }
    panic!("no connection landed on shard {shard} in {SHARD_ATTEMPTS_MAX} attempts");
}

/// Joins every client to `channel` one after the other and consumes the
/// `channel:join` each earlier member gets, so all queues start empty.
/// Each join has landed everywhere before the next is sent: the first
/// joiner proves its join with a sentinel, later ones by the earlier
/// members' `channel:join`, and the barrier flushes the cross-shard queues.
pub(crate) fn join_all(barrier: &mut ShardBarrier, clients: &mut [&mut Sio], channel: &str) {
    for i in 0..clients.len() {
        clients[i].join(channel);
        if i == 0 {
            clients[0].sentinel(channel, "joined");
        }
        let joiner = clients[i].id.clone();
        for earlier in clients[..i].iter_mut() {
            earlier.expect(&channel_event("join", channel, &joiner, "null"));
        }
        barrier.sync();
    }
}

/// `{"id":"<id>","data":<data>}` where `data` is raw JSON.
pub(crate) fn member(id: &str, data: &str) -> String {
    format!(r#"{{"id":"{id}","data":{data}}}"#)
}

/// `42["channel:<kind>",{"channel":"<channel>","message":{"id":..,"data":..}}]`.
pub(crate) fn channel_event(kind: &str, channel: &str, id: &str, data: &str) -> String {
    format!(
        r#"42["channel:{kind}",{{"channel":"{channel}","message":{}}}]"#,
        member(id, data)
    )
}

/// `42["<event>",{"channel":"<channel>"|null,"message":<message>}]`, `message` raw JSON.
pub(crate) fn event(event_name: &str, channel: Option<&str>, message: &str) -> String {
    let channel = channel.map_or_else(|| "null".to_string(), |c| format!("\"{c}\""));
    format!(r#"42["{event_name}",{{"channel":{channel},"message":{message}}}]"#)
}

/// The masked client frames, back to back, of one `message` event per item
/// of `messages` (each sent as a JSON string) to `channel` as `event_name`:
/// a flood that one write sends.
pub(crate) fn message_frames(
    channel: &str,
    event_name: &str,
    messages: impl IntoIterator<Item = String>,
) -> Vec<u8> {
    let mut frames = Vec::new();
    for message in messages {
        let packet = format!(
            r#"42["message",{{"channel":"{channel}","eventName":"{event_name}","message":"{message}"}}]"#
        );
        frames.extend(encode_frame(
            true,
            0,
            OP_TEXT,
            packet.as_bytes(),
            Some(random_mask()),
        ));
    }
    frames
}

/// An HS256 JWT over `claims_json`, signed with `secret`.
pub(crate) fn hs256_jwt(secret: &str, claims_json: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(claims_json.as_bytes());
    let signing_input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// `{path}?EIO=4&transport=websocket`: where a WebSocket client upgrades.
pub(crate) fn engine_target(server: &TestServer) -> String {
    format!("{}?EIO=4&transport=websocket", server.path())
}

/// Two new clients connect and exchange one message each way, environment
/// wide (reaching every Socket.IO client of the server, so only for tests
/// with no other clients connected), then each joins a channel of its own
/// and gets its echo: the server still accepts, handshakes and delivers.
/// Nothing here depends on the order in which two shards see each other's
/// traffic, so the frames asserted are exact without a barrier.
pub(crate) fn assert_fresh_clients_exchange(server: &TestServer, tag: &str) {
    let mut a = Sio::connect_default(server);
    let mut b = Sio::connect_default(server);
    // Both connects were answered, so both are registered on their shards
    // before either message is published.
    b.emit(&format!(
        r#"["message",{{"eventName":"ping","message":"{tag}"}}]"#
    ));
    a.expect(&event("ping", None, &format!("\"{tag}\"")));
    a.emit(&format!(
        r#"["message",{{"eventName":"pong","message":"{tag}"}}]"#
    ));
    b.expect(&event("pong", None, &format!("\"{tag}\"")));
    for (sio, side) in [(&mut a, "a"), (&mut b, "b")] {
        let channel = format!("{tag}-{side}");
        sio.join(&channel);
        sio.sentinel(&channel, "joined");
    }
}
