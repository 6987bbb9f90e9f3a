//! Encode once, deliver many: turning one publish into one complete
//! WebSocket frame and handing refcounted clones of it to every recipient.
//!
//! **Invariant:** a published message is serialized exactly once, on the
//! sender's shard. Every local recipient and every other shard gets a clone
//! of the same [`Bytes`]; the `message` value a client sent is spliced into
//! the frame byte for byte, never parsed into a tree and re-serialized.
//! Binary attachments become binary frames concatenated after the text frame
//! in the same buffer, so one queue slot carries the whole packet.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};
use slab::Slab;

pub(crate) use crate::protocol::socketio::push_decimal;
use crate::protocol::socketio::write_json_str;
use crate::protocol::websocket::{encode_frame, header_len, Opcode};
use crate::realtime::channels::{Members, SlabKey};
use crate::shard::Member;

thread_local! {
    /// Scratch space for building one packet's text before it is framed.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Builds the frame(s) of Socket.IO event `name`: `42["name",<args>]`, or
/// `45<n>-["name",<args>]` followed by `n` binary frames when there are
/// attachments. `write_args` appends the arguments, each starting with `,`.
pub(crate) fn event_frame(name: &str, attachments: &[Bytes], write_args: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    text_packet(attachments, |out| {
        if attachments.is_empty() {
            out.extend_from_slice(b"42[");
        } else {
            out.extend_from_slice(b"45");
            push_decimal(out, attachments.len() as u64);
            out.extend_from_slice(b"-[");
        }
        write_json_str(out, name);
        write_args(out);
        out.push(b']');
    })
}

/// Frames an arbitrary Engine.IO text packet built by `write` (which must
/// include the Engine.IO type prefix), followed by `attachments` as binary
/// frames, all in one buffer.
pub(crate) fn text_packet(attachments: &[Bytes], write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    SCRATCH.with(|scratch| {
        let mut text = scratch.borrow_mut();
        text.clear();
        write(&mut text);
        let mut total = header_len(text.len()) + text.len();
        for a in attachments {
            total += header_len(a.len()) + a.len();
        }
        let mut out = BytesMut::with_capacity(total);
        encode_frame(&mut out, Opcode::Text, &text);
        for a in attachments {
            encode_frame(&mut out, Opcode::Binary, a);
        }
        debug_assert_eq!(out.len(), total);
        if text.capacity() > 64 * 1024 {
            // One huge message must not pin its scratch buffer forever.
            *text = Vec::new();
        }
        out.freeze()
    })
}

/// A single text frame holding `text` verbatim.
pub(crate) fn text_frame(text: &str) -> Bytes {
    text_packet(&[], |out| out.extend_from_slice(text.as_bytes()))
}

/// Queues `frame` on every connection in `members` except `skip`.
// PERF: the per-recipient loop. No JSON, no allocation, no formatting here:
// a refcount increment and a queue push per recipient.
pub(crate) fn deliver(conns: &Slab<Member>, members: &Members, frame: &Bytes, skip: Option<SlabKey>) -> u64 {
    let mut delivered = 0;
    for &key in members {
        if Some(key) == skip {
            continue;
        }
        if let Some(member) = conns.get(key as usize) {
            member.outbox.push(frame.clone());
            delivered += 1;
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frame_is_one_text_frame() {
        let frame = event_frame("ev", &[], |out| out.extend_from_slice(b",{\"a\":1}"));
        assert_eq!(&frame[..], b"\x81\x1042[\"ev\",{\"a\":1}]");
    }

    #[test]
    fn binary_event_carries_attachments_in_the_same_buffer() {
        let att = Bytes::from_static(&[1, 2, 3]);
        let frame = event_frame("b", &[att], |out| {
            out.extend_from_slice(b",{\"_placeholder\":true,\"num\":0}")
        });
        let text = b"451-[\"b\",{\"_placeholder\":true,\"num\":0}]";
        let mut expected = vec![0x81, text.len() as u8];
        expected.extend_from_slice(text);
        expected.extend_from_slice(&[0x82, 3, 1, 2, 3]);
        assert_eq!(&frame[..], &expected[..]);
    }
}
