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
use std::time::Duration;

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

    /// Like [`Mesh::send`], but when the queue is full it yields to the
    /// runtime (and then sleeps briefly) until the target has drained some
    /// room. This is backpressure: the caller's task pauses, the thread does
    /// not, so the thread's own inbox keeps draining and two shards sending
    /// to each other cannot deadlock. Fails only for a target that does not
    /// exist.
    pub async fn send_wait(&self, target: ShardId, mut message: M) -> Result<(), M> {
        if usize::from(target) >= self.slots.len() {
            return Err(message);
        }
        let mut attempts: u32 = 0;
        loop {
            match self.send(target, message) {
                Ok(()) => return Ok(()),
                Err(back) => message = back,
            }
            attempts = attempts.saturating_add(1);
            if attempts < 64 {
                YieldNow(false).await;
            } else {
                monoio::time::sleep(Duration::from_micros(200)).await;
            }
        }
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

/// Yields once to the runtime so other tasks on this thread run.
pub struct YieldNow(pub bool);

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            return Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// Yields once to the runtime.
pub fn yield_now() -> YieldNow {
    YieldNow(false)
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

    /// Two threads, each running a monoio runtime, ping-pong 10,000 messages
    /// through each other's inboxes with wake-ups: none lost, all in order.
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
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            for n in 0..COUNT {
                mesh.send_wait(1, n).await.unwrap();
            }
        });
        assert_eq!(receiver.join().unwrap(), COUNT);
    }
}
