//! The shard's writes through its send ring (io_uring): one pass per turn
//! hands every connection with something queued to the ring, and the ring's
//! completions move each connection on, with no task per write.
//!
//! A push on an idle plain-TCP connection puts the connection (its outbox
//! and write half) on the shard's ready list and wakes the flusher task.
//! The flusher runs after whatever else was scheduled in that turn, as the
//! writer tasks did, so everything queued for a connection in a turn leaves
//! in one send. In one pass it gathers each ready connection's queue into a
//! batch (the same batching, coalescing and shared copies as the writer
//! task, [`FrameBatch`]), queues one send per connection on the ring, keyed
//! by its slot in the in-flight slab, submits them all with one system call
//! and reaps what completed meanwhile; the pump task reaps the rest when
//! the ring's descriptor turns readable. A completion that leaves bytes
//! unsent sends the rest; one after which more is queued (or the outbox is
//! closing) puts the connection on the ready list again; otherwise the
//! write half goes back to the outbox, idle.
//!
//! What stays with the writer task ([`super::write_loop`]): TLS connections,
//! and a connection that is closing (the flush of its last frames, bounded
//! in time, and the shutdown), which the flusher hands to a task of its own.
//!
//! **Invariant:** a connection is in at most one place at a time: its write
//! half is in its outbox (idle), on the ready list, in the in-flight slab,
//! or in a writer task. So it has at most one write in flight, and its
//! frames leave in the order they were queued.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Instant;

use slab::Slab;

use ringcast_shards::sendring;

use super::{write_loop, Egress, FrameBatch, Outbox};
use crate::connection::socket::WriteHalf;

/// The ring side of a shard's [`Egress`].
pub(super) struct RingEgress {
    ring: Rc<sendring::Ring>,
    /// Connections with something to write (or a close to start), waiting
    /// for the flusher's next pass.
    ready: RefCell<Vec<(Rc<Outbox>, WriteHalf)>>,
    /// The ready list's other vector, swapped in while a pass walks one.
    walking: RefCell<Vec<(Rc<Outbox>, WriteHalf)>>,
    /// Every write handed to the ring and not completed, by token. An
    /// entry holds its outbox, which holds the shard's `Egress` and so this:
    /// while writes are in flight this is never dropped, and a shard that
    /// ends with some leaks their buffers rather than free them under the
    /// kernel (`sendring`'s invariant).
    in_flight: RefCell<Slab<InFlight>>,
    /// Completions reaped and not handled yet.
    completions: RefCell<Vec<(u64, i32)>>,
    /// The flusher, while it waits for a ready connection.
    flusher: Cell<Option<Waker>>,
    /// Whether the flusher and the pump were spawned.
    started: Cell<bool>,
}

/// One write the ring holds: the connection, its write half (which keeps
/// the descriptor open) and the batch whose bytes the kernel reads.
struct InFlight {
    outbox: Rc<Outbox>,
    writer: WriteHalf,
    batch: FrameBatch,
}

impl RingEgress {
    /// The ring egress of this shard, when its thread has a send ring.
    pub(super) fn for_this_thread() -> Option<Self> {
        sendring::get().map(|ring| Self {
            ring,
            ready: RefCell::default(),
            walking: RefCell::default(),
            in_flight: RefCell::default(),
            completions: RefCell::default(),
            flusher: Cell::new(None),
            started: Cell::new(false),
        })
    }

    /// Puts a connection with something to write (or a close to start) on
    /// the ready list; the flusher writes it at its next pass.
    pub(super) fn schedule(&self, outbox: Rc<Outbox>, writer: WriteHalf) {
        if !self.started.replace(true) {
            let egress = outbox.egress.clone();
            monoio::spawn(flusher(egress.clone()));
            monoio::spawn(pump(egress));
        }
        self.make_ready(outbox, writer);
    }

    /// Puts a connection on the ready list and wakes the flusher.
    fn make_ready(&self, outbox: Rc<Outbox>, writer: WriteHalf) {
        self.ready.borrow_mut().push((outbox, writer));
        if let Some(waker) = self.flusher.take() {
            waker.wake();
        }
    }

    /// One pass: every ready connection's next write into the ring, one
    /// submission, and the completions there are.
    fn pass(&self, egress: &Egress) {
        let mut walking = self.walking.take();
        std::mem::swap(&mut walking, &mut *self.ready.borrow_mut());
        for (outbox, writer) in walking.drain(..) {
            self.start(egress, outbox, writer);
        }
        *self.walking.borrow_mut() = walking;
        self.submit();
        self.reap(egress);
    }

    /// Hands the queued sends to the kernel.
    fn submit(&self) {
        if let Err(e) = self.ring.submit() {
            // The sends stay queued and go with the next submission (a
            // pass, or the pump's once a completion comes).
            tracing::warn!(error = %e, "the send ring refused a submission");
        }
    }

    /// Handles every completion there is, then submits what they queued
    /// (the rest of a partial send).
    fn reap(&self, egress: &Egress) {
        let mut completions = self.completions.take();
        self.ring.reap(&mut completions);
        for (token, result) in completions.drain(..) {
            self.complete(egress, token, result);
        }
        *self.completions.borrow_mut() = completions;
        if self.ring.has_unsubmitted() {
            self.submit();
        }
    }

    /// A connection's turn in a pass: its next write, or the writer task
    /// for its close, or back to idle.
    fn start(&self, egress: &Egress, outbox: Rc<Outbox>, writer: WriteHalf) {
        if outbox.closing().is_some() {
            monoio::spawn(write_loop(outbox, writer));
            return;
        }
        if outbox.is_empty() {
            outbox.park_writer(writer, FrameBatch::default());
            return;
        }
        let mut batch = FrameBatch::default();
        outbox.fill_batch(&mut batch);
        self.send(
            egress,
            InFlight {
                outbox,
                writer,
                batch,
            },
        );
    }

    /// Queues the send of what is left of `write.batch`.
    fn send(&self, egress: &Egress, mut write: InFlight) {
        write.outbox.writing_since.set(Some(Instant::now()));
        let fd = write.writer.raw_fd();
        let contiguous = write.batch.coalesce(&egress.last_copied, &egress.stats);
        if !contiguous {
            write.batch.refresh_iovecs();
        }
        let mut in_flight = self.in_flight.borrow_mut();
        let entry = in_flight.vacant_entry();
        let token = entry.key() as u64;
        let batch = &entry.insert(write).batch;
        // SAFETY: the bytes (a frame's, or `flat`'s) and the iovecs live in
        // heap buffers the batch owns, which stays in the slab, untouched,
        // until this token's completion is handled; the write half in the
        // same entry keeps `fd` open as long (see `in_flight`).
        let queued = unsafe {
            if contiguous {
                let buffer = batch.contiguous();
                self.ring.send(fd, buffer.as_ptr(), buffer.len(), token)
            } else {
                self.ring
                    .writev(fd, batch.iovecs.as_ptr(), batch.iovecs.len(), token)
            }
        };
        drop(in_flight);
        if let Err(e) = queued {
            // The queue was full and the kernel refused to take it.
            tracing::warn!(error = %e, "a send could not be queued on the send ring");
            let write = self.in_flight.borrow_mut().remove(token as usize);
            write.outbox.writing_since.set(None);
            write.outbox.close(crate::close::CloseReason::Io);
            self.make_ready(write.outbox, write.writer);
        }
    }

    /// One completed write: the rest of a partial one, or the connection's
    /// next turn.
    fn complete(&self, egress: &Egress, token: u64, result: i32) {
        let Some(mut write) = self.in_flight.borrow_mut().try_remove(token as usize) else {
            debug_assert!(false, "a completion for no write in flight");
            return;
        };
        let outbox = &write.outbox;
        outbox.write_completed(usize::try_from(result).unwrap_or(0));
        match result {
            n if n > 0 => {
                write.batch.advance(n as usize);
                if !write.batch.is_empty() {
                    self.send(egress, write);
                    return;
                }
            }
            // A write of nothing, or an error: the connection is lost, and
            // what was not sent goes with it (not back to the spares).
            _ => {
                outbox.close(crate::close::CloseReason::Io);
                write.batch.frames.clear();
                write.batch.flat.clear();
            }
        }
        let InFlight {
            outbox,
            writer,
            batch,
        } = write;
        if outbox.closing().is_some() || !outbox.is_empty() {
            egress.recycle_queue(batch.frames);
            egress.recycle_flat(batch.flat);
            self.make_ready(outbox, writer);
        } else {
            outbox.park_writer(writer, batch);
        }
    }
}

/// The flusher task: a pass whenever a connection is ready.
async fn flusher(egress: Rc<Egress>) {
    let Some(ring) = egress.ring.as_ref() else {
        return;
    };
    loop {
        poll_fn(|cx| {
            if ring.ready.borrow().is_empty() {
                ring.flusher.set(Some(cx.waker().clone()));
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        ring.pass(&egress);
    }
}

/// The pump task: reaps the completions the kernel posts after a pass
/// (sends that waited for room in their socket's buffer).
async fn pump(egress: Rc<Egress>) {
    let Some(ring) = egress.ring.as_ref() else {
        return;
    };
    loop {
        if let Err(e) = ring.ring.completed().await {
            tracing::error!(error = %e, "the shard's send ring cannot be watched");
            return;
        }
        ring.reap(&egress);
    }
}
