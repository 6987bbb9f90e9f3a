//! Messages for other shards whose inbound lanes were full: held back here,
//! in order per target shard and lane, and moved into the lanes by the
//! flusher task as room appears.
//!
//! The data backlog is bounded (`mesh_backlog_messages_max`; control
//! messages are few and never counted against it): readers check
//! [`Outgoing::is_backlogged`] after every message they handle and stop
//! reading from their clients until [`Outgoing::cleared`], so a publisher
//! that outruns another shard slows down instead of anything being dropped
//! or piling up without bound.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use ringcast_shards::wait::WaitList;
use ringcast_shards::yielder::Yielder;
use ringcast_shards::{Lane, Mesh, ShardId};

use crate::metrics::Stats;
use crate::shard::inbox::ShardMessage;

/// A shard's held-back messages.
pub(crate) struct Outgoing {
    /// Per target shard, per lane.
    queues: RefCell<Vec<[VecDeque<ShardMessage>; 2]>>,
    /// Data messages held back (what the bound applies to).
    len: Cell<usize>,
    /// All messages held back, both lanes (what the flusher works on).
    total: Cell<usize>,
    len_max: usize,
    /// The flusher task, parked while nothing is held back.
    flusher: Cell<Option<Waker>>,
    /// Readers waiting for the backlog to shrink below its bound.
    waiters: WaitList,
}

impl Outgoing {
    pub(crate) fn new(shard_count: usize, len_max: usize) -> Self {
        Self {
            queues: RefCell::new((0..shard_count).map(|_| Default::default()).collect()),
            len: Cell::new(0),
            total: Cell::new(0),
            len_max,
            flusher: Cell::new(None),
            waiters: WaitList::default(),
        }
    }

    /// Sends `message` to shard `target` without waiting: straight into its
    /// lane, or, when that is full (or earlier messages to it are still held
    /// back), into the queue for `target` and that lane.
    pub(crate) fn send(
        &self,
        mesh: &Mesh<ShardMessage>,
        stats: &Stats,
        target: ShardId,
        message: ShardMessage,
    ) {
        Stats::bump(&stats.mesh_sent);
        let lane = message.lane();
        let mut queues = self.queues.borrow_mut();
        let Some(lanes) = queues.get_mut(usize::from(target)) else {
            tracing::error!(target, "message to a shard that does not exist");
            return;
        };
        let queue = &mut lanes[lane_index(lane)];
        let message = if queue.is_empty() {
            match mesh.send(target, lane, message) {
                Ok(()) => return,
                Err(back) => back,
            }
        } else {
            message
        };
        queue.push_back(message);
        self.total.set(self.total.get() + 1);
        if lane == Lane::Data {
            self.len.set(self.len.get() + 1);
        }
        if let Some(w) = self.flusher.take() {
            w.wake();
        }
    }

    /// Data messages held back right now.
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether the data backlog reached its bound (readers then stop
    /// reading).
    pub(crate) fn is_backlogged(&self) -> bool {
        self.len.get() >= self.len_max
    }

    /// Resolves once the backlog is below its bound again.
    pub(crate) async fn cleared(&self) {
        self.waiters.wait_until(|| !self.is_backlogged()).await
    }

    /// The flusher task: moves held-back messages into the other shards'
    /// lanes as room appears, in order per target and lane, and releases the
    /// readers waiting in [`Outgoing::cleared`].
    pub(crate) async fn flush_forever(self: Rc<Self>, mesh: Mesh<ShardMessage>, yielder: Rc<Yielder>) {
        loop {
            std::future::poll_fn(|cx| {
                if self.total.get() > 0 {
                    Poll::Ready(())
                } else {
                    self.flusher.set(Some(cx.waker().clone()));
                    Poll::Pending
                }
            })
            .await;
            let mut idle_rounds: u32 = 0;
            while self.total.get() > 0 {
                if self.move_what_fits(&mesh) {
                    idle_rounds = 0;
                    if !self.is_backlogged() && !self.waiters.is_empty() {
                        self.waiters.wake_all();
                    }
                } else {
                    // The other shards are busy: let this one run (it keeps
                    // draining its own lanes meanwhile), then back off.
                    idle_rounds = idle_rounds.saturating_add(1);
                    if idle_rounds < 64 {
                        yielder.yield_now().await;
                    } else {
                        monoio::time::sleep(Duration::from_micros(200)).await;
                    }
                }
            }
        }
    }

    /// Moves what the lanes take; whether anything moved.
    fn move_what_fits(&self, mesh: &Mesh<ShardMessage>) -> bool {
        let mut progressed = false;
        let mut queues = self.queues.borrow_mut();
        for (target, lanes) in queues.iter_mut().enumerate() {
            // unwrap: shard_count <= SHARDS_MAX = 255.
            let target = ShardId::try_from(target).unwrap();
            for lane in Lane::ALL {
                let queue = &mut lanes[lane_index(lane)];
                while let Some(message) = queue.pop_front() {
                    match mesh.send(target, lane, message) {
                        Ok(()) => {
                            progressed = true;
                            self.total.set(self.total.get() - 1);
                            if lane == Lane::Data {
                                self.len.set(self.len.get() - 1);
                            }
                        }
                        Err(back) => {
                            queue.push_front(back);
                            break;
                        }
                    }
                }
            }
        }
        progressed
    }
}

fn lane_index(lane: Lane) -> usize {
    match lane {
        Lane::Data => 0,
        Lane::Control => 1,
    }
}
