//! The benchmark suite: ringcast at every shard count from 1 to the core
//! count and each peer (Node socket.io, socketioxide), each scenario against
//! a freshly started server, then a markdown table with ringcast/peer ratios
//! and SVG charts in `bench/results/<timestamp>/` (copied to
//! `bench/results/latest/`).
//!
//! Each server is started with `--listen 127.0.0.1:0`, and its port is read
//! from the `... listening on http://IP:PORT/PATH` line it prints. Before a
//! server is measured it must pass [`crate::check`]. Scenarios run in the
//! separate `load` process so the generator's file descriptors, CPU and
//! memory are its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::plot::{self, Series};
use crate::report::{human_bytes, Machine, RunReport};

const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Shard counts for ringcast (default: 1 to the core count).
    #[arg(long, value_delimiter = ',')]
    pub shards: Vec<u32>,
    /// Measure only the peers (to redo a peer after changing it).
    #[arg(long)]
    pub skip_ringcast: bool,
    /// Peers to measure: node, socketioxide (default both; none with --smoke).
    #[arg(long, value_delimiter = ',')]
    pub peers: Option<Vec<String>>,
    /// Scenario runs to do (default: all): fanout-s100, fanout-s1000,
    /// fanout-s10000, rooms, broadcast, connect, latency.
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
}

/// A server the suite can start.
#[derive(Debug, Clone)]
struct ServerSpec {
    label: String,
    kind: &'static str,
    shards: u32,
    command: Vec<String>,
}

/// One scenario invocation of `load`.
#[derive(Debug, Clone)]
struct ScenarioRun {
    id: &'static str,
    /// Arguments after the common ones: the subcommand and its flags.
    args: Vec<String>,
    /// Common flags that differ from the defaults.
    common: Vec<String>,
    /// Only for these server kinds (None: all). Keeps hour-long runs out:
    /// a 10,000-member join storm is 5·10⁷ notifications.
    kinds: Option<&'static [&'static str]>,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn scenario_runs(options: &SuiteOptions) -> Vec<ScenarioRun> {
    let duration = format!("{}", options.duration_s);
    if options.smoke {
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
        return vec![
            ScenarioRun {
                id: "fanout-s50",
                args: strings(&["fanout", "--subscribers", "50", "--rate", "50"]),
                common: common.clone(),
                kinds: None,
            },
            ScenarioRun {
                id: "rooms",
                args: strings(&[
                    "rooms",
                    "--channels",
                    "20",
                    "--members",
                    "5",
                    "--rate-per-member",
                    "5",
                ]),
                common: common.clone(),
                kinds: None,
            },
            ScenarioRun {
                id: "broadcast",
                args: strings(&["broadcast", "--connections", "50", "--rate", "20"]),
                common: common.clone(),
                kinds: None,
            },
            ScenarioRun {
                id: "connect",
                args: strings(&["connect", "--connections", "500", "--hold-s", "1"]),
                common: common.clone(),
                kinds: None,
            },
            ScenarioRun {
                id: "latency",
                args: strings(&[
                    "latency",
                    "--subscribers",
                    "20",
                    "--publishers",
                    "2",
                    "--rate",
                    "200",
                ]),
                common,
                kinds: None,
            },
        ];
    }
    let common = strings(&["--duration-s", &duration, "--warmup-s", "1"]);
    let connect_n = options.connect_n.to_string();
    vec![
        ScenarioRun {
            id: "fanout-s100",
            args: strings(&[
                "fanout",
                "--subscribers",
                "100",
                "--publishers",
                "1",
                "--rate",
                "500",
            ]),
            common: common.clone(),
            kinds: None,
        },
        ScenarioRun {
            id: "fanout-s1000",
            args: strings(&[
                "fanout",
                "--subscribers",
                "1000",
                "--publishers",
                "1",
                "--rate",
                "100",
            ]),
            common: common.clone(),
            kinds: None,
        },
        ScenarioRun {
            id: "fanout-s10000",
            args: strings(&[
                "fanout",
                "--subscribers",
                "10000",
                "--publishers",
                "1",
                "--rate",
                "10",
            ]),
            common: [
                common.clone(),
                strings(&["--settle-timeout-s", "120", "--setup-timeout-s", "240"]),
            ]
            .concat(),
            kinds: Some(&["ringcast"]),
        },
        ScenarioRun {
            id: "rooms",
            args: strings(&[
                "rooms",
                "--channels",
                "1000",
                "--members",
                "10",
                "--rate-per-member",
                "1",
            ]),
            common: common.clone(),
            kinds: None,
        },
        ScenarioRun {
            id: "broadcast",
            args: strings(&[
                "broadcast",
                "--connections",
                "1000",
                "--publishers",
                "1",
                "--rate",
                "50",
            ]),
            common: common.clone(),
            kinds: None,
        },
        ScenarioRun {
            id: "connect",
            args: strings(&["connect", "--connections", &connect_n, "--hold-s", "5"]),
            common: strings(&["--setup-timeout-s", "180"]),
            kinds: None,
        },
        ScenarioRun {
            id: "latency",
            args: strings(&[
                "latency",
                "--subscribers",
                "100",
                "--publishers",
                "10",
                "--rate",
                "100",
            ]),
            common,
            kinds: None,
        },
    ]
}

fn servers(options: &SuiteOptions, cores: u32) -> Vec<ServerSpec> {
    let shard_counts: Vec<u32> = if options.skip_ringcast {
        Vec::new()
    } else if !options.shards.is_empty() {
        options.shards.clone()
    } else if options.smoke {
        vec![1]
    } else {
        (1..=cores).collect()
    };
    let mut list: Vec<ServerSpec> = shard_counts
        .iter()
        .map(|&n| ServerSpec {
            label: format!("ringcast-s{n}"),
            kind: "ringcast",
            shards: n,
            command: vec![
                options.ringcast.display().to_string(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--shards".into(),
                n.to_string(),
            ],
        })
        .collect();
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
                command: vec![
                    "node".into(),
                    options.node_peer.display().to_string(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                ],
            }),
            "socketioxide" => {
                // Worker threads are socketioxide's "shard count".
                for n in 1..=cores {
                    list.push(ServerSpec {
                        label: format!("socketioxide-t{n}"),
                        kind: "socketioxide",
                        shards: n,
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
    list
}

/// A started server; stopped on drop.
struct RunningServer {
    child: Child,
    url: String,
}

impl RunningServer {
    fn start(spec: &ServerSpec) -> anyhow::Result<Self> {
        let mut child = Command::new(&spec.command[0])
            .args(&spec.command[1..])
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
                if let Some(at) = line.find("listening on http://") {
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

fn load_binary(options: &SuiteOptions) -> anyhow::Result<PathBuf> {
    if let Some(path) = &options.load {
        return Ok(path.clone());
    }
    let me = std::env::current_exe()?;
    Ok(me.with_file_name("load"))
}

/// Runs the whole suite; returns the results folder.
pub fn run(options: &SuiteOptions) -> anyhow::Result<PathBuf> {
    let machine = Machine::detect();
    let cores = machine.cores as u32;
    let load = load_binary(options)?;
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
    let scenarios: Vec<ScenarioRun> = match &options.scenarios {
        Some(wanted) => scenarios
            .into_iter()
            .filter(|s| wanted.iter().any(|w| w == s.id))
            .collect(),
        None => scenarios,
    };
    let servers = servers(options, cores);
    eprintln!("[suite] results in {}", folder.display());
    eprintln!(
        "[suite] load average before: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );

    let mut results: Vec<RunReport> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    for server in &servers {
        // The check runs on its own server instance so it leaves no trace in
        // the measured ones (RSS baseline, channels).
        let checked = RunningServer::start(server).and_then(|running| {
            let status = Command::new(&load)
                .args(["check", "--url", &running.url])
                .status()?;
            if !status.success() {
                bail!("{} failed the join/message check", server.label);
            }
            Ok(())
        });
        if let Err(error) = checked {
            eprintln!("[suite] {}: {error:#}; not measured", server.label);
            problems.push(format!("{}: {error:#}", server.label));
            continue;
        }
        for scenario in &scenarios {
            if let Some(kinds) = scenario.kinds {
                if !kinds.contains(&server.kind) {
                    continue;
                }
            }
            let json = runs_folder.join(format!("{}--{}.json", scenario.id, server.label));
            let busy = wait_for_quiet(options);
            eprintln!(
                "[suite] {} / {} (machine {:.0}% busy before)",
                server.label,
                scenario.id,
                busy * 100.0
            );
            match run_one(&load, server, scenario, &json, options) {
                Ok(mut report) => {
                    // The suite's scenario id (fanout-s1000) is more precise
                    // than the load scenario name (fanout).
                    report.scenario = scenario.id.to_owned();
                    report.machine_busy_before = busy;
                    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
                    results.push(report);
                }
                Err(error) => {
                    eprintln!("[suite] {} / {}: {error:#}", server.label, scenario.id);
                    problems.push(format!("{} / {}: {error:#}", server.label, scenario.id));
                }
            }
        }
    }

    std::fs::write(folder.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    let scenario_ids: Vec<&str> = scenarios.iter().map(|s| s.id).collect();
    let markdown = summary_markdown(&results, &scenario_ids, &machine, options, &problems);
    std::fs::write(folder.join("results.md"), &markdown)?;
    charts(&folder, &results, &scenario_ids)?;
    println!("{markdown}");
    publish_latest(&out, &folder)?;
    if results.is_empty() {
        bail!("no scenario produced a result");
    }
    if options.smoke {
        smoke_verdict(&results, &problems)?;
    }
    Ok(folder)
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
) -> anyhow::Result<RunReport> {
    let running = RunningServer::start(server)?;
    let pid = running.pid().to_string();
    let shards = server.shards.to_string();
    let threads = options.load_threads.to_string();
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
        ])
        .args(["--shards", &shards, "--threads", &threads])
        .arg("--json")
        .arg(json)
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

/// CI's verdict on a smoke run: everything connected, nothing lost.
fn smoke_verdict(results: &[RunReport], problems: &[String]) -> anyhow::Result<()> {
    let mut passed = 0;
    let mut failed = 0;
    for r in results {
        let ok = r.setup_failures == 0
            && r.connected == r.connections
            && r.lost == 0
            && (r.scenario == "connect" || r.delivered > 0);
        if ok {
            passed += 1;
        } else {
            failed += 1;
            eprintln!(
                "[suite] smoke FAIL {}: connected {}/{}, lost {}, delivered {}",
                r.scenario, r.connected, r.connections, r.lost, r.delivered
            );
        }
    }
    failed += problems.len();
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

/// The best (most deliveries per server CPU-second) result of a kind in a scenario.
fn best<'a>(results: &'a [RunReport], scenario: &str, kind_name: &str) -> Option<&'a RunReport> {
    results
        .iter()
        .filter(|r| r.scenario == scenario && kind(r) == kind_name)
        .max_by(|a, b| {
            a.deliveries_per_server_cpu_s
                .total_cmp(&b.deliveries_per_server_cpu_s)
        })
}

/// The lowest-RSS-per-connection result of a kind in the connect scenario.
fn leanest<'a>(results: &'a [RunReport], kind_name: &str) -> Option<&'a RunReport> {
    results
        .iter()
        .filter(|r| r.scenario == "connect" && kind(r) == kind_name && r.connected > 0)
        .min_by(|a, b| {
            a.server_rss_per_connection_bytes
                .total_cmp(&b.server_rss_per_connection_bytes)
        })
}

fn summary_markdown(
    results: &[RunReport],
    scenarios: &[&str],
    machine: &Machine,
    options: &SuiteOptions,
    problems: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# ringcast benchmark results\n");
    let _ = writeln!(
        out,
        "Machine: {} ({} cores, {} MiB), kernel {}, commit {}, RLIMIT_NOFILE {}.",
        machine.cpu_model,
        machine.cores,
        machine.memory_kib / 1024,
        machine.kernel,
        machine.commit,
        machine.nofile_limit
    );
    let _ = writeln!(
        out,
        "Generator: `load`, {} thread(s), same machine (it shares the cores with the server; its CPU is listed).",
        options.load_threads
    );
    let _ = writeln!(
        out,
        "Reproduce: `bench/run.sh{}`.\n",
        if options.smoke { " --smoke" } else { "" }
    );

    let _ = writeln!(
        out,
        "## Ratios (best ringcast shard count vs best peer configuration)\n"
    );
    let _ = writeln!(
        out,
        "| scenario | metric | ringcast | peer | value | ratio |\n|---|---|---|---|---|---|"
    );
    for scenario in scenarios.iter().filter(|s| **s != "connect") {
        let Some(rc) = best(results, scenario, "ringcast") else {
            continue;
        };
        for peer in ["node-socket.io", "socketioxide"] {
            let Some(p) = best(results, scenario, peer) else {
                continue;
            };
            let ratio = if p.deliveries_per_server_cpu_s > 0.0 {
                rc.deliveries_per_server_cpu_s / p.deliveries_per_server_cpu_s
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "| {scenario} | deliveries per server CPU-s | {} | {} | {} vs {} | **{ratio:.1}×** |",
                label(rc),
                label(p),
                plot::short_number(rc.deliveries_per_server_cpu_s),
                plot::short_number(p.deliveries_per_server_cpu_s)
            );
        }
    }
    if let Some(rc) = leanest(results, "ringcast") {
        for peer in ["node-socket.io", "socketioxide"] {
            let Some(p) = leanest(results, peer) else { continue };
            let ratio = if rc.server_rss_per_connection_bytes > 0.0 {
                p.server_rss_per_connection_bytes / rc.server_rss_per_connection_bytes
            } else {
                0.0
            };
            let _ = writeln!(
                out,
                "| connect ({} conns) | RSS per idle connection (peer ÷ ringcast) | {} | {} | {:.0} B vs {:.0} B | **{ratio:.1}×** |",
                rc.connected,
                label(rc),
                label(p),
                rc.server_rss_per_connection_bytes,
                p.server_rss_per_connection_bytes
            );
        }
    }

    for scenario in scenarios {
        let rows: Vec<&RunReport> = results.iter().filter(|r| r.scenario == *scenario).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n## {scenario}\n");
        if let Some(first) = rows.first() {
            let _ = writeln!(out, "Settings: `{}`\n", scenario_settings(first));
        }
        if *scenario == "connect" {
            let _ = writeln!(
                out,
                "| server | connected | failed | connects/s | handshake p50 / p99 ms | RSS before → after | RSS per connection | idle CPU s |\n|---|---|---|---|---|---|---|---|"
            );
            for r in rows {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {:.1} / {:.1} | {} → {} | {:.0} B | {:.2} |",
                    label(r),
                    r.connected,
                    r.setup_failures,
                    r.connects_per_s,
                    r.handshake_us.p50 / 1e3,
                    r.handshake_us.p99 / 1e3,
                    human_bytes(r.server_rss_before_bytes),
                    human_bytes(r.server_rss_after_bytes),
                    r.server_rss_per_connection_bytes,
                    r.server_cpu_s
                );
            }
            continue;
        }
        let _ = writeln!(
            out,
            "| server | deliveries/s | server CPU s | CPU µs/delivery | deliveries per CPU-s | lost | out of order | p50 / p99 / p999 ms | RSS/conn | gen CPU cores | machine busy before |\n|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.2} | {:.3} | {} | {} | {} | {:.2} / {:.2} / {:.2} | {:.0} B | {:.2} | {:.0}% |",
                label(r),
                plot::short_number(r.deliveries_per_s),
                r.server_cpu_s,
                r.server_cpu_us_per_delivery,
                plot::short_number(r.deliveries_per_server_cpu_s),
                r.lost,
                r.out_of_order,
                r.latency_us.p50 / 1e3,
                r.latency_us.p99 / 1e3,
                r.latency_us.p999 / 1e3,
                r.server_rss_per_connection_bytes,
                r.generator_cpu_cores,
                r.machine_busy_before * 100.0
            );
        }
    }
    if !problems.is_empty() {
        let _ = writeln!(out, "\n## Problems\n");
        for problem in problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    let _ = writeln!(out, "\nCharts: `efficiency.svg`, `throughput.svg`, `latency.svg`, `memory.svg`, `shards.svg` in this folder.");
    out
}

/// The scenario's own flags as `load` got them, for the table headers.
fn scenario_settings(report: &RunReport) -> String {
    let scenario = &report.settings["scenario"];
    let Some(object) = scenario.as_object() else {
        return String::new();
    };
    let mut parts = Vec::new();
    for (name, fields) in object {
        parts.push(name.to_lowercase());
        if let Some(fields) = fields.as_object() {
            for (key, value) in fields {
                parts.push(format!("{key}={value}"));
            }
        }
    }
    let common = &report.settings["common"];
    for key in ["duration_s", "warmup_s", "payload_bytes", "threads"] {
        if let Some(value) = common.get(key) {
            parts.push(format!("{key}={value}"));
        }
    }
    parts.join(" ")
}

fn charts(folder: &Path, results: &[RunReport], scenarios: &[&str]) -> anyhow::Result<()> {
    let message_scenarios: Vec<String> = scenarios
        .iter()
        .filter(|s| **s != "connect")
        .map(|s| (*s).to_owned())
        .collect();
    let mut labels: Vec<String> = Vec::new();
    for r in results {
        if !labels.contains(&label(r)) {
            labels.push(label(r));
        }
    }
    let lookup: BTreeMap<(String, String), &RunReport> = results
        .iter()
        .map(|r| ((r.scenario.clone(), label(r)), r))
        .collect();
    let series_of = |metric: &dyn Fn(&RunReport) -> f64| -> Vec<Series> {
        labels
            .iter()
            .map(|l| Series {
                name: l.clone(),
                values: message_scenarios
                    .iter()
                    .map(|s| lookup.get(&(s.clone(), l.clone())).map_or(0.0, |r| metric(r)))
                    .collect(),
            })
            .collect()
    };
    if !message_scenarios.is_empty() {
        plot::grouped_bars(
            &folder.join("efficiency.svg"),
            "Deliveries per server CPU-second (higher is better)",
            "deliveries / CPU-s",
            &message_scenarios,
            &series_of(&|r| r.deliveries_per_server_cpu_s),
            true,
        )?;
        plot::grouped_bars(
            &folder.join("throughput.svg"),
            "Deliveries per second at the offered load",
            "deliveries / s",
            &message_scenarios,
            &series_of(&|r| r.deliveries_per_s),
            true,
        )?;
        // Latency: p50 / p99 / p999 per server for the latency scenario (or
        // the first message scenario).
        let focus = if message_scenarios.iter().any(|s| s == "latency") {
            "latency".to_owned()
        } else {
            message_scenarios[0].clone()
        };
        let percentiles = ["p50", "p99", "p999"].map(String::from);
        let latency_series: Vec<Series> = labels
            .iter()
            .filter_map(|l| lookup.get(&(focus.clone(), l.clone())).map(|r| (l, r)))
            .map(|(l, r)| Series {
                name: l.clone(),
                values: vec![
                    r.latency_us.p50 / 1e3,
                    r.latency_us.p99 / 1e3,
                    r.latency_us.p999 / 1e3,
                ],
            })
            .collect();
        plot::grouped_bars(
            &folder.join("latency.svg"),
            &format!("Latency percentiles, {focus} scenario (ms)"),
            "ms",
            &percentiles,
            &latency_series,
            true,
        )?;
    }
    let connect: Vec<&RunReport> = results.iter().filter(|r| r.scenario == "connect").collect();
    if !connect.is_empty() {
        let groups: Vec<String> = connect.iter().map(|r| label(r)).collect();
        let series = vec![Series {
            name: "RSS bytes per idle connection".into(),
            values: connect
                .iter()
                .map(|r| r.server_rss_per_connection_bytes.max(0.0))
                .collect(),
        }];
        let n = connect.iter().map(|r| r.connected).max().unwrap_or(0);
        plot::grouped_bars(
            &folder.join("memory.svg"),
            &format!("Server RSS per idle connection at {n} connections (lower is better)"),
            "bytes",
            &groups,
            &series,
            true,
        )?;
    }
    // ringcast across shard counts.
    let mut shard_counts: Vec<u32> = results
        .iter()
        .filter(|r| kind(r) == "ringcast")
        .filter_map(|r| r.server.as_ref().map(|s| s.shards))
        .collect();
    shard_counts.sort_unstable();
    shard_counts.dedup();
    if !shard_counts.is_empty() && !message_scenarios.is_empty() {
        let series: Vec<Series> = message_scenarios
            .iter()
            .map(|s| Series {
                name: s.clone(),
                values: shard_counts
                    .iter()
                    .map(|n| {
                        results
                            .iter()
                            .find(|r| {
                                &r.scenario == s
                                    && kind(r) == "ringcast"
                                    && r.server.as_ref().is_some_and(|x| x.shards == *n)
                            })
                            .map_or(0.0, |r| r.server_cpu_us_per_delivery)
                    })
                    .collect(),
            })
            .collect();
        plot::lines(
            &folder.join("shards.svg"),
            "ringcast: server CPU µs per delivery vs shard count (lower is better)",
            "shards",
            "CPU µs / delivery",
            &shard_counts,
            &series,
        )?;
    }
    Ok(())
}
