//! Property tests: every packet type encodes and decodes back to itself, whatever its body.

use proptest::prelude::*;
use sonic_rs::{JsonContainerTrait, JsonValueTrait};

use crate::protocol::engineio::*;

/// Any packet; bodies only where the type has one (open's JSON is `open_packet`'s business).
fn packet(body: &str, type_index: u8) -> Packet<'_> {
    match type_index % 7 {
        0 => Packet::Open,
        1 => Packet::Close,
        2 => Packet::Ping(body),
        3 => Packet::Pong(body),
        4 => Packet::Message(body),
        5 => Packet::Upgrade,
        _ => Packet::Noop,
    }
}

proptest! {
    #[test]
    fn every_packet_type_round_trips(body in any::<String>(), type_index in 0u8..7) {
        let packet = packet(&body, type_index);
        let mut out = String::new();
        packet.encode(&mut out);
        prop_assert_eq!(out.chars().next(), Some(packet.type_char()));
        prop_assert_eq!(decode(&out), Ok(packet));
    }

    #[test]
    fn only_type_digits_decode(text in any::<String>()) {
        let result = decode(&text);
        match text.as_bytes().first() {
            None => prop_assert_eq!(result, Err(Error::Empty)),
            Some(b'0'..=b'6') => prop_assert!(result.is_ok()),
            Some(&other) => prop_assert_eq!(result, Err(Error::UnknownType(other))),
        }
    }

    #[test]
    fn open_packet_is_json_with_the_given_fields(
        sid in any::<String>(),
        ping_interval_ms in any::<u64>(),
        ping_timeout_ms in any::<u64>(),
        max_payload_bytes in any::<usize>(),
    ) {
        let text = open_packet(&sid, ping_interval_ms, ping_timeout_ms, max_payload_bytes);
        prop_assert_eq!(decode(&text), Ok(Packet::Open));
        let json: sonic_rs::Value = sonic_rs::from_str(&text[1..]).unwrap();
        prop_assert_eq!(json["sid"].as_str(), Some(sid.as_str()));
        prop_assert_eq!(json["pingInterval"].as_u64(), Some(ping_interval_ms));
        prop_assert_eq!(json["pingTimeout"].as_u64(), Some(ping_timeout_ms));
        prop_assert_eq!(json["maxPayload"].as_u64(), Some(max_payload_bytes as u64));
        prop_assert_eq!(json["upgrades"].as_array().map(|a| a.len()), Some(0));
    }
}
