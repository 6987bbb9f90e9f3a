//! `deploy/grafana/ringcast.json` queries only what the server exports:
//! every metric name in every panel's PromQL is in `/metrics` of a running
//! server, and every label it groups by is on some ringcast series (or is
//! one Prometheus adds: `instance`, `job`).
//!
//! The cluster row's metrics (`ringcast_cluster_*`) are exported by every
//! server, with or without `--redis` (`ringcast_cluster_up 0` alone), so
//! they are checked like every other metric. The TLS row's reloads
//! (`ringcast_tls_reloads_total{outcome}`) are exported by a TLS listener
//! only, so the metrics are those of a plain server and a TLS one together.

use std::collections::BTreeSet;

use sonic_rs::{JsonContainerTrait, JsonValueTrait, Value};

use crate::support::http::get;
use crate::support::tls::{TempDir, TestCert, TlsConn};
use crate::support::{Sio, TestServer};

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/ringcast.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    sonic_rs::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels").iter() {
        out.push(panel);
        if let Some(nested) = panel.get("panels").and_then(|p| p.as_array()) {
            out.extend(nested.iter());
        }
    }
    out
}

/// Every PromQL expression, with the title of its panel.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let Some(targets) = panel.get("targets").and_then(|t| t.as_array()) else {
            continue;
        };
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in targets.iter() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            out.push((title.clone(), expr.to_owned()));
        }
    }
    out
}

/// Identifiers starting with `ringcast_` in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("ringcast_") {
        let starts_word = rest[..at].chars().next_back().is_none_or(|c| !ident(c));
        let len = rest[at..].find(|c: char| !ident(c)).unwrap_or(rest.len() - at);
        if starts_word {
            names.push(rest[at..at + len].to_owned());
        }
        rest = &rest[at + len..];
    }
    names
}

/// Labels in `by (...)` and `without (...)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for keyword in ["by (", "without ("] {
        for (at, _) in expr.match_indices(keyword) {
            let list = &expr[at + keyword.len()..];
            let list = &list[..list.find(')').expect("a closing parenthesis")];
            labels.extend(list.split(',').map(|l| l.trim().to_owned()));
        }
    }
    labels
}

/// Metric names declared by `# TYPE` lines, and label names of samples.
fn exported(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut labels = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.insert(rest.split(' ').next().expect("a name").to_owned());
        } else if let Some((_, rest)) = line.split_once('{') {
            for pair in rest.split(',') {
                if let Some((key, _)) = pair.split_once("=\"") {
                    labels.insert(key.to_owned());
                }
            }
        }
    }
    (names, labels)
}

#[test]
fn dashboard_is_well_formed() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"].as_str(), Some("ringcast"));
    // Top-level panels (rows included) fit the 24 columns and do not
    // overlap; a collapsed row's nested panels are laid out when expanded.
    let mut placed: Vec<(u64, [u64; 4])> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels").iter() {
        let id = panel["id"].as_u64().expect("a numeric panel id");
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            panel["gridPos"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("panel {id}: gridPos.{k}"))
        });
        assert!(
            w > 0 && h > 0 && x + w <= 24,
            "panel {id}: gridPos {x},{y} {w}x{h}"
        );
        for (other, [ox, oy, ow, oh]) in &placed {
            let apart = x + w <= *ox || ox + ow <= x || y + h <= *oy || oy + oh <= y;
            assert!(apart, "panels {other} and {id} overlap");
        }
        placed.push((id, [x, y, w, h]));
    }
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let id = panel["id"].as_u64().expect("a numeric panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        assert!(panel.get("gridPos").is_some(), "panel {id} has no gridPos");
        if let Some(targets) = panel.get("targets").and_then(|t| t.as_array()) {
            let mut refs = BTreeSet::new();
            for target in targets.iter() {
                let ref_id = target["refId"].as_str().expect("a refId");
                assert!(refs.insert(ref_id.to_owned()), "panel {id}: refId {ref_id} twice");
                assert_eq!(
                    target["datasource"]["uid"].as_str(),
                    Some("${datasource}"),
                    "panel {id}"
                );
            }
        }
    }
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    for (title, expr) in &exprs {
        assert!(
            !metric_names(expr).is_empty(),
            "{title}: {expr} queries no ringcast metric"
        );
        assert!(
            expr.contains("instance=~\"$instance\""),
            "{title}: {expr} ignores $instance"
        );
    }
    // The frames-per-write panel is the ratio the issue asks for.
    assert!(exprs
        .iter()
        .any(|(_, e)| e.contains("rate(ringcast_frames_written_total")
            && e.contains(" / ")
            && e.contains("rate(ringcast_writes_total")));
}

#[test]
fn every_queried_metric_is_exported() {
    let dashboard = dashboard();
    let exprs = expressions(&dashboard);
    let queried: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();

    assert!(
        queried.iter().any(|n| n.starts_with("ringcast_cluster_")),
        "the dashboard has a cluster row"
    );
    assert!(
        queried.contains("ringcast_tls_reloads_total"),
        "the dashboard has a TLS row"
    );

    // A server with a client in a channel, so per-environment series (and
    // their `env` label) are there too.
    let server = TestServer::start(2);
    let mut client = Sio::connect_default(&server);
    client.join("grafana");
    let response = get(server.addr(), "/metrics");
    assert_eq!(response.status, 200);
    let (mut names, mut labels) = exported(&response.body);
    assert!(names.len() >= 20, "few metrics exported: {names:?}");

    // A TLS listener adds its certificate reloads, by outcome.
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let (cert_file, key_file) = cert.write_to(&dir.0);
    let (cert_file, key_file) = (cert_file.display().to_string(), key_file.display().to_string());
    let tls_server = TestServer::start_with(1, &["--tls-cert", &cert_file, "--tls-key", &key_file], None);
    let response = TlsConn::connect(tls_server.addr(), &cert.der).request("GET", "/metrics", "", b"");
    assert_eq!(response.status, 200);
    let (tls_names, tls_labels) = exported(&response.body);
    assert!(tls_names.contains("ringcast_tls_reloads_total"), "{tls_names:?}");
    names.extend(tls_names);
    labels.extend(tls_labels);

    let missing: Vec<&String> = queried.iter().filter(|name| !names.contains(*name)).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not have: {missing:?}"
    );

    for (title, expr) in &exprs {
        for label in grouping_labels(expr) {
            assert!(
                labels.contains(&label) || TARGET_LABELS.contains(&label.as_str()),
                "{title}: groups by `{label}`, which no ringcast series has ({labels:?})"
            );
        }
    }
}

#[test]
fn promql_scanning() {
    let expr = "sum by (instance, shard) (rate(ringcast_frames_written_total{instance=~\"$instance\"}[5m])) \
                / sum(rate(ringcast_writes_total[5m])) + x_ringcast_not";
    assert_eq!(
        metric_names(expr),
        ["ringcast_frames_written_total", "ringcast_writes_total"]
    );
    assert_eq!(grouping_labels(expr), ["instance", "shard"]);
    let (names, labels) = exported("# TYPE a_total counter\na_total{shard=\"0\",env=\"x\"} 1\n");
    assert_eq!(names.into_iter().collect::<Vec<_>>(), ["a_total"]);
    assert_eq!(labels.into_iter().collect::<Vec<_>>(), ["env", "shard"]);
}
