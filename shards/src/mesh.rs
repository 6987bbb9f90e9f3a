//! The bounded, lock-free queues through which shards hand each other work.
//!
//! Every shard has two inbound lanes, each an [`ArrayQueue`] (multi-producer;
//! only the owning shard pops) with an [`AtomicWaker`] for the one task that
//! drains it: [`Lane::Data`] for the traffic to deliver (which its drain may
//! pace to a slow client), and [`Lane::Control`] for requests, replies and
//! settings, which are therefore never stuck behind data. A sender pushes and
//! then wakes that lane's task; monoio's `sync` feature carries the wake-up
//! to the owning thread. A full lane is never waited on by blocking a
//! thread: [`Mesh::send`] hands the message back so the caller decides.
//!
//! Messages for one target and lane from one sending thread are popped in the
//! order they were pushed, which is what per-sender ordering across shards
//! rests on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use crossbeam_queue::ArrayQueue;

use crate::ShardId;

/// Which of a shard's two inbound queues a message travels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Traffic to deliver; in order per sender.
    Data,
    /// Requests, replies and settings: drained promptly whatever the data
    /// lane is waiting for.
    Control,
}

impl Lane {
    pub const ALL: [Self; 2] = [Self::Data, Self::Control];

    fn index(self) -> usize {
        match self {
            Self::Data => 0,
            Self::Control => 1,
        }
    }
}

struct Queue<M> {
    queue: ArrayQueue<M>,
    waker: AtomicWaker,
}

type Slot<M> = [Queue<M>; 2];

/// Handles to every shard's inbound lanes. Cheap to clone; `Send + Sync`.
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
    /// Two lanes of `queue_messages_max` slots each per shard.
    pub fn new(shard_count: usize, queue_messages_max: usize) -> Self {
        assert!(shard_count > 0 && shard_count <= crate::topology::SHARDS_MAX);
        assert!(queue_messages_max > 0);
        let slots = (0..shard_count)
            .map(|_| {
                std::array::from_fn(|_| Queue {
                    queue: ArrayQueue::new(queue_messages_max),
                    waker: AtomicWaker::new(),
                })
            })
            .collect();
        Self { slots }
    }

    pub fn shard_count(&self) -> usize {
        self.slots.len()
    }

    /// Queues `message` on `lane` of `target` and wakes that lane's drain
    /// task. Returns the message when the lane is full or `target` does not
    /// exist.
    pub fn send(&self, target: ShardId, lane: Lane, message: M) -> Result<(), M> {
        let Some(slot) = self.slots.get(usize::from(target)) else {
            return Err(message);
        };
        let queue = &slot[lane.index()];
        queue.queue.push(message)?;
        queue.waker.wake();
        Ok(())
    }

    /// The receiving end of `lane` of `shard`. Only that shard's thread
    /// should drain it.
    pub fn inbox(&self, shard: ShardId, lane: Lane) -> Inbox<M> {
        assert!(usize::from(shard) < self.slots.len());
        Inbox {
            mesh: self.clone(),
            shard,
            lane,
        }
    }
}

/// The receiving end of one lane of one shard.
pub struct Inbox<M> {
    mesh: Mesh<M>,
    shard: ShardId,
    lane: Lane,
}

impl<M: Send> Inbox<M> {
    fn queue(&self) -> &Queue<M> {
        &self.mesh.slots[usize::from(self.shard)][self.lane.index()]
    }

    pub fn try_recv(&self) -> Option<M> {
        self.queue().queue.pop()
    }

    /// Resolves once the lane holds at least one message.
    pub fn ready(&self) -> Ready<'_, M> {
        Ready { inbox: self }
    }

    pub fn len(&self) -> usize {
        self.queue().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue().queue.is_empty()
    }
}

/// Future returned by [`Inbox::ready`].
pub struct Ready<'a, M> {
    inbox: &'a Inbox<M>,
}

impl<M: Send> Future for Ready<'_, M> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let queue = self.inbox.queue();
        if !queue.queue.is_empty() {
            return Poll::Ready(());
        }
        queue.waker.register(cx.waker());
        // A sender may have pushed between the check and the registration;
        // check again so that wake-up is not lost.
        if queue.queue.is_empty() {
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
        assert_eq!(mesh.send(1, Lane::Data, 1), Ok(()));
        assert_eq!(mesh.send(1, Lane::Data, 2), Ok(()));
        assert_eq!(mesh.send(1, Lane::Data, 3), Err(3));
        assert_eq!(mesh.send(7, Lane::Data, 4), Err(4));
        // A full data lane leaves the control lane free.
        assert_eq!(mesh.send(1, Lane::Control, 5), Ok(()));
        let inbox = mesh.inbox(1, Lane::Data);
        assert_eq!(inbox.try_recv(), Some(1));
        assert_eq!(inbox.try_recv(), Some(2));
        assert_eq!(inbox.try_recv(), None);
        assert_eq!(mesh.inbox(1, Lane::Control).try_recv(), Some(5));
        assert!(mesh.inbox(0, Lane::Data).is_empty());
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
                    let inbox = mesh.inbox(1, Lane::Data);
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
                match mesh.send(1, Lane::Data, message) {
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
