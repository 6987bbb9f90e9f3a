//! RFC 6455 framing as the server enforces it: masking, reserved bits,
//! opcodes, control frames, UTF-8, fragmentation, ping/pong, the closing
//! handshake, truncated input, and extended payload lengths both ways.

use crate::support::sio::event;
use crate::support::ws::{encode_frame, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};
use crate::support::{channel_event, join_all, random_mask, ShardBarrier, Sio, TestServer};

#[test]
fn unmasked_frame_closes_1002() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_raw(&encode_frame(
        true,
        0,
        OP_TEXT,
        br#"42["join",{"channel":"x"}]"#,
        None,
    ));
    sio.ws.expect_close_code(1002);
}

#[test]
fn unmasked_frame_before_socket_io_connect_closes_1002() {
    let server = TestServer::start(2);
    let mut open = crate::support::engine_open(&server);
    open.ws.send_raw(&encode_frame(true, 0, OP_TEXT, b"40", None));
    open.ws.expect_close_code(1002);
}

#[test]
fn reserved_bits_close_1002() {
    let server = TestServer::start(2);
    // No extension is negotiated, so every RSV bit is a protocol error.
    for rsv in [1u8, 2, 4, 7] {
        let mut sio = Sio::connect_default(&server);
        sio.ws.send_frame_with(true, rsv, OP_TEXT, b"6");
        sio.ws.expect_close_code(1002);
    }
}

#[test]
fn unknown_opcodes_close_1002() {
    let server = TestServer::start(2);
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let mut sio = Sio::connect_default(&server);
        sio.ws.send_frame(opcode, b"x");
        sio.ws.expect_close_code(1002);
    }
}

#[test]
fn fragmented_control_frame_closes_1002() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_frame_with(false, 0, OP_PING, b"frag");
    sio.ws.expect_close_code(1002);
}

#[test]
fn control_frame_over_125_bytes_closes_1002() {
    let server = TestServer::start(2);
    for opcode in [OP_PING, OP_PONG, OP_CLOSE] {
        let mut sio = Sio::connect_default(&server);
        let mut payload = vec![b'p'; 126];
        if opcode == OP_CLOSE {
            payload[..2].copy_from_slice(&1000u16.to_be_bytes());
        }
        sio.ws.send_frame(opcode, &payload);
        sio.ws.expect_close_code(1002);
    }
}

#[test]
fn close_with_one_byte_payload_closes_1002() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_frame(OP_CLOSE, &[3]);
    sio.ws.expect_close_code(1002);
}

#[test]
fn invalid_utf8_text_closes_1007() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_frame(
        OP_TEXT,
        b"42[\"message\",{\"eventName\":\"e\",\"message\":\"\xff\xfe\"}]",
    );
    sio.ws.expect_close_code(1007);
}

#[test]
fn invalid_utf8_in_fragmented_text_closes_1007() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    // A lead byte of a 2-byte sequence followed by ASCII: invalid once joined.
    sio.ws
        .send_frame_with(false, 0, OP_TEXT, b"42[\"message\",{\"message\":\"\xc3");
    sio.ws
        .send_frame_with(true, 0, OP_CONTINUATION, b"A\",\"eventName\":\"e\"}]");
    sio.ws.expect_close_code(1007);
}

#[test]
fn continuation_without_a_start_closes_1002() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_frame(OP_CONTINUATION, b"6");
    sio.ws.expect_close_code(1002);
}

#[test]
fn new_data_frame_inside_a_fragmented_message_closes_1002() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_frame_with(false, 0, OP_TEXT, b"42[\"join\",");
    sio.ws.send_frame(OP_TEXT, b"6");
    sio.ws.expect_close_code(1002);
}

#[test]
fn fragmented_text_with_a_ping_between_is_reassembled() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut member = Sio::connect_default(&server);
    let mut joiner = Sio::connect_default(&server);
    member.join("frag");
    member.sentinel("frag", "ready");
    barrier.sync();

    let ping_payload = [0x00, 0x01, 0xFE, 0xFF, b'p'];
    joiner.ws.send_frame_with(false, 0, OP_TEXT, b"42[\"jo");
    joiner.ws.send_frame(OP_PING, &ping_payload);
    joiner
        .ws
        .send_frame_with(false, 0, OP_CONTINUATION, b"in\",{\"chan");
    joiner
        .ws
        .send_frame_with(true, 0, OP_CONTINUATION, b"nel\":\"frag\"}]");

    let pong = joiner.recv();
    assert_eq!((pong.opcode, pong.fin), (OP_PONG, true), "{pong:?}");
    assert_eq!(pong.payload, ping_payload);
    member.expect(&channel_event("join", "frag", &joiner.id, "null"));
}

#[test]
fn utf8_split_across_fragments_is_accepted() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut sender = Sio::connect_default(&server);
    let mut receiver = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut sender, &mut receiver], "utf8");
    // "é" is C3 A9 and "€" is E2 82 AC; each is cut between two fragments.
    let packet = "42[\"message\",{\"channel\":\"utf8\",\"eventName\":\"e\",\"message\":\"é€\"}]";
    let bytes = packet.as_bytes();
    let first_cut = packet.find('é').expect("é") + 1;
    let second_cut = packet.find('€').expect("€") + 2;
    sender.ws.send_frame_with(false, 0, OP_TEXT, &bytes[..first_cut]);
    sender
        .ws
        .send_frame_with(false, 0, OP_CONTINUATION, &bytes[first_cut..second_cut]);
    sender
        .ws
        .send_frame_with(true, 0, OP_CONTINUATION, &bytes[second_cut..]);
    receiver.expect(&event("e", Some("utf8"), "\"é€\""));
}

#[test]
fn ping_is_answered_with_a_pong_carrying_the_same_payload() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    for payload in [&b""[..], b"hello", &[0u8, 0xFF, 0x80, 0x7F], &[b'x'; 125]] {
        sio.ws.send_frame(OP_PING, payload);
        let pong = sio.recv();
        assert_eq!((pong.opcode, pong.fin, pong.rsv), (OP_PONG, true, 0), "{pong:?}");
        assert_eq!(pong.payload, payload);
    }
    // Unsolicited pongs are allowed and ignored.
    sio.ws.send_frame(OP_PONG, b"unsolicited");
    sio.join("p");
    sio.sentinel("p", "after-pong");
}

#[test]
fn close_with_a_code_is_echoed() {
    let server = TestServer::start(2);
    for code in [1000u16, 1001, 3000, 4999] {
        let mut sio = Sio::connect_default(&server);
        sio.ws.send_close(code, "bye");
        let close = sio.ws.read_frame();
        assert_eq!(close.opcode, OP_CLOSE, "{close:?}");
        assert_eq!(close.close_code(), Some(code), "{close:?}");
        sio.ws.expect_eof();
    }
}

#[test]
fn close_without_a_code_is_answered_and_closed() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    sio.ws.send_frame(OP_CLOSE, b"");
    let close = sio.ws.read_frame();
    assert_eq!(close.opcode, OP_CLOSE, "{close:?}");
    // RFC 6455 allows an empty answer or 1000; never an error code.
    assert!(matches!(close.close_code(), None | Some(1000)), "{close:?}");
    sio.ws.expect_eof();
}

#[test]
fn client_close_sends_channel_leave_to_members() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut stays = Sio::connect_default(&server);
    let mut leaves = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut stays, &mut leaves], "bye");
    leaves.ws.send_close(1000, "");
    stays.expect(&channel_event("leave", "bye", &leaves.id, "null"));
}

#[test]
fn truncated_frame_then_eof_closes_and_the_server_serves_others() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut bystander = Sio::connect_default(&server);
    let mut truncated = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut bystander, &mut truncated], "t");

    // A header announcing 100 bytes, then only 10 of them, then EOF.
    let frame = encode_frame(true, 0, OP_TEXT, &[b'6'; 100], Some(random_mask()));
    truncated.ws.send_raw(&frame[..2 + 4 + 10]);
    truncated.ws.shutdown_write();
    truncated.ws.expect_closed();
    bystander.expect(&channel_event("leave", "t", &truncated.id, "null"));
    barrier.sync();

    // Old and new connections still work.
    let mut newcomer = Sio::connect_default(&server);
    newcomer.join("t");
    bystander.expect(&channel_event("join", "t", &newcomer.id, "null"));
    bystander.sentinel("t", "still-here");
    newcomer.expect(&event("still-here", Some("t"), "0"));
}

#[test]
fn truncated_header_then_eof_closes() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    // A 64-bit length header cut after three of its eight length bytes.
    sio.ws.send_raw(&[0x81, 0xFF, 0, 0, 0]);
    sio.ws.shutdown_write();
    sio.ws.expect_closed();
    let mut other = Sio::connect_default(&server);
    other.join("alive");
    other.sentinel("alive", "ok");
}

#[test]
fn extended_payload_lengths_work_both_ways() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut sender = Sio::connect_default(&server);
    let mut receiver = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut sender, &mut receiver], "len");
    // 7-bit, 16-bit (126) and 64-bit (127) length encodings in both directions.
    for size in [10usize, 200, 65_535, 70_000, 300_000] {
        let message = format!("\"{}\"", "x".repeat(size));
        sender.emit(&format!(
            r#"["message",{{"channel":"len","eventName":"e","message":{message}}}]"#
        ));
        receiver.expect(&event("e", Some("len"), &message));
    }
}

#[test]
fn binary_frames_are_engine_io_messages() {
    let server = TestServer::start(2);
    let mut barrier = ShardBarrier::new(&server);
    let mut sender = Sio::connect_default(&server);
    let mut receiver = Sio::connect_default(&server);
    join_all(&mut barrier, &mut [&mut sender, &mut receiver], "bin");
    sender
        .send(r#"451-["message",{"channel":"bin","eventName":"b","message":{"_placeholder":true,"num":0}}]"#);
    // The attachment itself arrives fragmented: still one Engine.IO message.
    sender.ws.send_frame_with(false, 0, OP_BINARY, &[1, 2]);
    sender.ws.send_frame_with(true, 0, OP_CONTINUATION, &[3, 0xFF]);
    receiver.expect(r#"451-["b",{"channel":"bin","message":{"_placeholder":true,"num":0}}]"#);
    receiver.expect_binary(&[1, 2, 3, 0xFF]);
}

#[test]
fn close_with_an_invalid_code_closes_1002() {
    let server = TestServer::start(2);
    // Codes RFC 6455 section 7.4 reserves, leaves undefined, or forbids on the wire.
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        let mut sio = Sio::connect_default(&server);
        sio.ws.send_close(code, "");
        let close = sio.ws.read_frame();
        assert_eq!(close.opcode, OP_CLOSE, "after close {code}: {close:?}");
        assert_eq!(close.close_code(), Some(1002), "after close {code}: {close:?}");
        sio.ws.expect_eof();
    }
}

#[test]
fn close_reason_with_invalid_utf8_closes_1007() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bad \xff reason");
    sio.ws.send_frame(OP_CLOSE, &payload);
    sio.ws.expect_close_code(1007);
}

#[test]
fn payload_length_with_the_high_bit_set_closes() {
    let server = TestServer::start(2);
    let mut sio = Sio::connect_default(&server);
    // RFC 6455 section 5.2: the most significant bit of a 64-bit length MUST be 0.
    let mut frame = vec![0x81, 0xFF];
    frame.extend_from_slice(&(1u64 << 63 | 4).to_be_bytes());
    frame.extend_from_slice(&random_mask());
    frame.extend_from_slice(b"6666");
    sio.ws.send_raw(&frame);
    let close = sio.ws.read_frame();
    assert_eq!(close.opcode, OP_CLOSE, "{close:?}");
    // A protocol error, or simply too big: either way the connection fails.
    assert!(matches!(close.close_code(), Some(1002 | 1009)), "{close:?}");
    sio.ws.expect_eof();
}
