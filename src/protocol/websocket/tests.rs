use bytes::BytesMut;
use expect_test::{expect, Expect};

use super::*;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame, as a browser would send it.
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    out
}

fn check_head(bytes: &[u8], expect: Expect) {
    let actual = match decode_head(bytes, 1 << 20) {
        Ok(Some(h)) => format!(
            "fin={} {:?} header_len={} payload_len={} mask={:02x?}",
            h.fin, h.opcode, h.header_len, h.payload_len, h.mask
        ),
        Ok(None) => "incomplete".to_owned(),
        Err(e) => format!("error {e:?} close={}", e.close_code()),
    };
    expect.assert_eq(&actual);
}

#[test]
fn decode_head_cases() {
    // RFC 6455 5.7: a single-frame masked text message "Hello".
    let hello = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58];
    check_head(
        &hello,
        expect!["fin=true Text header_len=6 payload_len=5 mask=[37, fa, 21, 3d]"],
    );
    // Every prefix of a header is "incomplete", never an error.
    for n in 0..6 {
        check_head(&hello[..n], expect!["incomplete"]);
    }
    // RFC 6455 5.7: fragmented unmasked "Hel" "lo" would be rejected; masked fragments pass.
    check_head(
        &client_frame(false, 0x1, b"Hel"),
        expect!["fin=false Text header_len=6 payload_len=3 mask=[37, fa, 21, 3d]"],
    );
    check_head(
        &client_frame(true, 0x0, b"lo"),
        expect!["fin=true Continuation header_len=6 payload_len=2 mask=[37, fa, 21, 3d]"],
    );
    check_head(
        &client_frame(true, 0x9, b"Hello"),
        expect!["fin=true Ping header_len=6 payload_len=5 mask=[37, fa, 21, 3d]"],
    );
    check_head(
        &client_frame(true, 0xA, b""),
        expect!["fin=true Pong header_len=6 payload_len=0 mask=[37, fa, 21, 3d]"],
    );
    check_head(
        &client_frame(true, 0x8, &[0x03, 0xe8]),
        expect!["fin=true Close header_len=6 payload_len=2 mask=[37, fa, 21, 3d]"],
    );
    // Length encodings: 7-bit boundary, 16-bit, 64-bit.
    check_head(
        &client_frame(true, 0x2, &[0; 125]),
        expect!["fin=true Binary header_len=6 payload_len=125 mask=[37, fa, 21, 3d]"],
    );
    check_head(
        &client_frame(true, 0x2, &[0; 126]),
        expect!["fin=true Binary header_len=8 payload_len=126 mask=[37, fa, 21, 3d]"],
    );
    check_head(
        &client_frame(true, 0x2, &[0; 65535]),
        expect!["fin=true Binary header_len=8 payload_len=65535 mask=[37, fa, 21, 3d]"],
    );
    check_head(
        &client_frame(true, 0x2, &[0; 65536]),
        expect!["fin=true Binary header_len=14 payload_len=65536 mask=[37, fa, 21, 3d]"],
    );
    check_head(&[0x82, 0xFE, 0x01], expect!["incomplete"]);
    check_head(&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3], expect!["incomplete"]);
    check_head(&[0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0], expect!["incomplete"]);

    // Negative space.
    check_head(&[0xC1, 0x80], expect!["error ReservedBitsSet close=1002"]);
    check_head(&[0xA1, 0x80], expect!["error ReservedBitsSet close=1002"]);
    check_head(&[0x91, 0x80], expect!["error ReservedBitsSet close=1002"]);
    check_head(&[0x83, 0x80], expect!["error UnknownOpcode(3) close=1002"]);
    check_head(&[0x8B, 0x80], expect!["error UnknownOpcode(11) close=1002"]);
    check_head(&[0x8F, 0x80], expect!["error UnknownOpcode(15) close=1002"]);
    check_head(&[0x81, 0x05], expect!["error UnmaskedFrame close=1002"]);
    check_head(&[0x09, 0x80], expect!["error FragmentedControlFrame close=1002"]);
    check_head(&[0x08, 0x80], expect!["error FragmentedControlFrame close=1002"]);
    check_head(
        &[0x89, 0xFE, 0x00, 0x7E],
        expect!["error ControlFrameTooLong { len: 126 } close=1002"],
    );
    check_head(
        &[0x8A, 0xFF, 0, 0, 0, 0, 0, 0, 0, 200],
        expect!["error ControlFrameTooLong { len: 200 } close=1002"],
    );
    // Too large is known after the length, before the mask and payload arrive.
    check_head(
        &[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0],
        expect!["error PayloadTooLarge { len: 9223372036854775808, max: 1048576 } close=1009"],
    );
    check_head(
        &[0x82, 0xFF, 0, 0, 0, 0, 0, 0x10, 0, 1],
        expect!["error PayloadTooLarge { len: 1048577, max: 1048576 } close=1009"],
    );
}

#[test]
fn decode_head_payload_max_is_inclusive() {
    let frame = client_frame(true, 0x1, b"12345");
    assert!(matches!(decode_head(&frame, 5), Ok(Some(_))));
    assert_eq!(
        decode_head(&frame, 4),
        Err(Error::PayloadTooLarge { len: 5, max: 4 })
    );
}

fn naive_unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
}

#[test]
fn unmask_matches_naive_at_every_length_and_alignment() {
    let data: Vec<u8> = (0..300u32).map(|i| (i * 31 + 7) as u8).collect();
    for offset in 0..8 {
        for len in 0..(data.len() - offset) {
            let mut fast = data[offset..offset + len].to_vec();
            let mut slow = fast.clone();
            // Also unaligned in memory: unmask a subslice of a larger buffer.
            let mut shifted = data.clone();
            unmask(&mut fast, MASK);
            naive_unmask(&mut slow, MASK);
            unmask(&mut shifted[offset..offset + len], MASK);
            assert_eq!(fast, slow, "len {len}");
            assert_eq!(
                &shifted[offset..offset + len],
                &slow[..],
                "offset {offset} len {len}"
            );
        }
    }
}

#[test]
fn rfc_hello_unmasks() {
    let mut payload = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
    unmask(&mut payload, MASK);
    assert_eq!(&payload, b"Hello");
}

#[test]
fn encode_frame_lengths() {
    for (len, expected_head) in [
        (0usize, &[0x81u8, 0x00][..]),
        (5, &[0x81, 0x05]),
        (125, &[0x81, 125]),
        (126, &[0x81, 126, 0x00, 0x7E]),
        (65535, &[0x81, 126, 0xFF, 0xFF]),
        (65536, &[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
    ] {
        let payload = vec![b'a'; len];
        let mut out = BytesMut::new();
        encode_frame(&mut out, Opcode::Text, &payload);
        assert_eq!(header_len(len), expected_head.len(), "len {len}");
        assert_eq!(&out[..expected_head.len()], expected_head, "len {len}");
        assert_eq!(&out[expected_head.len()..], &payload[..]);
    }
    // RFC 6455 5.7: unmasked "Hello" from the server.
    let mut out = BytesMut::new();
    encode_frame(&mut out, Opcode::Text, b"Hello");
    assert_eq!(&out[..], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    out.clear();
    encode_frame(&mut out, Opcode::Pong, b"Hello");
    assert_eq!(&out[..], &[0x8A, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
}

/// Server frames turned into client frames (by masking) decode back to the same message.
#[test]
fn encode_decode_round_trip() {
    for (opcode, payload) in [
        (Opcode::Text, "héllo".as_bytes().to_vec()),
        (Opcode::Binary, vec![0u8, 1, 2, 255]),
        (Opcode::Binary, vec![7u8; 70_000]),
        (Opcode::Ping, b"p".to_vec()),
        (Opcode::Pong, Vec::new()),
    ] {
        let mut server = BytesMut::new();
        encode_frame(&mut server, opcode, &payload);
        // Mask it the way a client would.
        let mut frame = server.to_vec();
        frame[1] |= 0x80;
        let at = header_len(payload.len());
        frame.splice(at..at, MASK);
        naive_unmask(&mut frame[at + 4..], MASK);

        let head = decode_head(&frame, 1 << 20).unwrap().unwrap();
        assert_eq!(
            (head.fin, head.opcode, head.payload_len),
            (true, opcode, payload.len())
        );
        let body = &mut frame[head.header_len..head.frame_len()];
        unmask(body, head.mask);
        let mut r = Reassembler::new(1 << 20);
        let expected = match opcode {
            Opcode::Text => Message::Text(std::str::from_utf8(&payload).unwrap()),
            Opcode::Binary => Message::Binary(&payload),
            Opcode::Ping => Message::Ping(&payload),
            _ => Message::Pong(&payload),
        };
        assert_eq!(r.push(&head, body).unwrap(), Some(expected));
    }
}

#[test]
fn close_frame_encoding() {
    assert_eq!(&close_frame(1000, "")[..], &[0x88, 0x02, 0x03, 0xE8]);
    assert_eq!(&close_frame(1009, "big")[..], b"\x88\x05\x03\xF1big");
    // The reason is cut to fit 125 bytes, at a character boundary.
    let long = "é".repeat(100);
    let frame = close_frame(1000, &long);
    assert_eq!(frame[1], 124);
    assert_eq!(frame.len(), 2 + 124);
    assert!(std::str::from_utf8(&frame[4..]).is_ok());
}

fn head(fin: bool, opcode: Opcode, payload_len: usize) -> FrameHead {
    FrameHead {
        fin,
        opcode,
        header_len: 6,
        payload_len,
        mask: MASK,
    }
}

/// Feeds (fin, opcode, payload) frames and renders each result, stopping at the first error.
fn check_frames(frames: &[(bool, Opcode, &[u8])], expect: Expect) {
    let mut r = Reassembler::new(16);
    let mut lines = Vec::new();
    for &(fin, opcode, payload) in frames {
        match r.push(&head(fin, opcode, payload.len()), payload) {
            Ok(Some(m)) => lines.push(format!("{m:?}")),
            Ok(None) => lines.push("-".to_owned()),
            Err(e) => {
                lines.push(format!("error {e:?} close={}", e.close_code()));
                break;
            }
        }
    }
    expect.assert_eq(&lines.join("\n"));
}

#[test]
fn reassembly_cases() {
    use Opcode::*;
    check_frames(&[(true, Text, b"Hello")], expect![[r#"Text("Hello")"#]]);
    check_frames(&[(true, Text, b"")], expect![[r#"Text("")"#]]);
    check_frames(&[(true, Binary, b"\x00\xff")], expect!["Binary([0, 255])"]);
    check_frames(
        &[(false, Text, b"Hel"), (true, Continuation, b"lo")],
        expect![[r#"
            -
            Text("Hello")"#]],
    );
    // Control frames interleave with fragments.
    check_frames(
        &[
            (false, Binary, b"\x01"),
            (true, Ping, b"p"),
            (false, Continuation, b""),
            (true, Pong, b""),
            (true, Continuation, b"\x02"),
            (true, Text, b"next"),
        ],
        expect![[r#"
            -
            Ping([112])
            -
            Pong([])
            Binary([1, 2])
            Text("next")"#]],
    );
    // "é" (c3 a9) and "€" (e2 82 ac) split across fragments.
    check_frames(
        &[
            (false, Text, b"a\xc3"),
            (false, Continuation, b"\xa9\xe2"),
            (false, Continuation, b"\x82"),
            (true, Continuation, b"\xac"),
        ],
        expect![[r#"
            -
            -
            -
            Text("aé€")"#]],
    );
    // Invalid UTF-8: unfragmented, in the middle of a fragmented message (fails fast), and
    // a sequence left incomplete at the end.
    check_frames(&[(true, Text, b"\xff")], expect!["error InvalidUtf8 close=1007"]);
    check_frames(
        &[
            (false, Text, b"ok"),
            (false, Continuation, b"\xc0\xaf"),
            (true, Continuation, b""),
        ],
        expect![[r#"
            -
            error InvalidUtf8 close=1007"#]],
    );
    check_frames(
        &[(false, Text, b"ok"), (true, Continuation, b"\xe2\x82")],
        expect![[r#"
            -
            error InvalidUtf8 close=1007"#]],
    );
    // Invalid bytes in binary messages are fine.
    check_frames(
        &[(false, Binary, b"\xff"), (true, Continuation, b"\xfe")],
        expect![[r#"
            -
            Binary([255, 254])"#]],
    );
    check_frames(
        &[(true, Continuation, b"x")],
        expect!["error UnexpectedContinuation close=1002"],
    );
    check_frames(
        &[(false, Text, b"a"), (true, Text, b"b")],
        expect![[r#"
            -
            error ExpectedContinuation close=1002"#]],
    );
    check_frames(
        &[(false, Text, b"a"), (true, Binary, b"b")],
        expect![[r#"
            -
            error ExpectedContinuation close=1002"#]],
    );
    // A finished message leaves nothing in progress.
    check_frames(
        &[
            (false, Text, b"a"),
            (true, Continuation, b"b"),
            (true, Continuation, b"c"),
        ],
        expect![[r#"
            -
            Text("ab")
            error UnexpectedContinuation close=1002"#]],
    );
    // message_bytes_max is 16, unfragmented and across fragments.
    check_frames(
        &[(true, Binary, &[0; 16])],
        expect!["Binary([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])"],
    );
    check_frames(
        &[(true, Binary, &[0; 17])],
        expect!["error PayloadTooLarge { len: 17, max: 16 } close=1009"],
    );
    check_frames(
        &[
            (false, Text, &[b'a'; 10]),
            (false, Continuation, &[b'a'; 6]),
            (true, Continuation, b"a"),
        ],
        expect![[r#"
            -
            -
            error PayloadTooLarge { len: 17, max: 16 } close=1009"#]],
    );
}

#[test]
fn close_payloads() {
    use Opcode::Close;
    check_frames(&[(true, Close, b"")], expect![[r#"Close(None, "")"#]]);
    check_frames(
        &[(true, Close, b"\x03\xe8")],
        expect![[r#"Close(Some(1000), "")"#]],
    );
    check_frames(
        &[(true, Close, b"\x03\xe8bye")],
        expect![[r#"Close(Some(1000), "bye")"#]],
    );
    check_frames(
        &[(true, Close, b"\x03")],
        expect!["error InvalidClosePayload close=1002"],
    );
    check_frames(
        &[(true, Close, b"\x03\xe8\xff")],
        expect!["error InvalidUtf8 close=1007"],
    );
    let valid: Vec<u16> = (0..=u16::MAX).filter(|&c| is_valid_close_code(c)).collect();
    assert_eq!(valid.len(), 4 + 5 + 2000);
    for code in [
        0u16,
        999,
        1004,
        1005,
        1006,
        1012,
        1015,
        1016,
        2999,
        5000,
        u16::MAX,
    ] {
        let payload = code.to_be_bytes();
        let mut r = Reassembler::new(16);
        assert_eq!(
            r.push(&head(true, Close, 2), &payload),
            Err(Error::InvalidCloseCode(code))
        );
    }
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999,
    ] {
        let payload = code.to_be_bytes();
        let mut r = Reassembler::new(16);
        assert_eq!(
            r.push(&head(true, Close, 2), &payload),
            Ok(Some(Message::Close(Some(code), "")))
        );
    }
}

#[test]
fn unfragmented_messages_borrow_the_payload() {
    let payload = b"zero copy".to_vec();
    let mut r = Reassembler::new(64);
    let Ok(Some(Message::Text(text))) = r.push(&head(true, Opcode::Text, payload.len()), &payload) else {
        panic!("expected text");
    };
    assert_eq!(text.as_ptr(), payload.as_ptr());
}

#[test]
fn error_close_codes() {
    let cases = [
        (Error::ReservedBitsSet, 1002),
        (Error::UnknownOpcode(3), 1002),
        (Error::UnmaskedFrame, 1002),
        (Error::ControlFrameTooLong { len: 126 }, 1002),
        (Error::FragmentedControlFrame, 1002),
        (Error::PayloadTooLarge { len: 2, max: 1 }, 1009),
        (Error::InvalidUtf8, 1007),
        (Error::UnexpectedContinuation, 1002),
        (Error::ExpectedContinuation, 1002),
        (Error::InvalidCloseCode(1005), 1002),
        (Error::InvalidClosePayload, 1002),
    ];
    for (error, code) in cases {
        assert_eq!(error.close_code(), code, "{error}");
    }
}

#[test]
fn fuzz_entry_survives_garbage() {
    let mut stream = client_frame(false, 0x1, b"a\xc3");
    stream.extend(client_frame(true, 0x9, b"ping"));
    stream.extend(client_frame(true, 0x0, b"\xa9"));
    stream.extend([0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    for n in 0..stream.len() {
        crate::protocol::fuzzing::websocket_frame(&stream[..n]);
    }
}

mod proptests;
