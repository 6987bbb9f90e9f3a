//! The SVG charts beside `results.md`.

use std::collections::BTreeMap;
use std::path::Path;

use super::summary::FLOOR_REFERENCE_FRAMES;
use super::{driver, kind, label, shards, Mode, Outcome};
use crate::plot::{self, Series};
use crate::report::RunReport;

pub(super) fn draw(folder: &Path, o: &Outcome<'_>) -> anyhow::Result<()> {
    let with_results = |mode: Mode| -> Vec<String> {
        o.scenarios
            .iter()
            .filter(|s| s.mode == mode && o.results.iter().any(|r| r.scenario == s.id))
            .map(|s| s.id.clone())
            .collect()
    };
    let saturated = with_results(Mode::Saturated);
    let fixed_rate = with_results(Mode::FixedRate);
    let messages: Vec<String> = saturated.iter().chain(&fixed_rate).cloned().collect();
    let mut labels: Vec<String> = Vec::new();
    for r in o.results {
        if !labels.contains(&label(r)) {
            labels.push(label(r));
        }
    }
    let lookup: BTreeMap<(String, String), &RunReport> = o
        .results
        .iter()
        .map(|r| ((r.scenario.clone(), label(r)), r))
        .collect();
    let series_of = |scenarios: &[String], metric: &dyn Fn(&RunReport) -> f64| -> Vec<Series> {
        labels
            .iter()
            .map(|l| Series {
                name: l.clone(),
                values: scenarios
                    .iter()
                    .map(|s| lookup.get(&(s.clone(), l.clone())).map_or(0.0, |r| metric(r)))
                    .collect(),
            })
            .collect()
    };
    if !messages.is_empty() {
        plot::grouped_bars(
            &folder.join("efficiency.svg"),
            "Deliveries per server CPU-second (higher is better)",
            "deliveries / CPU-s",
            &messages,
            &series_of(&messages, &|r| r.deliveries_per_server_cpu_s),
            true,
        )?;
    }
    if !saturated.is_empty() {
        plot::grouped_bars(
            &folder.join("throughput.svg"),
            "Deliveries per second, closed loop: the most each server delivers (higher is better)",
            "deliveries / s",
            &saturated,
            &series_of(&saturated, &|r| r.deliveries_per_s),
            true,
        )?;
    }
    latency_chart(folder, &fixed_rate, &labels, &lookup)?;
    memory_chart(folder, o)?;
    shards_chart(
        folder,
        o,
        if saturated.is_empty() {
            &messages
        } else {
            &saturated
        },
    )?;
    Ok(())
}

/// p50 / p99 / p999 per server for the fixed-rate latency reference
/// (fanout-s1000-r50, else latency, else the first fixed-rate scenario).
fn latency_chart(
    folder: &Path,
    fixed_rate: &[String],
    labels: &[String],
    lookup: &BTreeMap<(String, String), &RunReport>,
) -> anyhow::Result<()> {
    let focus = ["fanout-s1000-r50", "latency"]
        .into_iter()
        .find(|id| fixed_rate.iter().any(|s| s == id))
        .map(str::to_owned)
        .or_else(|| fixed_rate.first().cloned());
    let Some(focus) = focus else {
        return Ok(());
    };
    let percentiles = ["p50", "p99", "p999"].map(String::from);
    let series: Vec<Series> = labels
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
        &format!("Latency percentiles at a fixed rate, {focus} (ms, lower is better)"),
        "ms",
        &percentiles,
        &series,
        true,
    )
}

fn memory_chart(folder: &Path, o: &Outcome<'_>) -> anyhow::Result<()> {
    let connect: Vec<&RunReport> = o
        .results
        .iter()
        .filter(|r| {
            o.scenarios
                .iter()
                .any(|s| s.mode == Mode::Connect && s.id == r.scenario)
        })
        .collect();
    if connect.is_empty() {
        return Ok(());
    }
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
    )
}

/// ringcast's CPU per delivery against its shard count, one panel per I/O
/// driver, with the floor at 16 frames per write for reference.
fn shards_chart(folder: &Path, o: &Outcome<'_>, scenarios: &[String]) -> anyhow::Result<()> {
    let ringcast: Vec<&RunReport> = o.results.iter().filter(|r| kind(r) == "ringcast").collect();
    let mut counts: Vec<u32> = ringcast.iter().map(|r| shards(r)).collect();
    counts.sort_unstable();
    counts.dedup();
    if counts.is_empty() || scenarios.is_empty() {
        return Ok(());
    }
    // One reference line per chart: the floor at 1,000 connections (or the
    // nearest measured count).
    let reference = o
        .floor
        .and_then(|f| f.us_per_frame_at(1000, FLOOR_REFERENCE_FRAMES));
    let mut panels = Vec::new();
    for driver_name in super::DRIVERS {
        if !ringcast.iter().any(|r| driver(r) == driver_name) {
            continue;
        }
        let mut series: Vec<Series> = scenarios
            .iter()
            .map(|s| Series {
                name: s.clone(),
                values: counts
                    .iter()
                    .map(|n| {
                        ringcast
                            .iter()
                            .find(|r| r.scenario == *s && driver(r) == driver_name && shards(r) == *n)
                            .map_or(0.0, |r| r.server_cpu_us_per_delivery)
                    })
                    .collect(),
            })
            .collect();
        if let Some(floor) = reference {
            series.push(Series {
                name: format!("floor, {FLOOR_REFERENCE_FRAMES:.0} frames/write, ~1,000 connections"),
                values: vec![floor; counts.len()],
            });
        }
        panels.push((format!("driver: {driver_name}"), series));
    }
    plot::lines_panels(
        &folder.join("shards.svg"),
        "ringcast: server CPU µs per delivery vs shard count (lower is better)",
        "shards",
        "CPU µs / delivery",
        &counts,
        &panels,
    )
}
