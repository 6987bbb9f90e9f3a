//! Closed-loop (window) publishing: a publisher keeps `W` messages in flight
//! and sends the next one as soon as an earlier one has reached every
//! recipient it was sent to, instead of following a schedule. It measures
//! the most a server delivers, not how it copes with a given load.
//!
//! A message's recipients may be spread over all generator threads, so its
//! completion is counted in shared memory, cheaply, because the generator
//! shares the cores with the server under test:
//! - [`WindowBook`] (shared): per publisher a ring of `W` (rounded up to a
//!   power of two) slots, each the sequence number in flight there and an
//!   atomic count of the deliveries it still waits for; per worker thread a
//!   bitmap of its publishers that have a completed message, and a waker.
//! - [`WindowTally`] (one per worker): deliveries are counted into a plain
//!   array and applied to the shared counters once per event-loop turn, one
//!   atomic subtraction per (publisher, message) seen in that turn, not one
//!   per delivery. Nothing is allocated per message and nothing locks.
//!
//! The worker that brings a count to zero sets the publisher's bit in its
//! owner's bitmap and, if the owner is another thread, wakes it; the owner
//! retires completed messages in order and refills the window. A delivery
//! that does not match the message in flight in its slot (a duplicate, or
//! one after its message completed) is counted as stray and changes nothing.
//! A lost delivery stalls that publisher's window for the rest of the run;
//! it shows up as `lost`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Marks a connection id that is not a windowed publisher.
const NOT_A_PUBLISHER: u32 = u32::MAX;

/// Shared by all workers of one run.
#[derive(Debug)]
pub struct WindowBook {
    window: u32,
    /// Slots per publisher: `window` rounded up to a power of two.
    ring: u32,
    /// Publisher index of each connection id (`src` in a message).
    publisher_of_src: Vec<u32>,
    /// Worker thread that owns each publisher.
    owner: Vec<u32>,
    /// Per (publisher, slot): the sequence number in flight there.
    slot_seq: Vec<AtomicU64>,
    /// Per (publisher, slot): deliveries still expected.
    remaining: Vec<AtomicU32>,
    /// Per worker: one bit per publisher with a completed message.
    completed: Vec<Vec<AtomicU64>>,
    /// Per worker: some bit may be set in `completed`.
    completed_any: Vec<AtomicBool>,
    wakers: Vec<OnceLock<mio::Waker>>,
    /// Messages put in flight over the run, and those that reached every
    /// recipient: the scenario waits on them to measure a steady state.
    armed_total: AtomicU64,
    done_total: AtomicU64,
}

impl WindowBook {
    /// `publishers` lists each windowed publisher as `(src, worker)`;
    /// publisher indexes follow that order.
    pub fn new(window: u32, publishers: &[(u32, u32)], workers: usize) -> Self {
        let window = window.max(1);
        let ring = window.next_power_of_two();
        let src_max = publishers.iter().map(|(src, _)| *src).max().unwrap_or(0);
        let mut publisher_of_src = vec![NOT_A_PUBLISHER; src_max as usize + 1];
        for (index, (src, _)) in publishers.iter().enumerate() {
            publisher_of_src[*src as usize] = index as u32;
        }
        let slots = publishers.len() * ring as usize;
        let words = publishers.len().div_ceil(64);
        Self {
            window,
            ring,
            publisher_of_src,
            owner: publishers.iter().map(|(_, worker)| *worker).collect(),
            slot_seq: (0..slots).map(|_| AtomicU64::new(u64::MAX)).collect(),
            remaining: (0..slots).map(|_| AtomicU32::new(0)).collect(),
            completed: (0..workers)
                .map(|_| (0..words).map(|_| AtomicU64::new(0)).collect())
                .collect(),
            completed_any: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            wakers: (0..workers).map(|_| OnceLock::new()).collect(),
            armed_total: AtomicU64::new(0),
            done_total: AtomicU64::new(0),
        }
    }

    /// Messages each publisher keeps in flight.
    pub fn window(&self) -> u32 {
        self.window
    }

    pub fn publishers(&self) -> usize {
        self.owner.len()
    }

    /// The publisher index of connection id `src`, if it publishes windowed.
    pub fn publisher(&self, src: u32) -> Option<u32> {
        self.publisher_of_src
            .get(src as usize)
            .copied()
            .filter(|p| *p != NOT_A_PUBLISHER)
    }

    fn slot(&self, publisher: u32, seq: u64) -> usize {
        publisher as usize * self.ring as usize + (seq & u64::from(self.ring - 1)) as usize
    }

    /// Puts `seq` of `publisher` in flight, awaiting `recipients` deliveries.
    /// Called before the message is written, and only once the message that
    /// used the slot before (`seq - ring`) is done.
    pub fn arm(&self, publisher: u32, seq: u64, recipients: u32) {
        let slot = self.slot(publisher, seq);
        debug_assert_eq!(self.remaining[slot].load(Ordering::Relaxed), 0);
        self.slot_seq[slot].store(seq, Ordering::Relaxed);
        self.remaining[slot].store(recipients, Ordering::Release);
        self.armed_total.fetch_add(1, Ordering::Relaxed);
        if recipients == 0 {
            // No delivery will say so.
            self.done_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages put in flight so far.
    pub fn armed(&self) -> u64 {
        self.armed_total.load(Ordering::Relaxed)
    }

    /// Messages that reached every recipient so far.
    pub fn done(&self) -> u64 {
        self.done_total.load(Ordering::Relaxed)
    }

    /// Whether `seq` of `publisher` has reached every recipient.
    pub fn is_done(&self, publisher: u32, seq: u64) -> bool {
        self.remaining[self.slot(publisher, seq)].load(Ordering::Acquire) == 0
    }

    /// Lets other workers wake `worker` when one of its messages completes.
    pub fn set_waker(&self, worker: usize, waker: mio::Waker) {
        let _ = self.wakers[worker].set(waker);
    }

    /// Marks a completion for `publisher`'s owner; `me` is the calling worker.
    pub fn complete(&self, publisher: u32, me: usize) {
        let owner = self.owner[publisher as usize] as usize;
        let word = publisher as usize / 64;
        self.completed[owner][word].fetch_or(1 << (publisher % 64), Ordering::AcqRel);
        let was_flagged = self.completed_any[owner].swap(true, Ordering::AcqRel);
        if !was_flagged && owner != me {
            if let Some(waker) = self.wakers[owner].get() {
                // A failed wake-up only delays the owner to its next poll timeout.
                let _ = waker.wake();
            }
        }
    }

    /// Calls `f` for each of `worker`'s publishers marked complete since the
    /// last call.
    pub fn take_completed(&self, worker: usize, mut f: impl FnMut(u32)) {
        if !self.completed_any[worker].swap(false, Ordering::AcqRel) {
            return;
        }
        for (index, word) in self.completed[worker].iter().enumerate() {
            if word.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                f((index * 64) as u32 + bit);
            }
        }
    }
}

/// One worker's deliveries not yet applied to the [`WindowBook`].
#[derive(Debug)]
pub struct WindowTally {
    /// Per (publisher, slot): deliveries seen this turn.
    pending: Vec<u32>,
    /// Per (publisher, slot): the sequence number they were for.
    pending_seq: Vec<u64>,
    /// Slots with a non-zero `pending`.
    touched: Vec<u32>,
    /// Deliveries that matched no message in flight (duplicates, or after
    /// their message completed).
    pub stray: u64,
}

impl WindowTally {
    pub fn new(book: Option<&WindowBook>) -> Self {
        let slots = book.map_or(0, |b| b.remaining.len());
        Self {
            pending: vec![0; slots],
            pending_seq: vec![0; slots],
            touched: Vec::new(),
            stray: 0,
        }
    }

    /// Counts one delivery of `seq` from `publisher`.
    pub fn add(&mut self, book: &WindowBook, publisher: u32, seq: u64) {
        let slot = book.slot(publisher, seq);
        let Some(pending) = self.pending.get_mut(slot) else {
            self.stray += 1;
            return;
        };
        if *pending == 0 {
            self.touched.push(slot as u32);
            self.pending_seq[slot] = seq;
        } else if self.pending_seq[slot] != seq {
            // Two messages of one slot in one turn: one of them is not in
            // flight (its slot is reused only after it completed).
            self.stray += 1;
            return;
        }
        *pending += 1;
    }

    /// Applies this turn's deliveries; `me` is the calling worker.
    pub fn flush(&mut self, book: &WindowBook, me: usize) {
        for slot in self.touched.drain(..) {
            let slot = slot as usize;
            let n = std::mem::take(&mut self.pending[slot]);
            if book.slot_seq[slot].load(Ordering::Acquire) != self.pending_seq[slot] {
                self.stray += u64::from(n);
                continue;
            }
            let before = book.remaining[slot]
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    Some(left.saturating_sub(n))
                })
                .unwrap_or_else(|left| left);
            if before < n {
                self.stray += u64::from(n - before);
            }
            if before > 0 && before <= n {
                book.done_total.fetch_add(1, Ordering::Relaxed);
                book.complete((slot / book.ring as usize) as u32, me);
            }
        }
    }
}

#[cfg(test)]
mod tests;
