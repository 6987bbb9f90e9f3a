//! The benchmark suite: the physical floor first, then each scenario on
//! ringcast at each shard count with each I/O driver (io_uring, the
//! default, and `--epoll`) and on each peer (Node socket.io, socketioxide),
//! one server after the other, every run against a freshly started server,
//! and after a saturated scenario the floor again at its connection count;
//! then markdown tables with the floor, saturated and fixed-rate results and
//! ringcast/peer ratios, and SVG charts, in `bench/results/<timestamp>/`
//! (copied to `bench/results/latest/`).
//!
//! Each server is started with `--listen 127.0.0.1:0`, and its port is read
//! from the `... listening on http://IP:PORT/PATH` line it prints. Before a
//! server is measured it must pass [`crate::check`]. Scenarios run in the
//! separate `load` process, and the floor in the separate `floor` process,
//! so the generator's file descriptors, CPU and memory are its own.

mod charts;
mod summary;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::floor::FloorReport;
use crate::report::{Machine, RunReport};

const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// ringcast's I/O drivers, as `--drivers` names them.
const DRIVERS: [&str; 2] = ["io_uring", "epoll"];

#[derive(Debug, Clone, Args)]
pub struct SuiteOptions {
    /// Tiny numbers, a few seconds, ringcast with one shard only (for CI).
    #[arg(long)]
    pub smoke: bool,
    /// Results root; a `<timestamp>/` folder and `latest/` go under it
    /// (default bench/results, or the ignored bench/results/tmp with --smoke).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "target/release/ringcast")]
    pub ringcast: PathBuf,
    /// Shard counts for ringcast and worker threads for socketioxide, e.g.
    /// `1,2,4,8` (default: 1, 2, 4, … up to the core count, and the core
    /// count; 1 with --smoke).
    #[arg(long, value_delimiter = ',')]
    pub shards: Vec<u32>,
    /// ringcast I/O drivers: io_uring (the default driver), epoll (`--epoll`).
    #[arg(long, value_delimiter = ',', default_value = "io_uring,epoll")]
    pub drivers: Vec<String>,
    /// Measure only the peers (to redo a peer after changing it).
    #[arg(long)]
    pub skip_ringcast: bool,
    /// Peers to measure: node, socketioxide (default both; none with --smoke).
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Scenario runs to do (default: all; the ids are the headings of
    /// results.md, e.g. fanout-s1000-w16, rooms-w1, fanout-s1000-r50, connect).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Option<Vec<String>>,
    #[arg(long, default_value = "bench/peers/node/server.js")]
    pub node_peer: PathBuf,
    #[arg(
        long,
        default_value = "target/peer-socketioxide/release/ringcast-bench-peer-socketioxide"
    )]
    pub socketioxide_peer: PathBuf,
    /// The load generator binary (default: `load` beside this binary).
    #[arg(long)]
    pub load: Option<PathBuf>,
    /// The floor binary (default: `floor` beside this binary).
    #[arg(long)]
    pub floor: Option<PathBuf>,
    /// Connection counts the floor is measured at (default 100,1000,5000,
    /// the saturated scenarios' sizes; 50 with --smoke).
    #[arg(long, value_delimiter = ',')]
    pub floor_connections: Vec<u32>,
    /// Skip measuring the physical floor (the report then has no multiples of it).
    #[arg(long)]
    pub skip_floor: bool,
    /// Connections for the connect scenario (the local maximum is about 19,000
    /// with RLIMIT_NOFILE = 20,000 per process).
    #[arg(long, default_value_t = 19_000)]
    pub connect_n: u32,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Generator threads.
    #[arg(long, default_value_t = 1)]
    pub load_threads: u32,
    /// Before each run, wait (at most `--quiet-wait-s`) until the machine's
    /// CPUs are less busy than this fraction, so other work (builds) skews
    /// the numbers less. The measured busy fraction is recorded per run.
    #[arg(long, default_value_t = 0.25)]
    pub quiet_busy_max: f64,
    /// Default 60 s; 0 with --smoke (CI should not wait).
    #[arg(long)]
    pub quiet_wait_s: Option<f64>,
    /// Saturated scenarios: ringcast's runs and the floor after them are
    /// measured this many times, alternating, and the report gives each
    /// ringcast server's multiple of the floor as the median and range over
    /// the rounds (one 5 s run and one floor each vary by ±20% on a shared
    /// VM). Default 1; 2 with --smoke, so CI runs the path.
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Measure nothing: write `results.md` and the charts of an earlier
    /// run again from its JSON (after the report gained a column, say).
    #[arg(long, value_name = "FOLDER")]
    pub render: Option<PathBuf>,
}

/// What a run's report needs beyond its measurements: `run.json` in its
/// folder.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    /// The command line that reproduces the run.
    command: String,
    /// What went wrong on the way (a server that did not start, a floor
    /// that failed).
    problems: Vec<String>,
}

impl RunRecord {
    /// The record of a run from before `run.json`, read back from its
    /// `results.md`: the `Reproduce:` line and the `## Problems` list.
    fn from_markdown(text: &str) -> Self {
        let command = text
            .lines()
            .find_map(|l| l.strip_prefix("Reproduce: `")?.strip_suffix('`'))
            .unwrap_or_default()
            .to_owned();
        let problems = text
            .lines()
            .skip_while(|l| *l != "## Problems")
            .skip(1)
            .skip_while(|l| l.is_empty())
            .map_while(|l| l.strip_prefix("- "))
            .map(str::to_owned)
            .collect();
        Self { command, problems }
    }
}

/// A further round of a saturated scenario (the second and later; the
/// first is the scenario's ordinary runs and the floor after them):
/// ringcast's servers again, then the floor again. `rounds.json` in the
/// run's folder.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Round {
    scenario: String,
    /// 2, 3, …
    round: u32,
    reports: Vec<RunReport>,
    floor: Option<FloorReport>,
}

/// A server the suite can start.
#[derive(Debug, Clone)]
struct ServerSpec {
    label: String,
    kind: &'static str,
    shards: u32,
    /// ringcast's I/O driver (`io_uring`, `epoll`); empty for peers.
    driver: &'static str,
    command: Vec<String>,
}

/// What a scenario measures, which decides its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Closed loop (`--window`): the most a server delivers.
    Saturated,
    /// A fixed offered load: CPU and latency at that load.
    FixedRate,
    /// Connections only: handshakes and memory.
    Connect,
}

/// One scenario invocation of `load`.
#[derive(Debug, Clone)]
struct ScenarioRun {
    id: String,
    mode: Mode,
    /// Arguments after the common ones: the subcommand and its flags.
    args: Vec<String>,
    /// Common flags that differ from the defaults.
    common: Vec<String>,
    /// Only for these server kinds (None: all). Keeps hour-long runs out:
    /// a 10,000-member join storm is 5·10⁷ notifications.
    kinds: Option<&'static [&'static str]>,
    /// Only with these ringcast drivers (None: all).
    drivers: Option<&'static [&'static str]>,
    /// Generator threads for this scenario (None: `--load-threads`).
    load_threads: Option<u32>,
    /// Over TLS (`https://`, `wss://`): ringcast only, started with the
    /// suite's self-signed certificate.
    tls: bool,
}

impl ScenarioRun {
    fn new(id: impl Into<String>, mode: Mode, args: &[&str], common: &[String]) -> Self {
        Self {
            id: id.into(),
            mode,
            args: strings(args),
            common: common.to_vec(),
            kinds: None,
            drivers: None,
            load_threads: None,
            tls: false,
        }
    }

    /// Runs the generator with `threads` threads: a connect storm needs
    /// both cores on the client side too, or the generator is what is
    /// measured.
    fn load_threads(mut self, threads: u32) -> Self {
        self.load_threads = Some(threads);
        self
    }

    /// The same run over TLS (ringcast with the io_uring driver: the peers
    /// are measured without TLS, and the plain run beside it is the
    /// baseline).
    fn tls(mut self) -> Self {
        self.tls = true;
        self.kinds(&["ringcast"]).drivers(&["io_uring"])
    }

    fn common(mut self, extra: &[&str]) -> Self {
        self.common.extend(strings(extra));
        self
    }

    fn kinds(mut self, kinds: &'static [&'static str]) -> Self {
        self.kinds = Some(kinds);
        self
    }

    fn drivers(mut self, drivers: &'static [&'static str]) -> Self {
        self.drivers = Some(drivers);
        self
    }

    fn applies_to(&self, server: &ServerSpec) -> bool {
        if server.kind == FLOOR_KIND {
            // The connect floor speaks nothing but the handshake.
            return self.mode == Mode::Connect && !self.tls;
        }
        let kind_ok = self.kinds.is_none_or(|kinds| kinds.contains(&server.kind));
        let driver_ok = server.driver.is_empty()
            || self
                .drivers
                .is_none_or(|drivers| drivers.contains(&server.driver));
        kind_ok && driver_ok
    }
}

/// The kind of the connect floor's server (`floor --serve-handshakes`).
const FLOOR_KIND: &str = "floor";

/// Servers the long-polling scenarios run against (the socketioxide peer is
/// built WebSocket-only).
const POLLING_KINDS: &[&str] = &["ringcast", "node-socket.io"];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn scenario_runs(options: &SuiteOptions) -> Vec<ScenarioRun> {
    if options.smoke {
        return smoke_scenario_runs();
    }
    let duration = format!("{}", options.duration_s);
    let common = strings(&["--duration-s", &duration, "--warmup-s", "1"]);
    // A join storm of S²/2 notifications before a large fanout publishes.
    let storm = ["--settle-timeout-s", "300", "--setup-timeout-s", "300"];
    let mut runs = Vec::new();
    for subscribers in [100, 1000, 5000] {
        for window in [16, 64] {
            let (s, w) = (subscribers.to_string(), window.to_string());
            let run = ScenarioRun::new(
                format!("fanout-s{subscribers}-w{window}"),
                Mode::Saturated,
                &["fanout", "--subscribers", &s, "--publishers", "1", "--window", &w],
                &common,
            );
            runs.push(if subscribers >= 5000 {
                run.common(&storm)
            } else {
                run
            });
        }
    }
    // The cost of TLS per delivery: fanout-s1000-w16 over wss://.
    runs.push(
        ScenarioRun::new(
            "fanout-tls-s1000-w16",
            Mode::Saturated,
            &[
                "fanout",
                "--subscribers",
                "1000",
                "--publishers",
                "1",
                "--window",
                "16",
            ],
            &common,
        )
        .tls(),
    );
    // What clients that stop reading cost everyone else: the same fanout
    // with 20 more subscribers that never read again after their join.
    runs.push(
        ScenarioRun::new(
            "fanout-s1000-w16-stalled20",
            Mode::Saturated,
            &[
                "fanout",
                "--subscribers",
                "1000",
                "--publishers",
                "1",
                "--window",
                "16",
                "--stalled",
                "20",
            ],
            &common,
        )
        .kinds(&["ringcast"]),
    );
    // The same fan-out to subscribers that long-poll (the publisher keeps
    // its WebSocket): the server CPU per delivery of the polling transport.
    runs.push(
        ScenarioRun::new(
            "fanout-polling-s1000-w16",
            Mode::Saturated,
            &[
                "fanout",
                "--subscribers",
                "1000",
                "--publishers",
                "1",
                "--window",
                "16",
                "--polling",
            ],
            &common,
        )
        .kinds(POLLING_KINDS)
        .drivers(&["io_uring"]),
    );
    runs.push(ScenarioRun::new(
        "broadcast-n1000-w16",
        Mode::Saturated,
        &[
            "broadcast",
            "--connections",
            "1000",
            "--publishers",
            "1",
            "--window",
            "16",
        ],
        &common,
    ));
    // Every member keeps one message in flight: 10,000 messages and 90,000
    // deliveries outstanding, which saturates any server here.
    runs.push(ScenarioRun::new(
        "rooms-w1",
        Mode::Saturated,
        &["rooms", "--channels", "1000", "--members", "10", "--window", "1"],
        &common,
    ));
    runs.push(ScenarioRun::new(
        "fanout-s100",
        Mode::FixedRate,
        &[
            "fanout",
            "--subscribers",
            "100",
            "--publishers",
            "1",
            "--rate",
            "500",
        ],
        &common,
    ));
    // 50,000 deliveries/s: well below saturation for every server, so p99
    // is latency at a comfortable load, not queueing.
    runs.push(ScenarioRun::new(
        "fanout-s1000-r50",
        Mode::FixedRate,
        &[
            "fanout",
            "--subscribers",
            "1000",
            "--publishers",
            "1",
            "--rate",
            "50",
        ],
        &common,
    ));
    runs.push(
        ScenarioRun::new(
            "fanout-s10000",
            Mode::FixedRate,
            &[
                "fanout",
                "--subscribers",
                "10000",
                "--publishers",
                "1",
                "--rate",
                "10",
            ],
            &common,
        )
        .common(&["--settle-timeout-s", "120", "--setup-timeout-s", "240"])
        .kinds(&["ringcast"]),
    );
    runs.push(ScenarioRun::new(
        "rooms",
        Mode::FixedRate,
        &[
            "rooms",
            "--channels",
            "1000",
            "--members",
            "10",
            "--rate-per-member",
            "1",
        ],
        &common,
    ));
    runs.push(ScenarioRun::new(
        "broadcast",
        Mode::FixedRate,
        &[
            "broadcast",
            "--connections",
            "1000",
            "--publishers",
            "1",
            "--rate",
            "50",
        ],
        &common,
    ));
    runs.push(ScenarioRun::new(
        "latency",
        Mode::FixedRate,
        &[
            "latency",
            "--subscribers",
            "100",
            "--publishers",
            "10",
            "--rate",
            "100",
        ],
        &common,
    ));
    let connect_n = options.connect_n.to_string();
    runs.push(
        ScenarioRun::new(
            "connect",
            Mode::Connect,
            &["connect", "--connections", &connect_n, "--hold-s", "5"],
            &strings(&["--setup-timeout-s", "180"]),
        )
        .load_threads(2),
    );
    // The cost of TLS per handshake and per idle connection.
    runs.push(
        ScenarioRun::new(
            "connect-tls",
            Mode::Connect,
            &["connect", "--connections", &connect_n, "--hold-s", "5"],
            &strings(&["--setup-timeout-s", "180"]),
        )
        .load_threads(2)
        .tls(),
    );
    runs
}

/// Tiny numbers for CI: every scenario kind for about a second each with the
/// default driver, and one closed-loop run with both drivers.
fn smoke_scenario_runs() -> Vec<ScenarioRun> {
    let common = strings(&[
        "--duration-s",
        "1",
        "--warmup-s",
        "0.3",
        "--setup-timeout-s",
        "20",
        "--drain-timeout-s",
        "3",
    ]);
    let uring_only: &[&str] = &["io_uring"];
    vec![
        ScenarioRun::new(
            "fanout-s50-w4",
            Mode::Saturated,
            &["fanout", "--subscribers", "50", "--window", "4"],
            &common,
        ),
        ScenarioRun::new(
            "fanout-s50",
            Mode::FixedRate,
            &["fanout", "--subscribers", "50", "--rate", "50"],
            &common,
        )
        .drivers(uring_only),
        ScenarioRun::new(
            "fanout-polling-s50",
            Mode::FixedRate,
            &["fanout", "--subscribers", "50", "--rate", "50", "--polling"],
            &common,
        )
        .kinds(POLLING_KINDS)
        .drivers(uring_only),
        ScenarioRun::new(
            "rooms",
            Mode::FixedRate,
            &[
                "rooms",
                "--channels",
                "20",
                "--members",
                "5",
                "--rate-per-member",
                "5",
            ],
            &common,
        )
        .drivers(uring_only),
        ScenarioRun::new(
            "broadcast",
            Mode::FixedRate,
            &["broadcast", "--connections", "50", "--rate", "20"],
            &common,
        )
        .drivers(uring_only),
        ScenarioRun::new(
            "fanout-tls-s50-w4",
            Mode::Saturated,
            &["fanout", "--subscribers", "50", "--window", "4"],
            &common,
        )
        .tls(),
        ScenarioRun::new(
            "connect",
            Mode::Connect,
            &["connect", "--connections", "500", "--hold-s", "1"],
            &common,
        )
        .drivers(uring_only),
        ScenarioRun::new(
            "connect-tls",
            Mode::Connect,
            &["connect", "--connections", "500", "--hold-s", "1"],
            &common,
        )
        .tls(),
        ScenarioRun::new(
            "latency",
            Mode::FixedRate,
            &[
                "latency",
                "--subscribers",
                "20",
                "--publishers",
                "2",
                "--rate",
                "200",
            ],
            &common,
        )
        .drivers(uring_only),
    ]
}

/// 1, 2, 4, … below `cores`, then `cores`.
fn default_sweep(cores: u32) -> Vec<u32> {
    let mut counts: Vec<u32> = std::iter::successors(Some(1u32), |n| n.checked_mul(2))
        .take_while(|n| *n < cores)
        .collect();
    counts.push(cores.max(1));
    counts
}

fn servers(options: &SuiteOptions, cores: u32, floor_binary: &Path) -> Vec<ServerSpec> {
    let sweep: Vec<u32> = if !options.shards.is_empty() {
        options.shards.clone()
    } else if options.smoke {
        vec![1]
    } else {
        default_sweep(cores)
    };
    let drivers: Vec<&'static str> = DRIVERS
        .into_iter()
        .filter(|d| options.drivers.iter().any(|wanted| wanted == d))
        .collect();
    for wanted in &options.drivers {
        if !DRIVERS.contains(&wanted.as_str()) {
            eprintln!("[suite] unknown driver {wanted:?} (io_uring, epoll), skipped");
        }
    }
    let mut list = Vec::new();
    if !options.skip_ringcast {
        for &n in &sweep {
            for &driver in &drivers {
                let mut command = vec![
                    options.ringcast.display().to_string(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--shards".into(),
                    n.to_string(),
                ];
                let label = if driver == "epoll" {
                    command.push("--epoll".into());
                    format!("ringcast-s{n}-epoll")
                } else {
                    format!("ringcast-s{n}")
                };
                list.push(ServerSpec {
                    label,
                    kind: "ringcast",
                    shards: n,
                    driver,
                    command,
                });
            }
        }
    }
    let peers = options.peers.clone().unwrap_or_else(|| {
        if options.smoke {
            Vec::new()
        } else {
            vec!["node".to_owned(), "socketioxide".to_owned()]
        }
    });
    for peer in peers {
        match peer.as_str() {
            "node" => list.push(ServerSpec {
                label: "node-socket.io".into(),
                kind: "node-socket.io",
                shards: 1,
                driver: "",
                command: vec![
                    "node".into(),
                    options.node_peer.display().to_string(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                ],
            }),
            "socketioxide" => {
                // Worker threads are socketioxide's "shard count".
                for &n in &sweep {
                    list.push(ServerSpec {
                        label: format!("socketioxide-t{n}"),
                        kind: "socketioxide",
                        shards: n,
                        driver: "",
                        command: vec![
                            options.socketioxide_peer.display().to_string(),
                            "--listen".into(),
                            "127.0.0.1:0".into(),
                            "--threads".into(),
                            n.to_string(),
                        ],
                    });
                }
            }
            "" | "none" => {}
            other => eprintln!("[suite] unknown peer {other:?}, skipped"),
        }
    }
    if !options.skip_floor {
        // The connect floor: the least any server does per handshake.
        list.push(ServerSpec {
            label: "floor-handshake".into(),
            kind: FLOOR_KIND,
            shards: 1,
            driver: "",
            command: vec![
                floor_binary.display().to_string(),
                "--serve-handshakes".into(),
                "127.0.0.1:0".into(),
            ],
        });
    }
    list
}

/// A started server; stopped on drop.
struct RunningServer {
    child: Child,
    url: String,
}

impl RunningServer {
    fn start(spec: &ServerSpec) -> anyhow::Result<Self> {
        Self::start_with(spec, &[])
    }

    /// Starts `spec` with `extra` arguments (the TLS certificate and key).
    fn start_with(spec: &ServerSpec, extra: &[String]) -> anyhow::Result<Self> {
        let mut child = Command::new(&spec.command[0])
            .args(&spec.command[1..])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env("RUST_LOG", "warn")
            .spawn()
            .with_context(|| format!("starting {}", spec.command.join(" ")))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (sender, receiver) = mpsc::channel();
        // Reads stdout on a thread so the wait has a deadline; keeps reading
        // (and discarding) afterwards so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let at = line
                    .find("listening on http://")
                    .or_else(|| line.find("listening on https://"));
                if let Some(at) = at {
                    let url = line[at + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = sender.send(url);
                }
            }
        });
        let mut server = Self {
            child,
            url: String::new(),
        };
        match receiver.recv_timeout(LISTEN_TIMEOUT) {
            Ok(url) => server.url = url,
            Err(_) => bail!(
                "{} printed no listening line within {LISTEN_TIMEOUT:?}",
                spec.label
            ),
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The TLS scenarios' certificate and key.
struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    /// A self-signed P-256 certificate for 127.0.0.1 and localhost, made
    /// with the openssl command line tool into `dir`.
    fn make(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let files = Self {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // Not a CA: the generator's rustls (webpki) refuses a CA
            // certificate as the server's own (CaUsedAsEndEntity), and
            // `req -x509` makes one by default.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&files.key)
            .arg("-out")
            .arg(&files.cert)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running openssl (scripts/setup.sh installs it)")?;
        if !status.success() {
            bail!("openssl req exited with {status}");
        }
        Ok(files)
    }
}

impl Drop for TlsFiles {
    /// The certificate and key live as long as the run.
    fn drop(&mut self) {
        if let Some(dir) = self.cert.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn sibling_binary(explicit: Option<&PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.clone());
    }
    let me = std::env::current_exe()?;
    Ok(me.with_file_name(name))
}

/// Everything one suite run produced, for the summary and the charts.
struct Outcome<'a> {
    results: &'a [RunReport],
    scenarios: &'a [ScenarioRun],
    floor: Option<&'a FloorReport>,
    /// The floor measured right after each saturated scenario's runs, at
    /// its connection count: what that scenario's multiples divide by.
    scenario_floors: &'a BTreeMap<String, FloorReport>,
    /// Saturated scenarios' further rounds against the floor (`--rounds`).
    rounds: &'a [Round],
    machine: &'a Machine,
    options: &'a SuiteOptions,
    /// The command line that reproduces this run, and its problems.
    record: &'a RunRecord,
}

/// Runs the whole suite (or, with `--render`, only writes an earlier
/// run's report again); returns the results folder.
pub fn run(options: &SuiteOptions) -> anyhow::Result<PathBuf> {
    if let Some(folder) = &options.render {
        render(folder, options)?;
        return Ok(folder.clone());
    }
    let machine = Machine::detect();
    let cores = machine.cores as u32;
    let load = sibling_binary(options.load.as_ref(), "load")?;
    let floor_binary = sibling_binary(options.floor.as_ref(), "floor")?;
    let stamp = timestamp();
    let out = options.out.clone().unwrap_or_else(|| {
        PathBuf::from(if options.smoke {
            "bench/results/tmp"
        } else {
            "bench/results"
        })
    });
    let folder = out.join(&stamp);
    let runs_folder = folder.join("runs");
    std::fs::create_dir_all(&runs_folder)?;
    let scenarios = scenario_runs(options);
    for wanted in options.scenarios.iter().flatten() {
        if !scenarios.iter().any(|s| s.id == *wanted) {
            let known: Vec<&str> = scenarios.iter().map(|s| s.id.as_str()).collect();
            eprintln!(
                "[suite] unknown scenario {wanted:?}, skipped (known: {})",
                known.join(", ")
            );
        }
    }
    let scenarios: Vec<ScenarioRun> = match &options.scenarios {
        Some(wanted) => scenarios.into_iter().filter(|s| wanted.contains(&s.id)).collect(),
        None => scenarios,
    };
    let servers = servers(options, cores, &floor_binary);
    eprintln!("[suite] results in {}", folder.display());
    // One self-signed certificate for the TLS scenarios (a failure skips
    // them, with the reason among the problems).
    let mut problems: Vec<String> = Vec::new();
    let tls = if scenarios.iter().any(|s| s.tls) {
        // Outside the results folder: a results folder is committed, and a
        // private key, even a throwaway one, does not belong in the repository.
        let dir = std::env::temp_dir().join(format!("ringcast-bench-tls-{}", std::process::id()));
        match TlsFiles::make(&dir) {
            Ok(files) => Some(files),
            Err(error) => {
                eprintln!("[suite] TLS certificate: {error:#}");
                problems.push(format!("TLS certificate: {error:#}"));
                None
            }
        }
    } else {
        None
    };
    eprintln!(
        "[suite] load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let floor = if options.skip_floor {
        None
    } else {
        match run_floor(
            &floor_binary,
            &folder.join("floor.json"),
            &options.floor_connections,
            options,
        ) {
            Ok(report) => Some(report),
            Err(error) => {
                eprintln!("[suite] floor: {error:#}");
                problems.push(format!("floor: {error:#}"));
                None
            }
        }
    };

    // Every server must pass the check before it is measured.
    let mut measured: Vec<&ServerSpec> = Vec::new();
    for server in &servers {
        if !scenarios.iter().any(|s| s.applies_to(server)) {
            continue;
        }
        // The check runs on its own server instance so it leaves no trace in
        // the measured ones (RSS baseline, channels). The connect floor
        // serves handshakes only: there is nothing to check.
        let checked = if server.kind == FLOOR_KIND {
            Ok(())
        } else {
            RunningServer::start(server).and_then(|running| {
                let status = Command::new(&load)
                    .args(["check", "--url", &running.url])
                    .status()?;
                if !status.success() {
                    bail!("{} failed the join/message check", server.label);
                }
                Ok(())
            })
        };
        match checked {
            Ok(()) => measured.push(server),
            Err(error) => {
                eprintln!("[suite] {}: {error:#}; not measured", server.label);
                problems.push(format!("{}: {error:#}", server.label));
            }
        }
    }

    // Scenario by scenario, every server in turn: the runs a ratio compares
    // are minutes apart at most, so the machine drifting over the suite's
    // half hour (its floor moves by tens of percent) does not enter them.
    let mut results: Vec<RunReport> = Vec::new();
    let mut scenario_floors: BTreeMap<String, FloorReport> = BTreeMap::new();
    let mut rounds: Vec<Round> = Vec::new();
    let rounds_wanted = options.rounds.unwrap_or(if options.smoke { 2 } else { 1 });
    // One measured run of `server` in `scenario` (`round` 2, 3, … for the
    // further rounds): `runs/<scenario>--<server>[--round<k>].json`, or a
    // problem.
    let measure = |server: &ServerSpec,
                   scenario: &ScenarioRun,
                   round: Option<u32>,
                   problems: &mut Vec<String>|
     -> anyhow::Result<Option<RunReport>> {
        let (file, said) = round.map_or_else(Default::default, |r| {
            (format!("--round{r}"), format!(" round {r}"))
        });
        let json = runs_folder.join(format!("{}--{}{file}.json", scenario.id, server.label));
        let busy = wait_for_quiet(options);
        eprintln!(
            "[suite] {} / {}{said} (machine {:.0}% busy before)",
            server.label,
            scenario.id,
            busy * 100.0
        );
        match run_one(&load, server, scenario, &json, options, tls.as_ref()) {
            Ok(mut report) => {
                // The suite's scenario id (fanout-s1000-w16) is more precise
                // than the load scenario name (fanout).
                report.scenario.clone_from(&scenario.id);
                report.machine_busy_before = busy;
                std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
                Ok(Some(report))
            }
            Err(error) => {
                eprintln!("[suite] {} / {}{said}: {error:#}", server.label, scenario.id);
                problems.push(format!("{} / {}{said}: {error:#}", server.label, scenario.id));
                Ok(None)
            }
        }
    };
    for scenario in &scenarios {
        let mut connections = None;
        for server in measured
            .iter()
            .copied()
            .filter(|server| scenario.applies_to(server))
        {
            let Some(report) = measure(server, scenario, None, &mut problems)? else {
                continue;
            };
            connections = connections.or(Some(report.connections));
            if let Some(problem) = driver_mismatch(&report) {
                eprintln!("[suite] {problem}");
                // The smoke verdict judges this itself: CI machines without
                // io_uring should not fail the smoke run.
                if !options.smoke {
                    problems.push(problem);
                }
            }
            results.push(report);
        }
        // The floor again, at this scenario's connection count, right after
        // its runs: the floor moves by tens of percent over the suite, and a
        // multiple of it means something only against the same minutes.
        let Some(connections) =
            connections.filter(|_| scenario.mode == Mode::Saturated && !options.skip_floor)
        else {
            continue;
        };
        // Past what one floor process holds (rooms' 10,000) it measures at
        // the most it can.
        let connections = connections.min(crate::floor::connections_max());
        let connections = u32::try_from(connections).unwrap_or(u32::MAX);
        let floor_after = |name: &str, problems: &mut Vec<String>| {
            let json = runs_folder.join(format!("{}--{name}.json", scenario.id));
            run_floor(&floor_binary, &json, &[connections], options)
                .inspect_err(|error| {
                    eprintln!("[suite] {name} after {}: {error:#}", scenario.id);
                    problems.push(format!("{name} after {}: {error:#}", scenario.id));
                })
                .ok()
        };
        if let Some(report) = floor_after("floor", &mut problems) {
            scenario_floors.insert(scenario.id.clone(), report);
        }
        // Further rounds: ringcast's servers and the floor, alternating.
        for round in 2..=rounds_wanted {
            let mut reports = Vec::new();
            for server in measured
                .iter()
                .copied()
                .filter(|server| server.kind == "ringcast" && scenario.applies_to(server))
            {
                reports.extend(measure(server, scenario, Some(round), &mut problems)?);
            }
            let floor = floor_after(&format!("floor--round{round}"), &mut problems);
            rounds.push(Round {
                scenario: scenario.id.clone(),
                round,
                reports,
                floor,
            });
        }
    }
    if !rounds.is_empty() {
        std::fs::write(folder.join("rounds.json"), serde_json::to_vec_pretty(&rounds)?)?;
    }

    std::fs::write(folder.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    let record = RunRecord {
        command: reproduce_command(),
        problems,
    };
    std::fs::write(folder.join("run.json"), serde_json::to_vec_pretty(&record)?)?;
    let outcome = Outcome {
        results: &results,
        scenarios: &scenarios,
        floor: floor.as_ref(),
        scenario_floors: &scenario_floors,
        rounds: &rounds,
        machine: &machine,
        options,
        record: &record,
    };
    let markdown = write_report(&folder, &outcome)?;
    println!("{markdown}");
    publish_latest(&out, &folder)?;
    if results.is_empty() {
        bail!("no scenario produced a result");
    }
    if options.smoke {
        smoke_verdict(&outcome)?;
    }
    Ok(folder)
}

/// Writes `results.md` and the charts of the run in `folder` again from
/// what it stored: `results.json`, `floor.json`, the floors after each
/// scenario (`runs/<scenario>--floor.json`) and `run.json` (or, for runs
/// from before it, the command and problems in the old `results.md`).
fn render(folder: &Path, options: &SuiteOptions) -> anyhow::Result<()> {
    let read = |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let results: Vec<RunReport> = serde_json::from_slice(&read(&folder.join("results.json"))?)
        .with_context(|| format!("{}/results.json", folder.display()))?;
    let floor_json = folder.join("floor.json");
    let floor: Option<FloorReport> = if floor_json.exists() {
        Some(serde_json::from_slice(&read(&floor_json)?).context("floor.json")?)
    } else {
        None
    };
    let mut scenario_floors = BTreeMap::new();
    let runs = folder.join("runs");
    if runs.is_dir() {
        for entry in std::fs::read_dir(&runs)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(id) = name.strip_suffix("--floor.json") {
                let report: FloorReport =
                    serde_json::from_slice(&read(&path)?).with_context(|| name.to_owned())?;
                scenario_floors.insert(id.to_owned(), report);
            }
        }
    }
    let rounds_json = folder.join("rounds.json");
    let rounds: Vec<Round> = if rounds_json.exists() {
        serde_json::from_slice(&read(&rounds_json)?).context("rounds.json")?
    } else {
        Vec::new()
    };
    let record_json = folder.join("run.json");
    let record: RunRecord = if record_json.exists() {
        serde_json::from_slice(&read(&record_json)?).context("run.json")?
    } else {
        RunRecord::from_markdown(&String::from_utf8_lossy(&read(&folder.join("results.md"))?))
    };
    let machine = results.first().map(|r| r.machine.clone()).unwrap_or_default();
    // The full suite's scenarios and the smoke run's: a report shows those
    // of its scenarios that have results.
    let mut scenarios = scenario_runs(options);
    for smoke in smoke_scenario_runs() {
        if !scenarios.iter().any(|s| s.id == smoke.id) {
            scenarios.push(smoke);
        }
    }
    let outcome = Outcome {
        results: &results,
        scenarios: &scenarios,
        floor: floor.as_ref(),
        scenario_floors: &scenario_floors,
        rounds: &rounds,
        machine: &machine,
        options,
        record: &record,
    };
    write_report(folder, &outcome)?;
    eprintln!(
        "[suite] {} written again from its JSON",
        folder.join("results.md").display()
    );
    Ok(())
}

/// Writes `results.md` and the charts of `outcome` into `folder`; returns
/// the markdown.
fn write_report(folder: &Path, outcome: &Outcome<'_>) -> anyhow::Result<String> {
    let markdown = summary::markdown(outcome);
    std::fs::write(folder.join("results.md"), &markdown)?;
    charts::draw(folder, outcome)?;
    Ok(markdown)
}

/// `bench/run.sh` with this run's arguments (run.sh passes its own to the
/// suite unchanged), shell-quoted where needed.
fn reproduce_command() -> String {
    let mut command = String::from("bench/run.sh");
    for arg in std::env::args().skip(1) {
        command.push(' ');
        let plain = !arg.is_empty()
            && arg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=.,/:".contains(&b));
        if plain {
            command.push_str(&arg);
        } else {
            command.push('\'');
            command.push_str(&arg.replace('\'', r"'\''"));
            command.push('\'');
        }
    }
    command
}

/// Measures the physical floor in the `floor` process, at `connections`
/// (empty: the suite's default counts), into `json`.
fn run_floor(
    binary: &Path,
    json: &Path,
    connections: &[u32],
    options: &SuiteOptions,
) -> anyhow::Result<FloorReport> {
    let busy = wait_for_quiet(options);
    let connections: Vec<String> = if !connections.is_empty() {
        connections.iter().map(u32::to_string).collect()
    } else if options.smoke {
        strings(&["50"])
    } else {
        strings(&["100", "1000", "5000"])
    };
    let connections = connections.join(",");
    // Each point is the cheapest of three repetitions.
    let (duration, warmup) = if options.smoke {
        ("0.1", "0.03")
    } else {
        ("0.5", "0.1")
    };
    eprintln!(
        "[suite] floor: {connections} connections (machine {:.0}% busy before)",
        busy * 100.0
    );
    let status = Command::new(binary)
        .args(["--connections", &connections])
        .args([
            "--duration-s",
            duration,
            "--warmup-s",
            warmup,
            "--quiet",
            "--json",
        ])
        .arg(json)
        .status()
        .with_context(|| format!("running {}", binary.display()))?;
    if !status.success() {
        bail!("floor exited with {status}");
    }
    Ok(serde_json::from_slice(&std::fs::read(json)?)?)
}

/// A ringcast run whose process does not hold the I/O driver it was started
/// with (ringcast falls back to epoll where io_uring is unavailable).
fn driver_mismatch(report: &RunReport) -> Option<String> {
    let server = report.server.as_ref()?;
    let mismatch = !server.driver.is_empty()
        && !server.driver_detected.is_empty()
        && server.driver != server.driver_detected;
    mismatch.then(|| {
        format!(
            "{} / {}: started with the {} driver but runs {}",
            server.label, report.scenario, server.driver, server.driver_detected
        )
    })
}

/// Fraction of all CPUs busy over `window`, from /proc/stat.
fn busy_fraction(window: Duration) -> f64 {
    fn totals() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().next()?;
        let values: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal ...
        let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
        Some((values.iter().sum(), idle))
    }
    let Some((total_a, idle_a)) = totals() else {
        return 0.0;
    };
    std::thread::sleep(window);
    let Some((total_b, idle_b)) = totals() else {
        return 0.0;
    };
    let total = total_b.saturating_sub(total_a);
    if total == 0 {
        return 0.0;
    }
    1.0 - idle_b.saturating_sub(idle_a) as f64 / total as f64
}

/// Waits until the machine is quiet enough (bounded); returns the last busy fraction.
fn wait_for_quiet(options: &SuiteOptions) -> f64 {
    let wait_s = options
        .quiet_wait_s
        .unwrap_or(if options.smoke { 0.0 } else { 60.0 });
    let deadline = Instant::now() + Duration::from_secs_f64(wait_s);
    loop {
        let busy = busy_fraction(Duration::from_millis(500));
        if busy <= options.quiet_busy_max || Instant::now() >= deadline {
            return busy;
        }
    }
}

fn run_one(
    load: &Path,
    server: &ServerSpec,
    scenario: &ScenarioRun,
    json: &Path,
    options: &SuiteOptions,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<RunReport> {
    let (server_args, load_args) = match (scenario.tls, tls) {
        (false, _) => (Vec::new(), Vec::new()),
        (true, Some(files)) => (
            vec![
                "--tls-cert".to_owned(),
                files.cert.display().to_string(),
                "--tls-key".to_owned(),
                files.key.display().to_string(),
            ],
            vec!["--tls-ca".to_owned(), files.cert.display().to_string()],
        ),
        (true, None) => bail!("no TLS certificate for a TLS scenario"),
    };
    let running = RunningServer::start_with(server, &server_args)?;
    let pid = running.pid().to_string();
    let shards = server.shards.to_string();
    let threads = scenario.load_threads.unwrap_or(options.load_threads).to_string();
    let mut command = Command::new(load);
    command
        .args([
            "run",
            "--quiet",
            "--url",
            &running.url,
            "--pid",
            &pid,
            "--label",
            &server.label,
            "--kind",
            server.kind,
            "--driver",
            server.driver,
        ])
        .args(["--shards", &shards, "--threads", &threads])
        .arg("--json")
        .arg(json)
        .args(&load_args)
        .args(&scenario.common)
        .args(&scenario.args);
    let status = command.status().context("running load")?;
    drop(running);
    if !status.success() {
        bail!("load exited with {status}");
    }
    let report: RunReport = serde_json::from_slice(&std::fs::read(json)?)?;
    Ok(report)
}

/// CI's verdict on a smoke run: the floor measured something; every run
/// connected everything, lost nothing, delivered something; ringcast kept
/// order, saw no duplicates, ran the driver it was started with (when it is
/// epoll: io_uring may be unavailable to CI) and reported its writes.
fn smoke_verdict(outcome: &Outcome<'_>) -> anyhow::Result<()> {
    let mut passed = 0;
    let mut failed = 0;
    let mut check = |ok: bool, what: &str, detail: String| {
        if ok {
            passed += 1;
        } else {
            failed += 1;
            eprintln!("[suite] smoke FAIL {what}: {detail}");
        }
    };
    if !outcome.options.skip_floor {
        let floor_ok = outcome.floor.is_some_and(|f| {
            !f.points.is_empty()
                && f.points
                    .iter()
                    .all(|p| p.writes > 0 && p.sender_cpu_us_per_write > 0.0)
        });
        check(
            floor_ok,
            "floor",
            format!("{:?}", outcome.floor.map(|f| &f.points)),
        );
    }
    for round in outcome.rounds {
        check(
            round.floor.is_some() || outcome.options.skip_floor,
            &format!("{} round {} floor", round.scenario, round.round),
            "no floor".to_owned(),
        );
    }
    let round_reports = outcome.rounds.iter().flat_map(|round| &round.reports);
    for r in outcome.results.iter().chain(round_reports) {
        let server = r.server.as_ref();
        let is_ringcast = server.is_some_and(|s| s.kind == "ringcast");
        let messages = !r.scenario.starts_with("connect");
        let counters = r.server_counters.unwrap_or_default();
        let driver_ok = server.is_none_or(|s| s.driver != "epoll" || s.driver_detected == "epoll");
        let ok = r.setup_failures == 0
            && r.connected == r.connections
            && r.lost == 0
            && r.window_stray == 0
            && (!messages || r.delivered > 0)
            && (!is_ringcast || r.out_of_order == 0)
            && (!is_ringcast || !messages || (counters.writes > 0 && counters.frames_written > 0))
            && driver_ok;
        let label = server.map_or("?", |s| s.label.as_str());
        check(
            ok,
            &format!("{} on {label}", r.scenario),
            format!(
                "connected {}/{}, lost {}, out of order {}, stray {}, delivered {}, server writes {} frames {}, driver {:?} → {:?}",
                r.connected,
                r.connections,
                r.lost,
                r.out_of_order,
                r.window_stray,
                r.delivered,
                counters.writes,
                counters.frames_written,
                server.map(|s| s.driver.as_str()),
                server.map(|s| s.driver_detected.as_str()),
            ),
        );
    }
    failed += outcome.record.problems.len();
    println!("bench smoke: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("smoke run failed");
    }
    Ok(())
}

fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // UTC date from days since the epoch (civil-from-days).
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn publish_latest(root: &Path, folder: &Path) -> anyhow::Result<()> {
    let latest = root.join("latest");
    if latest.exists() {
        std::fs::remove_dir_all(&latest)?;
    }
    std::fs::create_dir_all(&latest)?;
    for entry in std::fs::read_dir(folder)? {
        let path = entry?.path();
        let keep = path
            .extension()
            .is_some_and(|e| e == "md" || e == "svg" || e == "json");
        if keep {
            if let Some(name) = path.file_name() {
                std::fs::copy(&path, latest.join(name))?;
            }
        }
    }
    Ok(())
}

fn label(r: &RunReport) -> String {
    r.server
        .as_ref()
        .map_or_else(|| "?".to_owned(), |s| s.label.clone())
}

fn kind(r: &RunReport) -> &str {
    r.server.as_ref().map_or("?", |s| s.kind.as_str())
}

/// The driver of a ringcast run (`io_uring`, `epoll`); empty for peers.
fn driver(r: &RunReport) -> &str {
    r.server.as_ref().map_or("", |s| s.driver.as_str())
}

fn shards(r: &RunReport) -> u32 {
    r.server.as_ref().map_or(0, |s| s.shards)
}

#[cfg(test)]
mod tests;
