//! Encode once, deliver many: turning one publish into one complete
//! WebSocket frame and handing refcounted clones of it to every recipient.
//!
//! **Invariant:** a published message is serialized exactly once, on the
//! sender's shard. Every local recipient and every other shard gets a clone
//! of the same [`Bytes`]; the `message` value a client sent is spliced into
//! the frame byte for byte, never parsed into a tree and re-serialized.
//! Binary attachments become binary frames concatenated after the text frame
//! in the same buffer, so one queue slot carries the whole packet.

use bytes::Bytes;
use slab::Slab;

use crate::realtime::channels::{Members, SlabKey};
use crate::shard::Member;

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
