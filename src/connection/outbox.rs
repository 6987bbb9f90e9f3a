//! The outbound side of one Engine.IO session: its bounded frame queue, its
//! liveness flags, and what drains the queue: the writer task of a
//! WebSocket, or the pending `GET` of a long-polling session.
//!
//! Long-polling: the queue holds the same frames; a polling outbox has no
//! socket and no writer, and a push wakes its waiters (the pending `GET`,
//! which answers with everything queued, and the session's driver). On the
//! upgrade to WebSocket, [`Outbox::attach_websocket`] gives it the new
//! socket, and whatever is still queued leaves on the WebSocket, in order.
//!
//! Frames are complete WebSocket frames in a [`Frame`] (a shard-local `Rc`
//! of the refcounted [`Bytes`]); queueing one is a pointer copy and a plain
//! increment, never a byte copy. The queue
//! is bounded in bytes: a client that keeps reading paces the producers of
//! its messages once it is half its cap behind ([`Egress`]); one that stops
//! reading is closed with [`CloseReason::SlowConsumer`] at the cap, and after
//! the stall timeout no one waits for it.
//!
//! What writes exists only while there is something to write. The first
//! frame queued on an idle connection hands the socket's write half to it:
//! under io_uring, for a plain-TCP connection, the shard's send ring
//! ([`ring`]: one pass per turn submits a send for every connection with
//! something queued, with no task per write); otherwise (TLS, the epoll
//! driver, a connection that is closing) a writer task. Either gathers
//! everything queued into one write, writes again while more arrived during
//! the write, and hands the write half back once the queue is empty.
//! Frames queued during one scheduling turn therefore leave in one write at
//! the end of that turn, and an idle connection keeps no task, no batch and
//! no queue memory: the emptied queue and send buffer go to the shard's
//! spares ([`Egress`]), where the next connection with something to write
//! takes them, so a write at saturation allocates only its task. A write of
//! one frame `send`s it from its own buffer; a write of several small frames
//! (up to 16 KiB) copies them into one buffer and `send`s it: one contiguous
//! buffer costs the kernel less than one iovec per frame (its copy walks the
//! iovecs one by one, and a `writev` through io_uring takes the generic file
//! write path), and costs less than the copy. In a fan-out every recipient's
//! batch is the same frames: from the second writer with the same frames on,
//! the shard's one copy of them is sent instead ([`LastCopied`]). Larger
//! batches go as a `writev` of the shared frames themselves.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use monoio::buf::{IoBuf, IoVecBuf};

pub(crate) use crate::close::CloseReason;
use crate::connection::socket::{Socket, WriteHalf};
use crate::metrics::Stats;
use crate::protocol::frames::Frame;
use crate::protocol::websocket;
use ringcast_shards::wait::WaitList;

/// Most frames gathered into one vectored write (IOV_MAX is 1024).
const WRITEV_FRAMES_MAX: usize = 512;
/// Most spare queues (and, apart, spare send buffers) a shard keeps: one
/// per connection whose writer runs at the same time, at saturation.
const SPARES_MAX: usize = 4096;
/// A queue with room for more frames than this is freed rather than kept
/// (a send buffer, past [`COALESCE_BYTES_MAX`]).
const SPARE_QUEUE_FRAMES_MAX: usize = 64;
/// Time allowed to flush the last frames and the close frame.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// What the outboxes of one shard share: the counters, the wake-ups writers
/// give as their writes complete, and the pacing request a push leaves for
/// the producer that made it.
///
/// Pacing is how a client that reads, but more slowly than its publishers
/// send, is kept from being closed as a slow consumer: once its queue is
/// past half the cap, the producer (a publishing connection's reader, or
/// the inbox drain for traffic from other shards) waits, before its next
/// message, until the queue is back under half. A client whose writes have
/// made no progress for `stall_timeout` is stalled: no one waits for it any
/// more, its queue fills to the cap and it is closed, so it costs the rest
/// of the shard at most that timeout once.
pub(crate) struct Egress {
    pub(crate) stats: Rc<Stats>,
    write_done: WaitList,
    /// Every recipient a push left past half its cap since the producer
    /// last looked (not just the last one: the last may be a client about
    /// to count as stalled, and a producer that waited only for it would
    /// go on filling a client that reads).
    pace: RefCell<Vec<Rc<Outbox>>>,
    stall_timeout: Duration,
    spares: RefCell<Spares>,
    last_copied: RefCell<LastCopied>,
    /// The shard's send ring, under io_uring: plain connections write
    /// through it instead of a writer task each.
    ring: Option<ring::RingEgress>,
}

/// The recipients a producer waits for before its next message (one word:
/// it sits in every connection's future, whose size an idle connection
/// pays).
pub(crate) struct Pace(Box<Recipients>);

struct Recipients(Vec<Rc<Outbox>>);

/// Emptied queues and send buffers of the shard's writers, for the next
/// connection that has something to write.
///
/// At saturation every connection fills its queue, gets one write and
/// empties again, every turn. An idle connection must hold no queue memory,
/// so each of those turns used to allocate (and grow) a queue, a batch and
/// a send buffer, and free them again: ~8 allocations per write. A writer
/// now takes them from here and gives them back when it ends, so a shard
/// keeps about as many as it has writers at once, recently used and warm
/// in the cache. The shard's heartbeat frees them all every tick
/// ([`Egress::trim_spares`]), so a burst's buffers do not outlive it by
/// more than a second.
#[derive(Default)]
struct Spares {
    queues: Vec<VecDeque<Frame>>,
    flats: Vec<Vec<u8>>,
}

/// The last batch of several small frames a writer of the shard copied
/// into its send buffer, to tell whether the next batch is the very same
/// frames: a fan-out gives every recipient the same frames, so the second
/// writer with them makes one shared buffer of them, and every later one
/// sends that buffer (a refcount) instead of copying them again. The
/// kernel then copies from one buffer that stays in the cache rather than
/// from one per connection. A batch unlike the last costs one pointer
/// comparison more than before.
#[derive(Default)]
struct LastCopied {
    /// The frames (held, so that their identity cannot pass to another).
    frames: Vec<Frame>,
    /// The frames as one buffer, once a second batch had them all.
    shared: Option<Frame>,
}

impl LastCopied {
    /// Whether `batch` holds exactly these frames, in the same order.
    fn is(&self, batch: &VecDeque<Frame>) -> bool {
        self.frames.len() == batch.len() && self.frames.iter().zip(batch).all(|(a, b)| a.same(b))
    }
}

impl Egress {
    pub(crate) fn new(stats: Rc<Stats>, stall_timeout: Duration) -> Self {
        Self {
            stats,
            write_done: WaitList::default(),
            pace: RefCell::default(),
            stall_timeout,
            spares: RefCell::default(),
            last_copied: RefCell::default(),
            ring: ring::RingEgress::for_this_thread(),
        }
    }

    /// An empty queue, with room if a spare one is left.
    fn spare_queue(&self) -> VecDeque<Frame> {
        self.spares.borrow_mut().queues.pop().unwrap_or_default()
    }

    /// Keeps an emptied queue's memory for another connection (unless it
    /// has none, is too big, or enough are kept).
    fn recycle_queue(&self, queue: VecDeque<Frame>) {
        debug_assert!(queue.is_empty());
        let capacity = queue.capacity();
        let mut spares = self.spares.borrow_mut();
        if capacity > 0 && capacity <= SPARE_QUEUE_FRAMES_MAX && spares.queues.len() < SPARES_MAX {
            spares.queues.push(queue);
        }
    }

    /// An empty send buffer, with room if a spare one is left.
    fn spare_flat(&self) -> Vec<u8> {
        self.spares.borrow_mut().flats.pop().unwrap_or_default()
    }

    fn recycle_flat(&self, mut flat: Vec<u8>) {
        let capacity = flat.capacity();
        let mut spares = self.spares.borrow_mut();
        if capacity > 0 && capacity <= COALESCE_BYTES_MAX && spares.flats.len() < SPARES_MAX {
            flat.clear();
            spares.flats.push(flat);
        }
    }

    /// Frees every spare queue and send buffer (the shard's heartbeat
    /// calls it every tick).
    pub(crate) fn trim_spares(&self) {
        *self.spares.borrow_mut() = Spares::default();
        *self.last_copied.borrow_mut() = LastCopied::default();
    }

    /// How many spare queues and send buffers are kept.
    #[cfg(test)]
    fn spares(&self) -> (usize, usize) {
        let spares = self.spares.borrow();
        (spares.queues.len(), spares.flats.len())
    }

    /// The recipients that went past half their cap while still reading,
    /// if pushes since the last call found any (and clears the request).
    /// The producers check it after every message and then wait in
    /// [`Egress::paced`].
    pub(crate) fn take_pace_request(&self) -> Option<Pace> {
        let mut pace = self.pace.borrow_mut();
        (!pace.is_empty()).then(|| Pace(Box::new(Recipients(std::mem::take(&mut *pace)))))
    }

    /// Waits until every recipient of `pace` is back under half its cap,
    /// closed, or stalled (at most the stall timeout: their stall clocks
    /// run together).
    pub(crate) async fn paced(&self, pace: Pace) {
        Stats::bump(&self.stats.paced_waits);
        let waiting = RefCell::new(pace.0 .0);
        let relieved = self.write_done.wait_until(|| {
            let mut waiting = waiting.borrow_mut();
            waiting.retain(|recipient| !recipient.is_relieved());
            waiting.is_empty()
        });
        let _ = monoio::time::timeout(self.stall_timeout, relieved).await;
    }
}

/// Outbound queue and liveness flags of one connection.
pub(crate) struct Outbox {
    queue: RefCell<VecDeque<Frame>>,
    queued_bytes: Cell<usize>,
    queued_bytes_max: usize,
    closing: Cell<Option<CloseReason>>,
    /// The socket's write half while no writer task runs. Taken by the
    /// writer a push spawns; given back when that writer finds nothing
    /// more to write. Always `None` while long-polling.
    idle_writer: Cell<Option<WriteHalf>>,
    /// The WebSocket (`None` while long-polling).
    socket: Cell<Option<Socket>>,
    /// Set while the session long-polls (until the upgrade).
    polling: Cell<bool>,
    /// Who waits for a long-polling session's queue (its pending `GET`
    /// and its driver); `None` for a connection that was a WebSocket
    /// from the start.
    poll_waiters: Option<Rc<WaitList>>,
    egress: Rc<Egress>,
    /// When the write in flight (if any) was submitted.
    writing_since: Cell<Option<Instant>>,
    /// Set when a ping was sent and no pong has come back yet.
    pong_pending: Cell<bool>,
    /// When the last ping was sent (or the connection opened).
    last_ping: Cell<Instant>,
    opened_at: Instant,
    /// Set once the client's Socket.IO connect was answered.
    connected: Cell<bool>,
}

impl Outbox {
    pub(crate) fn new(
        queued_bytes_max: usize,
        socket: Socket,
        writer: WriteHalf,
        egress: Rc<Egress>,
    ) -> Self {
        Self::with(queued_bytes_max, Some((socket, writer)), egress)
    }

    /// The outbox of a long-polling session: no socket yet, its queue
    /// drained by `GET` requests ([`Outbox::take_polled`]).
    pub(crate) fn polling(queued_bytes_max: usize, egress: Rc<Egress>) -> Self {
        Self::with(queued_bytes_max, None, egress)
    }

    fn with(queued_bytes_max: usize, websocket: Option<(Socket, WriteHalf)>, egress: Rc<Egress>) -> Self {
        let now = Instant::now();
        let polling = websocket.is_none();
        let (socket, writer) = websocket.unzip();
        Self {
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            queued_bytes_max,
            closing: Cell::new(None),
            idle_writer: Cell::new(writer),
            socket: Cell::new(socket),
            polling: Cell::new(polling),
            poll_waiters: polling.then(Rc::default),
            egress,
            // A long-polling session waits for its first poll from the start.
            writing_since: Cell::new(polling.then_some(now)),
            pong_pending: Cell::new(false),
            last_ping: Cell::new(now),
            opened_at: now,
            connected: Cell::new(false),
        }
    }

    /// Queues one frame (or several concatenated) for the writer, starting
    /// the writer if it is not running. Past half the cap, a connection
    /// that still reads asks its producer to wait for it
    /// ([`Egress::take_pace_request`]); past the cap the connection is
    /// closed as a slow consumer.
    // PERF: called once per recipient on the fan-out path: no allocation
    // beyond the queue slot (and, on an idle connection, its writer task),
    // no copying of `frame`'s bytes, nothing that waits.
    #[inline]
    pub(crate) fn push(self: &Rc<Self>, frame: impl Into<Frame>) {
        let frame = frame.into();
        if self.closing.get().is_some() {
            return;
        }
        let queued = self.queued_bytes.get() + frame.len();
        if queued > self.queued_bytes_max {
            self.close(CloseReason::SlowConsumer);
            return;
        }
        if queued > self.queued_bytes_max / 2 && !self.is_stalled() {
            let mut pace = self.egress.pace.borrow_mut();
            // Frames of one message come in a row: ask once.
            if !pace.last().is_some_and(|last| Rc::ptr_eq(last, self)) {
                pace.push(self.clone());
            }
        }
        self.queued_bytes.set(queued);
        let mut queue = self.queue.borrow_mut();
        if queue.capacity() == 0 {
            *queue = self.egress.spare_queue();
        }
        queue.push_back(frame);
        drop(queue);
        self.start_writer();
    }

    /// Asks the writer to flush what is queued (when the reason is
    /// graceful) and end the connection. The first reason wins.
    pub(crate) fn close(self: &Rc<Self>, reason: CloseReason) {
        if self.closing.get().is_some() {
            return;
        }
        self.closing.set(Some(reason));
        if !reason.is_graceful() {
            // Nothing more will get through: end both directions now, which
            // also fails a write stuck on a full socket buffer and wakes the
            // reader with end of file.
            self.shutdown_socket();
        }
        self.start_writer();
    }

    /// Queues the end of the transport: a WebSocket close frame with
    /// `code`. While long-polling nothing is queued: the `GET` that finds
    /// the session closed and drained answers Engine.IO's close packet `1`
    /// (which socket.io-client treats like a transport close).
    pub(crate) fn push_close(self: &Rc<Self>, code: u16, reason: &str) {
        if !self.polling.get() {
            self.push(websocket::close_frame(code, reason));
        }
    }

    /// Spawns the writer task unless it is running (a running writer looks
    /// at the queue and the closing flag after every write); while
    /// long-polling, wakes the pending `GET` and the session's driver.
    #[inline]
    fn start_writer(self: &Rc<Self>) {
        if let Some(half) = self.idle_writer.take() {
            self.run_writer(half);
        } else if self.polling.get() {
            self.wake_pollers();
        }
    }

    /// Hands the write half to what writes: the shard's send ring, or a
    /// writer task (TLS, or no ring).
    fn run_writer(self: &Rc<Self>, half: WriteHalf) {
        match &self.egress.ring {
            Some(ring) if !half.is_tls() => ring.schedule(self.clone(), half),
            _ => {
                monoio::spawn(write_loop(self.clone(), half));
            }
        }
    }

    fn wake_pollers(&self) {
        if let Some(waiters) = &self.poll_waiters {
            waiters.wake_all();
        }
    }

    fn shutdown_socket(&self) {
        let socket = self.socket.take();
        if let Some(socket) = &socket {
            socket.shutdown();
        }
        self.socket.set(socket);
    }

    /// Whether the session still long-polls (no upgrade yet).
    pub(crate) fn is_polling(&self) -> bool {
        self.polling.get()
    }

    /// Resolves once `ready()` holds, re-checked whenever something is
    /// queued, the outbox closes or the session upgrades (long-polling
    /// sessions only; resolves at once otherwise).
    pub(crate) async fn polled(&self, ready: impl Fn() -> bool + Unpin) {
        if let Some(waiters) = &self.poll_waiters {
            waiters.wait_until(ready).await;
        }
    }

    /// Wakes whoever waits in [`Outbox::polled`] (their condition changed).
    pub(crate) fn poll_changed(&self) {
        self.wake_pollers();
    }

    /// Moves up to `frames_max` queued frames into `batch` for a polling
    /// response; `writing` marks the response's write as in flight (for
    /// the stall detection), as a writer's `writev` does.
    pub(crate) fn take_polled(&self, batch: &mut Vec<Frame>, frames_max: usize) {
        self.drain_into(batch, frames_max);
        Stats::add(&self.egress.stats.frames_written, batch.len() as u64);
    }

    /// A polling response's write starts. While long-polling, the outbox
    /// counts as writing from then until the next response: a client that
    /// stops polling for the stall timeout has stalled, like a WebSocket
    /// whose write makes no progress, and no producer waits for it.
    pub(crate) fn poll_write_started(&self) {
        self.writing_since.set(Some(Instant::now()));
    }

    /// A polling response was written: the clock of the next poll starts
    /// (see [`Outbox::poll_write_started`]), and producers pacing
    /// themselves to this client look again.
    pub(crate) fn poll_write_done(&self) {
        self.writing_since.set(Some(Instant::now()));
        if !self.egress.write_done.is_empty() {
            self.egress.write_done.wake_all();
        }
    }

    /// The upgrade: the long-polling session continues on this WebSocket.
    /// What is still queued leaves on it first, in order.
    pub(crate) fn attach_websocket(self: &Rc<Self>, socket: Socket, writer: WriteHalf) {
        debug_assert!(self.polling.get(), "attach_websocket on a WebSocket outbox");
        self.socket.set(Some(socket));
        self.polling.set(false);
        self.writing_since.set(None);
        self.wake_pollers();
        if self.closing.get().is_some() || !self.is_empty() {
            self.run_writer(writer);
        } else {
            self.idle_writer.set(Some(writer));
        }
    }

    /// Whether the client stopped reading: the write in flight has waited
    /// for room in the kernel's send buffer for the stall timeout. (Only
    /// asked past half the cap, so the fan-out path never reads the clock.)
    fn is_stalled(&self) -> bool {
        self.writing_since
            .get()
            .is_some_and(|since| since.elapsed() >= self.egress.stall_timeout)
    }

    /// Whether a producer pacing itself to this connection may go on.
    fn is_relieved(&self) -> bool {
        self.closing.get().is_some()
            || self.queued_bytes.get() <= self.queued_bytes_max / 2
            || self.is_stalled()
    }

    /// The reader saw a pong: the heartbeat is satisfied.
    pub(crate) fn pong_received(&self) {
        self.pong_pending.set(false);
    }

    /// One heartbeat check, run by the shard's heartbeat task: drops a
    /// connection whose pong is overdue and pings one whose interval has
    /// passed. Keeping the timer per shard instead of per connection keeps
    /// idle connections small and the write path free of timer churn.
    pub(crate) fn heartbeat(
        self: &Rc<Self>,
        now: Instant,
        ping: &Frame,
        interval: Duration,
        timeout: Duration,
    ) {
        if self.closing.get().is_some() {
            return;
        }
        let since = now.saturating_duration_since(self.last_ping.get());
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
    pub(crate) fn enforce_connect_deadline(self: &Rc<Self>, now: Instant, timeout: Duration) {
        if !self.connected.get() && now.saturating_duration_since(self.opened_at) >= timeout {
            self.close(CloseReason::ConnectTimeout);
        }
    }

    /// The client's Socket.IO connect was accepted.
    pub(crate) fn set_connected(&self) {
        self.connected.set(true);
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued_bytes.get()
    }

    pub(crate) fn closing(&self) -> Option<CloseReason> {
        self.closing.get()
    }

    /// Moves up to `frames_max` queued frames into `batch`.
    fn drain_into(&self, batch: &mut Vec<Frame>, frames_max: usize) {
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
            self.egress.recycle_queue(std::mem::take(&mut *queue));
        }
    }

    /// Moves up to `frames_max` queued frames into the writer's `batch`
    /// (empty): all of them by swapping the two queues when they fit, so
    /// the outbox keeps the batch's emptied queue for what is pushed during
    /// the write.
    fn take_batch(&self, batch: &mut VecDeque<Frame>, frames_max: usize) {
        debug_assert!(batch.is_empty());
        let mut queue = self.queue.borrow_mut();
        if queue.len() <= frames_max {
            // Everything queued leaves: no need to read each frame's length
            // (a cache miss per frame at saturation, queued a whole turn ago).
            std::mem::swap(&mut *queue, batch);
            self.queued_bytes.set(0);
        } else {
            batch.extend(queue.drain(..frames_max));
            let bytes: usize = batch.iter().map(|f| f.len()).sum();
            self.queued_bytes.set(self.queued_bytes.get() - bytes);
        }
    }

    /// The writer ends: an emptied queue's memory goes back to the shard
    /// (idle connections hold none).
    fn release_queue(&self) {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() && queue.capacity() > 0 {
            self.egress.recycle_queue(std::mem::take(&mut *queue));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }

    /// Fills the writer's empty `batch` with what is queued for one write
    /// (up to [`WRITEV_FRAMES_MAX`] frames), with a spare send buffer when
    /// there are several frames to copy into it.
    fn fill_batch(&self, batch: &mut FrameBatch) {
        let egress = &self.egress;
        self.take_batch(&mut batch.frames, WRITEV_FRAMES_MAX);
        Stats::add(&egress.stats.frames_written, batch.frames.len() as u64);
        if batch.flat.capacity() == 0 && batch.frames.len() > 1 {
            batch.flat = egress.spare_flat();
        }
    }

    /// A write completed, `written` bytes of it (0 if it failed): the stall
    /// clock stops, producers pacing to this client look again, and the
    /// counters move.
    fn write_completed(&self, written: usize) {
        let egress = &self.egress;
        self.writing_since.set(None);
        if !egress.write_done.is_empty() {
            egress.write_done.wake_all();
        }
        Stats::bump(&egress.stats.writes);
        Stats::add(&egress.stats.bytes_out, written as u64);
    }

    /// Nothing is left to write: the emptied queue and the writer's batch
    /// go back to the shard's spares (an idle connection holds none), the
    /// write half back to the outbox for the next push.
    fn park_writer(&self, writer: WriteHalf, batch: FrameBatch) {
        self.release_queue();
        self.egress.recycle_queue(batch.frames);
        self.egress.recycle_flat(batch.flat);
        self.idle_writer.set(Some(writer));
    }
}

/// The writer task: writes until the queue is empty, then hands the write
/// half back and ends; on close, flushes what is left (if the reason is
/// graceful) and shuts the socket down.
async fn write_loop(outbox: Rc<Outbox>, mut writer: WriteHalf) {
    let mut batch = FrameBatch::default();
    loop {
        if let Some(reason) = outbox.closing() {
            if reason.is_graceful() {
                Box::pin(flush_last(&mut writer, &outbox, &mut batch)).await;
            }
            outbox.shutdown_socket();
            return;
        }
        if outbox.is_empty() {
            outbox.park_writer(writer, std::mem::take(&mut batch));
            return;
        }
        if flush(&mut writer, &outbox, &mut batch).await.is_err() {
            outbox.close(CloseReason::Io);
        }
    }
}

/// Flushes what was queued last (a close frame, an echo) but does not wait
/// long on a peer that stopped reading.
async fn flush_last(writer: &mut WriteHalf, outbox: &Outbox, batch: &mut FrameBatch) {
    let drain = async {
        while !outbox.is_empty() {
            if flush(writer, outbox, batch).await.is_err() {
                return;
            }
        }
        // TLS: close_notify, so the client reads a clean end.
        let _ = writer.close_notify().await;
    };
    let _ = monoio::time::timeout(CLOSE_FLUSH_TIMEOUT, drain).await;
}

/// Writes everything queued right now (up to [`WRITEV_FRAMES_MAX`] frames)
/// with as few writes as the kernel allows.
async fn flush(writer: &mut WriteHalf, outbox: &Outbox, batch: &mut FrameBatch) -> std::io::Result<()> {
    let egress = &outbox.egress;
    outbox.fill_batch(batch);
    let mut owned = std::mem::take(batch);
    while !owned.is_empty() {
        outbox.writing_since.set(Some(Instant::now()));
        // One await per kind of write rather than one write that branches
        // inside: their futures share their room in this task's state, so
        // TLS costs the plain writer nothing (the TLS one is boxed). Only
        // the vectored writes need the iovecs.
        let (result, back) = if writer.is_tls() {
            owned.refresh_iovecs();
            Box::pin(writer.writev_tls(owned)).await
        } else if owned.coalesce(&egress.last_copied, &egress.stats) {
            let (result, Coalesced(back)) = writer.send_plain(Coalesced(owned)).await;
            (result, back)
        } else {
            owned.refresh_iovecs();
            writer.writev_plain(owned).await
        };
        owned = back;
        outbox.write_completed(result.as_ref().map_or(0, |&n| n));
        match result {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => owned.advance(n),
            Err(e) => return Err(e),
        }
    }
    // Keep the (now empty) vectors for the next round of this writer; they
    // are freed with the task once the queue runs dry.
    *batch = owned;
    Ok(())
}

/// Frames gathered for one write, with their iovecs or the buffer they
/// were copied into.
#[derive(Default)]
struct FrameBatch {
    frames: VecDeque<Frame>,
    iovecs: Vec<libc::iovec>,
    /// The frames' unsent bytes once [`FrameBatch::coalesce`] copied them
    /// (the frames themselves are out of the batch then).
    flat: Vec<u8>,
}

/// Batches of at most this many bytes are copied into one buffer and sent
/// with one `send` instead of a `writev` of one iovec per frame.
const COALESCE_BYTES_MAX: usize = 16 * 1024;

impl FrameBatch {
    /// Whether everything was sent.
    fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.flat.is_empty()
    }

    /// Makes the batch one contiguous buffer when it is small, so the
    /// kernel takes it with one `send` rather than one iovec per frame:
    /// a single frame is sent as it is; several are copied into `flat`,
    /// unless they are the very frames of the shard's last copied batch
    /// (`last`), whose shared copy then replaces them. True as well while
    /// an earlier buffer is partly sent; false when the frames go as
    /// iovecs.
    fn coalesce(&mut self, last: &RefCell<LastCopied>, stats: &Stats) -> bool {
        if !self.flat.is_empty() {
            debug_assert!(self.frames.is_empty());
            return true;
        }
        if self.frames.len() < 2 {
            return true;
        }
        let total: usize = self.frames.iter().map(|f| f.len()).sum();
        if total > COALESCE_BYTES_MAX {
            return false;
        }
        let mut last = last.borrow_mut();
        if last.is(&self.frames) {
            let frames = &self.frames;
            let shared = last.shared.get_or_insert_with(|| {
                let mut copy = Vec::with_capacity(total);
                for frame in frames {
                    copy.extend_from_slice(frame);
                }
                Frame::from(Bytes::from(copy))
            });
            let shared = shared.clone();
            Stats::bump(&stats.shared_copies);
            self.frames.clear();
            self.frames.push_back(shared);
            return true;
        }
        self.flat.reserve(total);
        for frame in &self.frames {
            self.flat.extend_from_slice(frame);
        }
        // The frames are kept there (and the previous ones dropped) rather
        // than dropped here.
        last.frames.clear();
        last.frames.extend(self.frames.drain(..));
        last.shared = None;
        true
    }

    /// The bytes of a batch that [`FrameBatch::coalesce`] made one buffer:
    /// its `flat`, or else its one frame.
    fn contiguous(&self) -> &[u8] {
        if self.flat.is_empty() {
            debug_assert_eq!(self.frames.len(), 1);
            self.frames.front().map_or(&[], |frame| &frame[..])
        } else {
            &self.flat
        }
    }

    fn refresh_iovecs(&mut self) {
        self.iovecs.clear();
        self.iovecs.extend(self.frames.iter().map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        }));
    }

    /// Drops the first `n` written bytes.
    fn advance(&mut self, mut n: usize) {
        if !self.flat.is_empty() {
            // A partial send (the socket's buffer was full) moves the rest
            // to the front, which is rare; a whole one just empties it.
            self.flat.drain(..n.min(self.flat.len()));
            return;
        }
        while let Some(frame) = self.frames.front_mut() {
            if n >= frame.len() {
                n -= frame.len();
                self.frames.pop_front();
            } else {
                // The frame is shared: the rest of it becomes a frame of
                // this batch's own (rare: the socket's buffer was full).
                if n > 0 {
                    *frame = Frame::from(frame.bytes().slice(n..));
                }
                break;
            }
        }
    }
}

/// A batch that [`FrameBatch::coalesce`] made one buffer (its `flat`, or
/// else its one frame), handed to one `send` whole (so
/// the writer's future holds one batch, whichever way it writes).
struct Coalesced(FrameBatch);

impl Coalesced {
    fn buffer(&self) -> &[u8] {
        self.0.contiguous()
    }
}

// SAFETY: `flat` and the frames' heap buffers are owned by the batch,
// neither moved nor changed while the runtime holds it; `buffer` is the
// same slice for as long (the batch is not touched until the runtime hands
// it back).
unsafe impl IoBuf for Coalesced {
    fn read_ptr(&self) -> *const u8 {
        self.buffer().as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.buffer().len()
    }
}

// SAFETY: the iovecs point into the `Bytes` held in `frames`, whose heap
// buffers do not move while the batch is owned by the runtime, and
// `refresh_iovecs` is called before every vectored submission so they are
// current.
unsafe impl IoVecBuf for FrameBatch {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iovecs.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iovecs.len()
    }
}

mod ring;
#[cfg(test)]
mod tests;
