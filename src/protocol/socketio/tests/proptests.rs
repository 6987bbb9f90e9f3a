//! Property tests: whatever the encoders write (any event name, ack id, attachment count,
//! JSON arguments), the decoders read back field for field; and hand-built packets with
//! namespaces decode to their parts.

use proptest::collection::vec;
use proptest::prelude::*;
use sonic_rs::JsonValueTrait;

use crate::protocol::socketio::*;

/// A JSON value as text, built from an arbitrary tree. Strings and floats are written by
/// sonic-rs, not by the code under test, so an escaping bug cannot cancel itself out.
fn json() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(|f| sonic_rs::to_string(&f).unwrap()),
        any::<String>().prop_map(|s| sonic_rs::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(|items| format!("[{}]", items.join(","))),
            vec((any::<String>(), inner), 0..6).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{}:{v}", sonic_rs::to_string(k).unwrap()))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

/// A JSON array or object: what event/ack/connect packets carry. (A bare number after an
/// ack id would merge with it on the wire, in socket.io as here, so data never starts with one.)
fn json_container() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(json(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
        vec((any::<String>(), json()), 0..4).prop_map(|fields| {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("{}:{v}", sonic_rs::to_string(k).unwrap()))
                .collect();
            format!("{{{}}}", fields.join(","))
        }),
    ]
}

fn placeholder(num: usize) -> String {
    format!(r#"{{"_placeholder":true,"num":{num}}}"#)
}

/// Event/ack arguments referencing each of `0..attachments` once, mixed among plain values
/// and sometimes nested one level down, as socket.io-client writes them.
fn args_with_placeholders() -> impl Strategy<Value = (Vec<String>, usize)> {
    (vec(json(), 0..4), 0usize..5, vec(any::<bool>(), 5)).prop_map(|(mut args, attachments, nest)| {
        for (num, &nested) in nest.iter().enumerate().take(attachments) {
            let p = placeholder(num);
            let arg = if nested {
                format!(r#"{{"file":{p},"n":{num}}}"#)
            } else {
                p
            };
            let at = (num * 3) % (args.len() + 1);
            args.insert(at, arg);
        }
        (args, attachments)
    })
}

/// Namespaces as socket.io-client writes them: `/` plus name characters, never a `,`.
fn namespace() -> impl Strategy<Value = String> {
    "/[a-zA-Z0-9_./~-]{1,20}"
}

fn packet_type() -> impl Strategy<Value = PacketType> {
    (0u8..7).prop_map(|d| PacketType::from_u8(b'0' + d).unwrap())
}

fn after_engineio_prefix(out: &[u8]) -> &str {
    std::str::from_utf8(out).unwrap().strip_prefix('4').unwrap()
}

proptest! {
    #[test]
    fn encode_packet_round_trips(
        kind in packet_type(),
        attachments in 0..=ATTACHMENTS_MAX,
        ack_id in proptest::option::of(any::<u64>()),
        data in prop_oneof![Just(String::new()), json_container()],
    ) {
        let attachments = if kind.is_binary() { attachments } else { 0 };
        let mut out = Vec::new();
        encode_packet(&mut out, kind, attachments, ack_id, &data);
        let text = std::str::from_utf8(&out).unwrap();
        let expected = Packet { kind, attachments, namespace: "/", ack_id, data: &data };
        prop_assert_eq!(decode(text), Ok(expected));
    }

    #[test]
    fn encode_event_round_trips(
        name in any::<String>(),
        (args, attachments) in args_with_placeholders(),
        ack_id in proptest::option::of(any::<u64>()),
    ) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        encode_event(&mut out, &name, attachments, ack_id, super::event_args(&args));
        let packet = decode(after_engineio_prefix(&out)).unwrap();
        let kind = if attachments > 0 { PacketType::BinaryEvent } else { PacketType::Event };
        prop_assert_eq!((packet.kind, packet.attachments, packet.namespace, packet.ack_id),
            (kind, attachments, "/", ack_id));
        let event = decode_event(packet.data).unwrap();
        prop_assert_eq!(&*event.name, name.as_str());
        prop_assert_eq!(event.args, args);
        prop_assert_eq!(check_placeholders(packet.data, packet.attachments), Ok(()));
    }

    #[test]
    fn encode_ack_round_trips(
        ack_id in any::<u64>(),
        (args, attachments) in args_with_placeholders(),
    ) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        encode_ack(&mut out, ack_id, attachments, super::ack_args(&args));
        let packet = decode(after_engineio_prefix(&out)).unwrap();
        let kind = if attachments > 0 { PacketType::BinaryAck } else { PacketType::Ack };
        prop_assert_eq!((packet.kind, packet.attachments, packet.namespace, packet.ack_id),
            (kind, attachments, "/", Some(ack_id)));
        prop_assert_eq!(packet.data, format!("[{}]", args.join(",")));
        prop_assert_eq!(check_placeholders(packet.data, packet.attachments), Ok(()));
        // An ack's arguments are an array too; read them with the same splitter by giving it
        // a name, as the session does not need to.
        let as_event = format!("[\"\"{}{}]", if args.is_empty() { "" } else { "," }, args.join(","));
        prop_assert_eq!(decode_event(&as_event).unwrap().args, args);
    }

    #[test]
    fn packets_with_namespaces_decode_to_their_parts(
        kind in packet_type(),
        attachments in 0..=ATTACHMENTS_MAX,
        nsp in namespace(),
        ack_id in proptest::option::of(any::<u64>()),
        data in prop_oneof![Just(String::new()), json_container()],
    ) {
        let attachments = if kind.is_binary() { attachments } else { 0 };
        let mut text = String::new();
        text.push(char::from(kind.as_u8()));
        if kind.is_binary() {
            text.push_str(&format!("{attachments}-"));
        }
        text.push_str(&nsp);
        text.push(',');
        if let Some(id) = ack_id {
            text.push_str(&id.to_string());
        }
        text.push_str(&data);
        let expected = Packet { kind, attachments, namespace: &nsp, ack_id, data: &data };
        prop_assert_eq!(decode(&text), Ok(expected));
    }

    #[test]
    fn placeholders_out_of_range_or_missing_are_rejected(
        (args, attachments) in args_with_placeholders(),
        extra in 1usize..3,
    ) {
        let data = format!("[\"e\",{}]", args.join(","));
        prop_assume!(!args.is_empty());
        // One more attachment announced than referenced: the last is never used.
        prop_assert_eq!(check_placeholders(&data, attachments + extra), Err(Error::BadPlaceholder));
        if attachments > 0 {
            // One fewer announced: the highest placeholder points past the end.
            prop_assert_eq!(check_placeholders(&data, attachments - 1), Err(Error::BadPlaceholder));
        }
    }

    #[test]
    fn write_json_str_parses_back_to_the_same_string(s in any::<String>()) {
        let mut bytes = Vec::new();
        write_json_str(&mut bytes, &s);
        let text = String::from_utf8(bytes).unwrap();
        prop_assert_eq!(sonic_rs::from_str::<String>(&text).unwrap(), s.as_str());
        // The escaping leaves no raw control character behind (JSON forbids them in strings).
        prop_assert!(!text.bytes().any(|b| b < 0x20));
        let mut pushed = String::new();
        push_json_str(&mut pushed, &s);
        prop_assert_eq!(pushed, text);
    }

    #[test]
    fn connect_packets_carry_their_fields(sid in any::<String>(), message in any::<String>(), data in proptest::option::of(json())) {
        let ok = super::frame_text(&crate::protocol::frames::connect_ok(&sid));
        let packet = decode(ok.strip_prefix('4').unwrap()).unwrap();
        prop_assert_eq!(packet.kind, PacketType::Connect);
        let value: sonic_rs::Value = sonic_rs::from_str(packet.data).unwrap();
        prop_assert_eq!(value["sid"].as_str(), Some(sid.as_str()));

        let err = super::frame_text(&crate::protocol::frames::connect_error("/", &message, data.as_deref()));
        let packet = decode(err.strip_prefix('4').unwrap()).unwrap();
        prop_assert_eq!(packet.kind, PacketType::ConnectError);
        let value: sonic_rs::Value = sonic_rs::from_str(packet.data).unwrap();
        prop_assert_eq!(value["message"].as_str(), Some(message.as_str()));
        prop_assert_eq!(value.get("data").is_some(), data.is_some());
    }
}
