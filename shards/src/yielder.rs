//! Yielding that lets the rest of a shard run.
//!
//! monoio puts a task that wakes itself while it runs at the *front* of its
//! run queue, so the usual `yield_now` (wake yourself, return `Pending`)
//! runs the same task again at once: a flooding connection would never let
//! its neighbours (or the writers) run. [`Yielder::yield_now`] instead
//! parks the task and has a relay task, spawned behind everything already
//! ready, wake it: the task resumes only after every task that was ready
//! when it yielded has run once.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// One per shard (per runtime): the tasks that yielded this round.
#[derive(Default)]
pub struct Yielder {
    yielded: RefCell<Vec<Waker>>,
    /// Whether a relay task is spawned and has not run yet.
    relay_pending: Cell<bool>,
}

impl Yielder {
    /// Resolves after every task that is ready now has run once.
    pub fn yield_now(self: &Rc<Self>) -> YieldNow {
        YieldNow {
            yielder: self.clone(),
            yielded: false,
        }
    }
}

/// Future returned by [`Yielder::yield_now`].
pub struct YieldNow {
    yielder: Rc<Yielder>,
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        self.yielder.yielded.borrow_mut().push(cx.waker().clone());
        if !self.yielder.relay_pending.replace(true) {
            monoio::spawn(relay(self.yielder.clone()));
        }
        Poll::Pending
    }
}

/// Wakes every task that yielded before it ran. Being another task, its
/// wakes put them at the back of the run queue.
async fn relay(yielder: Rc<Yielder>) {
    yielder.relay_pending.set(false);
    let yielded = std::mem::take(&mut *yielder.yielded.borrow_mut());
    for waker in yielded {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tasks that yield between steps interleave: each step of one runs
    /// between two steps of the other, which a self-waking yield does not
    /// achieve on monoio.
    #[test]
    fn yielding_tasks_take_turns() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .build()
            .unwrap();
        let order = rt.block_on(async {
            let yielder = Rc::new(Yielder::default());
            let order = Rc::new(RefCell::new(Vec::new()));
            let mut tasks = Vec::new();
            for name in ["a", "b"] {
                let (yielder, order) = (yielder.clone(), order.clone());
                tasks.push(monoio::spawn(async move {
                    for step in 0..3 {
                        order.borrow_mut().push(format!("{name}{step}"));
                        yielder.yield_now().await;
                    }
                }));
            }
            for task in tasks {
                task.await;
            }
            let order = order.borrow().clone();
            order
        });
        assert_eq!(order, ["a0", "b0", "a1", "b1", "a2", "b2"]);
    }
}
