//! `results.md`: the machine and the command that reproduces the run, the
//! physical floor, ringcast/peer ratios from this run, then one table per
//! scenario: saturated (closed-loop) runs first, fixed-rate runs, connect.

use std::fmt::Write as _;

use super::{driver, kind, label, shards, Mode, Outcome};
use crate::floor::FloorReport;
use crate::plot::short_number;
use crate::report::{human_bytes, RunReport};

/// Frames per write the "× floor at 16" column is read at: what a server
/// that coalesces well reaches (ringcast's epoll driver packs 10–15).
pub(super) const FLOOR_REFERENCE_FRAMES: f64 = 16.0;

const PEERS: [(&str, &str); 2] = [("node-socket.io", "node"), ("socketioxide", "socketioxide")];

pub(super) fn markdown(o: &Outcome<'_>) -> String {
    let mut out = String::new();
    header(&mut out, o);
    floor_section(&mut out, o.floor);
    ratios(&mut out, o);
    rounds_section(&mut out, o);
    tls_cost(&mut out, o);
    for (mode, title, blurb) in [
        (
            Mode::Saturated,
            "Saturated (closed loop)",
            "Each publisher keeps `window` messages in flight and sends the next as soon as one has reached all its recipients: deliveries/s is the most the server delivers here (it shares the cores with the generator).",
        ),
        (
            Mode::FixedRate,
            "Fixed rate",
            "A fixed send schedule: CPU per delivery and latency at that offered load. \
             At a moderate rate every delivery is a write of its own, and a message reaches its recipients one write after another: \
             `p99 floor` is the least time in which the kernel's loopback work alone lets the 99th-percentile recipient of one message read it, \
             on any server (the physical floor's sender + receiver CPU per frame at one frame per write, at the nearest connection count, \
             times 99% of the recipients, over the machine's cores, which server and generator share).",
        ),
        (
            Mode::Connect,
            "Connections",
            "Connections opened as fast as possible (256 handshakes in flight per generator thread), then held idle. \
             `floor-handshake` is the connect floor: `floor --serve-handshakes`, a one-thread epoll server that does only the upgrade (with its accept key), \
             the Engine.IO open and the Socket.IO connect answer, so every handshake costs it no more than the kernel's accept and loopback TCP work; \
             the generator's CPU per handshake is the client side of the same handshakes, on the same two cores.",
        ),
    ] {
        let ids: Vec<&str> = o
            .scenarios
            .iter()
            .filter(|s| s.mode == mode)
            .map(|s| s.id.as_str())
            .filter(|id| o.results.iter().any(|r| r.scenario == *id))
            .collect();
        if ids.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n## {title}\n\n{blurb}");
        for id in ids {
            let rows: Vec<&RunReport> = o.results.iter().filter(|r| r.scenario == id).collect();
            let _ = writeln!(out, "\n### {id}\n");
            if let Some(first) = rows.first() {
                let _ = writeln!(out, "Settings: `{}`\n", scenario_settings(first));
            }
            match mode {
                Mode::Saturated => {
                    let own = o.scenario_floors.get(id);
                    saturated_table(&mut out, &rows, own.or(o.floor));
                    if let Some(floor) = own {
                        scenario_floor_line(&mut out, floor);
                    }
                }
                Mode::FixedRate => fixed_rate_table(&mut out, &rows, o.floor),
                Mode::Connect => connect_table(&mut out, &rows),
            }
        }
    }
    if !o.record.problems.is_empty() {
        let _ = writeln!(out, "\n## Problems\n");
        for problem in &o.record.problems {
            let _ = writeln!(out, "- {problem}");
        }
    }
    let _ = writeln!(
        out,
        "\nCharts: `efficiency.svg`, `throughput.svg`, `latency.svg`, `memory.svg`, `shards.svg` in this folder."
    );
    out
}

/// With `--rounds`: each ringcast server's CPU per delivery against the
/// floor measured right after it, round by round, and the median and range
/// over the rounds (round 1 is the scenario's table).
fn rounds_section(out: &mut String, o: &Outcome<'_>) {
    let mut ids: Vec<&str> = o.rounds.iter().map(|r| r.scenario.as_str()).collect();
    ids.dedup();
    if ids.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## Against the floor, round by round\n");
    let _ = writeln!(
        out,
        "One run and one floor each vary by ±20% on a shared VM, so a multiple of the floor from one pair is not a figure to hold a server to. \
         Here each ringcast server ran the scenario again, round after round, each round followed by the floor at the scenario's connection count \
         (round 1 is the scenario's table below). `× floor` divides the server's CPU per delivery by the floor's sender CPU per frame \
         at {FLOOR_REFERENCE_FRAMES:.0} frames per write, measured right after it."
    );
    for id in ids {
        let _ = writeln!(
            out,
            "\n### {id}\n\n| server | driver | rounds | server CPU µs/delivery: median (range) | frames/write: median | floor µs/frame at {FLOOR_REFERENCE_FRAMES:.0}: median (range) | × floor: median (range) | × floor, round by round |\n|---|---|---|---|---|---|---|---|"
        );
        let first_floor = o.scenario_floors.get(id);
        let mut labels: Vec<String> = o
            .results
            .iter()
            .filter(|r| r.scenario == id && kind(r) == "ringcast")
            .map(label)
            .collect();
        for round in o.rounds.iter().filter(|r| r.scenario == id) {
            for r in &round.reports {
                if !labels.contains(&label(r)) {
                    labels.push(label(r));
                }
            }
        }
        // (shards, driver, median µs per delivery) of each server.
        let mut medians: Vec<(u32, String, f64)> = Vec::new();
        for wanted in &labels {
            // (server µs/delivery, frames/write, floor µs/frame) per round.
            let mut samples: Vec<(f64, f64, Option<f64>)> = Vec::new();
            let mut shown: Option<&RunReport> = None;
            let first = o
                .results
                .iter()
                .find(|r| r.scenario == id && label(r) == *wanted)
                .map(|r| (r, first_floor));
            let later = o
                .rounds
                .iter()
                .filter(|round| round.scenario == id)
                .filter_map(|round| {
                    let r = round.reports.iter().find(|r| label(r) == *wanted)?;
                    Some((r, round.floor.as_ref()))
                });
            for (r, floor) in first.into_iter().chain(later) {
                shown = shown.or(Some(r));
                let floor = floor.and_then(|f| f.us_per_frame_at(r.connections, FLOOR_REFERENCE_FRAMES));
                samples.push((r.server_cpu_us_per_delivery, r.frames_per_write, floor));
            }
            let Some(shown) = shown else { continue };
            let us: Vec<f64> = samples.iter().map(|s| s.0).collect();
            let fpw: Vec<f64> = samples.iter().map(|s| s.1).collect();
            let floors: Vec<f64> = samples.iter().filter_map(|s| s.2).collect();
            let multiples: Vec<Option<f64>> = samples
                .iter()
                .map(|&(us, _, floor)| floor.filter(|f| *f > 0.0 && us > 0.0).map(|f| us / f))
                .collect();
            let known_multiples: Vec<f64> = multiples.iter().flatten().copied().collect();
            if let Some(mid) = median(&us) {
                medians.push((shards(shown), driver(shown).to_owned(), mid));
            }
            let each: Vec<String> = multiples
                .iter()
                .map(|m| m.map_or_else(|| "—".to_owned(), |m| format!("{m:.2}")))
                .collect();
            let _ = writeln!(
                out,
                "| {wanted} | {} | {} | {} | {} | {} | {} | {} |",
                driver_cell(shown),
                samples.len(),
                spread(&us, 3, ""),
                median(&fpw).map_or_else(|| "—".to_owned(), |m| format!("{m:.1}")),
                spread(&floors, 3, ""),
                spread(&known_multiples, 2, "×"),
                each.join(", ")
            );
        }
        let pairs: Vec<String> = medians
            .iter()
            .filter(|(_, driver, _)| driver == "io_uring")
            .filter_map(|(n, _, uring)| {
                let (_, _, epoll) = medians.iter().find(|(m, d, _)| m == n && d == "epoll")?;
                (*epoll > 0.0).then(|| {
                    format!(
                        "{:.2} at {n} shard{}",
                        uring / epoll,
                        if *n == 1 { "" } else { "s" }
                    )
                })
            })
            .collect();
        if !pairs.is_empty() {
            let _ = writeln!(
                out,
                "\nio_uring ÷ epoll, median CPU per delivery over the rounds: {}.",
                pairs.join(", ")
            );
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

/// `median (min–max)` with `decimals` and `unit`; `—` when empty.
fn spread(values: &[f64], decimals: usize, unit: &str) -> String {
    let Some(mid) = median(values) else {
        return "—".to_owned();
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 {
        return format!("{mid:.decimals$}{unit}");
    }
    format!("{mid:.decimals$}{unit} ({min:.decimals$}–{max:.decimals$})")
}

/// Each TLS run beside the same scenario without TLS on the same server
/// (`fanout-tls-s1000-w16` beside `fanout-s1000-w16`): what TLS costs per
/// delivery, per connection set up, per idle connection.
fn tls_cost(out: &mut String, o: &Outcome<'_>) {
    let pairs: Vec<(&RunReport, &RunReport)> = o
        .results
        .iter()
        .filter(|r| r.tls)
        .filter_map(|tls| {
            let plain_id = tls.scenario.replacen("-tls", "", 1);
            let plain = o
                .results
                .iter()
                .find(|r| !r.tls && r.scenario == plain_id && label(r) == label(tls))?;
            Some((plain, tls))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n## The cost of TLS (this run)\n");
    let _ = writeln!(
        out,
        "Each TLS run beside the same scenario in plain TCP on the same server. \
         TLS is rustls (ring) on the server and in the generator (whose CPU shares the machine). \
         Per delivery, each TLS connection seals its own copy of a shared frame: zero-copy broadcast ends at the TLS layer.\n"
    );
    let _ = writeln!(
        out,
        "| scenario | server | µs/delivery plain → TLS | deliveries/s plain → TLS | frames/write plain → TLS | setup µs/conn plain → TLS | handshake p50 µs plain → TLS | RSS/conn plain → TLS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for (plain, tls) in pairs {
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} → {:.3} | {} → {} | {:.2} → {:.2} | {:.0} → {:.0} | {:.0} → {:.0} | {:.0} B → {:.0} B |",
            plain.scenario,
            label(tls),
            plain.server_cpu_us_per_delivery,
            tls.server_cpu_us_per_delivery,
            short_number(plain.deliveries_per_s),
            short_number(tls.deliveries_per_s),
            plain.frames_per_write,
            tls.frames_per_write,
            plain.server_cpu_us_per_connection,
            tls.server_cpu_us_per_connection,
            plain.handshake_us.p50,
            tls.handshake_us.p50,
            plain.server_rss_per_connection_bytes,
            tls.server_rss_per_connection_bytes,
        );
    }
}

fn header(out: &mut String, o: &Outcome<'_>) {
    let m = o.machine;
    let _ = writeln!(out, "# ringcast benchmark results\n");
    let _ = writeln!(
        out,
        "Machine: {} ({} cores, {} MiB), kernel {}, commit {}, RLIMIT_NOFILE {}.",
        m.cpu_model,
        m.cores,
        m.memory_kib / 1024,
        m.kernel,
        m.commit,
        m.nofile_limit
    );
    let _ = writeln!(
        out,
        "Generator: `load`, {} thread(s), same machine (it shares the cores with the server; its CPU is in every row).",
        o.options.load_threads
    );
    let _ = writeln!(out, "Reproduce: `{}`\n", o.record.command);
    let _ = writeln!(
        out,
        "How to read: `server CPU µs/delivery` is the server's CPU (all threads, user + system) over the window ÷ deliveries; \
         `frames/write` and `writes/s` are ringcast's own counters (`/metrics`) over the window; \
         `× floor` divides the CPU per delivery by the physical floor's sender CPU per frame, measured right after the scenario's runs at its connection count (else the floor section's, at the nearest count), \
         once at the frames per write the server reached and once at {FLOOR_REFERENCE_FRAMES:.0} frames per write \
         (what good coalescing reaches); `gen CPU` is the load generator's, in cores. \
         On loopback the receiving side's TCP work is charged to the sender, so every server's CPU includes it, and so does the floor's."
    );
}

fn floor_section(out: &mut String, floor: Option<&FloorReport>) {
    let _ = writeln!(out, "\n## The physical floor\n");
    let Some(floor) = floor else {
        let _ = writeln!(out, "Not measured in this run.");
        return;
    };
    let _ = writeln!(
        out,
        "`floor`: one thread writes K frames of {} bytes to each of N loopback TCP connections in one `write` per connection per round, \
         another drains them with epoll; CPU per thread from `CLOCK_THREAD_CPUTIME_ID`; each point is the cheapest of {} repetitions of {} s \
         (interference only adds cost to a floor). \
         It is what the kernel charges a sender that does nothing but write. \
         A write costs more the more connections are written round-robin (more kernel state touched per round), \
         so each row below is compared with the floor at the measured N nearest its own connection count.\n",
        floor.frame_bytes,
        floor.repeats.max(1),
        floor.duration_s
    );
    out.push_str(&floor.markdown());
}

/// The best ringcast row of a driver, or the best row of a peer kind, by `key`.
fn best_of<'a>(
    rows: &[&'a RunReport],
    kind_name: &str,
    driver_name: Option<&str>,
    key: impl Fn(&RunReport) -> f64,
    lower_is_better: bool,
) -> Option<&'a RunReport> {
    rows.iter()
        .copied()
        .filter(|r| kind(r) == kind_name && driver_name.is_none_or(|d| driver(r) == d))
        .filter(|r| key(r) > 0.0)
        .max_by(|a, b| {
            let order = key(a).total_cmp(&key(b));
            if lower_is_better {
                order.reverse()
            } else {
                order
            }
        })
}

struct Metric {
    name: &'static str,
    key: fn(&RunReport) -> f64,
    lower_is_better: bool,
    format: fn(f64) -> String,
}

fn ratios(out: &mut String, o: &Outcome<'_>) {
    let _ = writeln!(out, "\n## Ratios (this run)\n");
    let _ = writeln!(
        out,
        "Each cell is the best configuration of that server in this run (shard count or worker threads in brackets); \
         a ratio above 1 means ringcast is better (for lower-is-better metrics it is peer ÷ ringcast); \
         `io_uring vs epoll` compares ringcast's two drivers the same way (below 1: the default io_uring driver does worse).\n"
    );
    let _ = writeln!(
        out,
        "| scenario | metric | ringcast io_uring | ringcast epoll | node | socketioxide | io_uring vs epoll | io_uring vs node | epoll vs node | io_uring vs socketioxide | epoll vs socketioxide |\n|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let throughput = Metric {
        name: "deliveries/s",
        key: |r| r.deliveries_per_s,
        lower_is_better: false,
        format: short_number,
    };
    let efficiency = Metric {
        name: "deliveries per server CPU-s",
        key: |r| r.deliveries_per_server_cpu_s,
        lower_is_better: false,
        format: short_number,
    };
    let p99 = Metric {
        name: "p99 latency ms",
        key: |r| r.latency_us.p99 / 1e3,
        lower_is_better: true,
        format: |v| format!("{v:.2}"),
    };
    let rss = Metric {
        name: "RSS per idle connection",
        key: |r| r.server_rss_per_connection_bytes,
        lower_is_better: true,
        format: |v| format!("{v:.0} B"),
    };
    let handshakes = Metric {
        name: "handshakes/s",
        key: |r| r.connects_per_s,
        lower_is_better: false,
        format: short_number,
    };
    for scenario in o.scenarios {
        let rows: Vec<&RunReport> = o.results.iter().filter(|r| r.scenario == scenario.id).collect();
        if rows.is_empty() {
            continue;
        }
        let metrics: Vec<&Metric> = match scenario.mode {
            Mode::Saturated => vec![&throughput, &efficiency],
            Mode::FixedRate if scenario.id == "fanout-s1000-r50" || scenario.id == "latency" => {
                vec![&efficiency, &p99]
            }
            Mode::FixedRate => vec![&efficiency],
            Mode::Connect => vec![&rss, &handshakes],
        };
        for metric in metrics {
            ratio_row(out, &scenario.id, metric, &rows);
        }
    }
}

fn ratio_row(out: &mut String, scenario: &str, metric: &Metric, rows: &[&RunReport]) {
    let pick = |kind_name: &str, driver_name: Option<&str>| {
        best_of(rows, kind_name, driver_name, metric.key, metric.lower_is_better)
    };
    let uring = pick("ringcast", Some("io_uring"));
    let epoll = pick("ringcast", Some("epoll"));
    let peers: Vec<Option<&RunReport>> = PEERS.iter().map(|(k, _)| pick(k, None)).collect();
    if uring.is_none() && epoll.is_none() {
        return;
    }
    let cell = |r: Option<&RunReport>| {
        r.map_or_else(
            || "—".to_owned(),
            |r| format!("{} ({})", (metric.format)((metric.key)(r)), shards(r)),
        )
    };
    let ratio = |ours: Option<&RunReport>, theirs: Option<&RunReport>| match (ours, theirs) {
        (Some(a), Some(b)) => {
            let (a, b) = ((metric.key)(a), (metric.key)(b));
            let value = if metric.lower_is_better { b / a } else { a / b };
            format!("**{value:.1}×**")
        }
        _ => "—".to_owned(),
    };
    let _ = writeln!(
        out,
        "| {scenario} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        metric.name,
        if metric.lower_is_better {
            " (lower is better)"
        } else {
            ""
        },
        cell(uring),
        cell(epoll),
        cell(peers[0]),
        cell(peers[1]),
        ratio(uring, epoll),
        ratio(uring, peers[0]),
        ratio(epoll, peers[0]),
        ratio(uring, peers[1]),
        ratio(epoll, peers[1]),
    );
}

/// `io_uring`, `epoll` (with a warning if the process runs another), or `—`.
fn driver_cell(r: &RunReport) -> String {
    let Some(server) = r.server.as_ref() else {
        return "—".to_owned();
    };
    match (server.driver.as_str(), server.driver_detected.as_str()) {
        ("", _) => "—".to_owned(),
        (asked, seen) if seen.is_empty() || asked == seen => asked.to_owned(),
        (asked, seen) => format!("{asked} (runs {seen}!)"),
    }
}

fn multiple(value: f64, of: Option<f64>) -> String {
    match of {
        Some(floor) if floor > 0.0 && value > 0.0 => format!("{:.1}×", value / floor),
        _ => "—".to_owned(),
    }
}

fn known(value: f64, format: impl Fn(f64) -> String) -> String {
    if value > 0.0 {
        format(value)
    } else {
        "—".to_owned()
    }
}

fn cores(r: &RunReport) -> f64 {
    if r.window_s > 0.0 {
        r.server_cpu_s / r.window_s
    } else {
        0.0
    }
}

/// The floor measured right after a scenario's runs, which its multiples
/// divide by: sender µs per frame at each measured frames per write.
fn scenario_floor_line(out: &mut String, floor: &FloorReport) {
    let points: Vec<String> = floor
        .points
        .iter()
        .map(|p| {
            format!(
                "{:.3} µs at {} frame{}/write",
                p.sender_cpu_us_per_frame,
                p.frames_per_write,
                if p.frames_per_write == 1 { "" } else { "s" }
            )
        })
        .collect();
    let connections = floor.points.first().map_or(0, |p| p.connections);
    let _ = writeln!(
        out,
        "\nThe `× floor` columns divide by the floor measured right after these runs, at {connections} connections: {}.",
        points.join(", ")
    );
}

fn saturated_table(out: &mut String, rows: &[&RunReport], floor: Option<&FloorReport>) {
    let _ = writeln!(
        out,
        "| server | driver | deliveries/s | server CPU µs/delivery | × floor at its frames/write | × floor at {FLOOR_REFERENCE_FRAMES:.0} frames/write | frames/write | writes/s | server CPU cores | gen CPU cores | lost | out of order | p50 / p99 ms | ksoftirqd CPU s | machine busy before |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let at_own = (r.frames_per_write > 0.0)
            .then(|| floor.and_then(|f| f.us_per_frame_at(r.connections, r.frames_per_write)))
            .flatten();
        let at_reference = floor.and_then(|f| f.us_per_frame_at(r.connections, FLOOR_REFERENCE_FRAMES));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {:.2} / {:.2} | {:.2} | {:.0}% |",
            label(r),
            driver_cell(r),
            short_number(r.deliveries_per_s),
            r.server_cpu_us_per_delivery,
            multiple(r.server_cpu_us_per_delivery, at_own),
            multiple(r.server_cpu_us_per_delivery, at_reference),
            known(r.frames_per_write, |v| format!("{v:.2}")),
            known(r.server_writes_per_s, short_number),
            cores(r),
            r.generator_cpu_cores,
            r.lost,
            r.out_of_order,
            r.latency_us.p50 / 1e3,
            r.latency_us.p99 / 1e3,
            r.ksoftirqd_cpu_s,
            r.machine_busy_before * 100.0
        );
    }
}

fn fixed_rate_table(out: &mut String, rows: &[&RunReport], floor: Option<&FloorReport>) {
    let _ = writeln!(
        out,
        "| server | driver | deliveries/s | server CPU µs/delivery | deliveries per CPU-s | frames/write | writes/s | server CPU cores | gen CPU cores | lost | out of order | p50 / p99 / p999 ms | p99 floor ms | p99 × floor | RSS/conn | machine busy before |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in rows {
        let p99_floor_ms = floor
            .and_then(|f| f.delivery_latency_floor_us(r.connections, p99_recipient(r)?, r.machine.cores))
            .map(|us| us / 1e3);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {} | {} | {} | {:.2} | {:.2} | {} | {} | {:.2} / {:.2} / {:.2} | {} | {} | {:.0} B | {:.0}% |",
            label(r),
            driver_cell(r),
            short_number(r.deliveries_per_s),
            r.server_cpu_us_per_delivery,
            short_number(r.deliveries_per_server_cpu_s),
            known(r.frames_per_write, |v| format!("{v:.2}")),
            known(r.server_writes_per_s, short_number),
            cores(r),
            r.generator_cpu_cores,
            r.lost,
            r.out_of_order,
            r.latency_us.p50 / 1e3,
            r.latency_us.p99 / 1e3,
            r.latency_us.p999 / 1e3,
            p99_floor_ms.map_or_else(|| "—".to_owned(), |ms| format!("{ms:.2}")),
            multiple(r.latency_us.p99 / 1e3, p99_floor_ms),
            r.server_rss_per_connection_bytes,
            r.machine_busy_before * 100.0
        );
    }
}

/// The rank of a message's 99th-percentile recipient (recipients per
/// message from the run's counts).
fn p99_recipient(r: &RunReport) -> Option<u64> {
    (r.sent > 0 && r.expected > 0).then(|| {
        let recipients = r.expected as f64 / r.sent as f64;
        (0.99 * recipients).ceil().max(1.0) as u64
    })
}

fn connect_table(out: &mut String, rows: &[&RunReport]) {
    let _ = writeln!(
        out,
        "| server | driver | connected | failed | handshakes/s | of the floor's | server CPU µs/handshake | gen CPU µs/handshake | handshake p50 / p99 ms | RSS before → after | RSS per connection | idle server CPU s | gen CPU cores (idle) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    let floor_rate = rows
        .iter()
        .find(|r| kind(r) == "floor")
        .map(|r| r.connects_per_s)
        .filter(|rate| *rate > 0.0);
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.0} | {} | {:.0} | {:.0} | {:.1} / {:.1} | {} → {} | {:.0} B | {:.2} | {:.2} |",
            label(r),
            driver_cell(r),
            r.connected,
            r.setup_failures,
            r.connects_per_s,
            floor_rate.map_or_else(|| "—".to_owned(), |f| format!("{:.2}×", r.connects_per_s / f)),
            r.server_cpu_us_per_connection,
            r.generator_cpu_us_per_connection,
            r.handshake_us.p50 / 1e3,
            r.handshake_us.p99 / 1e3,
            human_bytes(r.server_rss_before_bytes),
            human_bytes(r.server_rss_after_bytes),
            r.server_rss_per_connection_bytes,
            r.server_cpu_s,
            r.generator_cpu_cores
        );
    }
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
            let windowed = fields
                .get("window")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
                > 0;
            for (key, value) in fields {
                // A closed loop ignores the rate flags; a schedule has no window.
                if (windowed && key.starts_with("rate")) || (!windowed && key == "window") {
                    continue;
                }
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
