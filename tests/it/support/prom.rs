//! `GET /metrics` scraped and parsed: Prometheus text exposition, one
//! sample per line, `name{label="value",...} number`.
//!
//! Counters are per shard, so tests mostly want a sum over every series of
//! a name, optionally narrowed by a few labels.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::http::get;

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) name: String,
    pub(crate) labels: Vec<(String, String)>,
    pub(crate) value: f64,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) samples: Vec<Sample>,
}

impl Metrics {
    /// Scrapes `/metrics`, asserting `200` and a `text/plain` content type.
    pub(crate) fn scrape(addr: SocketAddr) -> Self {
        let response = get(addr, "/metrics");
        assert_eq!(response.status, 200, "GET /metrics: {response:?}");
        let content_type = response.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("text/plain"),
            "content type of /metrics: {content_type:?}"
        );
        Self::parse(&response.body)
    }

    /// Parses exposition text; panics on a line that is not a comment, blank or a sample.
    pub(crate) fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(parse_sample)
            .collect();
        Self { samples }
    }

    /// Sum of every series named `name` whose labels include all of `labels`.
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let mut found = false;
        let mut total = 0u64;
        for sample in self.samples.iter().filter(|s| s.name == name) {
            found = true;
            let matches = labels
                .iter()
                .all(|(k, v)| sample.labels.iter().any(|(sk, sv)| sk == k && sv == v));
            if matches {
                total += as_count(sample);
            }
        }
        assert!(found, "no series named {name} in /metrics");
        total
    }

    /// Every value of `name` with its `label`, e.g. per shard.
    pub(crate) fn by_label(&self, name: &str, label: &str) -> Vec<(String, u64)> {
        let mut values: Vec<(String, u64)> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| {
                let value = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == label)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("{s:?} has no label {label}"));
                (value, as_count(s))
            })
            .collect();
        values.sort();
        values
    }
}

/// Scrapes until `sum(name, labels)` reaches `at_least` or `timeout` passes,
/// and returns the last scrape. Counters move when a shard gets to it (a
/// disconnect is counted once its reader task ends), so tests wait for the
/// one they are about and then assert every counter of that scrape exactly.
pub(crate) fn scrape_until(
    addr: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    at_least: u64,
    timeout: Duration,
) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let metrics = Metrics::scrape(addr);
        if metrics.sum(name, labels) >= at_least || Instant::now() >= deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn as_count(sample: &Sample) -> u64 {
    assert!(
        sample.value >= 0.0 && sample.value.fract() == 0.0,
        "not a count: {sample:?}"
    );
    sample.value as u64
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
    let value: f64 = value
        .parse()
        .unwrap_or_else(|error| panic!("bad value in {line:?}: {error}"));
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => {
            let body = rest
                .strip_suffix('}')
                .unwrap_or_else(|| panic!("unterminated labels in {line:?}"));
            (name, parse_labels(body, line))
        }
    };
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
        "bad metric name in {line:?}"
    );
    Sample {
        name: name.to_string(),
        labels,
        value,
    }
}

/// `k="v",k2="v2"`; values may contain escaped quotes and backslashes.
fn parse_labels(body: &str, line: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((key.to_string(), value));
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    labels
}
