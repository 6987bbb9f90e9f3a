//! Tasks of one thread waiting for a condition that another task of the
//! same thread announces.
//!
//! Each waiting future owns one slot, refreshes its waker in that slot on
//! every poll and frees the slot when it completes or is dropped, so the
//! list never holds more entries than there are waiters, however often
//! they are polled.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use slab::Slab;

/// Wakers of the tasks waiting on one shard-local condition.
#[derive(Default)]
pub struct WaitList {
    wakers: RefCell<Slab<Waker>>,
}

impl WaitList {
    /// Resolves once `ready()` holds; checked on every wake-up.
    pub fn wait_until<F: Fn() -> bool + Unpin>(&self, ready: F) -> Wait<'_, F> {
        Wait {
            list: self,
            slot: None,
            ready,
        }
    }

    /// Wakes every waiter (each re-checks its condition).
    pub fn wake_all(&self) {
        for (_, waker) in self.wakers.borrow().iter() {
            waker.wake_by_ref();
        }
    }

    /// Waiters registered right now.
    pub fn len(&self) -> usize {
        self.wakers.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Future returned by [`WaitList::wait_until`].
pub struct Wait<'a, F: Fn() -> bool> {
    list: &'a WaitList,
    slot: Option<usize>,
    ready: F,
}

impl<F: Fn() -> bool + Unpin> Future for Wait<'_, F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if (this.ready)() {
            if let Some(slot) = this.slot.take() {
                this.list.wakers.borrow_mut().remove(slot);
            }
            return Poll::Ready(());
        }
        let mut wakers = this.list.wakers.borrow_mut();
        match this.slot {
            Some(slot) => {
                let stored = &mut wakers[slot];
                if !stored.will_wake(cx.waker()) {
                    *stored = cx.waker().clone();
                }
            }
            None => this.slot = Some(wakers.insert(cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl<F: Fn() -> bool> Drop for Wait<'_, F> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.list.wakers.borrow_mut().remove(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn repeated_polls_keep_one_slot_and_completion_frees_it() {
        let list = WaitList::default();
        let flag = Cell::new(false);
        let mut wait = Box::pin(list.wait_until(|| flag.get()));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..100 {
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(list.len(), 1);
        flag.set(true);
        list.wake_all();
        assert!(wait.as_mut().poll(&mut cx).is_ready());
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn a_dropped_waiter_frees_its_slot() {
        let list = WaitList::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        {
            let mut wait = Box::pin(list.wait_until(|| false));
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert_eq!(list.len(), 1);
        }
        assert_eq!(list.len(), 0);
    }
}
