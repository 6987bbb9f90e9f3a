//! Property tests: what the server encodes, or a client masks and fragments, decodes back to
//! the same message, whatever the payload, mask and fragment boundaries.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::protocol::websocket::*;

/// The payload limit these tests decode with; larger than any generated message.
const PAYLOAD_MAX: usize = 1 << 20;

/// Turns a server frame (unmasked, from [`encode_frame`]) into the frame a client would send
/// with the same content: fin/opcode kept, mask bit set, `mask` inserted, payload XORed.
fn masked_like_client(server_frame: &[u8], mask: [u8; 4], fin: bool) -> Vec<u8> {
    let b0 = server_frame[0];
    let header_len = match server_frame[1] & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    let mut out = Vec::with_capacity(server_frame.len() + 4);
    out.push(if fin { b0 } else { b0 & 0x7F });
    out.push(server_frame[1] | 0x80);
    out.extend_from_slice(&server_frame[2..header_len]);
    out.extend_from_slice(&mask);
    out.extend(
        server_frame[header_len..]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m),
    );
    out
}

fn client_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4], fin: bool) -> Vec<u8> {
    let mut server = BytesMut::new();
    encode_frame(&mut server, opcode, payload);
    masked_like_client(&server, mask, fin)
}

/// What the connection reader does: decode one head, unmask in place, reassemble. Messages
/// are returned owned (with the opcode they arrived as) so several frames can be fed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

fn decode_stream(stream: &mut [u8], reassembler: &mut Reassembler) -> Result<Vec<Owned>, Error> {
    let mut messages = Vec::new();
    let mut start = 0;
    while start < stream.len() {
        let rest = &mut stream[start..];
        let head = decode_head(rest, PAYLOAD_MAX)?.expect("a whole frame is buffered");
        assert!(
            rest.len() >= head.frame_len(),
            "decoded head promises more than was encoded"
        );
        let payload = &mut rest[head.header_len..head.frame_len()];
        unmask(payload, head.mask);
        if let Some(message) = reassembler.push(&head, payload)? {
            messages.push(match message {
                Message::Text(t) => Owned::Text(t.to_owned()),
                Message::Binary(b) => Owned::Binary(b.to_vec()),
                Message::Ping(b) => Owned::Ping(b.to_vec()),
                Message::Pong(b) => Owned::Pong(b.to_vec()),
                Message::Close(code, reason) => Owned::Close(code, reason.to_owned()),
            });
        }
        start += head.frame_len();
    }
    Ok(messages)
}

/// One whole message of any kind, as the client means it, with its wire opcode and payload.
fn message() -> impl Strategy<Value = (Owned, Opcode, Vec<u8>)> {
    // Lengths cross the 125/126 and 65535/65536 header-size boundaries.
    let binary = prop_oneof![vec(any::<u8>(), 0..300), large_bytes(65_530..65_540)];
    let control = vec(any::<u8>(), 0..=CONTROL_PAYLOAD_BYTES_MAX);
    prop_oneof![
        any::<String>().prop_map(|s| (Owned::Text(s.clone()), Opcode::Text, s.into_bytes())),
        binary.prop_map(|b| (Owned::Binary(b.clone()), Opcode::Binary, b)),
        control
            .clone()
            .prop_map(|b| (Owned::Ping(b.clone()), Opcode::Ping, b)),
        control.prop_map(|b| (Owned::Pong(b.clone()), Opcode::Pong, b)),
        (close_code(), reason()).prop_map(|(code, reason)| {
            let mut payload = code.to_be_bytes().to_vec();
            payload.extend_from_slice(reason.as_bytes());
            (Owned::Close(Some(code), reason), Opcode::Close, payload)
        }),
        Just((Owned::Close(None, String::new()), Opcode::Close, Vec::new())),
    ]
}

/// Pseudo-random bytes from a seed: a 64 KiB `vec(any::<u8>())` is slow to generate and shrink.
fn large_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    (any::<u64>(), len).prop_map(|(mut state, len)| {
        (0..len)
            .map(|_| {
                // xorshift64*; any nonzero state works, so 0 is nudged.
                state = state.max(1);
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    })
}

fn close_code() -> impl Strategy<Value = u16> {
    prop_oneof![1000u16..=1003, 1007u16..=1011, 3000u16..=4999]
}

/// A close reason that fits the 123 bytes a close frame leaves for it.
fn reason() -> impl Strategy<Value = String> {
    any::<String>().prop_map(|s| {
        let mut end = s.len().min(CONTROL_PAYLOAD_BYTES_MAX - 2);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    })
}

/// Splits `payload` at `cuts` (taken modulo `len + 1`, so repeats and ends give empty
/// fragments), then adds `empties` more empty fragments: clients may send empty frames.
fn split<'a>(payload: &'a [u8], cuts: &[usize], empties: usize) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut start = 0;
    for cut in cuts {
        pieces.push(&payload[start..cut]);
        start = cut;
    }
    pieces.push(&payload[start..]);
    for i in 0..empties {
        let at = i * 7 % (pieces.len() + 1);
        pieces.insert(at, &payload[..0]);
    }
    pieces
}

proptest! {
    #[test]
    fn encoded_frames_decode_to_the_same_message(
        (expected, opcode, payload) in message(),
        mask in any::<[u8; 4]>(),
    ) {
        let mut stream = client_frame(opcode, &payload, mask, true);
        prop_assert_eq!(stream.len(), header_len(payload.len()) + 4 + payload.len());
        let head = decode_head(&stream, PAYLOAD_MAX).unwrap().unwrap();
        prop_assert_eq!(head.opcode, opcode);
        prop_assert!(head.fin);
        prop_assert_eq!(head.mask, mask);
        prop_assert_eq!(head.payload_len, payload.len());
        let messages = decode_stream(&mut stream, &mut Reassembler::new(PAYLOAD_MAX)).unwrap();
        prop_assert_eq!(messages, vec![expected]);
    }

    #[test]
    fn fragmented_messages_reassemble(
        text in any::<bool>(),
        payload in vec(any::<u8>(), 0..2000),
        text_payload in any::<String>(),
        cuts in vec(any::<usize>(), 0..8),
        empties in 0usize..3,
        masks in vec(any::<[u8; 4]>(), 16),
        ping_after in vec(any::<bool>(), 16),
    ) {
        let (opcode, payload, expected) = if text {
            // Cuts fall anywhere, including inside a multi-byte character.
            let bytes = text_payload.clone().into_bytes();
            (Opcode::Text, bytes, Owned::Text(text_payload))
        } else {
            (Opcode::Binary, payload.clone(), Owned::Binary(payload))
        };
        let pieces = split(&payload, &cuts, empties);
        let mut stream = Vec::new();
        let mut expected_messages = Vec::new();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let frame_opcode = if i == 0 { opcode } else { Opcode::Continuation };
            stream.extend(client_frame(frame_opcode, piece, masks[i % masks.len()], i == last));
            // Control frames may interleave with the fragments of a message.
            if i != last && ping_after[i % ping_after.len()] {
                stream.extend(client_frame(Opcode::Ping, &[i as u8], masks[(i + 1) % masks.len()], true));
                expected_messages.push(Owned::Ping(vec![i as u8]));
            }
        }
        expected_messages.push(expected);
        let mut reassembler = Reassembler::new(PAYLOAD_MAX);
        let messages = decode_stream(&mut stream, &mut reassembler).unwrap();
        prop_assert_eq!(messages, expected_messages);
        prop_assert!(!reassembler.is_in_progress());
    }

    #[test]
    fn every_prefix_of_a_frame_head_is_incomplete(
        len in prop_oneof![0usize..126, 126usize..=65_535, 65_536usize..1 << 20],
        mask in any::<[u8; 4]>(),
        binary in any::<bool>(),
    ) {
        let mut head = BytesMut::new();
        let opcode = if binary { Opcode::Binary } else { Opcode::Text };
        encode_head(&mut head, opcode, len);
        prop_assert_eq!(head.len(), header_len(len));
        let client = masked_like_client(&head, mask, true);
        for n in 0..client.len() {
            prop_assert_eq!(decode_head(&client[..n], PAYLOAD_MAX), Ok(None));
        }
        let decoded = decode_head(&client, PAYLOAD_MAX).unwrap().unwrap();
        prop_assert_eq!(decoded.payload_len, len);
        prop_assert_eq!(decoded.header_len, client.len());
        prop_assert_eq!(
            decode_head(&client, len.saturating_sub(1)).map(|h| h.is_some()),
            if len == 0 { Ok(true) } else { Err(Error::PayloadTooLarge { len: len as u64, max: len - 1 }) }
        );
    }

    #[test]
    fn unmask_is_an_involution_and_matches_plain_xor(
        payload in vec(any::<u8>(), 0..200),
        mask in any::<[u8; 4]>(),
        offset in 0usize..8,
    ) {
        // Unaligned starts too: the chunked loop must not depend on the slice's address.
        let offset = offset.min(payload.len());
        let mut data = payload.clone();
        unmask(&mut data[offset..], mask);
        let expected: Vec<u8> = payload[..offset]
            .iter()
            .copied()
            .chain(payload[offset..].iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m))
            .collect();
        prop_assert_eq!(&data, &expected);
        unmask(&mut data[offset..], mask);
        prop_assert_eq!(data, payload);
    }

    #[test]
    fn close_frame_decodes_to_its_code_and_a_prefix_of_its_reason(
        code in close_code(),
        reason in any::<String>(),
        mask in any::<[u8; 4]>(),
    ) {
        let server = close_frame(code, &reason);
        let mut client = masked_like_client(&server, mask, true);
        let messages = decode_stream(&mut client, &mut Reassembler::new(PAYLOAD_MAX)).unwrap();
        let [Owned::Close(Some(decoded), decoded_reason)] = messages.as_slice() else {
            panic!("expected one close, got {messages:?}");
        };
        prop_assert_eq!(*decoded, code);
        prop_assert!(reason.starts_with(decoded_reason.as_str()));
        prop_assert!(decoded_reason.len() <= CONTROL_PAYLOAD_BYTES_MAX - 2);
        prop_assert!(decoded_reason.len() == reason.len() || decoded_reason.len() + 4 > CONTROL_PAYLOAD_BYTES_MAX - 2);
    }
}
