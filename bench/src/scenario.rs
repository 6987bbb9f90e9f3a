//! The scenarios: who connects, who joins what, who publishes how often, and
//! the coordinating thread that moves the workers through the phases and
//! samples the server around the measured window.
//!
//! Fanout, rooms and broadcast publish either on a fixed schedule (`--rate`:
//! how a server copes with a given load) or closed-loop (`--window W`: each
//! publisher keeps W messages in flight, which measures the most a server
//! delivers; see [`crate::window`]).
//!
//! Every phase has a deadline, so a run is bounded in time even when the
//! server stalls or drops connections: setup (`setup_timeout_s`), settling of
//! join notifications (`settle_timeout_s`), warm-up + window (`warmup_s` +
//! `duration_s`; in window mode each stretched, by at most
//! [`WINDOW_STRETCH_MAX`], until a slow server's window has come back once
//! and one full window was sent inside the measured one), and drain
//! (`drain_timeout_s`).

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde::Serialize;

use crate::engine::{self, ConnSpec, Destination, PublishSpec, Settings, Shared, Target, WorkerReport};
use crate::procfs::{self, ProcSample};
use crate::report::{Machine, Percentiles, RunReport, ServerInfo};
use crate::scrape::{self, ServerCounters};
use crate::window::WindowBook;

/// Options every scenario shares.
#[derive(Debug, Clone, Args, Serialize)]
pub struct Common {
    /// The server's socket.io URL, e.g. http://127.0.0.1:4000/realtime/
    #[arg(long, default_value = "http://127.0.0.1:4000/realtime/")]
    pub url: String,
    /// Server process id, sampled in /proc for CPU and RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// A second node of the same cluster (cluster runs): subscribers
    /// alternate between --url and --url2, publishers stay on --url.
    #[arg(long)]
    pub url2: Option<String>,
    /// The second node's process id; its CPU and RSS add to the server's.
    #[arg(long)]
    pub pid2: Option<u32>,
    /// The cluster's redis-server process id (its CPU is reported apart).
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// The cluster's redis-server port on 127.0.0.1 (its network bytes,
    /// from INFO, are reported per message).
    #[arg(long)]
    pub redis_port: Option<u16>,
    /// Label for the report (e.g. ringcast-s2).
    #[arg(long, default_value = "server")]
    pub label: String,
    /// Server kind for the report: ringcast, node-socket.io, socketioxide.
    #[arg(long, default_value = "ringcast")]
    pub kind: String,
    /// Shard count / worker threads of the server, for the report.
    #[arg(long, default_value_t = 1)]
    pub shards: u32,
    /// The server's I/O driver as started (io_uring, epoll), for the report;
    /// the driver it really runs is read from its file descriptors.
    #[arg(long, default_value = "")]
    pub driver: String,
    /// Generator threads (each runs its own epoll loop).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Measured window, after warm-up.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Publishing before the window; those messages are not measured.
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Approximate size of one published event on the wire.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Spread source addresses over 127.0.0.1..=127.0.0.N (0: kernel's choice).
    #[arg(long, default_value_t = 200)]
    pub source_ips: u8,
    /// Handshakes in flight per generator thread.
    #[arg(long, default_value_t = 256)]
    pub connecting_max: usize,
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout_s: f64,
    /// Bound on waiting for join notifications to stop arriving.
    #[arg(long, default_value_t = 60.0)]
    pub settle_timeout_s: f64,
    /// Bound on waiting for the last measured deliveries after publishing stops.
    #[arg(long, default_value_t = 10.0)]
    pub drain_timeout_s: f64,
    /// Handshake auth JSON.
    #[arg(long, default_value = r#"{"envId":"default","echoMessages":false}"#)]
    pub auth: String,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Print less.
    #[arg(long)]
    pub quiet: bool,
    /// The certificate (PEM) to trust for an https:// or wss:// --url: the
    /// server's own, when it is self-signed.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Subcommand, Serialize)]
pub enum Scenario {
    /// S subscribers in one channel, P publishers (not members) at a fixed
    /// total rate, or each keeping a window of messages in flight.
    Fanout {
        #[arg(long, default_value_t = 1000)]
        subscribers: u32,
        #[arg(long, default_value_t = 1)]
        publishers: u32,
        /// Messages per second, all publishers together (ignored with --window).
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Closed loop: each publisher keeps W messages in flight and sends
        /// the next as soon as one reached every subscriber (0: --rate).
        #[arg(long, default_value_t = 0)]
        window: u32,
        /// Subscribers that stop reading once joined (not counted as
        /// recipients): what slow consumers cost everyone else.
        #[arg(long, default_value_t = 0)]
        stalled: u32,
        /// The subscribers long-poll (Engine.IO over HTTP) instead of holding
        /// a WebSocket; the publishers stay on WebSocket.
        #[arg(long)]
        polling: bool,
    },
    /// C channels × M members; every member publishes to its channel at a
    /// fixed rate, or keeping its own window of messages in flight.
    Rooms {
        #[arg(long, default_value_t = 1000)]
        channels: u32,
        #[arg(long, default_value_t = 10)]
        members: u32,
        /// Messages per second per member (ignored with --window).
        #[arg(long, default_value_t = 1.0)]
        rate_per_member: f64,
        /// Closed loop: each member keeps W messages in flight to its channel
        /// and sends the next as soon as one reached the other M − 1 members
        /// (0: --rate-per-member).
        #[arg(long, default_value_t = 0)]
        window: u32,
    },
    /// N connections in the environment; P of them publish environment-wide.
    Broadcast {
        #[arg(long, default_value_t = 1000)]
        connections: u32,
        #[arg(long, default_value_t = 1)]
        publishers: u32,
        /// Messages per second, all publishers together (ignored with --window).
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Closed loop: each publisher keeps W messages in flight and sends
        /// the next as soon as one reached every other connection (0: --rate).
        #[arg(long, default_value_t = 0)]
        window: u32,
    },
    /// N connections as fast as possible, then held idle.
    Connect {
        #[arg(long, default_value_t = 10_000)]
        connections: u32,
        /// How long the connections are held idle before RSS is read.
        #[arg(long, default_value_t = 5.0)]
        hold_s: f64,
    },
    /// Fixed offered load (a send schedule) for latency percentiles.
    Latency {
        #[arg(long, default_value_t = 100)]
        subscribers: u32,
        #[arg(long, default_value_t = 10)]
        publishers: u32,
        /// Messages per second, all publishers together.
        #[arg(long, default_value_t = 1000.0)]
        rate: f64,
    },
}

impl Scenario {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Fanout { .. } => "fanout",
            Self::Rooms { .. } => "rooms",
            Self::Broadcast { .. } => "broadcast",
            Self::Connect { .. } => "connect",
            Self::Latency { .. } => "latency",
        }
    }

    /// Messages each publisher keeps in flight; 0 on a fixed schedule.
    pub fn window(&self) -> u32 {
        match *self {
            Self::Fanout { window, .. } | Self::Rooms { window, .. } | Self::Broadcast { window, .. } => {
                window
            }
            Self::Connect { .. } | Self::Latency { .. } => 0,
        }
    }

    /// The connections and the channel count; with `nodes` > 1 (a cluster
    /// run) subscribers alternate between the nodes, publishers use node 0.
    fn plan(&self, nodes: u8) -> (Vec<ConnSpec>, usize) {
        let (mut specs, channels) = self.plan_one_node();
        if nodes > 1 {
            let mut next = 0u8;
            for spec in specs.iter_mut().filter(|s| s.publish.is_none()) {
                spec.node = next;
                next = (next + 1) % nodes;
            }
        }
        (specs, channels)
    }

    fn plan_one_node(&self) -> (Vec<ConnSpec>, usize) {
        let windowed = self.window() > 0;
        let stalled = match *self {
            Self::Fanout { stalled, .. } => stalled,
            _ => 0,
        };
        match *self {
            Self::Fanout {
                subscribers,
                publishers,
                rate,
                ..
            }
            | Self::Latency {
                subscribers,
                publishers,
                rate,
            } => {
                let polling = matches!(self, Self::Fanout { polling: true, .. });
                let mut specs: Vec<ConnSpec> = (0..subscribers)
                    .map(|id| ConnSpec {
                        id,
                        join: Some(0),
                        publish: None,
                        stall: false,
                        node: 0,
                        polling,
                    })
                    .collect();
                let interval_ns = interval_ns(rate / f64::from(publishers.max(1)));
                for p in 0..publishers {
                    specs.push(ConnSpec {
                        id: subscribers + p,
                        node: 0,
                        polling: false,
                        join: None,
                        publish: Some(PublishSpec {
                            destination: Destination::Channel(0),
                            interval_ns,
                            offset_ns: spread(p, publishers, interval_ns),
                            is_member: false,
                            windowed,
                        }),
                        stall: false,
                    });
                }
                for s in 0..stalled {
                    specs.push(ConnSpec {
                        id: subscribers + publishers + s,
                        join: Some(0),
                        publish: None,
                        stall: true,
                        node: 0,
                        polling: false,
                    });
                }
                (specs, 1)
            }
            Self::Rooms {
                channels,
                members,
                rate_per_member,
                ..
            } => {
                let interval_ns = interval_ns(rate_per_member);
                let total = channels * members;
                // Members of a channel are consecutive ids, so with several
                // generator threads (round-robin) a channel spans threads.
                let specs = (0..total)
                    .map(|id| ConnSpec {
                        id,
                        node: 0,
                        polling: false,
                        join: Some(id / members),
                        publish: Some(PublishSpec {
                            destination: Destination::Channel(id / members),
                            interval_ns,
                            offset_ns: spread(id, total, interval_ns),
                            is_member: true,
                            windowed,
                        }),
                        stall: false,
                    })
                    .collect();
                (specs, channels as usize)
            }
            Self::Broadcast {
                connections,
                publishers,
                rate,
                ..
            } => {
                let interval_ns = interval_ns(rate / f64::from(publishers.max(1)));
                let specs = (0..connections)
                    .map(|id| ConnSpec {
                        id,
                        node: 0,
                        polling: false,
                        join: None,
                        publish: (id < publishers).then(|| PublishSpec {
                            destination: Destination::Environment,
                            interval_ns,
                            offset_ns: spread(id, publishers, interval_ns),
                            is_member: true,
                            windowed,
                        }),
                        stall: false,
                    })
                    .collect();
                (specs, 0)
            }
            Self::Connect { connections, .. } => (
                (0..connections)
                    .map(|id| ConnSpec {
                        id,
                        node: 0,
                        polling: false,
                        join: None,
                        publish: None,
                        stall: false,
                    })
                    .collect(),
                0,
            ),
        }
    }
}

fn interval_ns(rate_per_s: f64) -> u64 {
    if rate_per_s <= 0.0 {
        return u64::MAX / 4;
    }
    (1e9 / rate_per_s).max(1.0) as u64
}

/// Offsets publishers evenly over one interval so they do not fire in bursts.
fn spread(index: u32, count: u32, interval_ns: u64) -> u64 {
    if count == 0 || interval_ns >= u64::MAX / 8 {
        return 0;
    }
    interval_ns / u64::from(count) * u64::from(index)
}

/// Turns `http://host:port/path` into an address, Host header and path;
/// `https://` and `wss://` need `tls_ca`, the certificate to trust.
pub fn parse_url(url: &str, tls_ca: Option<&std::path::Path>) -> anyhow::Result<Target> {
    let (rest, secure) = match url.split_once("://") {
        Some(("http" | "ws", rest)) => (rest, false),
        Some(("https" | "wss", rest)) => (rest, true),
        _ => bail!("URL must start with http://, ws://, https:// or wss://"),
    };
    let tls = match (secure, tls_ca) {
        (false, _) => None,
        (true, Some(ca)) => Some(crate::link::client_config(ca)?),
        (true, None) => bail!("{url}: TLS needs --tls-ca (the server's certificate, PEM)"),
    };
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/realtime/"),
    };
    let addr: SocketAddr = host
        .to_socket_addrs()
        .with_context(|| format!("resolving {host}"))?
        .next()
        .with_context(|| format!("no address for {host}"))?;
    if !addr.ip().is_loopback() {
        bail!("refusing to load a non-loopback address {addr}: benchmarks stay on this machine");
    }
    Ok(Target {
        addr,
        host: host.to_owned(),
        path: path.to_owned(),
        tls,
    })
}

fn pad_for(payload_bytes: usize) -> String {
    // The fixed part of a channel publish is about 95 bytes with typical
    // numbers; the pad brings the event to `payload_bytes`.
    const FIXED_BYTES: usize = 95;
    "x".repeat(payload_bytes.saturating_sub(FIXED_BYTES).max(1))
}

fn sample(pid: Option<u32>) -> Option<ProcSample> {
    pid.and_then(|pid| procfs::sample(pid).ok())
}

/// The server's sample: both nodes added up in a cluster run.
fn sample_server(common: &Common) -> Option<ProcSample> {
    let first = sample(common.pid)?;
    Some(match sample(common.pid2) {
        Some(second) => ProcSample {
            cpu_s: first.cpu_s + second.cpu_s,
            rss_bytes: first.rss_bytes + second.rss_bytes,
            threads: first.threads + second.threads,
        },
        None => first,
    })
}

/// Bytes Redis received plus sent so far (`INFO stats`), if it answers.
fn redis_net_bytes(port: Option<u16>) -> Option<u64> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port?)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n").ok()?;
    let mut text = String::new();
    let mut buf = [0u8; 8192];
    // The reply is one bulk string; both fields are in its first lines.
    while !(text.contains("total_net_output_bytes") && text.ends_with("\r\n")) {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    Some(field("total_net_input_bytes")? + field("total_net_output_bytes")?)
}

fn say(common: &Common, message: &str) {
    if !common.quiet {
        eprintln!("[load] {message}");
    }
}

/// Closed loop: the most the warm-up or the measured window is stretched
/// for a server whose window of messages comes back slowly.
const WINDOW_STRETCH_MAX: Duration = Duration::from_secs(60);

/// How far ahead of the clock a closed loop's measured window is set to
/// start once the warm-up is over.
const MEASURE_START_LEAD_NS: u64 = 100_000_000;

/// Waits until `done()` or `timeout`, polling every 10 ms.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    done()
}

fn sleep_until_ns(shared: &Shared, target_ns: u64) {
    let now_ns = shared.now_ns();
    if target_ns > now_ns {
        thread::sleep(Duration::from_nanos(target_ns - now_ns));
    }
}

/// Runs one scenario against one server and returns what was measured.
pub fn run(scenario: &Scenario, common: &Common) -> anyhow::Result<RunReport> {
    let tls_ca = common.tls_ca.as_deref();
    let target = parse_url(&common.url, tls_ca)?;
    let mut targets = vec![target.clone()];
    if let Some(url2) = &common.url2 {
        targets.push(parse_url(url2, tls_ca)?);
    }
    let (specs, channels) = scenario.plan(targets.len() as u8);
    let connections = specs.len() as u64;
    let nofile = crate::report::nofile_limit();
    if connections + 64 > nofile {
        bail!("{connections} connections need more than RLIMIT_NOFILE={nofile} file descriptors in this process");
    }
    let settings = Settings {
        targets,
        source_ips: common.source_ips,
        connecting_max: common.connecting_max.max(1),
        auth: common.auth.clone(),
        pad: pad_for(common.payload_bytes),
    };
    let threads = common.threads.max(1) as usize;
    let window = scenario.window();
    let book = (window > 0).then(|| {
        let publishers: Vec<(u32, u32)> = specs
            .iter()
            .enumerate()
            .filter(|(_, spec)| spec.publish.is_some_and(|p| p.windowed))
            .map(|(i, spec)| (spec.id, (i % threads) as u32))
            .collect();
        WindowBook::new(window, &publishers, threads)
    });
    let shared = Shared::new(channels, book);
    let mut per_thread: Vec<Vec<ConnSpec>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, spec) in specs.into_iter().enumerate() {
        // Round-robin, as the window book's owners above assume.
        per_thread[i % threads].push(spec);
    }

    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let before = sample_server(common);
    let generator_before_s = procfs::self_cpu_s();

    let (report, timing) = thread::scope(|scope| -> anyhow::Result<(WorkerReport, Timing)> {
        let handles: Vec<_> = per_thread
            .into_iter()
            .enumerate()
            .map(|(i, specs)| {
                let settings = &settings;
                let shared = &shared;
                thread::Builder::new()
                    .name(format!("load-{i}"))
                    .spawn_scoped(scope, move || {
                        engine::run_worker(i, specs, settings, shared, 0x5EED + i as u64)
                    })
            })
            .collect::<Result<_, _>>()?;
        let timing = coordinate(scenario, common, &shared, connections, &target);
        shared.phase.store(engine::PHASE_STOP, Ordering::Release);
        let mut total = WorkerReport::new();
        for handle in handles {
            let worker = handle.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
            total.merge(&worker);
        }
        Ok((total, timing))
    })?;

    let server = common.pid.map(|pid| ServerInfo {
        label: common.label.clone(),
        kind: common.kind.clone(),
        shards: common.shards,
        pid: Some(pid),
        url: common.url.clone(),
        driver: common.driver.clone(),
        driver_detected: procfs::io_driver(pid).unwrap_or_default().to_owned(),
    });
    let counters = match (timing.counters_at_start, timing.counters_at_end) {
        (Some(a), Some(b)) => Some(a.delta(&b)),
        _ => None,
    };
    let server_cpu_s = match (timing.server_at_start, timing.server_at_end) {
        (Some(a), Some(b)) => (b.cpu_s - a.cpu_s).max(0.0),
        _ => 0.0,
    };
    let rss_before = before.map_or(0, |s| s.rss_bytes);
    let rss_after = timing.server_after_setup.map_or(0, |s| s.rss_bytes);
    let delivered = report.delivered_measured;
    let per_delivery = |value: f64| {
        if delivered > 0 {
            value / delivered as f64
        } else {
            0.0
        }
    };
    let generator_cpu_s = (timing.generator_at_end_s - timing.generator_at_start_s).max(0.0);
    let settings_json = serde_json::json!({ "scenario": scenario, "common": common });
    Ok(RunReport {
        scenario: scenario.name().to_owned(),
        server,
        settings: settings_json,
        machine: Machine::detect(),
        started_unix_s,
        connections,
        connected: report.connected,
        setup_failures: report.failed,
        setup_s: timing.setup_s,
        connects_per_s: if timing.setup_s > 0.0 {
            report.connected as f64 / timing.setup_s
        } else {
            0.0
        },
        handshake_us: Percentiles::of(&report.handshake_us),
        window_s: timing.window_s,
        sent: report.sent_measured,
        expected: report.expected_measured,
        delivered,
        lost: report.expected_measured.saturating_sub(delivered),
        out_of_order: report.out_of_order,
        closed_by_server: report.closed_by_server,
        deliveries_per_s: if timing.window_s > 0.0 {
            delivered as f64 / timing.window_s
        } else {
            0.0
        },
        latency_us: Percentiles::of(&report.latency_us),
        server_cpu_s,
        server_cpu_us_per_delivery: per_delivery(server_cpu_s * 1e6),
        deliveries_per_server_cpu_s: if server_cpu_s > 0.0 {
            delivered as f64 / server_cpu_s
        } else {
            0.0
        },
        server_rss_before_bytes: rss_before,
        server_rss_after_bytes: rss_after,
        server_rss_per_connection_bytes: if report.connected > 0 {
            (rss_after as f64 - rss_before as f64) / report.connected as f64
        } else {
            0.0
        },
        server_threads: timing.server_after_setup.map_or(0, |s| s.threads),
        generator_cpu_s,
        generator_cpu_cores: if timing.window_s > 0.0 {
            generator_cpu_s / timing.window_s
        } else {
            0.0
        },
        generator_threads: common.threads.max(1),
        failure_samples: report.failure_samples,
        machine_busy_before: 0.0,
        window,
        window_stray: report.window_stray,
        frames_per_write: counters.map_or(0.0, |c| c.frames_per_write()),
        server_writes_per_s: match counters {
            Some(c) if timing.window_s > 0.0 => c.writes as f64 / timing.window_s,
            _ => 0.0,
        },
        server_counters: counters,
        ksoftirqd_cpu_s: (timing.ksoftirqd_at_end_s - timing.ksoftirqd_at_start_s).max(0.0),
        redis_cpu_s: match (timing.redis_at_start, timing.redis_at_end) {
            (Some(a), Some(b)) => (b.cpu_s - a.cpu_s).max(0.0),
            _ => 0.0,
        },
        server_cpu_us_per_connection: match (before, timing.server_at_setup_end) {
            (Some(a), Some(b)) if report.connected > 0 => {
                (b.cpu_s - a.cpu_s).max(0.0) * 1e6 / report.connected as f64
            }
            _ => 0.0,
        },
        generator_cpu_us_per_connection: if report.connected > 0 {
            (timing.generator_at_setup_end_s - generator_before_s).max(0.0) * 1e6 / report.connected as f64
        } else {
            0.0
        },
        tls: target.tls.is_some(),
        redis_bytes_per_message: match (timing.redis_bytes_at_start, timing.redis_bytes_at_end) {
            (Some(a), Some(b)) if report.sent_measured > 0 => {
                b.saturating_sub(a) as f64 / report.sent_measured as f64
            }
            _ => 0.0,
        },
    })
}

/// What the coordinating thread observed.
#[derive(Debug, Default)]
struct Timing {
    setup_s: f64,
    server_at_setup_end: Option<ProcSample>,
    generator_at_setup_end_s: f64,
    window_s: f64,
    server_after_setup: Option<ProcSample>,
    server_at_start: Option<ProcSample>,
    server_at_end: Option<ProcSample>,
    generator_at_start_s: f64,
    generator_at_end_s: f64,
    counters_at_start: Option<ServerCounters>,
    counters_at_end: Option<ServerCounters>,
    ksoftirqd_at_start_s: f64,
    ksoftirqd_at_end_s: f64,
    redis_at_start: Option<ProcSample>,
    redis_at_end: Option<ProcSample>,
    redis_bytes_at_start: Option<u64>,
    redis_bytes_at_end: Option<u64>,
}

impl Timing {
    /// Samples everything measured over the window, at its start.
    fn start_window(&mut self, common: &Common, target: &Target) {
        self.server_at_start = sample_server(common);
        self.redis_at_start = sample(common.redis_pid);
        self.redis_bytes_at_start = redis_net_bytes(common.redis_port);
        self.generator_at_start_s = procfs::self_cpu_s();
        self.ksoftirqd_at_start_s = procfs::ksoftirqd_cpu_s();
        self.counters_at_start = common
            .pid
            .and_then(|_| scrape::scrape(target.addr, &target.host, target.tls.as_ref()));
    }

    /// Samples everything measured over the window, at its end.
    fn end_window(&mut self, common: &Common, target: &Target) {
        self.server_at_end = sample_server(common);
        self.redis_at_end = sample(common.redis_pid);
        self.redis_bytes_at_end = redis_net_bytes(common.redis_port);
        self.generator_at_end_s = procfs::self_cpu_s();
        self.ksoftirqd_at_end_s = procfs::ksoftirqd_cpu_s();
        self.counters_at_end = common
            .pid
            .and_then(|_| scrape::scrape(target.addr, &target.host, target.tls.as_ref()));
    }
}

fn coordinate(
    scenario: &Scenario,
    common: &Common,
    shared: &Shared,
    connections: u64,
    target: &Target,
) -> Timing {
    let mut timing = Timing::default();
    let setup_started = Instant::now();
    let settled = |shared: &Shared| {
        shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) >= connections
    };
    let mut last_report = Instant::now();
    wait_until(Duration::from_secs_f64(common.setup_timeout_s), || {
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            say(
                common,
                &format!(
                    "setup: {} ready, {} failed of {connections}",
                    shared.ready.load(Ordering::Relaxed),
                    shared.failed.load(Ordering::Relaxed)
                ),
            );
        }
        settled(shared)
    });
    timing.setup_s = setup_started.elapsed().as_secs_f64();
    timing.server_at_setup_end = sample_server(common);
    timing.generator_at_setup_end_s = procfs::self_cpu_s();
    say(
        common,
        &format!(
            "setup done in {:.2}s: {} ready, {} failed",
            timing.setup_s,
            shared.ready.load(Ordering::Relaxed),
            shared.failed.load(Ordering::Relaxed)
        ),
    );

    // Join notifications (every join is announced to the channel's earlier
    // members) may still be in flight; wait until nothing arrives for 300 ms.
    let mut last_frames = shared.frames_received.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    wait_until(Duration::from_secs_f64(common.settle_timeout_s), || {
        let frames = shared.frames_received.load(Ordering::Relaxed);
        if frames != last_frames {
            last_frames = frames;
            quiet_since = Instant::now();
        }
        quiet_since.elapsed() > Duration::from_millis(300)
    });

    if let Scenario::Connect { hold_s, .. } = *scenario {
        timing.start_window(common, target);
        let hold_started = Instant::now();
        thread::sleep(Duration::from_secs_f64(hold_s));
        timing.window_s = hold_started.elapsed().as_secs_f64();
        timing.end_window(common, target);
        timing.server_after_setup = timing.server_at_end;
        return timing;
    }
    timing.server_after_setup = sample_server(common);

    let publish_start_ns = shared.now_ns() + 10_000_000;
    let mut measure_start_ns = publish_start_ns + (common.warmup_s * 1e9) as u64;
    let mut publish_end_ns = measure_start_ns + (common.duration_s * 1e9) as u64;
    shared.publish_start_ns.store(publish_start_ns, Ordering::Release);
    if shared.window.is_some() {
        // Closed loop: the window's bounds are set below, once reached.
        shared.publish_end_ns.store(u64::MAX, Ordering::Release);
    } else {
        shared.measure_start_ns.store(measure_start_ns, Ordering::Release);
        shared.publish_end_ns.store(publish_end_ns, Ordering::Release);
    }
    shared.phase.store(engine::PHASE_PUBLISH, Ordering::Release);

    sleep_until_ns(shared, measure_start_ns);
    if let Some(book) = &shared.window {
        // A steady state first: every publisher's first full window has
        // come back (a slow server may need longer than the warm-up).
        let turn = u64::from(book.window()) * book.publishers() as u64;
        if !wait_until(WINDOW_STRETCH_MAX, || book.done() >= turn) {
            say(common, "the first window never came back; measuring anyway");
        }
        // Ahead of the clock by more than a worker's loop turn: a message
        // a worker stamps before it can see the new value is older.
        measure_start_ns = shared.now_ns() + MEASURE_START_LEAD_NS;
        shared.measure_start_ns.store(measure_start_ns, Ordering::Release);
        sleep_until_ns(shared, measure_start_ns);
    }
    timing.start_window(common, target);
    let window_started = Instant::now();
    say(common, "measuring");
    if let Some(book) = &shared.window {
        // At least one full window of messages published inside the
        // measured window, however slowly they come back.
        let armed_at_start = book.armed();
        let turn = u64::from(book.window()) * book.publishers() as u64;
        sleep_until_ns(shared, measure_start_ns + (common.duration_s * 1e9) as u64);
        wait_until(WINDOW_STRETCH_MAX, || book.armed() >= armed_at_start + turn);
        publish_end_ns = shared.now_ns();
        shared.publish_end_ns.store(publish_end_ns, Ordering::Release);
    } else {
        sleep_until_ns(shared, publish_end_ns);
    }

    // Drain: until every expected delivery arrived, nothing arrived for a
    // second, or the drain bound.
    let mut last_delivered = shared.delivered_measured.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    let mut last_delivery_at = window_started.elapsed();
    wait_until(Duration::from_secs_f64(common.drain_timeout_s), || {
        let delivered = shared.delivered_measured.load(Ordering::Relaxed);
        let expected = shared.expected_measured.load(Ordering::Relaxed);
        if delivered != last_delivered {
            last_delivered = delivered;
            last_change = Instant::now();
            last_delivery_at = window_started.elapsed();
        }
        // Publishers post their last counts within a loop turn (≤ 20 ms).
        let all_in = expected > 0 && delivered >= expected && shared.now_ns() > publish_end_ns + 50_000_000;
        all_in || last_change.elapsed() > Duration::from_secs(1)
    });
    timing.end_window(common, target);
    // The window ends with the last delivery, but never before the schedule ends.
    let schedule_s = (publish_end_ns - measure_start_ns) as f64 / 1e9;
    timing.window_s = last_delivery_at.as_secs_f64().max(schedule_s);
    timing
}
