//! The outbound side of one connection, shared (shard-locally) between the
//! shard's fan-out, the connection's reader and its writer task.
//!
//! Frames are complete WebSocket frames in refcounted [`Bytes`]; queueing one
//! is a pointer copy and a refcount increment, never a byte copy. The writer
//! task drains everything queued into one vectored write. The queue is
//! bounded in bytes: a consumer that falls behind by more than
//! `queued_bytes_max` is closed with [`CloseReason::SlowConsumer`] instead of
//! growing without bound.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::RawFd;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;

thread_local! {
    /// Set when some outbox on this thread passed half its cap.
    static PRESSURE: Cell<bool> = const { Cell::new(false) };
}

thread_local! {
    /// Vectored writes completed on this thread, and the producers waiting
    /// for the next one.
    static WRITES_DONE: Cell<u64> = const { Cell::new(0) };
    static RELIEF_WAITERS: RefCell<Vec<Waker>> = const { RefCell::new(Vec::new()) };
}

/// Whether an outbox on this shard passed half its cap since the last call
/// (and clears the flag). Producers (a connection's reader, the inbox drain)
/// then call [`relieve_pressure`] so writers run before queues reach their
/// caps.
pub fn take_pressure() -> bool {
    PRESSURE.with(|p| p.replace(false))
}

/// A writer finished a vectored write: wake the producers waiting in
/// [`relieve_pressure`].
pub fn note_write_done() {
    WRITES_DONE.with(|w| w.set(w.get() + 1));
    RELIEF_WAITERS.with(|r| {
        for waker in r.borrow_mut().drain(..) {
            waker.wake();
        }
    });
}

/// Waits until some writer on this shard completes a write, or 1 ms: long
/// enough for writers of clients that read to drain their queues, short
/// enough that a client that does not read only delays the others briefly
/// (it is closed once its queue reaches the cap).
pub async fn relieve_pressure() {
    let start = WRITES_DONE.with(|w| w.get());
    let progressed = std::future::poll_fn(|cx| {
        if WRITES_DONE.with(|w| w.get()) != start {
            return Poll::Ready(());
        }
        RELIEF_WAITERS.with(|r| r.borrow_mut().push(cx.waker().clone()));
        Poll::Pending
    });
    let _ = monoio::time::timeout(Duration::from_millis(1), progressed).await;
}

/// Why a connection ends; the single vocabulary for logs and close codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the TCP connection or sent a WebSocket close.
    PeerClosed,
    /// The peer sent Engine.IO `1` or Socket.IO `41`.
    ClientDisconnect,
    /// No pong within the ping timeout.
    PingTimeout,
    /// Outbound queue over its byte cap.
    SlowConsumer,
    /// A WebSocket protocol violation, with the close code sent.
    ProtocolError(u16),
    /// A read or write failed.
    Io,
    /// The server is shutting down.
    ServerShutdown,
    /// The server sent Socket.IO `41` (the client must not come back).
    ServerDisconnect,
    /// No Socket.IO connect within the connect timeout.
    ConnectTimeout,
}

impl CloseReason {
    pub const COUNT: usize = 9;
    pub const ALL: [Self; Self::COUNT] = [
        Self::PeerClosed,
        Self::ClientDisconnect,
        Self::PingTimeout,
        Self::SlowConsumer,
        Self::ProtocolError(0),
        Self::Io,
        Self::ServerShutdown,
        Self::ServerDisconnect,
        Self::ConnectTimeout,
    ];

    /// Position in [`CloseReason::ALL`] (close codes do not matter).
    pub fn index(self) -> usize {
        match self {
            Self::PeerClosed => 0,
            Self::ClientDisconnect => 1,
            Self::PingTimeout => 2,
            Self::SlowConsumer => 3,
            Self::ProtocolError(_) => 4,
            Self::Io => 5,
            Self::ServerShutdown => 6,
            Self::ServerDisconnect => 7,
            Self::ConnectTimeout => 8,
        }
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::PeerClosed => "peer_closed",
            Self::ClientDisconnect => "client_disconnect",
            Self::PingTimeout => "ping_timeout",
            Self::SlowConsumer => "slow_consumer",
            Self::ProtocolError(_) => "protocol_error",
            Self::Io => "io_error",
            Self::ServerShutdown => "server_shutdown",
            Self::ServerDisconnect => "server_disconnect",
            Self::ConnectTimeout => "connect_timeout",
        }
    }
}

impl CloseReason {
    /// Whether what is still queued should be flushed before the socket is
    /// shut down (false when the peer cannot or will not read it).
    pub fn is_graceful(self) -> bool {
        !matches!(
            self,
            Self::SlowConsumer | Self::PingTimeout | Self::Io | Self::ConnectTimeout
        )
    }
}

/// Outbound queue and liveness flags of one connection.
pub struct Outbox {
    queue: RefCell<VecDeque<Bytes>>,
    queued_bytes: Cell<usize>,
    queued_bytes_max: usize,
    writer: Cell<Option<Waker>>,
    closing: Cell<Option<CloseReason>>,
    /// Set when a ping was sent and no pong has come back yet.
    pong_pending: Cell<bool>,
    /// When the last ping was sent (or the connection opened).
    last_ping: Cell<Instant>,
    opened_at: Instant,
    /// Set once the client's Socket.IO connect was answered.
    connected: Cell<bool>,
    fd: RawFd,
}

impl Outbox {
    /// `fd` is the connection's socket; it must outlive this outbox's use.
    pub fn new(queued_bytes_max: usize, fd: RawFd) -> Self {
        Self {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            queued_bytes_max,
            writer: Cell::new(None),
            closing: Cell::new(None),
            pong_pending: Cell::new(false),
            last_ping: Cell::new(Instant::now()),
            opened_at: Instant::now(),
            connected: Cell::new(false),
            fd,
        }
    }

    /// Queues one frame (or several concatenated) for the writer.
    ///
    /// Past half the cap the shard is asked to yield ([`take_pressure`]) so
    /// the writer gets to run before more is queued: a client that reads is
    /// never closed just because a burst arrived faster than one scheduling
    /// turn. Past the cap the connection is closed as a slow consumer.
    // PERF: called once per recipient on the fan-out path: no allocation
    // beyond the queue slot, no copying of `frame`'s bytes.
    #[inline]
    pub fn push(&self, frame: Bytes) {
        if self.closing.get().is_some() {
            return;
        }
        let queued = self.queued_bytes.get() + frame.len();
        if queued > self.queued_bytes_max {
            self.close(CloseReason::SlowConsumer);
            return;
        }
        if queued > self.queued_bytes_max / 2 {
            PRESSURE.with(|p| p.set(true));
        }
        self.queued_bytes.set(queued);
        self.queue.borrow_mut().push_back(frame);
        self.wake_writer();
    }

    /// Asks the writer to flush what is queued, send a close frame if the
    /// reason has one, and end the connection. The first reason wins.
    pub fn close(&self, reason: CloseReason) {
        if self.closing.get().is_some() {
            return;
        }
        self.closing.set(Some(reason));
        if !reason.is_graceful() {
            // Nothing more will get through: end both directions now, which
            // also fails a write stuck on a full socket buffer and ends the
            // reader's pending read.
            self.shutdown();
        }
        self.wake_writer();
    }

    /// Shuts the socket down in both directions. Pending and later reads
    /// see end-of-file, writes fail.
    pub fn shutdown(&self) {
        // SAFETY: `fd` is the connection's socket, kept open by the
        // connection's read and write halves for as long as this outbox is
        // used; shutdown(2) does not close or invalidate the descriptor.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }

    /// The reader saw a pong: the heartbeat is satisfied.
    pub fn pong_received(&self) {
        self.pong_pending.set(false);
    }

    /// One heartbeat check, run by the shard's heartbeat task: drops a
    /// connection whose pong is overdue and pings one whose interval has
    /// passed. Keeping the timer per shard instead of per connection keeps
    /// idle connections small and the write path free of timer churn.
    pub fn heartbeat(&self, now: Instant, ping: &Bytes, interval: Duration, timeout: Duration) {
        let since = now.saturating_duration_since(self.last_ping.get());
        if self.closing.get().is_some() {
            return;
        }
        if self.pong_pending.get() {
            if since >= timeout {
                self.close(CloseReason::PingTimeout);
            }
        } else if since >= interval {
            self.last_ping.set(now);
            self.pong_pending.set(true);
            self.push(ping.clone());
        }
    }

    /// Closes a connection that has not sent its Socket.IO connect within
    /// `timeout` of opening (half-open and slowloris connections).
    pub fn enforce_connect_deadline(&self, now: Instant, timeout: Duration) {
        if !self.connected.get() && now.saturating_duration_since(self.opened_at) >= timeout {
            self.close(CloseReason::ConnectTimeout);
        }
    }

    /// The client's Socket.IO connect was accepted.
    pub fn set_connected(&self) {
        self.connected.set(true);
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    pub fn closing(&self) -> Option<CloseReason> {
        self.closing.get()
    }

    /// Moves up to `frames_max` queued frames into `batch`.
    pub fn drain_into(&self, batch: &mut Vec<Bytes>, frames_max: usize) {
        let mut queue = self.queue.borrow_mut();
        let n = queue.len().min(frames_max);
        let mut bytes = 0;
        for frame in queue.drain(..n) {
            bytes += frame.len();
            batch.push(frame);
        }
        self.queued_bytes.set(self.queued_bytes.get() - bytes);
        if queue.is_empty() {
            // Give the memory back so idle connections stay small.
            *queue = VecDeque::new();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Resolves when there is something to write or the connection is
    /// closing.
    pub fn wait(&self) -> Wait<'_> {
        Wait { outbox: self }
    }

    fn wake_writer(&self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

/// Future returned by [`Outbox::wait`].
pub struct Wait<'a> {
    outbox: &'a Outbox,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let o = self.outbox;
        if o.closing.get().is_some() || !o.queue.borrow().is_empty() {
            return Poll::Ready(());
        }
        o.writer.set(Some(cx.waker().clone()));
        Poll::Pending
    }
}
