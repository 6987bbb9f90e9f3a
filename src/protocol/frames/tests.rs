use expect_test::expect;

use super::*;

/// The Engine.IO text of a single-frame packet.
fn text(frame: &Bytes) -> String {
    let payloads: Vec<Payload> = payloads(frame).collect();
    match payloads.as_slice() {
        [Payload::Text(t)] => String::from_utf8(t.to_vec()).unwrap(),
        other => panic!("expected one text payload, got {other:?}"),
    }
}

#[test]
fn an_event_is_one_text_frame() {
    let frame = event("ev", &[], |out| out.extend_from_slice(b",{\"a\":1}"));
    assert_eq!(&frame[..], b"\x81\x1042[\"ev\",{\"a\":1}]");
}

#[test]
fn a_binary_event_carries_its_attachments_in_the_same_buffer() {
    let att = Bytes::from_static(&[1, 2, 3]);
    let frame = event("b", std::slice::from_ref(&att), |out| {
        out.extend_from_slice(b",{\"_placeholder\":true,\"num\":0}")
    });
    let text = b"451-[\"b\",{\"_placeholder\":true,\"num\":0}]";
    let mut expected = vec![0x81, text.len() as u8];
    expected.extend_from_slice(text);
    expected.extend_from_slice(&[0x82, 3, 1, 2, 3]);
    assert_eq!(&frame[..], &expected[..]);
    let payloads: Vec<Payload> = payloads(&frame).collect();
    assert_eq!(
        payloads,
        [Payload::Text(Bytes::from_static(text)), Payload::Binary(att)]
    );
}

#[test]
fn control_packets() {
    expect![[r#"40{"sid":"a\"b"}"#]].assert_eq(&text(&connect_ok("a\"b")));
    expect![[r#"44{"message":"Not \"allowed\""}"#]].assert_eq(&text(&connect_error(
        "/",
        "Not \"allowed\"",
        None,
    )));
    expect![[r#"44{"message":"Invalid","data":{"code":401}}"#]].assert_eq(&text(&connect_error(
        "/",
        "Invalid",
        Some(r#"{"code":401}"#),
    )));
    expect![[r#"44/admin,{"message":"Invalid namespace"}"#]].assert_eq(&text(&connect_error(
        "/admin",
        "Invalid namespace",
        None,
    )));
    expect!["41"].assert_eq(&text(&disconnect()));
    expect!["2"].assert_eq(&text(&engineio("2")));
    expect!["4312[[]]"].assert_eq(&text(&ack(12, &[], |out| out.extend_from_slice(b"[]"))));
}

/// Long payloads use the 16- and 64-bit length forms; reading them back
/// gives the same bytes.
#[test]
fn payloads_read_back_every_length_form() {
    for len in [0, 125, 126, 65_535, 65_536, 200_000] {
        let body = "x".repeat(len);
        let frame = engineio(&body);
        assert_eq!(text(&frame).len(), len);
    }
    assert_eq!(payloads(&Bytes::from_static(b"\x81")).count(), 0);
    assert_eq!(payloads(&Bytes::from_static(b"\x81\x05ab")).count(), 0);
}

/// A polling body joins every packet of every frame with `\x1e`, slices
/// text without copying, sends binary as `b` + base64 and leaves out
/// WebSocket control frames.
#[test]
fn polling_bodies_join_packets_with_the_record_separator() {
    let binary = Bytes::from_static(&[1, 2, 3]);
    let frames = [
        engineio("2"),
        event("e", std::slice::from_ref(&binary), |out| {
            out.extend_from_slice(b",1")
        }),
        crate::protocol::websocket::close_frame(1000, ""),
        disconnect(),
    ];
    let mut pieces = Vec::new();
    let len = polling_body(&frames, &mut pieces);
    let body: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
    assert_eq!(body, b"2\x1e451-[\"e\",1]\x1ebAQID\x1e41".to_vec());
    assert_eq!(len, body.len());
    // The text payloads point into the frames: no copy.
    let text = &pieces[0];
    assert!(frames[0].as_ptr_range().contains(&text.as_ptr()));
    let mut none = Vec::new();
    assert_eq!(polling_body(&[], &mut none), 0);
    assert!(none.is_empty());
}
