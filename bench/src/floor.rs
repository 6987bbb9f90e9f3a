//! The physical floor: what the kernel charges a sender for pushing frames
//! through loopback TCP when it does nothing else, so a server's CPU per
//! delivery can be read as a multiple of it.
//!
//! N connected socket pairs. A sender thread owns the accepted ends (as a
//! server does) and, round after round, writes K frames of `frame_bytes` to
//! each connection in ONE `write`; a receiver thread owns the client ends and
//! drains them with epoll and a 256 KiB buffer (as the `load` generator
//! does). Each thread measures its own CPU with `CLOCK_THREAD_CPUTIME_ID`.
//!
//! The cost of a write grows with N (on the 2-core VM of the committed
//! results, 2–4 µs at N = 1–10 and 8–10 µs at N = 1,000, with tens of
//! percent of noise between runs), because every round touches N sockets'
//! kernel state, so the floor is measured at several N and a benchmark row is
//! read against the floor at the N nearest its own connection count.
//!
//! It is the floor of one `write` system call per connection per round. A
//! server that submits many writes per system call (io_uring) saves the
//! system call entry and exit and can come in slightly under it at the same
//! frames per write; what it cannot beat is the per-frame cost at a higher
//! frames per write.
//!
//! Each point is the cheapest of a few repetitions: other processes and the
//! hypervisor only ever add to what a write costs, so the minimum is the
//! estimate of a floor (single measurements varied by ±30% on a shared VM).
//!
//! Attribution: on loopback the receive-side TCP work of a segment (the
//! NET_RX softirq: `tcp_v4_rcv`, queueing, waking the reader) runs in the
//! *sender's* system call, and this kernel has no IRQ time accounting, so it
//! lands in the sender's thread time, as it lands in a server's process time
//! in the benchmark. The reader's ACKs are processed in the reader's context,
//! as the generator's are. When softirq work is deferred to `ksoftirqd` it is
//! charged to neither; that CPU is measured separately (`ksoftirqd_cpu_s`) so
//! a floor that looks too cheap can be caught.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::procfs;

pub mod handshake;

const READ_BUFFER_BYTES: usize = 256 * 1024;
const EVENTS_CAPACITY: usize = 1024;
/// Bound on the receiver catching up after the sender stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the floor is measured.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct FloorOptions {
    /// Loopback connection counts to measure at (each written round-robin).
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub connections: Vec<u32>,
    /// Frames per write to measure (one point each).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    pub frames: Vec<u32>,
    /// Bytes per frame: a ~100-byte event as a server sends it (WebSocket
    /// header + `42["m",{"channel":"c0","message":{...}}]`) is about 130.
    #[arg(long, default_value_t = 130)]
    pub frame_bytes: u32,
    /// Measured seconds per repetition of a point.
    #[arg(long, default_value_t = 0.5)]
    pub duration_s: f64,
    /// Repetitions per point; the cheapest one is kept, because interference
    /// (other processes, the hypervisor) only ever adds cost to a floor.
    #[arg(long, default_value_t = 3)]
    pub repeats: u32,
    /// Unmeasured seconds per repetition before the measured ones.
    #[arg(long, default_value_t = 0.1)]
    pub warmup_s: f64,
    /// Pin the sender to CPU 0 and the receiver to CPU 1 (when there are two).
    #[arg(long)]
    pub pin: bool,
    /// Hand each write's K frames to the kernel as K iovecs of one `writev`
    /// (as a server writing separately encoded frames does) instead of one
    /// contiguous buffer: the difference is the kernel's per-iovec cost.
    #[arg(long)]
    #[serde(default)]
    pub iovecs: bool,
}

/// One (connections, frames-per-write) point.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FloorPoint {
    pub connections: u32,
    pub frames_per_write: u32,
    pub bytes_per_write: u64,
    /// `write` system calls (a short write counts as another call).
    pub writes: u64,
    pub frames: u64,
    pub wall_s: f64,
    pub sender_cpu_s: f64,
    pub receiver_cpu_s: f64,
    /// `ksoftirqd/*` CPU over the point: work charged to neither thread.
    pub ksoftirqd_cpu_s: f64,
    pub sender_cpu_us_per_write: f64,
    pub sender_cpu_us_per_frame: f64,
    pub receiver_cpu_us_per_frame: f64,
    pub writes_per_s: f64,
}

/// What `floor` measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FloorReport {
    pub frame_bytes: u32,
    pub duration_s: f64,
    /// Repetitions per point (the cheapest is reported).
    #[serde(default)]
    pub repeats: u32,
    pub pinned: bool,
    pub points: Vec<FloorPoint>,
}

impl FloorReport {
    /// The measured connection count nearest `connections` (by ratio).
    pub fn nearest_connections(&self, connections: u64) -> Option<u32> {
        let target = (connections.max(1) as f64).ln();
        self.points
            .iter()
            .filter(|p| p.writes > 0)
            .map(|p| p.connections)
            .min_by(|a, b| {
                let da = (f64::from(*a).ln() - target).abs();
                let db = (f64::from(*b).ln() - target).abs();
                da.total_cmp(&db)
            })
    }

    /// Sender CPU µs per write at `frames_per_write`, at the measured
    /// connection count nearest `connections`: linear between the measured
    /// points (a write's cost grows slowly with its size), the end points'
    /// values outside them.
    pub fn us_per_write_at(&self, connections: u64, frames_per_write: f64) -> Option<f64> {
        let n = self.nearest_connections(connections)?;
        let mut points: Vec<(f64, f64)> = self
            .points
            .iter()
            .filter(|p| p.writes > 0 && p.connections == n)
            .map(|p| (f64::from(p.frames_per_write), p.sender_cpu_us_per_write))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let first = *points.first()?;
        let last = *points.last()?;
        if frames_per_write <= first.0 {
            return Some(first.1);
        }
        if frames_per_write >= last.0 {
            return Some(last.1);
        }
        points.windows(2).find_map(|pair| {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            (frames_per_write >= x0 && frames_per_write <= x1)
                .then(|| y0 + (y1 - y0) * (frames_per_write - x0) / (x1 - x0))
        })
    }

    /// Sender CPU µs per frame when `frames_per_write` frames share a write
    /// (at least one frame per write), at the connection count nearest
    /// `connections`.
    pub fn us_per_frame_at(&self, connections: u64, frames_per_write: f64) -> Option<f64> {
        let k = frames_per_write.max(1.0);
        Some(self.us_per_write_at(connections, k)? / k)
    }

    /// The latency floor, in µs: the least time after which the `nth`
    /// recipient of one message can have read it when every delivery is a
    /// write of its own (a fixed, moderate rate), for any server on this
    /// machine. Each of the first `nth` deliveries costs at least the
    /// kernel's work for one frame per write, the sender's and the
    /// receiver's CPU per frame (at the connection count nearest
    /// `connections`), and server and generator share `cores` cores.
    pub fn delivery_latency_floor_us(&self, connections: u64, nth: u64, cores: usize) -> Option<f64> {
        let n = self.nearest_connections(connections)?;
        let single = self
            .points
            .iter()
            .filter(|p| p.writes > 0 && p.connections == n)
            .min_by_key(|p| p.frames_per_write)
            .filter(|p| p.frames_per_write == 1)?;
        let per_delivery = single.sender_cpu_us_per_frame + single.receiver_cpu_us_per_frame;
        Some(nth as f64 * per_delivery / cores.max(1) as f64)
    }

    /// Markdown table of the points.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| connections | frames/write | bytes/write | writes/s | sender µs/write | sender µs/frame | receiver µs/frame | ksoftirqd CPU s |\n|---|---|---|---|---|---|---|---|"
        );
        for p in &self.points {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.2} | {:.3} | {:.3} | {:.2} |",
                p.connections,
                p.frames_per_write,
                p.bytes_per_write,
                p.writes_per_s,
                p.sender_cpu_us_per_write,
                p.sender_cpu_us_per_frame,
                p.receiver_cpu_us_per_frame,
                p.ksoftirqd_cpu_s
            );
        }
        out
    }
}

/// Descriptors `floor` keeps aside for everything but its pairs.
const DESCRIPTORS_SPARE: u64 = 64;

/// The most loopback pairs one `floor` process can hold: both ends of every
/// pair live in it, under RLIMIT_NOFILE.
pub fn connections_max() -> u64 {
    crate::report::nofile_limit().saturating_sub(DESCRIPTORS_SPARE) / 2
}

/// Measures every point of `options`.
pub fn run(options: &FloorOptions) -> anyhow::Result<FloorReport> {
    if options.connections.contains(&0) || options.connections.is_empty() || options.frames.is_empty() {
        bail!("need at least one connection and one frames-per-write value");
    }
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = options.pin && cores >= 2;
    let mut points = Vec::with_capacity(options.frames.len() * options.connections.len());
    for &n in &options.connections {
        if u64::from(n) > connections_max() {
            bail!(
                "{n} connections need {} file descriptors; RLIMIT_NOFILE is {}",
                2 * u64::from(n) + DESCRIPTORS_SPARE,
                crate::report::nofile_limit()
            );
        }
        let (mut senders, mut receivers) = connect_pairs(n).context("connecting loopback pairs")?;
        for &k in &options.frames {
            let mut cheapest: Option<FloorPoint> = None;
            for _ in 0..options.repeats.max(1) {
                let (point, s, r) = measure(senders, receivers, k.max(1), options, pinned)?;
                senders = s;
                receivers = r;
                let cheaper = cheapest
                    .as_ref()
                    .is_none_or(|c| point.sender_cpu_us_per_write < c.sender_cpu_us_per_write);
                if cheaper && point.writes > 0 {
                    cheapest = Some(point);
                }
            }
            points.extend(cheapest);
        }
    }
    Ok(FloorReport {
        frame_bytes: options.frame_bytes,
        duration_s: options.duration_s,
        repeats: options.repeats.max(1),
        pinned,
        points,
    })
}

/// `(accepted ends, client ends)`, both with `TCP_NODELAY` (as ringcast and
/// the generator set it).
fn connect_pairs(n: u32) -> io::Result<(Vec<TcpStream>, Vec<mio::net::TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr: SocketAddr = listener.local_addr()?;
    let mut accepted = Vec::with_capacity(n as usize);
    let mut clients = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let client = TcpStream::connect(addr)?;
        let (server, _) = listener.accept()?;
        client.set_nodelay(true)?;
        server.set_nodelay(true)?;
        client.set_nonblocking(true)?;
        accepted.push(server);
        clients.push(mio::net::TcpStream::from_std(client));
    }
    Ok((accepted, clients))
}

type Measured = (FloorPoint, Vec<TcpStream>, Vec<mio::net::TcpStream>);

fn measure(
    senders: Vec<TcpStream>,
    receivers: Vec<mio::net::TcpStream>,
    frames_per_write: u32,
    options: &FloorOptions,
    pinned: bool,
) -> anyhow::Result<Measured> {
    let connections = senders.len() as u32;
    let frame_bytes = options.frame_bytes.max(4) as usize;
    let payload = frame(frame_bytes, frames_per_write as usize);
    let warmup = Duration::from_secs_f64(options.warmup_s.max(0.0));
    let duration = Duration::from_secs_f64(options.duration_s.max(0.01));
    // Bytes the sender wrote in total, published when it stops.
    let sent_total = AtomicU64::new(u64::MAX);
    let measuring = AtomicBool::new(false);

    let (sender_result, receiver_result, ksoftirqd_cpu_s) = thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            if pinned {
                pin_to(1);
            }
            drain(receivers, &sent_total, &measuring)
        });
        let ksoftirqd_before = procfs::ksoftirqd_cpu_s();
        let sender = scope.spawn(|| {
            if pinned {
                pin_to(0);
            }
            let round = Round {
                payload: &payload,
                frame_bytes,
                iovecs: options.iovecs,
            };
            send(senders, &round, warmup, duration, &sent_total, &measuring)
        });
        let sender_result = sender.join();
        let receiver_result = receiver.join();
        let ksoftirqd_cpu_s = (procfs::ksoftirqd_cpu_s() - ksoftirqd_before).max(0.0);
        (sender_result, receiver_result, ksoftirqd_cpu_s)
    });
    let sent = sender_result.map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let received = receiver_result.map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let frames = sent.writes_measured_frames;
    let per = |value: f64, n: u64| if n > 0 { value * 1e6 / n as f64 } else { 0.0 };
    let point = FloorPoint {
        connections,
        frames_per_write,
        bytes_per_write: payload.len() as u64,
        writes: sent.writes_measured,
        frames,
        wall_s: sent.wall_s,
        sender_cpu_s: sent.cpu_s,
        receiver_cpu_s: received.cpu_s,
        ksoftirqd_cpu_s,
        sender_cpu_us_per_write: per(sent.cpu_s, sent.writes_measured),
        sender_cpu_us_per_frame: per(sent.cpu_s, frames),
        receiver_cpu_us_per_frame: per(received.cpu_s, frames),
        writes_per_s: if sent.wall_s > 0.0 {
            sent.writes_measured as f64 / sent.wall_s
        } else {
            0.0
        },
    };
    Ok((point, sent.streams, received.streams))
}

/// `k` frames of `frame_bytes` each: a WebSocket text frame header and a
/// filler payload, so the bytes look like what a server sends.
fn frame(frame_bytes: usize, k: usize) -> Vec<u8> {
    let mut one = vec![b'x'; frame_bytes];
    one[0] = 0x81;
    if frame_bytes - 2 < 126 {
        one[1] = (frame_bytes - 2) as u8;
    } else {
        one[1] = 126;
        let payload_len = u16::try_from(frame_bytes - 4).unwrap_or(u16::MAX);
        one[2..4].copy_from_slice(&payload_len.to_be_bytes());
    }
    one.repeat(k)
}

struct Sent {
    streams: Vec<TcpStream>,
    writes_measured: u64,
    writes_measured_frames: u64,
    cpu_s: f64,
    wall_s: f64,
}

/// What the sender writes to each connection per round.
struct Round<'a> {
    /// K frames, back to back.
    payload: &'a [u8],
    frame_bytes: usize,
    /// One iovec per frame (`writev`) instead of one buffer (`write`).
    iovecs: bool,
}

fn send(
    mut streams: Vec<TcpStream>,
    round: &Round<'_>,
    warmup: Duration,
    duration: Duration,
    sent_total: &AtomicU64,
    measuring: &AtomicBool,
) -> io::Result<Sent> {
    use std::os::fd::AsRawFd as _;
    let Round {
        payload,
        frame_bytes,
        iovecs,
    } = *round;
    let slices: Vec<libc::iovec> = payload
        .chunks(frame_bytes)
        .map(|chunk| libc::iovec {
            iov_base: chunk.as_ptr() as *mut libc::c_void,
            iov_len: chunk.len(),
        })
        .collect();
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut writes = 0u64;
    let mut measured_from: Option<(Instant, f64, u64, u64)> = None;
    let mut result = Ok(());
    'rounds: loop {
        for stream in &mut streams {
            let mut at = 0;
            while at < payload.len() {
                let written = if iovecs && at == 0 {
                    // SAFETY: the iovecs point into `payload`, alive and
                    // unchanged for the call; the descriptor is open.
                    let n = unsafe {
                        libc::writev(stream.as_raw_fd(), slices.as_ptr(), slices.len() as libc::c_int)
                    };
                    if n < 0 {
                        Err(io::Error::last_os_error())
                    } else {
                        Ok(n as usize)
                    }
                } else {
                    stream.write(&payload[at..])
                };
                match written {
                    Ok(0) => {
                        result = Err(io::Error::other("write returned 0"));
                        break 'rounds;
                    }
                    Ok(n) => {
                        at += n;
                        writes += 1;
                    }
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => {
                        result = Err(error);
                        break 'rounds;
                    }
                }
            }
            bytes += payload.len() as u64;
        }
        // Once per round (N writes): cheap next to the writes themselves.
        let elapsed = started.elapsed();
        match measured_from {
            None if elapsed >= warmup => {
                measuring.store(true, Ordering::Release);
                measured_from = Some((Instant::now(), thread_cpu_s(), writes, bytes));
            }
            Some((at, _, _, _)) if at.elapsed() >= duration => break,
            _ => {}
        }
    }
    let cpu_end = thread_cpu_s();
    measuring.store(false, Ordering::Release);
    sent_total.store(bytes, Ordering::Release);
    result?;
    let (at, cpu_start, writes_start, bytes_start) =
        measured_from.unwrap_or((started, cpu_end, writes, bytes));
    Ok(Sent {
        streams,
        writes_measured: writes - writes_start,
        writes_measured_frames: (bytes - bytes_start) / frame_bytes as u64,
        cpu_s: cpu_end - cpu_start,
        wall_s: at.elapsed().as_secs_f64(),
    })
}

struct Received {
    streams: Vec<mio::net::TcpStream>,
    cpu_s: f64,
}

/// Reads everything until the sender's total has arrived; measures its own
/// CPU only while the sender measures.
fn drain(
    mut streams: Vec<mio::net::TcpStream>,
    sent_total: &AtomicU64,
    measuring: &AtomicBool,
) -> io::Result<Received> {
    let mut poll = mio::Poll::new()?;
    for (i, stream) in streams.iter_mut().enumerate() {
        poll.registry()
            .register(stream, mio::Token(i), mio::Interest::READABLE)?;
    }
    let mut events = mio::Events::with_capacity(EVENTS_CAPACITY);
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut received = 0u64;
    let mut cpu_s = 0.0;
    let mut measure_start: Option<f64> = None;
    let mut deadline: Option<Instant> = None;
    loop {
        let total = sent_total.load(Ordering::Acquire);
        if total != u64::MAX {
            if received >= total {
                break;
            }
            let limit = *deadline.get_or_insert_with(|| Instant::now() + DRAIN_TIMEOUT);
            if Instant::now() > limit {
                return Err(io::Error::other(format!(
                    "receiver got {received} of {total} bytes"
                )));
            }
        }
        match (measuring.load(Ordering::Acquire), measure_start) {
            (true, None) => measure_start = Some(thread_cpu_s()),
            (false, Some(start)) => {
                cpu_s += thread_cpu_s() - start;
                measure_start = None;
            }
            _ => {}
        }
        match poll.poll(&mut events, Some(Duration::from_millis(5))) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        }
        for event in &events {
            let stream = &mut streams[event.token().0];
            loop {
                match stream.read(&mut buffer) {
                    Ok(0) => return Err(io::Error::other("sender closed")),
                    Ok(n) => {
                        received += n as u64;
                        if n < buffer.len() {
                            break;
                        }
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
        }
    }
    if let Some(start) = measure_start {
        cpu_s += thread_cpu_s() - start;
    }
    for stream in &mut streams {
        poll.registry().deregister(stream)?;
    }
    Ok(Received { streams, cpu_s })
}

/// CPU seconds of the calling thread (user + system, softirq work done in
/// its context included), nanosecond clock.
pub fn thread_cpu_s() -> f64 {
    // SAFETY: clock_gettime writes into the timespec we own.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn pin_to(cpu: usize) {
    // SAFETY: the set is a zeroed cpu_set_t we own; sched_setaffinity(0, ..)
    // applies to the calling thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests;
