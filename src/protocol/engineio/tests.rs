use expect_test::{expect, Expect};

use super::*;

fn check(text: &str, expect: Expect) {
    let actual = match decode(text) {
        Ok(packet) => format!("{packet:?}"),
        Err(e) => format!("error {e:?}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn decode_cases() {
    check("0", expect!["Open"]);
    check("1", expect!["Close"]);
    check("2", expect![[r#"Ping("")"#]]);
    check("2probe", expect![[r#"Ping("probe")"#]]);
    check("3", expect![[r#"Pong("")"#]]);
    check("3probe", expect![[r#"Pong("probe")"#]]);
    check("4", expect![[r#"Message("")"#]]);
    check(r#"42["hello",1]"#, expect![[r#"Message("2[\"hello\",1]")"#]]);
    check("4héllo", expect![[r#"Message("héllo")"#]]);
    check("5", expect!["Upgrade"]);
    check("6", expect!["Noop"]);
    // Bodies of packets that carry none are ignored.
    check("1junk", expect!["Close"]);

    check("", expect!["error Empty"]);
    check("7", expect!["error UnknownType(55)"]);
    check("b64", expect!["error UnknownType(98)"]);
    check(" 4", expect!["error UnknownType(32)"]);
    check("é", expect!["error UnknownType(195)"]);
}

#[test]
fn encode_decode_round_trip() {
    for packet in [
        Packet::Close,
        Packet::Ping(""),
        Packet::Ping("probe"),
        Packet::Pong("x"),
        Packet::Message(r#"2["a"]"#),
        Packet::Upgrade,
        Packet::Noop,
    ] {
        let mut out = String::new();
        packet.encode(&mut out);
        assert_eq!(decode(&out), Ok(packet), "{out}");
    }
}

#[test]
fn open_packet_is_exact() {
    expect![[
        r#"0{"sid":"abc-_123","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
    ]]
    .assert_eq(&open_packet("abc-_123", 25000, 20000, 1_000_000));
    // The sid is escaped, whatever it is.
    expect![[r#"0{"sid":"a\"b","upgrades":[],"pingInterval":1,"pingTimeout":2,"maxPayload":3}"#]]
        .assert_eq(&open_packet("a\"b", 1, 2, 3));
    let open = open_packet("s", 10000, 30000, 100_000_000);
    let json = open.strip_prefix('0').unwrap();
    let value: sonic_rs::Value = sonic_rs::from_str(json).unwrap();
    assert_eq!(sonic_rs::to_string(&value).unwrap(), json);
}

mod proptests;

#[test]
fn polling_open_packet_offers_the_websocket_upgrade() {
    expect![[r#"0{"sid":"s","upgrades":["websocket"],"pingInterval":1,"pingTimeout":2,"maxPayload":3}"#]]
        .assert_eq(&polling_open_packet("s", 1, 2, 3));
}

#[test]
fn http_error_bodies_are_engine_io_s() {
    let all = [
        HttpError::UnknownTransport,
        HttpError::UnknownSid,
        HttpError::BadHandshakeMethod,
        HttpError::BadRequest,
        HttpError::Forbidden,
        HttpError::UnsupportedProtocolVersion,
    ];
    let bodies: Vec<String> = all
        .iter()
        .map(|e| format!("{} {}", e.status(), e.body()))
        .collect();
    expect![[r#"
        400 {"code":0,"message":"Transport unknown"}
        400 {"code":1,"message":"Session ID unknown"}
        400 {"code":2,"message":"Bad handshake method"}
        400 {"code":3,"message":"Bad request"}
        403 {"code":4,"message":"Forbidden"}
        400 {"code":5,"message":"Unsupported protocol version"}"#]]
    .assert_eq(&bodies.join("\n"));
}

fn payload(body: &[u8]) -> Vec<Result<Polled<'_>, PayloadError>> {
    decode_payload(body).collect()
}

#[test]
fn polling_payloads_split_on_the_record_separator() {
    assert_eq!(payload(b"4hello"), vec![Ok(Polled::Text("4hello"))]);
    assert_eq!(
        payload(b"2\x1e42[\"a\"]\x1ebAQID"),
        vec![
            Ok(Polled::Text("2")),
            Ok(Polled::Text("42[\"a\"]")),
            Ok(Polled::Binary(vec![1, 2, 3]))
        ]
    );
    // Negative space: each stops the payload at the bad record.
    assert_eq!(payload(b""), vec![Err(PayloadError::EmptyPacket)]);
    assert_eq!(
        payload(b"2\x1e\x1e3"),
        vec![Ok(Polled::Text("2")), Err(PayloadError::EmptyPacket)]
    );
    assert_eq!(payload(b"b!!"), vec![Err(PayloadError::BadBase64)]);
    assert_eq!(payload(b"4\xff"), vec![Err(PayloadError::NotUtf8)]);
}
