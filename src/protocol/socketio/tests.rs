use expect_test::{expect, Expect};

use super::*;

fn check(s: &str, expect: Expect) {
    let actual = match decode(s) {
        Ok(p) => format!(
            "{:?} attachments={} nsp={} ack={:?} data={}",
            p.kind, p.attachments, p.namespace, p.ack_id, p.data
        ),
        Err(e) => format!("error {e:?}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn decode_cases() {
    // Examples from the socket.io protocol documentation.
    check("0", expect!["Connect attachments=0 nsp=/ ack=None data="]);
    check(
        r#"0{"token":"123"}"#,
        expect![[r#"Connect attachments=0 nsp=/ ack=None data={"token":"123"}"#]],
    );
    check(
        "0/admin,",
        expect!["Connect attachments=0 nsp=/admin ack=None data="],
    );
    check(
        r#"0/admin,{"sid":"oSO0OpakMV_3jnilAAAA"}"#,
        expect![[r#"Connect attachments=0 nsp=/admin ack=None data={"sid":"oSO0OpakMV_3jnilAAAA"}"#]],
    );
    check("1", expect!["Disconnect attachments=0 nsp=/ ack=None data="]);
    check(
        "1/admin,",
        expect!["Disconnect attachments=0 nsp=/admin ack=None data="],
    );
    check(
        "1/admin",
        expect!["Disconnect attachments=0 nsp=/admin ack=None data="],
    );
    check(
        r#"2["hello",1]"#,
        expect![[r#"Event attachments=0 nsp=/ ack=None data=["hello",1]"#]],
    );
    check(
        r#"2/admin,["project:delete",123]"#,
        expect![[r#"Event attachments=0 nsp=/admin ack=None data=["project:delete",123]"#]],
    );
    check(
        r#"212["ev"]"#,
        expect![[r#"Event attachments=0 nsp=/ ack=Some(12) data=["ev"]"#]],
    );
    check(
        r#"2/admin,456["project:delete",123]"#,
        expect![[r#"Event attachments=0 nsp=/admin ack=Some(456) data=["project:delete",123]"#]],
    );
    check(
        "3/admin,456[]",
        expect!["Ack attachments=0 nsp=/admin ack=Some(456) data=[]"],
    );
    check(
        r#"312["ok",{"a":1}]"#,
        expect![[r#"Ack attachments=0 nsp=/ ack=Some(12) data=["ok",{"a":1}]"#]],
    );
    check(
        r#"4{"message":"Not authorized"}"#,
        expect![[r#"ConnectError attachments=0 nsp=/ ack=None data={"message":"Not authorized"}"#]],
    );
    check(
        r#"51-["ev",{"_placeholder":true,"num":0}]"#,
        expect![[r#"BinaryEvent attachments=1 nsp=/ ack=None data=["ev",{"_placeholder":true,"num":0}]"#]],
    );
    check(
        r#"51-/admin,456["project:delete",{"_placeholder":true,"num":0}]"#,
        expect![[
            r#"BinaryEvent attachments=1 nsp=/admin ack=Some(456) data=["project:delete",{"_placeholder":true,"num":0}]"#
        ]],
    );
    check(
        r#"61-/admin,456[{"_placeholder":true,"num":0}]"#,
        expect![[r#"BinaryAck attachments=1 nsp=/admin ack=Some(456) data=[{"_placeholder":true,"num":0}]"#]],
    );
    check(
        "50-[\"ev\"]",
        expect![[r#"BinaryEvent attachments=0 nsp=/ ack=None data=["ev"]"#]],
    );
    check(
        "51000-[]",
        expect!["BinaryEvent attachments=1000 nsp=/ ack=None data=[]"],
    );
    check(
        "218446744073709551615[]",
        expect!["Event attachments=0 nsp=/ ack=Some(18446744073709551615) data=[]"],
    );
    check(
        "2 [\"ev\"] ",
        expect![[r#"Event attachments=0 nsp=/ ack=None data= ["ev"] "#]],
    );
    check(
        "2\"just a string\"",
        expect![[r#"Event attachments=0 nsp=/ ack=None data="just a string""#]],
    );
    check(
        r#"2["\ud800"]"#,
        expect![[r#"Event attachments=0 nsp=/ ack=None data=["\ud800"]"#]],
    );

    // Negative space.
    check("", expect!["error Empty"]);
    check("7", expect!["error UnknownType(55)"]);
    check("a", expect!["error UnknownType(97)"]);
    check("é", expect!["error UnknownType(195)"]);
    check("5", expect!["error BadAttachmentCount"]);
    check("5[]", expect!["error BadAttachmentCount"]);
    check("5-[]", expect!["error BadAttachmentCount"]);
    check("51[]", expect!["error BadAttachmentCount"]);
    check("51001-[]", expect!["error BadAttachmentCount"]);
    check("599999999999999999999999-[]", expect!["error BadAttachmentCount"]);
    check("6", expect!["error BadAttachmentCount"]);
    check("21-[\"ev\"]", expect!["error BadJson"]);
    check("0/a\"b,", expect!["error BadNamespace"]);
    check("0/a\nb,", expect!["error BadNamespace"]);
    check("218446744073709551616[]", expect!["error BadAckId"]);
    check("299999999999999999999999999[]", expect!["error BadAckId"]);
    check("2[", expect!["error BadJson"]);
    check("2[\"a\",]", expect!["error BadJson"]);
    check("2[\"a\"]x", expect!["error BadJson"]);
    check("2[\"a\"][]", expect!["error BadJson"]);
    check("2{\"a\":}", expect!["error BadJson"]);
    check("2x", expect!["error BadJson"]);
    check("2[\"\u{1}\"]", expect!["error BadJson"]);
    check("2[NaN]", expect!["error BadJson"]);
    check("2[\"\\q\"]", expect!["error BadJson"]);
    check(
        &format!("2{}{}", "[".repeat(33), "]".repeat(33)),
        expect!["error JsonTooDeep"],
    );
    check(&format!("2{}", "[".repeat(100_000)), expect!["error JsonTooDeep"]);
    check(
        &format!("2{}", "{\"a\":".repeat(100_000)),
        expect!["error JsonTooDeep"],
    );
}

#[test]
fn depth_limit_is_exact_and_ignores_strings() {
    let at_limit = format!("{}{}", "[".repeat(JSON_DEPTH_MAX), "]".repeat(JSON_DEPTH_MAX));
    assert_eq!(validate_json(&at_limit), Ok(()));
    let over = format!("[{at_limit}]");
    assert_eq!(validate_json(&over), Err(Error::JsonTooDeep));
    // Brackets inside strings, including after escaped quotes, don't count.
    let in_string = format!("[\"\\\"{}\",1]", "[{".repeat(1000));
    assert_eq!(validate_json(&in_string), Ok(()));
    // Many brackets side by side are shallow.
    let wide = format!("[{}[]]", "[],".repeat(1000));
    assert_eq!(validate_json(&wide), Ok(()));
}

fn check_event(data: &str, expect: Expect) {
    let actual = match decode_event(data) {
        Ok(e) => format!(
            "{} name={:?} args={:?}",
            if matches!(e.name, Cow::Borrowed(_)) {
                "borrowed"
            } else {
                "owned"
            },
            e.name,
            e.args
        ),
        Err(e) => format!("error {e:?}"),
    };
    expect.assert_eq(&actual);
}

#[test]
fn decode_event_cases() {
    check_event(r#"["hello",1]"#, expect![[r#"borrowed name="hello" args=["1"]"#]]);
    check_event(r#"["ev"]"#, expect![[r#"borrowed name="ev" args=[]"#]]);
    check_event(
        r#" [ "channel:join" , {"channel":"c","message":{"id":"x","data":null}} , [1, 2] , "s" , null ] "#,
        expect![[
            r#"borrowed name="channel:join" args=["{\"channel\":\"c\",\"message\":{\"id\":\"x\",\"data\":null}}", "[1, 2]", "\"s\"", "null"]"#
        ]],
    );
    check_event(
        r#"["a\"b\u00e9\n",true]"#,
        expect![[r#"owned name="a\"bé\n" args=["true"]"#]],
    );
    check_event(
        r#"["é",{"_placeholder":true,"num":0}]"#,
        expect![[r#"borrowed name="é" args=["{\"_placeholder\":true,\"num\":0}"]"#]],
    );

    check_event("", expect!["error NotAnArray"]);
    check_event(r#"{"a":1}"#, expect!["error NotAnArray"]);
    check_event(r#""ev""#, expect!["error NotAnArray"]);
    check_event("[]", expect!["error BadEventName"]);
    check_event("[1,2]", expect!["error BadEventName"]);
    check_event("[null]", expect!["error BadEventName"]);
    check_event(r#"[["ev"]]"#, expect!["error BadEventName"]);
    check_event(r#"["ev",]"#, expect!["error BadJson"]);
    check_event(r#"["ev" 1]"#, expect!["error BadJson"]);
    check_event(r#"["ev",1"#, expect!["error BadJson"]);
    check_event(r#"["ev",1]]"#, expect!["error BadJson"]);
    check_event(r#"["ev",1] x"#, expect!["error BadJson"]);
    check_event(r#"["ev"] ["x"]"#, expect!["error BadJson"]);
    check_event(r#"["ev",{"a":x}]"#, expect!["error BadJson"]);
    check_event(
        &format!("[\"ev\",{}{}]", "[".repeat(40), "]".repeat(40)),
        expect!["error JsonTooDeep"],
    );
}

#[test]
fn event_args_borrow_the_input() {
    let data = String::from(r#"["ev",{"a":1}]"#);
    let event = decode_event(&data).unwrap();
    let offset = event.args[0].as_ptr() as usize - data.as_ptr() as usize;
    assert_eq!(offset, 6);
}

#[test]
fn placeholders() {
    let p0 = r#"{"_placeholder":true,"num":0}"#;
    let p1 = r#"{"_placeholder":true,"num":1}"#;
    let ok = [
        (format!(r#"["ev",{p0}]"#), 1),
        (format!(r#"["ev",{{"a":[{p1},{{"b":{p0}}}]}}]"#), 2),
        (format!(r#"["ev",{p0},{p0}]"#), 1),
        (r#"["ev",{"_placeholder":false,"num":5}]"#.to_owned(), 0),
        (r#"["ev"]"#.to_owned(), 0),
    ];
    for (data, n) in ok {
        assert_eq!(check_placeholders(&data, n), Ok(()), "{data} {n}");
    }
    let bad = [
        (format!(r#"["ev",{p0}]"#), 0, Error::BadPlaceholder),
        (format!(r#"["ev",{p1}]"#), 1, Error::BadPlaceholder),
        (format!(r#"["ev",{p0}]"#), 2, Error::BadPlaceholder),
        (r#"["ev"]"#.to_owned(), 1, Error::BadPlaceholder),
        (
            r#"["ev",{"_placeholder":true}]"#.to_owned(),
            1,
            Error::BadPlaceholder,
        ),
        (
            r#"["ev",{"_placeholder":true,"num":-1}]"#.to_owned(),
            1,
            Error::BadPlaceholder,
        ),
        (
            r#"["ev",{"_placeholder":true,"num":0.5}]"#.to_owned(),
            1,
            Error::BadPlaceholder,
        ),
        (
            r#"["ev",{"_placeholder":true,"num":"0"}]"#.to_owned(),
            1,
            Error::BadPlaceholder,
        ),
        (
            r#"["ev",{"_placeholder":true,"num":18446744073709551615}]"#.to_owned(),
            1,
            Error::BadPlaceholder,
        ),
        (r#"["ev""#.to_owned(), 1, Error::BadJson),
        (
            r#"["ev"]"#.to_owned(),
            ATTACHMENTS_MAX + 1,
            Error::BadAttachmentCount,
        ),
        (
            format!("{}{}", "[".repeat(50), "]".repeat(50)),
            0,
            Error::JsonTooDeep,
        ),
    ];
    for (data, n, error) in bad {
        assert_eq!(check_placeholders(&data, n), Err(error), "{data} {n}");
    }
}

#[test]
fn json_string_escaping() {
    let cases = [
        ("", r#""""#),
        ("plain", r#""plain""#),
        ("q\"b\\s/", r#""q\"b\\s/""#),
        ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
        ("\u{0}\u{1f}\u{7f}", "\"\\u0000\\u001f\u{7f}\""),
        ("é€😀", "\"é€😀\""),
    ];
    for (input, expected) in cases {
        let mut out = Vec::new();
        write_json_str(&mut out, input);
        assert_eq!(String::from_utf8(out.clone()).unwrap(), expected);
        let mut s = String::new();
        push_json_str(&mut s, input);
        assert_eq!(s, expected);
        // Round trip through a real JSON parser.
        assert_eq!(sonic_rs::from_slice::<String>(&out).unwrap(), input);
    }
    // Every byte value below 0x80 round-trips.
    let all: String = (0u8..0x80).map(char::from).collect();
    let mut out = Vec::new();
    write_json_str(&mut out, &all);
    assert_eq!(sonic_rs::from_slice::<String>(&out).unwrap(), all);
}

/// The Engine.IO text of a one-frame server packet.
pub(super) fn frame_text(frame: &bytes::Bytes) -> String {
    match crate::protocol::frames::payloads(frame).next() {
        Some(crate::protocol::frames::Payload::Text(text)) => String::from_utf8(text.to_vec()).unwrap(),
        other => panic!("not a text frame: {other:?}"),
    }
}

/// The arguments of an event: each written with a leading `,`.
pub(super) fn event_args<'a>(args: &'a [&'a str]) -> impl FnOnce(&mut Vec<u8>) + 'a {
    move |out| {
        for arg in args {
            out.push(b',');
            out.extend_from_slice(arg.as_bytes());
        }
    }
}

/// The arguments of an ack: separated by `,`.
pub(super) fn ack_args<'a>(args: &'a [&'a str]) -> impl FnOnce(&mut Vec<u8>) + 'a {
    move |out| out.extend_from_slice(args.join(",").as_bytes())
}

#[test]
fn encoders() {
    let mut out = Vec::new();
    encode_ack(&mut out, 12, 0, ack_args(&[r#"{"ok":true}"#, "1"]));
    expect![[r#"4312[{"ok":true},1]"#]].assert_eq(std::str::from_utf8(&out).unwrap());
    out.clear();
    encode_ack(&mut out, 0, 0, ack_args(&[]));
    expect!["430[]"].assert_eq(std::str::from_utf8(&out).unwrap());
    out.clear();
    encode_ack(
        &mut out,
        u64::MAX,
        2,
        ack_args(&[
            r#"{"_placeholder":true,"num":0}"#,
            r#"{"_placeholder":true,"num":1}"#,
        ]),
    );
    expect![[r#"462-18446744073709551615[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#]]
        .assert_eq(std::str::from_utf8(&out).unwrap());
    out.clear();
    encode_event(&mut out, "chan\"nel", 0, None, event_args(&[r#"{"a":1}"#]));
    expect![[r#"42["chan\"nel",{"a":1}]"#]].assert_eq(std::str::from_utf8(&out).unwrap());
    out.clear();
    encode_event(
        &mut out,
        "ev",
        1,
        Some(7),
        event_args(&[r#"{"_placeholder":true,"num":0}"#]),
    );
    expect![[r#"451-7["ev",{"_placeholder":true,"num":0}]"#]].assert_eq(std::str::from_utf8(&out).unwrap());
}

/// Whatever the encoders write, the decoders read back.
#[test]
fn encode_decode_round_trip() {
    let mut out = Vec::new();
    encode_ack(&mut out, 99, 1, ack_args(&[r#"{"_placeholder":true,"num":0}"#]));
    let text = std::str::from_utf8(&out).unwrap().strip_prefix('4').unwrap();
    let packet = decode(text).unwrap();
    assert_eq!(
        packet,
        Packet {
            kind: PacketType::BinaryAck,
            attachments: 1,
            namespace: "/",
            ack_id: Some(99),
            data: r#"[{"_placeholder":true,"num":0}]"#
        }
    );
    assert_eq!(check_placeholders(packet.data, packet.attachments), Ok(()));

    let mut out = Vec::new();
    encode_event(
        &mut out,
        "na\"me",
        0,
        Some(3),
        event_args(&["1", r#"{"x":[null]}"#]),
    );
    let text = std::str::from_utf8(&out).unwrap().strip_prefix('4').unwrap();
    let packet = decode(text).unwrap();
    assert_eq!((packet.kind, packet.ack_id), (PacketType::Event, Some(3)));
    let event = decode_event(packet.data).unwrap();
    assert_eq!(event.name, "na\"me");
    assert_eq!(event.args, ["1", r#"{"x":[null]}"#]);

    for kind in [0u8, 1, 2, 3, 4, 5, 6].map(|d| PacketType::from_u8(b'0' + d).unwrap()) {
        for (attachments, ack_id, data) in [
            (0, None, ""),
            (3, Some(0), "[1]"),
            (1, Some(u64::MAX), r#"{"a":"b"}"#),
        ] {
            let attachments = if kind.is_binary() { attachments } else { 0 };
            let mut out = Vec::new();
            encode_packet(&mut out, kind, attachments, ack_id, data);
            let text = std::str::from_utf8(&out).unwrap();
            let expected = Packet {
                kind,
                attachments,
                namespace: "/",
                ack_id,
                data,
            };
            assert_eq!(decode(text), Ok(expected), "{text}");
        }
    }
    let text = frame_text(&crate::protocol::frames::connect_ok("sid"));
    let packet = decode(text.strip_prefix('4').unwrap()).unwrap();
    assert_eq!(
        (packet.kind, packet.data),
        (PacketType::Connect, r#"{"sid":"sid"}"#)
    );
    let text = frame_text(&crate::protocol::frames::connect_error("/", "m", Some("[1]")));
    let packet = decode(text.strip_prefix('4').unwrap()).unwrap();
    assert_eq!(packet.kind, PacketType::ConnectError);
}

#[test]
fn fuzz_entry_survives_prefixes() {
    let input = r#"51-/admin,456["project:delete",{"_placeholder":true,"num":0},"\u00e9"]"#;
    for n in 0..=input.len() {
        crate::protocol::fuzzing::socketio_packet(&input.as_bytes()[..n]);
    }
}

mod proptests;
