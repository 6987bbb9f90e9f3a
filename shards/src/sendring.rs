//! Sends of a shard's sockets under the io_uring driver: a ring of the
//! shard's own, beside monoio's, into which the shard's egress puts one send
//! per connection with something to write and submits them all at once.
//!
//! Through monoio each send is an operation of its own: a task that awaits
//! it, an entry in monoio's operation slab, a waker, and a clone of the
//! socket's handle that the operation holds. At saturation a shard makes a
//! thousand sends per turn, one per recipient, so that bookkeeping was most
//! of the shard's own CPU per delivery. Here a send is one submission queue
//! entry whose `user_data` names what the caller wants back; a turn's sends
//! leave with one `io_uring_enter` per submission queue's worth, and the
//! completions are read straight from the completion queue: the ones the
//! kernel finished while it submitted (a loopback or LAN send with room in
//! the socket's buffer) at once, the others (a socket whose buffer was full,
//! waiting for its client to read) when the ring's descriptor becomes
//! readable, which monoio's ring watches with one `POLL_ADD`
//! ([`Ring::completed`]), as the readiness set is watched.
//!
//! This module knows nothing of what is sent or to whom: a caller gives a
//! descriptor, bytes (or iovecs) and a token, and gets the token back with
//! the result.
//!
//! **Invariant:** the bytes (and iovecs) of a send, and the descriptor it
//! names, stay valid from [`Ring::send`] until its completion is read in
//! [`Ring::reap`]; a caller that goes away with sends in flight leaks their
//! buffers rather than free them under the kernel.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

use io_uring::{opcode, squeue, types, IoUring};

/// Completion entries: room for a send in flight on every socket a process
/// can hold (RLIMIT_NOFILE), so a shard whose clients all stopped reading
/// does not overflow its completion queue.
const COMPLETION_ENTRIES: u32 = 32 * 1024;

thread_local! {
    static RING: RefCell<Option<Rc<Ring>>> = const { RefCell::new(None) };
}

/// A shard's send ring.
pub struct Ring {
    ring: RefCell<IoUring<squeue::Entry>>,
    /// The ring's descriptor as monoio sees it, for [`Ring::completed`].
    watched: monoio::net::UnixStream,
}

/// Creates this thread's send ring, whose submission queue holds `entries`
/// sends: one system call hands the kernel at most that many, which it runs
/// back to back without a preemption point, so it bounds how long the shard
/// holds its core in the kernel at a time (the runtime's `ring_entries`, as
/// for monoio's ring). Only for an io_uring runtime, from inside it; `Err`
/// leaves the thread without one (its connections then send through monoio).
pub fn install(entries: u32) -> io::Result<()> {
    // Only this thread submits, so the kernel may skip the locking that
    // guards a ring shared by several (Linux 6.0 on; older kernels refuse
    // the flag, and get the ring without it).
    let ring = match IoUring::builder()
        .setup_cqsize(COMPLETION_ENTRIES)
        .setup_single_issuer()
        .build(entries)
    {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_cqsize(COMPLETION_ENTRIES)
            .build(entries)?,
        ring => ring?,
    };
    // SAFETY: `dup` of a descriptor the ring keeps open; the copy is owned
    // below.
    let copy = unsafe { libc::fcntl(ring.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if copy < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `copy` was just created and nothing else owns it.
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    // A ring's descriptor is not a socket, but monoio's wrapper is only
    // used for `readable`, a `POLL_ADD` on whatever descriptor it holds.
    let watched = monoio::net::UnixStream::from_std(
        // SAFETY: `copy` is an open descriptor handed over whole.
        unsafe { std::os::unix::net::UnixStream::from_raw_fd(copy.into_raw_fd()) },
    )?;
    let ring = Rc::new(Ring {
        ring: RefCell::new(ring),
        watched,
    });
    RING.with(|r| *r.borrow_mut() = Some(ring));
    Ok(())
}

/// This thread's send ring, if it has one.
pub fn get() -> Option<Rc<Ring>> {
    RING.with(|r| r.borrow().clone())
}

/// Takes this thread's send ring away (its runtime is ending). What still
/// holds it keeps it open.
pub fn uninstall() {
    RING.with(|r| r.borrow_mut().take());
}

impl Ring {
    /// Queues one `send` of `len` bytes at `buf` on `fd`; its completion
    /// carries `token`. Sent at the next [`Ring::submit`], or with the
    /// queue's others first if it was full.
    ///
    /// # Safety
    /// The `len` bytes at `buf` and the descriptor `fd` must stay valid
    /// until the completion carrying `token` has been read by [`Ring::reap`].
    pub unsafe fn send(&self, fd: RawFd, buf: *const u8, len: usize, token: u64) -> io::Result<()> {
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        let entry = opcode::Send::new(types::Fd(fd), buf, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(token);
        // SAFETY: the caller keeps the buffer and descriptor valid.
        unsafe { self.push(&entry) }
    }

    /// Queues one `writev` of `count` iovecs at `iovecs` on `fd`; its
    /// completion carries `token`.
    ///
    /// # Safety
    /// The iovecs, the bytes they point to and `fd` must stay valid until
    /// the completion carrying `token` has been read by [`Ring::reap`].
    pub unsafe fn writev(
        &self,
        fd: RawFd,
        iovecs: *const libc::iovec,
        count: usize,
        token: u64,
    ) -> io::Result<()> {
        let count = u32::try_from(count).unwrap_or(u32::MAX);
        let entry = opcode::Writev::new(types::Fd(fd), iovecs, count)
            .build()
            .user_data(token);
        // SAFETY: the caller keeps the iovecs, their bytes and the descriptor valid.
        unsafe { self.push(&entry) }
    }

    /// # Safety
    /// See [`Ring::send`].
    unsafe fn push(&self, entry: &squeue::Entry) -> io::Result<()> {
        let mut ring = self.ring.borrow_mut();
        loop {
            // SAFETY: the caller keeps what the entry points to valid.
            if unsafe { ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // Full: hand the queued entries to the kernel and make room.
            Self::submit_queued(&ring)?;
        }
    }

    /// Whether entries wait for [`Ring::submit`] (the submission queue
    /// holds what the kernel has not taken).
    pub fn has_unsubmitted(&self) -> bool {
        !self.ring.borrow_mut().submission().is_empty()
    }

    /// Hands every queued send to the kernel, in one system call.
    pub fn submit(&self) -> io::Result<()> {
        if !self.has_unsubmitted() {
            return Ok(());
        }
        Self::submit_queued(&self.ring.borrow())
    }

    fn submit_queued(ring: &IoUring<squeue::Entry>) -> io::Result<()> {
        loop {
            match ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends to `done` every completion there is now, as its token and
    /// its result (the byte count, or the negated errno).
    pub fn reap(&self, done: &mut Vec<(u64, i32)>) {
        let mut ring = self.ring.borrow_mut();
        done.extend(ring.completion().map(|cqe| (cqe.user_data(), cqe.result())));
    }

    /// Resolves once the ring has completions to reap (or at once if it
    /// has some already).
    pub async fn completed(&self) -> io::Result<()> {
        self.watched.readable(false).await
    }
}
