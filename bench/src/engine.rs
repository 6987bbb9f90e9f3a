//! One load-generator thread: an epoll (mio) loop that owns a share of the
//! client connections, walks each through connect → upgrade → Engine.IO open
//! → `40{auth}` → optional `join`, then publishes, on a fixed schedule or
//! closed-loop with a window of messages in flight ([`crate::window`]), and
//! counts what arrives.
//!
//! Cheap on purpose, because it shares two cores with the server under test:
//! - one large read buffer per thread; a connection keeps a private buffer
//!   only while a frame is split across reads;
//! - received frames go through [`wire::Packet::classify`] and
//!   [`wire::message_numbers`] only: no JSON parsing, no allocation per message;
//! - writes are appended to a per-connection buffer and flushed once per loop
//!   turn, so a pong and a publish share one `write`.
//!
//! A subscriber may long-poll instead ([`ConnSpec::polling`]): Engine.IO's
//! HTTP long-polling over two keep-alive connections, one that always has a
//! `GET` waiting and one for `POST`s (its pongs, `40`, the join). A polling
//! response's packets go through the same handlers as WebSocket messages.
//!
//! Timestamps are nanoseconds since [`Shared::epoch`] on the monotonic clock,
//! shared by all threads of the process. On a schedule, a published message
//! carries the time it was *scheduled* for, not the time it was written, so a
//! stall anywhere (generator included) shows up as latency instead of being
//! hidden (coordinated omission). In window mode there is no schedule to fall
//! behind: a message carries the time it was written.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::link::Link;
use crate::window::{WindowBook, WindowTally};
use crate::wire::{self, FrameHead, MaskRng, Packet, UpgradeResponse};

/// Setup: connect, handshake, join. No publishing.
pub const PHASE_SETUP: u8 = 0;
/// Publishers send on their schedule between `publish_start_ns` and `publish_end_ns`.
pub const PHASE_PUBLISH: u8 = 1;
/// Workers return their reports.
pub const PHASE_STOP: u8 = 2;

/// The event name data messages are published under.
pub const DATA_EVENT: &[u8] = b"m";
const READ_BUFFER_BYTES: usize = 256 * 1024;
const EVENTS_CAPACITY: usize = 1024;
/// The token of a worker's waker (window completions from other workers).
const WAKE_TOKEN: Token = Token(usize::MAX);
/// Set in the token of a polling subscriber's `POST` connection.
const POST_TOKEN_BIT: usize = 1 << (usize::BITS - 2);
/// How long a loop turn may sleep when nothing is due; bounds phase-change latency.
const IDLE_POLL_MS: u64 = 20;
/// Failure reasons kept verbatim per worker (the rest are only counted).
const FAILURE_SAMPLES_MAX: usize = 8;
/// Latency values above this are clamped (they are failures, not latencies).
pub const LATENCY_US_MAX: u64 = 120_000_000;

/// Where the server is.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    /// TLS (`https://`, `wss://`): the client configuration.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Where a publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    Channel(u32),
    /// `message` without a channel: the whole environment.
    Environment,
}

#[derive(Debug, Clone, Copy)]
pub struct PublishSpec {
    pub destination: Destination,
    /// Time between two messages of this publisher (fixed schedule only).
    pub interval_ns: u64,
    /// First message at `publish_start_ns + offset_ns`, to spread publishers.
    pub offset_ns: u64,
    /// Whether the publisher itself is among the destination's members (it
    /// does not count as a recipient: messages are sent without echo).
    pub is_member: bool,
    /// Closed loop: keep [`Shared::window`]'s number of messages in flight
    /// instead of following `interval_ns`.
    pub windowed: bool,
}

/// What one connection does.
#[derive(Debug, Clone)]
pub struct ConnSpec {
    /// Global index; doubles as the `src` of the messages it publishes.
    pub id: u32,
    /// Which of [`Settings::targets`] it connects to.
    pub node: u8,
    pub join: Option<u32>,
    pub publish: Option<PublishSpec>,
    /// Stops reading once joined (a stalled subscriber): it is not counted
    /// as a recipient, and its small receive buffer fills at once, so the
    /// server's handling of slow consumers is what the run measures.
    pub stall: bool,
    /// Engine.IO long-polling instead of WebSocket (subscribers only).
    pub polling: bool,
}

/// Receive buffer of a stalled subscriber's socket, in bytes.
const STALLED_RCVBUF_BYTES: usize = 4096;

/// Fixed per run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server, or the nodes of a cluster (connections pick one by
    /// [`ConnSpec::node`]).
    pub targets: Vec<Target>,
    /// Source addresses are 127.0.0.1 ..= 127.0.0.{source_ips}; 0 lets the kernel pick.
    pub source_ips: u8,
    /// Connections handshaking at once per worker.
    pub connecting_max: usize,
    /// The `auth` JSON sent with `40`.
    pub auth: String,
    /// Filler so a published event is about `payload_bytes` long.
    pub pad: String,
}

impl Settings {
    pub fn target(&self, node: u8) -> &Target {
        &self.targets[usize::from(node) % self.targets.len()]
    }
}

/// Shared between the coordinating thread and the workers.
#[derive(Debug)]
pub struct Shared {
    pub epoch: Instant,
    pub phase: AtomicU8,
    pub publish_start_ns: AtomicU64,
    pub measure_start_ns: AtomicU64,
    pub publish_end_ns: AtomicU64,
    /// Connections that completed setup (connected and, if asked, joined).
    pub ready: AtomicU64,
    pub failed: AtomicU64,
    /// Members whose join is acknowledged, per channel.
    pub channel_members: Vec<AtomicU32>,
    /// Connected sockets (all sit in the environment room).
    pub environment_members: AtomicU32,
    pub expected_measured: AtomicU64,
    pub delivered_measured: AtomicU64,
    pub frames_received: AtomicU64,
    /// Completion counting for windowed publishers (None: all on a schedule).
    pub window: Option<WindowBook>,
}

impl Shared {
    pub fn new(channels: usize, window: Option<WindowBook>) -> Self {
        Self {
            epoch: Instant::now(),
            phase: AtomicU8::new(PHASE_SETUP),
            publish_start_ns: AtomicU64::new(u64::MAX),
            measure_start_ns: AtomicU64::new(u64::MAX),
            publish_end_ns: AtomicU64::new(0),
            ready: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            channel_members: (0..channels).map(|_| AtomicU32::new(0)).collect(),
            environment_members: AtomicU32::new(0),
            expected_measured: AtomicU64::new(0),
            delivered_measured: AtomicU64::new(0),
            frames_received: AtomicU64::new(0),
            window,
        }
    }

    /// Messages stamped from this time on are measured. Read afresh for
    /// every message sent and every delivery, by both sides: in a closed
    /// loop the scenario sets it while publishers run (see
    /// `scenario::WINDOW_STRETCH_MAX`), a little ahead of its clock, so a
    /// stamp taken before the new value was visible is always below it.
    pub fn measure_start(&self) -> u64 {
        self.measure_start_ns.load(Ordering::Acquire)
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// What a worker counted; summed over workers by the scenario.
#[derive(Debug)]
pub struct WorkerReport {
    pub connected: u64,
    pub failed: u64,
    pub failure_samples: Vec<String>,
    pub handshake_us: Histogram<u64>,
    pub latency_us: Histogram<u64>,
    pub sent_measured: u64,
    pub expected_measured: u64,
    pub delivered_measured: u64,
    pub delivered_total: u64,
    pub out_of_order: u64,
    pub notices: u64,
    pub other_frames: u64,
    pub pings_answered: u64,
    pub bytes_received: u64,
    pub closed_by_server: u64,
    /// Handshakes that ended (connected or failed); bounds those in flight.
    pub handshakes_settled: u64,
    /// Window mode: deliveries of a message that was not in flight (duplicates).
    pub window_stray: u64,
}

impl WorkerReport {
    pub fn new() -> Self {
        Self {
            connected: 0,
            failed: 0,
            failure_samples: Vec::new(),
            handshake_us: new_histogram(),
            latency_us: new_histogram(),
            sent_measured: 0,
            expected_measured: 0,
            delivered_measured: 0,
            delivered_total: 0,
            out_of_order: 0,
            notices: 0,
            other_frames: 0,
            pings_answered: 0,
            bytes_received: 0,
            closed_by_server: 0,
            handshakes_settled: 0,
            window_stray: 0,
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.connected += other.connected;
        self.failed += other.failed;
        for sample in &other.failure_samples {
            if self.failure_samples.len() < FAILURE_SAMPLES_MAX {
                self.failure_samples.push(sample.clone());
            }
        }
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.handshake_us.add(&other.handshake_us);
        let _ = self.latency_us.add(&other.latency_us);
        self.sent_measured += other.sent_measured;
        self.expected_measured += other.expected_measured;
        self.delivered_measured += other.delivered_measured;
        self.delivered_total += other.delivered_total;
        self.out_of_order += other.out_of_order;
        self.notices += other.notices;
        self.other_frames += other.other_frames;
        self.pings_answered += other.pings_answered;
        self.bytes_received += other.bytes_received;
        self.closed_by_server += other.closed_by_server;
        self.window_stray += other.window_stray;
    }
}

impl Default for WorkerReport {
    fn default() -> Self {
        Self::new()
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("valid histogram bounds")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not started yet.
    Idle,
    /// TCP connect in flight.
    Connecting,
    /// Upgrade request sent, waiting for `101`.
    Upgrading,
    /// Waiting for Engine.IO open (`0{...}`).
    Opening,
    /// `40{auth}` sent, waiting for `40{"sid"}`.
    Connecting40,
    /// `join` sent with echo, waiting for our own `channel:join`.
    Joining,
    Ready,
    /// Joined, and reads nothing more (see [`ConnSpec::stall`]).
    Stalled,
    Dead,
}

struct Conn {
    spec: ConnSpec,
    state: State,
    stream: Option<Link>,
    key: String,
    started_ns: u64,
    sid: [u8; 32],
    sid_len: usize,
    /// Bytes of a frame split across reads (empty almost always).
    partial: Vec<u8>,
    outgoing: Vec<u8>,
    dirty: bool,
    /// Last sequence number seen per publisher: `(src, seq)`; few entries.
    last_seq: Vec<(u32, u64)>,
    next_seq: u64,
    /// Window mode: the oldest message not known to be complete.
    oldest_seq: u64,
    /// Long-polling: the `POST` side (the `GET`s use `stream`).
    poll: Option<Box<PollSide>>,
}

/// A polling subscriber's `POST` connection and what it still has to send.
#[derive(Default)]
struct PollSide {
    sid: String,
    post: Option<Link>,
    /// Engine.IO packets for the next `POST`, joined by `\x1e`.
    queued: Vec<u8>,
    /// Request bytes not written yet.
    out: Vec<u8>,
    /// Response bytes not parsed yet.
    partial: Vec<u8>,
    /// A `POST` is waiting for its answer.
    in_flight: bool,
}

impl Conn {
    fn sid(&self) -> &[u8] {
        &self.sid[..self.sid_len]
    }
}

/// Everything a frame handler may touch besides the connection itself.
struct Ctx<'a> {
    shared: &'a Shared,
    settings: &'a Settings,
    report: &'a mut WorkerReport,
    rng: &'a mut MaskRng,
    dirty: &'a mut Vec<usize>,
    now_ns: u64,
    tally: &'a mut WindowTally,
    /// This worker's number (window completions are addressed by it).
    worker: usize,
}

/// Runs worker number `worker` until the phase becomes [`PHASE_STOP`].
pub fn run_worker(
    worker: usize,
    specs: Vec<ConnSpec>,
    settings: &Settings,
    shared: &Shared,
    seed: u64,
) -> io::Result<WorkerReport> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(EVENTS_CAPACITY);
    let mut conns: Vec<Conn> = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| Conn {
            key: wire::websocket_key(seed ^ (i as u64).wrapping_mul(0x9E37_79B9)),
            spec,
            state: State::Idle,
            stream: None,
            started_ns: 0,
            sid: [0; 32],
            sid_len: 0,
            partial: Vec::new(),
            outgoing: Vec::new(),
            dirty: false,
            last_seq: Vec::new(),
            next_seq: 0,
            oldest_seq: 0,
            poll: None,
        })
        .collect();
    let book = shared.window.as_ref();
    let mut tally = WindowTally::new(book);
    // Window mode: this worker's connection index of each publisher index.
    let mut conn_of_publisher = vec![usize::MAX; book.map_or(0, WindowBook::publishers)];
    if let Some(book) = book {
        book.set_waker(worker, mio::Waker::new(poll.registry(), WAKE_TOKEN)?);
        for (index, conn) in conns.iter().enumerate() {
            if let Some(p) = book.publisher(conn.spec.id) {
                conn_of_publisher[p as usize] = index;
            }
        }
    }
    let mut to_pump: Vec<u32> = Vec::new();
    let mut report = WorkerReport::new();
    let mut rng = MaskRng::new(seed);
    let mut read_buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut dirty: Vec<usize> = Vec::new();
    let mut timers: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut timers_armed = false;
    let mut next_to_start = 0usize;
    let mut started = 0u64;
    let mut published_progress = ProgressMark::default();

    loop {
        let phase = shared.phase.load(Ordering::Acquire);
        if phase == PHASE_STOP {
            break;
        }
        // Start connections, a bounded number at a time.
        while started - report.handshakes_settled < settings.connecting_max as u64
            && next_to_start < conns.len()
        {
            let index = next_to_start;
            next_to_start += 1;
            let now_ns = shared.now_ns();
            match start_connect(&mut conns[index], index, settings, &poll, now_ns) {
                Ok(()) => started += 1,
                Err(error) => fail(
                    &mut conns[index],
                    &mut report,
                    shared,
                    &format!("connect: {error}"),
                ),
            }
        }

        let now_ns = shared.now_ns();
        if phase == PHASE_PUBLISH {
            if !timers_armed {
                timers_armed = true;
                let start_ns = shared.publish_start_ns.load(Ordering::Acquire);
                for (index, conn) in conns.iter().enumerate() {
                    if let Some(publish) = conn.spec.publish {
                        timers.push(Reverse((start_ns + publish.offset_ns, index)));
                    }
                }
            }
            let end_ns = shared.publish_end_ns.load(Ordering::Acquire);
            let mut ctx = Ctx {
                shared,
                settings,
                report: &mut report,
                rng: &mut rng,
                dirty: &mut dirty,
                now_ns,
                tally: &mut tally,
                worker,
            };
            fire_timers(&mut timers, &mut conns, &mut ctx, end_ns);
            if let Some(book) = book {
                book.take_completed(worker, |p| to_pump.push(p));
                for p in to_pump.drain(..) {
                    let index = conn_of_publisher[p as usize];
                    pump_window(&mut conns[index], index, book, p, &mut ctx, end_ns);
                }
            }
        }
        flush_dirty(
            &mut conns,
            &mut dirty,
            &mut report,
            shared,
            settings,
            poll.registry(),
        );

        let timeout_ns = match timers.peek() {
            Some(Reverse((due_ns, _))) => due_ns.saturating_sub(shared.now_ns()),
            None => IDLE_POLL_MS * 1_000_000,
        };
        let timeout = Duration::from_nanos(timeout_ns.min(IDLE_POLL_MS * 1_000_000));
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }

        let now_ns = shared.now_ns();
        for event in &events {
            if event.token() == WAKE_TOKEN {
                continue;
            }
            let token = event.token().0;
            let index = token & !POST_TOKEN_BIT;
            let conn = &mut conns[index];
            let mut ctx = Ctx {
                shared,
                settings,
                report: &mut report,
                rng: &mut rng,
                dirty: &mut dirty,
                now_ns,
                tally: &mut tally,
                worker,
            };
            if token & POST_TOKEN_BIT != 0 {
                on_post_event(
                    conn,
                    index,
                    event.is_readable() || event.is_read_closed(),
                    &mut ctx,
                );
                continue;
            }
            if conn.state == State::Connecting && (event.is_writable() || event.is_error()) {
                on_connected(conn, index, &mut ctx);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                read_all(conn, index, &mut read_buffer, &mut ctx);
            }
            let sealed = conn.stream.as_ref().is_some_and(Link::wants_write);
            if event.is_writable() && (!conn.outgoing.is_empty() || sealed) {
                mark_dirty(conn, index, &mut dirty);
            }
        }
        flush_dirty(
            &mut conns,
            &mut dirty,
            &mut report,
            shared,
            settings,
            poll.registry(),
        );
        if let Some(book) = book {
            tally.flush(book, worker);
        }
        published_progress.publish(&report, shared);
    }
    published_progress.publish(&report, shared);
    report.window_stray = tally.stray;
    Ok(report)
}

fn is_in_flight(state: State) -> bool {
    matches!(
        state,
        State::Connecting | State::Upgrading | State::Opening | State::Connecting40
    )
}

/// Pushes this worker's counters into the shared atomics as deltas, once per
/// loop turn (never per message).
#[derive(Default)]
struct ProgressMark {
    delivered_measured: u64,
    expected_measured: u64,
    frames: u64,
}

impl ProgressMark {
    fn publish(&mut self, report: &WorkerReport, shared: &Shared) {
        let frames = report.delivered_total + report.notices + report.other_frames;
        shared.delivered_measured.fetch_add(
            report.delivered_measured - self.delivered_measured,
            Ordering::Relaxed,
        );
        shared.expected_measured.fetch_add(
            report.expected_measured - self.expected_measured,
            Ordering::Relaxed,
        );
        shared
            .frames_received
            .fetch_add(frames - self.frames, Ordering::Relaxed);
        self.delivered_measured = report.delivered_measured;
        self.expected_measured = report.expected_measured;
        self.frames = frames;
    }
}

fn start_connect(
    conn: &mut Conn,
    index: usize,
    settings: &Settings,
    poll: &Poll,
    now_ns: u64,
) -> io::Result<()> {
    let target_spec = settings.target(conn.spec.node);
    let target = target_spec.addr;
    let domain = socket2::Domain::for_address(target);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if conn.spec.stall {
        socket.set_recv_buffer_size(STALLED_RCVBUF_BYTES)?;
    }
    if settings.source_ips > 0 && target.is_ipv4() && target.ip().is_loopback() {
        // Spread source addresses over 127.0.0.x so the 4-tuple space is not
        // limited by one address's ephemeral ports; the port is picked at
        // connect time (IP_BIND_ADDRESS_NO_PORT) so ports are not reserved
        // per address at bind time.
        set_bind_address_no_port(&socket)?;
        let host = 1 + (conn.spec.id % u32::from(settings.source_ips)) as u8;
        let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, host)), 0);
        socket.bind(&source.into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    let mut stream = TcpStream::from_std(socket.into());
    poll.registry()
        .register(&mut stream, Token(index), Interest::READABLE | Interest::WRITABLE)?;
    conn.stream = Some(Link::new(stream, target_spec.tls.as_ref(), target)?);
    if conn.spec.polling {
        let post = TcpStream::connect(target)?;
        post.set_nodelay(true)?;
        let mut post = Link::new(post, target_spec.tls.as_ref(), target)?;
        poll.registry().register(
            post.tcp_mut(),
            Token(index | POST_TOKEN_BIT),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        conn.poll = Some(Box::new(PollSide {
            post: Some(post),
            ..PollSide::default()
        }));
    }
    conn.state = State::Connecting;
    conn.started_ns = now_ns;
    Ok(())
}

fn set_bind_address_no_port(socket: &socket2::Socket) -> io::Result<()> {
    let enable: libc::c_int = 1;
    // SAFETY: the fd is a live socket owned by `socket`, and the option value
    // points to a c_int of the length passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::from_ref(&enable).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn on_connected(conn: &mut Conn, index: usize, ctx: &mut Ctx<'_>) {
    let Some(stream) = conn.stream.as_ref().map(Link::tcp) else {
        return;
    };
    match stream.take_error() {
        Ok(None) => {}
        Ok(Some(error)) | Err(error) => {
            fail(conn, ctx.report, ctx.shared, &format!("connect: {error}"));
            return;
        }
    }
    match stream.peer_addr() {
        Ok(_) => {}
        // Not connected yet: a spurious wake-up; the real edge follows.
        Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
        Err(error) => {
            fail(conn, ctx.report, ctx.shared, &format!("connect: {error}"));
            return;
        }
    }
    let target = ctx.settings.target(conn.spec.node);
    if conn.spec.polling {
        // The handshake: its answer is the open packet.
        conn.state = State::Opening;
        let _ = write!(
            conn.outgoing,
            "GET {}?EIO=4&transport=polling HTTP/1.1\r\nHost: {}\r\n\r\n",
            target.path, target.host
        );
    } else {
        conn.state = State::Upgrading;
        conn.outgoing
            .extend_from_slice(&wire::upgrade_request(&target.host, &target.path, &conn.key));
    }
    mark_dirty(conn, index, ctx.dirty);
}

fn mark_dirty(conn: &mut Conn, index: usize, dirty: &mut Vec<usize>) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(index);
    }
}

fn fail(conn: &mut Conn, report: &mut WorkerReport, shared: &Shared, reason: &str) {
    if conn.state == State::Dead {
        return;
    }
    let was_ready = conn.state == State::Ready;
    if is_in_flight(conn.state) {
        report.handshakes_settled += 1;
    }
    conn.state = State::Dead;
    conn.stream = None;
    conn.poll = None;
    conn.partial = Vec::new();
    conn.outgoing = Vec::new();
    if was_ready {
        report.closed_by_server += 1;
        if report.failure_samples.len() < FAILURE_SAMPLES_MAX {
            report
                .failure_samples
                .push(format!("closed after setup: {reason}"));
        }
        return;
    }
    report.failed += 1;
    shared.failed.fetch_add(1, Ordering::Relaxed);
    if report.failure_samples.len() < FAILURE_SAMPLES_MAX {
        report.failure_samples.push(reason.to_owned());
    }
}

fn read_all(conn: &mut Conn, index: usize, buffer: &mut [u8], ctx: &mut Ctx<'_>) {
    if conn.state == State::Stalled {
        return;
    }
    loop {
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let n = match stream.read(buffer) {
            Ok(0) => {
                fail(conn, ctx.report, ctx.shared, "server closed the connection");
                return;
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                fail(conn, ctx.report, ctx.shared, &format!("read: {error}"));
                return;
            }
        };
        ctx.report.bytes_received += n as u64;
        let result = if conn.partial.is_empty() {
            let result = consume(conn, index, &buffer[..n], ctx);
            if let Ok(used) = result {
                conn.partial.extend_from_slice(&buffer[used..n]);
            }
            result.map(|_| ())
        } else {
            let mut partial = std::mem::take(&mut conn.partial);
            partial.extend_from_slice(&buffer[..n]);
            let result = consume(conn, index, &partial, ctx);
            if let Ok(used) = result {
                partial.drain(..used);
                conn.partial = partial;
            }
            result.map(|_| ())
        };
        if let Err(reason) = result {
            fail(conn, ctx.report, ctx.shared, &reason);
            return;
        }
        if n < buffer.len() {
            // A short read means the socket is drained for now; skip the
            // extra read that would only return WouldBlock.
            return;
        }
    }
}

/// Handles every complete unit (upgrade head, frames) at the start of `data`
/// and returns how many bytes were used.
fn consume(conn: &mut Conn, index: usize, data: &[u8], ctx: &mut Ctx<'_>) -> Result<usize, String> {
    if conn.spec.polling {
        return consume_polled(conn, index, data, ctx);
    }
    let mut at = 0;
    if conn.state == State::Upgrading {
        match wire::parse_upgrade_response(data, &conn.key) {
            UpgradeResponse::Incomplete => return Ok(0),
            UpgradeResponse::Refused { status_line } => {
                return Err(format!("upgrade refused: {status_line}"))
            }
            UpgradeResponse::Switched { head_len } => {
                conn.state = State::Opening;
                at = head_len;
            }
        }
    }
    while let Some(head) = wire::decode_frame(&data[at..]) {
        let payload = &data[at + head.payload_offset..at + head.frame_len()];
        on_frame(conn, index, head, payload, ctx)?;
        at += head.frame_len();
        if conn.state == State::Dead {
            break;
        }
    }
    Ok(at)
}

fn on_frame(
    conn: &mut Conn,
    index: usize,
    head: FrameHead,
    payload: &[u8],
    ctx: &mut Ctx<'_>,
) -> Result<(), String> {
    if !head.fin || head.opcode == wire::OPCODE_CONTINUATION {
        // Servers under test do not fragment ~100-byte events; count it.
        ctx.report.other_frames += 1;
        return Ok(());
    }
    match head.opcode {
        wire::OPCODE_TEXT => on_text(conn, index, payload, ctx),
        wire::OPCODE_PING => {
            let mask = ctx.rng.next_mask();
            wire::encode_frame(&mut conn.outgoing, wire::OPCODE_PONG, payload, mask);
            mark_dirty(conn, index, ctx.dirty);
            Ok(())
        }
        wire::OPCODE_CLOSE => Err("server sent a close frame".to_owned()),
        wire::OPCODE_BINARY | wire::OPCODE_PONG => {
            ctx.report.other_frames += 1;
            Ok(())
        }
        other => Err(format!("unknown opcode {other}")),
    }
}

fn on_text(conn: &mut Conn, index: usize, text: &[u8], ctx: &mut Ctx<'_>) -> Result<(), String> {
    match Packet::classify(text) {
        Packet::Event { name, body } if name == DATA_EVENT => {
            on_data(conn, body, ctx);
            Ok(())
        }
        Packet::Event { name, body } => {
            ctx.report.notices += 1;
            if conn.state == State::Joining
                && name == b"channel:join"
                && memchr::memmem::find(body, conn.sid()).is_some()
            {
                if conn.spec.stall {
                    conn.state = State::Stalled;
                } else {
                    conn.state = State::Ready;
                    if let Some(channel) = conn.spec.join {
                        ctx.shared.channel_members[channel as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
                ctx.shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        Packet::Ping => {
            send_packet(conn, index, ctx, |out| out.extend_from_slice(b"3"));
            ctx.report.pings_answered += 1;
            Ok(())
        }
        Packet::Open if conn.state == State::Opening => {
            if let Some(side) = conn.poll.as_mut() {
                let sid = wire::string_after(text, b"\"sid\":\"").ok_or("open packet without sid")?;
                side.sid = String::from_utf8_lossy(sid).into_owned();
            }
            let auth = ctx.settings.auth.clone();
            send_packet(conn, index, ctx, |out| {
                out.extend_from_slice(b"40");
                out.extend_from_slice(auth.as_bytes());
            });
            conn.state = State::Connecting40;
            Ok(())
        }
        Packet::Connected { sid } if conn.state == State::Connecting40 => {
            let len = sid.len().min(conn.sid.len());
            conn.sid[..len].copy_from_slice(&sid[..len]);
            conn.sid_len = len;
            let handshake_us = (ctx.now_ns.saturating_sub(conn.started_ns) / 1_000).clamp(1, LATENCY_US_MAX);
            let _ = ctx.report.handshake_us.record(handshake_us);
            ctx.report.connected += 1;
            ctx.report.handshakes_settled += 1;
            ctx.shared.environment_members.fetch_add(1, Ordering::Relaxed);
            match conn.spec.join {
                Some(channel) => {
                    send_packet(conn, index, ctx, |out| {
                        let _ = write!(out, "42[\"join\",{{\"channel\":\"c{channel}\",\"echo\":true}}]");
                    });
                    conn.state = State::Joining;
                }
                None => {
                    conn.state = State::Ready;
                    ctx.shared.ready.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(())
        }
        Packet::ConnectError => Err(format!("connect_error: {}", String::from_utf8_lossy(text))),
        Packet::Close => Err("engine.io close".to_owned()),
        _ => {
            ctx.report.other_frames += 1;
            Ok(())
        }
    }
}

/// Sends one Engine.IO text packet (written by `fill`): a masked WebSocket
/// frame, or, long-polling, the next `POST`'s packet.
fn send_packet(conn: &mut Conn, index: usize, ctx: &mut Ctx<'_>, fill: impl FnOnce(&mut Vec<u8>)) {
    match conn.poll.as_mut() {
        Some(side) => {
            if !side.queued.is_empty() {
                side.queued.push(0x1e);
            }
            fill(&mut side.queued);
        }
        None => {
            let mask = ctx.rng.next_mask();
            wire::encode_text_with(&mut conn.outgoing, mask, fill);
        }
    }
    mark_dirty(conn, index, ctx.dirty);
}

/// Long-polling: handles the complete `GET` responses at the start of
/// `data` (each packet as a WebSocket message would be) and sends the next
/// `GET` after each; returns the bytes used.
fn consume_polled(conn: &mut Conn, index: usize, data: &[u8], ctx: &mut Ctx<'_>) -> Result<usize, String> {
    let mut at = 0;
    while let Some((status, body, len)) = wire::http_response(&data[at..]) {
        at += len;
        if status != 200 {
            return Err(format!("polling GET answered {status}"));
        }
        for packet in body.split(|&b| b == 0x1e) {
            on_text(conn, index, packet, ctx)?;
            if conn.state == State::Dead {
                return Ok(at);
            }
        }
        let target = ctx.settings.target(conn.spec.node);
        let Some(side) = conn.poll.as_ref() else {
            return Ok(at);
        };
        let _ = write!(
            conn.outgoing,
            "GET {}?EIO=4&transport=polling&sid={} HTTP/1.1\r\nHost: {}\r\n\r\n",
            target.path, side.sid, target.host
        );
        mark_dirty(conn, index, ctx.dirty);
    }
    Ok(at)
}

/// Long-polling: the `POST` connection is readable (answers to read) or
/// writable (the request to write).
fn on_post_event(conn: &mut Conn, index: usize, readable: bool, ctx: &mut Ctx<'_>) {
    let Some(side) = conn.poll.as_mut() else {
        return;
    };
    let Some(post) = side.post.as_mut() else {
        return;
    };
    if readable {
        let mut chunk = [0u8; 4096];
        loop {
            match post.read(&mut chunk) {
                Ok(0) if !side.in_flight && side.out.is_empty() => {
                    // An idle keep-alive connection the server let go (Node
                    // closes them after 5 s): the next POST opens another.
                    side.post = None;
                    side.partial.clear();
                    return;
                }
                Ok(0) => {
                    fail(conn, ctx.report, ctx.shared, "server closed the POST connection");
                    return;
                }
                Ok(n) => side.partial.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        while let Some((status, _, len)) = wire::http_response(&side.partial) {
            side.partial.drain(..len);
            if status != 200 {
                let reason = format!("polling POST answered {status}");
                fail(conn, ctx.report, ctx.shared, &reason);
                return;
            }
            side.in_flight = false;
        }
    }
    mark_dirty(conn, index, ctx.dirty);
}

/// Long-polling: starts the next `POST` if one is due (on a new connection
/// if the server closed the last one) and writes what is pending on the
/// `POST` connection; an error message if it failed.
fn flush_post(
    side: &mut PollSide,
    target: &Target,
    index: usize,
    registry: &mio::Registry,
) -> Option<String> {
    if !side.in_flight && !side.queued.is_empty() {
        side.in_flight = true;
        let _ = write!(
            side.out,
            "POST {}?EIO=4&transport=polling&sid={} HTTP/1.1\r\nHost: {}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\n\r\n",
            target.path,
            side.sid,
            target.host,
            side.queued.len()
        );
        side.out.append(&mut side.queued);
    }
    if side.post.is_none() && !side.out.is_empty() {
        let connected = TcpStream::connect(target.addr).and_then(|post| {
            post.set_nodelay(true)?;
            let mut post = Link::new(post, target.tls.as_ref(), target.addr)?;
            registry.register(
                post.tcp_mut(),
                Token(index | POST_TOKEN_BIT),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(post)
        });
        match connected {
            Ok(post) => side.post = Some(post),
            Err(e) => return Some(format!("POST connect: {e}")),
        }
        // Written once the connection is writable.
        return None;
    }
    let post = side.post.as_mut()?;
    let mut written = 0;
    while written < side.out.len() {
        match post.write(&side.out[written..]) {
            Ok(0) => return Some("POST write returned 0".to_owned()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(format!("POST write: {e}")),
        }
    }
    side.out.drain(..written);
    post.flush_tls().err().map(|e| format!("POST write: {e}"))
}

fn on_data(conn: &mut Conn, body: &[u8], ctx: &mut Ctx<'_>) {
    ctx.report.delivered_total += 1;
    let Some((src, seq, ts)) = wire::message_numbers(body) else {
        ctx.report.other_frames += 1;
        return;
    };
    let src = src as u32;
    match conn.last_seq.iter_mut().find(|(s, _)| *s == src) {
        Some((_, last)) => {
            if seq <= *last {
                ctx.report.out_of_order += 1;
            } else {
                *last = seq;
            }
        }
        None => conn.last_seq.push((src, seq)),
    }
    if let Some(book) = ctx.shared.window.as_ref() {
        if let Some(publisher) = book.publisher(src) {
            ctx.tally.add(book, publisher, seq);
        }
    }
    if ts >= ctx.shared.measure_start() {
        ctx.report.delivered_measured += 1;
        let latency_us = (ctx.now_ns.saturating_sub(ts) / 1_000).clamp(1, LATENCY_US_MAX);
        let _ = ctx.report.latency_us.record(latency_us);
    }
}

fn fire_timers(
    timers: &mut BinaryHeap<Reverse<(u64, usize)>>,
    conns: &mut [Conn],
    ctx: &mut Ctx<'_>,
    end_ns: u64,
) {
    while let Some(&Reverse((due_ns, index))) = timers.peek() {
        if due_ns > ctx.now_ns {
            break;
        }
        timers.pop();
        if due_ns >= end_ns {
            continue;
        }
        let conn = &mut conns[index];
        let Some(publish) = conn.spec.publish else {
            continue;
        };
        if conn.state != State::Ready {
            // A publisher that failed setup publishes nothing; its
            // recipients' share shows up in the setup failures instead.
            continue;
        }
        if publish.windowed {
            // The window's first fill; completions refill it from then on.
            if let Some(book) = ctx.shared.window.as_ref() {
                if let Some(p) = book.publisher(conn.spec.id) {
                    pump_window(conn, index, book, p, ctx, end_ns);
                }
            }
            continue;
        }
        let recipients = recipients(publish, ctx.shared);
        publish_one(conn, index, publish, due_ns, recipients, ctx);
        timers.push(Reverse((due_ns + publish.interval_ns, index)));
    }
}

/// Window mode: retires `conn`'s completed messages (in order) and fills its
/// window up again, unless publishing has ended.
fn pump_window(
    conn: &mut Conn,
    index: usize,
    book: &WindowBook,
    publisher: u32,
    ctx: &mut Ctx<'_>,
    end_ns: u64,
) {
    while conn.oldest_seq < conn.next_seq && book.is_done(publisher, conn.oldest_seq) {
        conn.oldest_seq += 1;
    }
    let Some(publish) = conn.spec.publish else {
        return;
    };
    // The message is timestamped when it is written: this turn's flush.
    let now_ns = ctx.shared.now_ns();
    if conn.state != State::Ready || now_ns >= end_ns {
        return;
    }
    let mut nobody = false;
    while conn.next_seq - conn.oldest_seq < u64::from(book.window()) {
        let recipients = recipients(publish, ctx.shared);
        book.arm(publisher, conn.next_seq, recipients);
        publish_one(conn, index, publish, now_ns, recipients, ctx);
        if recipients == 0 {
            // Done at once, and no delivery will say so: look again next turn.
            nobody = true;
            break;
        }
    }
    if nobody {
        book.complete(publisher, ctx.worker);
    }
}

/// Who should receive a message to `publish`'s destination right now: the
/// members whose join was acknowledged, minus the publisher itself.
fn recipients(publish: PublishSpec, shared: &Shared) -> u32 {
    let members = match publish.destination {
        Destination::Channel(channel) => shared.channel_members[channel as usize].load(Ordering::Relaxed),
        Destination::Environment => shared.environment_members.load(Ordering::Relaxed),
    };
    members.saturating_sub(u32::from(publish.is_member))
}

/// Writes message `conn.next_seq` stamped `ts_ns` (its scheduled time, or in
/// window mode the time it is written) and counts it when it is measured.
fn publish_one(
    conn: &mut Conn,
    index: usize,
    publish: PublishSpec,
    ts_ns: u64,
    recipients: u32,
    ctx: &mut Ctx<'_>,
) {
    let seq = conn.next_seq;
    conn.next_seq += 1;
    let src = conn.spec.id;
    let pad = ctx.settings.pad.as_str();
    let mask = ctx.rng.next_mask();
    wire::encode_text_with(&mut conn.outgoing, mask, |out| {
        let _ = match publish.destination {
            Destination::Channel(channel) => write!(
                out,
                "42[\"message\",{{\"channel\":\"c{channel}\",\"eventName\":\"m\",\"message\":{{\"src\":{src},\"seq\":{seq},\"ts\":{ts_ns},\"pad\":\"{pad}\"}}}}]"
            ),
            Destination::Environment => write!(
                out,
                "42[\"message\",{{\"eventName\":\"m\",\"message\":{{\"src\":{src},\"seq\":{seq},\"ts\":{ts_ns},\"pad\":\"{pad}\"}}}}]"
            ),
        };
    });
    mark_dirty(conn, index, ctx.dirty);
    if ts_ns >= ctx.shared.measure_start() {
        ctx.report.sent_measured += 1;
        ctx.report.expected_measured += u64::from(recipients);
    }
}

fn flush_dirty(
    conns: &mut [Conn],
    dirty: &mut Vec<usize>,
    report: &mut WorkerReport,
    shared: &Shared,
    settings: &Settings,
    registry: &mio::Registry,
) {
    for index in dirty.drain(..) {
        let conn = &mut conns[index];
        conn.dirty = false;
        let target = settings.target(conn.spec.node);
        if let Some(side) = conn.poll.as_mut() {
            if !side.sid.is_empty() {
                if let Some(reason) = flush_post(side, target, index, registry) {
                    fail(conn, report, shared, &reason);
                    continue;
                }
            }
        }
        let Some(stream) = conn.stream.as_mut() else {
            continue;
        };
        let mut written = 0;
        let mut error = None;
        while written < conn.outgoing.len() {
            match stream.write(&conn.outgoing[written..]) {
                Ok(0) => {
                    error = Some("write returned 0".to_owned());
                    break;
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    error = Some(format!("write: {e}"));
                    break;
                }
            }
        }
        conn.outgoing.drain(..written);
        if error.is_none() {
            // TLS: what rustls sealed and the socket did not take yet.
            error = stream.flush_tls().err().map(|e| format!("write: {e}"));
        }
        if let Some(reason) = error {
            fail(conn, report, shared, &reason);
        }
        // Whatever is left waits for the next writable edge.
    }
}
