//! Read readiness of a shard's sockets under the io_uring driver: one
//! edge-triggered epoll set per shard, watched through the ring.
//!
//! A reader learns that its socket has bytes, then takes them with
//! non-blocking `recv`s into the shard's one buffer (so an idle connection
//! holds no read buffer). Through monoio alone that costs one one-shot
//! `POLL_ADD` per wait and per connection: an SQE, the poll armed on the
//! socket's wait queue, task work when it fires, a CQE, and the same again
//! for the next message. Here each socket is added to the shard's set once,
//! when it is accepted; arrivals only put it on the set's ready list, and
//! one `POLL_ADD` on the set (re-armed by [`pump`] after each drain) plus one
//! `epoll_wait` hands the shard every socket that became readable since,
//! however many there are. Writes, accepts and timers stay on the ring.
//!
//! The set is edge-triggered: an event says bytes *arrived*, not that some
//! are buffered. So a reader waits only after a receive came back short or
//! found nothing; one that stopped with bytes still in the kernel (its
//! budget spent, or no room to receive into) must receive again before it
//! waits, or it waits for an arrival that a full window may never let come.
//! The end of a connection is a state and stays readable.
//!
//! Under the epoll driver nothing is installed and [`watch`] answers `None`:
//! the caller waits through monoio, whose driver is the same kind of set.
//!
//! Each registration carries a generation in its epoll data, bumped when the
//! descriptor number is registered again or forgotten, so an event that was
//! already queued for a connection that has since ended is dropped instead
//! of waking whatever has the number now.
//!
//! **Invariant:** a registered descriptor is forgotten ([`forget`]) before it
//! is closed, and taken out of the set ([`deregister`]) before another
//! descriptor of the same socket outlives it (a hand-over to another shard):
//! epoll removes an entry only when the socket itself is released.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// Events taken from the set per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// What a registration waits for. `EPOLLRDHUP` and the always-reported
/// `EPOLLERR`/`EPOLLHUP` wake a reader for the end of a connection too.
const INTEREST: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32;

/// Events after which the socket stays readable (end of file, or an error).
const ENDED: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

thread_local! {
    static SET: RefCell<Option<Rc<Set>>> = const { RefCell::new(None) };
}

/// A shard's epoll set and, per descriptor number, its readiness.
struct Set {
    epoll: OwnedFd,
    entries: RefCell<Vec<Entry>>,
}

#[derive(Default)]
struct Entry {
    /// Bumped at every registration and every forget of this number.
    generation: u32,
    /// Registered and not forgotten since.
    live: bool,
    /// An event came since the last wait that returned.
    ready: bool,
    /// The peer ended (or the socket failed): a state, not an edge. Every
    /// wait resolves from then on, since the end may have come in the same
    /// event as bytes that one receive took without reporting it.
    ended: bool,
    waker: Option<Waker>,
}

/// Creates this thread's set and returns the task that must run beside the
/// shard for as long as it serves sockets. Only for an io_uring runtime;
/// `Err` leaves the thread without a set (readers then wait through monoio).
pub fn install() -> io::Result<impl Future<Output = ()>> {
    // SAFETY: plain system call; the descriptor it returns is owned below.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
    // The ring polls its own descriptor of the set, which monoio closes
    // when the pump ends.
    let watched = epoll.try_clone()?;
    // An epoll descriptor is not a socket, but monoio's wrapper is only
    // used for `readable`, a `POLL_ADD` on whatever descriptor it holds.
    let watched = monoio::net::UnixStream::from_std(
        // SAFETY: `watched` is an open descriptor handed over whole.
        unsafe { std::os::unix::net::UnixStream::from_raw_fd(watched.into_raw_fd()) },
    )?;
    let set = Rc::new(Set {
        epoll,
        entries: RefCell::new(Vec::new()),
    });
    SET.with(|s| *s.borrow_mut() = Some(set.clone()));
    Ok(pump(set, watched))
}

/// Waits for the set to have events, hands each to its reader, and again,
/// until the ring refuses the wait (the runtime is going away).
async fn pump(set: Rc<Set>, watched: monoio::net::UnixStream) {
    // SAFETY: `epoll_event` is plain data, for which zeroes are valid.
    let mut events: Vec<libc::epoll_event> = vec![unsafe { std::mem::zeroed() }; EVENTS_PER_WAIT];
    loop {
        if let Err(e) = watched.readable(false).await {
            tracing::error!(error = %e, "the shard's readiness set cannot be watched");
            break;
        }
        loop {
            // SAFETY: `events` has room for `EVENTS_PER_WAIT` entries; a
            // zero timeout never blocks.
            let n = unsafe {
                libc::epoll_wait(
                    set.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    EVENTS_PER_WAIT as i32,
                    0,
                )
            };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            let n = n as usize;
            set.deliver(&events[..n]);
            if n < EVENTS_PER_WAIT {
                break;
            }
        }
    }
    SET.with(|s| s.borrow_mut().take());
}

/// The epoll data of a registration: its generation above its descriptor.
fn token(generation: u32, index: usize) -> u64 {
    u64::from(generation) << 32 | index as u64
}

/// The descriptor and generation a token names.
fn untoken(data: u64) -> (usize, u32) {
    (data as u32 as usize, (data >> 32) as u32)
}

impl Set {
    fn deliver(&self, events: &[libc::epoll_event]) {
        let mut entries = self.entries.borrow_mut();
        for event in events {
            let (index, generation) = untoken(event.u64);
            let Some(entry) = entries.get_mut(index) else {
                continue;
            };
            if !entry.live || entry.generation != generation {
                continue;
            }
            entry.ready = true;
            entry.ended |= event.events & ENDED != 0;
            if let Some(waker) = entry.waker.take() {
                // Only schedules the reader: it runs after this drain.
                waker.wake();
            }
        }
    }
}

/// Adds `fd` to this thread's set, if it has one. Returns whether it did:
/// on `false` the caller waits for readiness some other way.
pub fn register(fd: RawFd) -> bool {
    let Ok(index) = usize::try_from(fd) else {
        return false;
    };
    with_set(|set| {
        let mut entries = set.entries.borrow_mut();
        if entries.len() <= index {
            entries.resize_with(index + 1, Entry::default);
        }
        let entry = &mut entries[index];
        entry.restart();
        let mut event = libc::epoll_event {
            events: INTEREST,
            u64: token(entry.generation, index),
        };
        // SAFETY: `fd` is an open descriptor the caller owns; `event` is valid.
        let added = unsafe { libc::epoll_ctl(set.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
        entry.live = added == 0;
        if !entry.live {
            tracing::debug!(
                fd,
                error = %io::Error::last_os_error(),
                "socket not added to the readiness set; it waits through the ring"
            );
        }
        entry.live
    })
    .unwrap_or(false)
}

/// Takes `fd` out of this thread's set and forgets it. For a socket that
/// another descriptor will keep open after `fd` closes.
pub fn deregister(fd: RawFd) {
    with_set(|set| {
        if set.forget(fd) {
            // SAFETY: `fd` is open (the caller still owns it); a null event
            // is allowed for EPOLL_CTL_DEL.
            unsafe {
                libc::epoll_ctl(
                    set.epoll.as_raw_fd(),
                    libc::EPOLL_CTL_DEL,
                    fd,
                    std::ptr::null_mut(),
                );
            }
        }
    });
}

/// Forgets `fd`, which is about to close (the set drops the socket by
/// itself when it is released). Drops the waiting reader's waker.
pub fn forget(fd: RawFd) {
    with_set(|set| set.forget(fd));
}

impl Set {
    /// Forgets `fd`; returns whether it was live.
    fn forget(&self, fd: RawFd) -> bool {
        let mut entries = self.entries.borrow_mut();
        let Some(entry) = usize::try_from(fd).ok().and_then(|i| entries.get_mut(i)) else {
            return false;
        };
        let was_live = entry.live;
        entry.restart();
        entry.live = false;
        was_live
    }
}

impl Entry {
    /// A new generation with no event, no end and no waiter.
    fn restart(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.ready = false;
        self.ended = false;
        self.waker = None;
    }
}

/// A wait for `fd` to be readable, when it is registered in this thread's
/// set; `None` otherwise.
pub fn watch(fd: RawFd) -> Option<Readable> {
    let index = usize::try_from(fd).ok()?;
    with_set(|set| set.entries.borrow().get(index).is_some_and(|e| e.live))?.then_some(Readable { fd })
}

/// Runs `f` on this thread's set, if it has one (without touching its
/// refcount: this is on every reader's wait).
fn with_set<R>(f: impl FnOnce(&Set) -> R) -> Option<R> {
    SET.with(|s| s.borrow().as_deref().map(f))
}

/// Resolves once an event has come for the descriptor since the last wait
/// that resolved (an edge: bytes arrived), or at once when the connection
/// has ended.
/// Dropping it before then loses nothing: the next wait sees the event.
pub struct Readable {
    fd: RawFd,
}

impl Future for Readable {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        with_set(|set| {
            let mut entries = set.entries.borrow_mut();
            let Some(entry) = entries.get_mut(self.fd as usize).filter(|e| e.live) else {
                return Poll::Ready(Err(io::Error::other("the socket left the readiness set")));
            };
            if entry.ready || entry.ended {
                entry.ready = false;
                return Poll::Ready(Ok(()));
            }
            match &entry.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => entry.waker = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .unwrap_or_else(|| Poll::Ready(Err(io::Error::other("the shard's readiness set is gone"))))
    }
}

#[cfg(test)]
mod tests;
