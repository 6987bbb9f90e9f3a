//! What a run measured, as JSON (the record) and markdown (for people), plus
//! the machine facts recorded beside every result.

use std::fmt::Write as _;
use std::process::Command;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::scrape::ServerCounters;

/// The server a run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerInfo {
    /// Short name for tables and charts, e.g. `ringcast-s2`, `node-socket.io`.
    pub label: String,
    /// `ringcast`, `node-socket.io` or `socketioxide`.
    pub kind: String,
    /// Shard count (ringcast) or worker threads (peers); 1 for node.
    pub shards: u32,
    pub pid: Option<u32>,
    pub url: String,
    /// The I/O driver the server was started with (`io_uring`, `epoll`;
    /// empty for peers).
    #[serde(default)]
    pub driver: String,
    /// The driver its file descriptors show it runs (`io_uring` if it holds
    /// an io_uring instance, else `epoll`), read at the end of the run.
    #[serde(default)]
    pub driver_detected: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub count: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            p50: histogram.value_at_quantile(0.50) as f64,
            p99: histogram.value_at_quantile(0.99) as f64,
            p999: histogram.value_at_quantile(0.999) as f64,
            max: histogram.max() as f64,
            mean: histogram.mean(),
            count: histogram.len(),
        }
    }
}

/// Machine, kernel and source revision, recorded with every result.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_kib: u64,
    pub kernel: String,
    pub commit: String,
    pub nofile_limit: u64,
    /// /proc/loadavg at the end of the run (its 1-minute figure covers the
    /// run): other work on the machine skews latency and, less, CPU per
    /// delivery, so it is recorded.
    pub load_average: String,
}

impl Machine {
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, model)| model.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib,
            kernel,
            commit: commit(),
            nofile_limit: nofile_limit(),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// `git rev-parse HEAD`, with `-dirty` when the tree has changes.
fn commit() -> String {
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    let Ok(head) = head else {
        return "unknown".to_owned();
    };
    let mut commit = if head.status.success() {
        String::from_utf8_lossy(&head.stdout).trim().to_owned()
    } else {
        "uncommitted".to_owned()
    };
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|out| !out.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    commit
}

pub fn nofile_limit() -> u64 {
    // SAFETY: getrlimit writes into the struct we own.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur
        } else {
            0
        }
    }
}

/// Everything one `load` run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub scenario: String,
    pub server: Option<ServerInfo>,
    /// The scenario's parameters as given on the command line.
    pub settings: serde_json::Value,
    pub machine: Machine,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,

    pub connections: u64,
    pub connected: u64,
    pub setup_failures: u64,
    pub setup_s: f64,
    pub connects_per_s: f64,
    pub handshake_us: Percentiles,

    /// From the start of the measured window to the last measured delivery.
    pub window_s: f64,
    pub sent: u64,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub out_of_order: u64,
    pub closed_by_server: u64,
    pub deliveries_per_s: f64,
    pub latency_us: Percentiles,

    pub server_cpu_s: f64,
    pub server_cpu_us_per_delivery: f64,
    pub deliveries_per_server_cpu_s: f64,
    pub server_rss_before_bytes: u64,
    pub server_rss_after_bytes: u64,
    pub server_rss_per_connection_bytes: f64,
    pub server_threads: u64,

    pub generator_cpu_s: f64,
    /// Generator CPU seconds per second of window (1.0 = one core busy).
    pub generator_cpu_cores: f64,
    pub generator_threads: u32,
    pub failure_samples: Vec<String>,
    /// Fraction of the machine's CPUs busy just before the run (set by the suite).
    #[serde(default)]
    pub machine_busy_before: f64,
    /// Messages each publisher kept in flight (closed loop); 0 on a fixed schedule.
    #[serde(default)]
    pub window: u32,
    /// Window mode: deliveries of a message that was not in flight
    /// (duplicates); always 0 for a correct server.
    #[serde(default)]
    pub window_stray: u64,
    /// The server's counters over the window (ringcast's `/metrics`).
    #[serde(default)]
    pub server_counters: Option<ServerCounters>,
    /// Frames per socket write over the window (0: not known).
    #[serde(default)]
    pub frames_per_write: f64,
    /// Socket writes per second over the window (0: not known).
    #[serde(default)]
    pub server_writes_per_s: f64,
    /// CPU of the kernel's `ksoftirqd` threads over the window: network
    /// work charged to no process (not in the server's CPU).
    #[serde(default)]
    pub ksoftirqd_cpu_s: f64,
    /// Cluster runs: CPU seconds of redis-server over the window.
    #[serde(default)]
    pub redis_cpu_s: f64,
    /// Cluster runs: bytes redis-server received and sent over the window,
    /// per published message.
    #[serde(default)]
    pub redis_bytes_per_message: f64,
    /// Server CPU during setup (connect, upgrade or polling handshake, TLS
    /// handshake over TLS, Socket.IO connect, join) per connection set up.
    #[serde(default)]
    pub server_cpu_us_per_connection: f64,
    /// The generator's CPU during setup per connection set up: the client
    /// side of the same handshakes, on the same cores.
    #[serde(default)]
    pub generator_cpu_us_per_connection: f64,
    /// Whether the run spoke TLS (`https://`, `wss://`).
    #[serde(default)]
    pub tls: bool,
}

impl RunReport {
    /// A one-run markdown table, metric per line.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let label = self.server.as_ref().map_or("?", |s| s.label.as_str());
        let driver = self.server.as_ref().map_or(String::new(), |s| {
            match (s.driver.as_str(), s.driver_detected.as_str()) {
                ("", "") => String::new(),
                (asked, seen) if asked == seen || seen.is_empty() => format!(" ({asked})"),
                (asked, seen) => format!(" (started as {asked}, runs {seen})"),
            }
        });
        let _ = writeln!(out, "### {} on {label}{driver}\n", self.scenario);
        let _ = writeln!(out, "| metric | value |\n|---|---|");
        let rows: Vec<(&str, String)> = vec![
            (
                "connections (connected / failed)",
                format!(
                    "{} ({} / {})",
                    self.connections, self.connected, self.setup_failures
                ),
            ),
            ("connects/s", format!("{:.0}", self.connects_per_s)),
            (
                "server CPU µs/connection (setup)",
                format!("{:.0}", self.server_cpu_us_per_connection),
            ),
            (
                "generator CPU µs/connection (setup)",
                format!("{:.0}", self.generator_cpu_us_per_connection),
            ),
            ("TLS", if self.tls { "yes" } else { "no" }.to_owned()),
            (
                "handshake p50 / p99 µs",
                format!("{:.0} / {:.0}", self.handshake_us.p50, self.handshake_us.p99),
            ),
            (
                "publishing",
                if self.window > 0 {
                    format!("closed loop, window {} per publisher", self.window)
                } else {
                    "fixed schedule".to_owned()
                },
            ),
            ("window s", format!("{:.2}", self.window_s)),
            (
                "sent / expected / delivered",
                format!("{} / {} / {}", self.sent, self.expected, self.delivered),
            ),
            (
                "lost / out-of-order / stray",
                format!("{} / {} / {}", self.lost, self.out_of_order, self.window_stray),
            ),
            ("deliveries/s", format!("{:.0}", self.deliveries_per_s)),
            ("server CPU s", format!("{:.2}", self.server_cpu_s)),
            (
                "server CPU µs/delivery",
                format!("{:.3}", self.server_cpu_us_per_delivery),
            ),
            (
                "deliveries per server CPU-s",
                format!("{:.0}", self.deliveries_per_server_cpu_s),
            ),
            (
                "server frames/write, writes/s",
                format!("{:.2}, {:.0}", self.frames_per_write, self.server_writes_per_s),
            ),
            ("ksoftirqd CPU s", format!("{:.2}", self.ksoftirqd_cpu_s)),
            (
                "latency p50 / p99 / p999 / max µs",
                format!(
                    "{:.0} / {:.0} / {:.0} / {:.0}",
                    self.latency_us.p50, self.latency_us.p99, self.latency_us.p999, self.latency_us.max
                ),
            ),
            (
                "server RSS before → after",
                format!(
                    "{} → {}",
                    human_bytes(self.server_rss_before_bytes),
                    human_bytes(self.server_rss_after_bytes)
                ),
            ),
            (
                "server RSS per connection",
                format!("{:.0} B", self.server_rss_per_connection_bytes),
            ),
            (
                "generator CPU (cores)",
                format!("{:.2} s ({:.2})", self.generator_cpu_s, self.generator_cpu_cores),
            ),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        if !self.failure_samples.is_empty() {
            let _ = writeln!(out, "\nfailures (samples): {}", self.failure_samples.join("; "));
        }
        out
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
