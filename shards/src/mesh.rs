//! The bounded, lock-free queues through which shards hand each other work.
//!
//! Every shard has one inbound [`ArrayQueue`] (multi-producer; only the owning
//! shard pops) and an [`AtomicWaker`] for the one task that drains it. A
//! sender pushes and then wakes that task; monoio's `sync` feature carries the
//! wake-up to the owning thread. A full queue is never waited on by blocking a
//! thread: [`Mesh::send`] hands the message back so the caller decides
//! (drop, count, or [`Mesh::send_wait`], which yields to the runtime until
//! there is room).
//!
//! Messages for one target from one sending thread are popped in the order
//! they were pushed, which is what per-sender ordering across shards rests on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::ShardId;

struct Slot<M> {
    queue: ArrayQueue<M>,
    waker: AtomicWaker,
}

/// Handles to every shard's inbound queue. Cheap to clone; `Send + Sync`.
pub struct Mesh<M> {
    slots: Arc<[Slot<M>]>,
}

impl<M> Clone for Mesh<M> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
        }
    }
}

impl<M: Send> Mesh<M> {
    /// One queue of `queue_messages_max` slots per shard.
    pub fn new(shard_count: usize, queue_messages_max: usize) -> Self {
        assert!(shard_count > 0 && shard_count <= crate::topology::SHARDS_MAX);
        assert!(queue_messages_max > 0);
        let slots = (0..shard_count)
            .map(|_| Slot {
                queue: ArrayQueue::new(queue_messages_max),
                waker: AtomicWaker::new(),
            })
            .collect();
        Self { slots }
    }

    pub fn shard_count(&self) -> usize {
        self.slots.len()
    }

    /// Queues `message` for `target` and wakes its drain task. Returns the
    /// message when the queue is full or `target` does not exist.
    pub fn send(&self, target: ShardId, message: M) -> Result<(), M> {
        let Some(slot) = self.slots.get(usize::from(target)) else {
            return Err(message);
        };
        slot.queue.push(message)?;
        slot.waker.wake();
        Ok(())
    }

    /// The receiving end for `shard`. Only that shard's thread should drain it.
    pub fn inbox(&self, shard: ShardId) -> Inbox<M> {
        assert!(usize::from(shard) < self.slots.len());
        Inbox {
            mesh: self.clone(),
            shard,
        }
    }
}

/// The receiving end of one shard's queue.
pub struct Inbox<M> {
    mesh: Mesh<M>,
    shard: ShardId,
}

impl<M: Send> Inbox<M> {
    fn slot(&self) -> &Slot<M> {
        &self.mesh.slots[usize::from(self.shard)]
    }

    pub fn try_recv(&self) -> Option<M> {
        self.slot().queue.pop()
    }

    /// Resolves once the queue holds at least one message.
    pub fn ready(&self) -> Ready<'_, M> {
        Ready { inbox: self }
    }

    pub fn len(&self) -> usize {
        self.slot().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot().queue.is_empty()
    }
}

/// Future returned by [`Inbox::ready`].
pub struct Ready<'a, M> {
    inbox: &'a Inbox<M>,
}

impl<M: Send> Future for Ready<'_, M> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let slot = self.inbox.slot();
        if !slot.queue.is_empty() {
            return Poll::Ready(());
        }
        slot.waker.register(cx.waker());
        // A sender may have pushed between the check and the registration;
        // check again so that wake-up is not lost.
        if slot.queue.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_hands_the_message_back() {
        let mesh = Mesh::<u32>::new(2, 2);
        assert_eq!(mesh.send(1, 1), Ok(()));
        assert_eq!(mesh.send(1, 2), Ok(()));
        assert_eq!(mesh.send(1, 3), Err(3));
        assert_eq!(mesh.send(7, 4), Err(4));
        let inbox = mesh.inbox(1);
        assert_eq!(inbox.try_recv(), Some(1));
        assert_eq!(inbox.try_recv(), Some(2));
        assert_eq!(inbox.try_recv(), None);
        assert!(mesh.inbox(0).is_empty());
    }

    /// A runtime thread receives 10,000 messages through its inbox, woken
    /// across threads: none lost, all in order.
    #[test]
    fn cross_thread_wakeups_deliver_in_order() {
        const COUNT: u32 = 10_000;
        let mesh = Mesh::<u32>::new(2, 64);
        let receiver = {
            let mesh = mesh.clone();
            std::thread::spawn(move || {
                let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                    .enable_timer()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let inbox = mesh.inbox(1);
                    let mut expected = 0;
                    while expected < COUNT {
                        inbox.ready().await;
                        while let Some(n) = inbox.try_recv() {
                            assert_eq!(n, expected);
                            expected += 1;
                        }
                    }
                    expected
                })
            })
        };
        // A plain thread sends: a full queue hands the message back, and the
        // sender retries in order (as a shard's outgoing queue does).
        for n in 0..COUNT {
            let mut message = n;
            // Bounded: the receiver drains continuously.
            for _ in 0..10_000_000 {
                match mesh.send(1, message) {
                    Ok(()) => break,
                    Err(back) => {
                        message = back;
                        std::thread::yield_now();
                    }
                }
            }
        }
        assert_eq!(receiver.join().unwrap(), COUNT);
    }
}
