use super::*;

fn unmask(frame: &[u8]) -> (FrameHead, Vec<u8>) {
    let head = decode_frame(frame).expect("complete frame");
    let mask = &frame[head.payload_offset - 4..head.payload_offset];
    let payload = frame[head.payload_offset..head.frame_len()]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i & 3])
        .collect();
    (head, payload)
}

#[test]
fn accept_key_matches_rfc_example() {
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn upgrade_response_needs_101_and_accept() {
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x01x";
    assert_eq!(
        parse_upgrade_response(ok, key),
        UpgradeResponse::Switched {
            head_len: ok.len() - 3
        }
    );
    assert_eq!(
        parse_upgrade_response(&ok[..20], key),
        UpgradeResponse::Incomplete
    );
    let refused = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    assert!(matches!(
        parse_upgrade_response(refused, key),
        UpgradeResponse::Refused { .. }
    ));
    let bad_key = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: nope\r\n\r\n";
    assert!(matches!(
        parse_upgrade_response(bad_key, key),
        UpgradeResponse::Refused { .. }
    ));
}

#[test]
fn frames_round_trip_at_each_length_class() {
    for len in [0usize, 5, 125, 126, 65_535, 65_536] {
        let payload = vec![b'a'; len];
        let mut out = Vec::new();
        encode_frame(&mut out, OPCODE_TEXT, &payload, [1, 2, 3, 4]);
        let (head, decoded) = unmask(&out);
        assert!(head.fin);
        assert_eq!(head.opcode, OPCODE_TEXT);
        assert_eq!(decoded, payload, "len {len}");
        assert_eq!(
            decode_frame(&out[..out.len() - 1]),
            None,
            "incomplete at len {len}"
        );
    }
}

#[test]
fn text_with_matches_encode_frame() {
    for len in [3usize, 200, 70_000] {
        let payload = vec![b'z'; len];
        let mut expected = b"prefix".to_vec();
        encode_frame(&mut expected, OPCODE_TEXT, &payload, [9, 8, 7, 6]);
        let mut out = b"prefix".to_vec();
        encode_text_with(&mut out, [9, 8, 7, 6], |out| out.extend_from_slice(&payload));
        assert_eq!(out, expected, "len {len}");
    }
}

#[test]
fn server_frames_decode() {
    let frame = b"\x81\x0542[\"m\"";
    let head = decode_frame(frame).expect("complete");
    assert_eq!(
        head,
        FrameHead {
            fin: true,
            opcode: OPCODE_TEXT,
            payload_offset: 2,
            payload_len: 5
        }
    );
    let mut long = vec![0x81, 126, 0x01, 0x00];
    long.extend(std::iter::repeat_n(b'x', 256));
    assert_eq!(decode_frame(&long).map(|h| h.payload_len), Some(256));
}

#[test]
fn packets_classify() {
    assert_eq!(Packet::classify(b"0{\"sid\":\"x\"}"), Packet::Open);
    assert_eq!(Packet::classify(b"2"), Packet::Ping);
    assert_eq!(
        Packet::classify(b"40{\"sid\":\"abc_-\"}"),
        Packet::Connected { sid: b"abc_-" }
    );
    assert_eq!(Packet::classify(b"44{\"message\":\"no\"}"), Packet::ConnectError);
    assert_eq!(
        Packet::classify(b"42[\"m\",{\"channel\":\"c\"}]"),
        Packet::Event {
            name: b"m",
            body: b",{\"channel\":\"c\"}]"
        }
    );
    assert_eq!(Packet::classify(b"6"), Packet::Other);
}

#[test]
fn numbers_are_found_in_any_key_order() {
    let body = br#",{"channel":"c1","message":{"pad":"xx","seq":42,"src":7,"ts":1234567890}}]"#;
    assert_eq!(number_after(body, b"\"seq\":"), Some(42));
    assert_eq!(number_after(body, b"\"src\":"), Some(7));
    assert_eq!(number_after(body, b"\"ts\":"), Some(1_234_567_890));
    assert_eq!(number_after(body, b"\"nope\":"), None);
}

#[test]
fn message_numbers_in_the_written_order_and_any_other() {
    let written = br#",{"channel":"c0","message":{"src":1000,"seq":5,"ts":123456789,"pad":"xx"}}]"#;
    assert_eq!(message_numbers(written), Some((1000, 5, 123_456_789)));
    let sorted = br#",{"channel":"c1","message":{"pad":"xx","seq":42,"src":7,"ts":1234567890}}]"#;
    assert_eq!(message_numbers(sorted), Some((7, 42, 1_234_567_890)));
    let spaced = br#",{"channel":null,"message":{"src":3, "seq":4, "ts":5}}]"#;
    assert_eq!(message_numbers(spaced), Some((3, 4, 5)));
    assert_eq!(message_numbers(br#",{"message":{"src":3,"seq":4}}]"#), None);
    assert_eq!(message_numbers(br#",{"message":{"seq":4,"ts":5}}]"#), None);
    assert_eq!(message_numbers(br#",{"message":{"src":,"seq":4,"ts":5}}]"#), None);
}

#[test]
fn header_value_is_found_case_insensitively_and_trimmed() {
    let head = b"GET /realtime/ HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Key:  abc== \r\nUpgrade: websocket";
    assert_eq!(header_value(head, "sec-websocket-key"), Some(&b"abc=="[..]));
    assert_eq!(header_value(head, "origin"), None);
}
