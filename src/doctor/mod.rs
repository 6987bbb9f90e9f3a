//! `ringcast doctor`: checks the host against the configuration the server
//! would run with (same flags, same file) and prints one line per check,
//! `ok` / `warn` / `fail`, each that is not ok with its exact fix.
//!
//! Sans-IO like the protocol codecs: [`host`] reads the `/proc` and `/sys`
//! files once into a [`host::Host`] snapshot, [`probe`] asks the running
//! kernel for an io_uring ring, and [`checks`] are pure functions of the
//! two and a [`Plan`]. Only [`main`] prints. A root directory other than
//! `/` (`--root`) points the snapshot at a copy of another host's files or
//! at a test tree; the probe is skipped then.
//!
//! It owns no server state and starts no shard: it runs before the server
//! (by hand, or as the unit's `ExecStartPre`, where it sees the service's
//! own user, limits and seccomp filter).

pub mod checks;
pub mod host;
pub mod probe;

use std::fmt;
use std::path::Path;

use crate::config::{Cli, Config, DoctorArgs};

use self::host::Host;
use self::probe::UringProbe;

/// How a check came out. Ordered: the worst is the greatest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "fail",
        }
    }
}

/// One line of the report. Every check that is not ok carries a fix.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The knob or resource checked (`net.core.somaxconn`, `RLIMIT_NOFILE`).
    pub name: &'static str,
    pub status: Status,
    /// What was found, with the numbers it was compared against.
    pub detail: String,
    /// What to change; `None` exactly when the status is ok.
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &'static str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail.into(), None)
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, detail.into(), Some(fix.into()))
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, detail.into(), Some(fix.into()))
    }

    pub fn new(name: &'static str, status: Status, detail: String, fix: Option<String>) -> Self {
        assert_eq!(
            status == Status::Ok,
            fix.is_none(),
            "{name}: a fix exactly when not ok"
        );
        Self {
            name,
            status,
            detail,
            fix,
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {}: {}", self.status.label(), self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, "; fix: {fix}")?;
        }
        Ok(())
    }
}

/// What the server would run with, as far as the host is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub shards: usize,
    pub ring_entries: u32,
    /// Listen backlog of each shard's socket, in connections.
    pub backlog: u64,
    /// Connections to plan for, when known.
    pub connections: Option<u64>,
    /// Where `connections` came from, for the report.
    pub connections_source: &'static str,
    pub send_queue_bytes_max: u64,
    pub listen_port: u16,
    pub epoll: bool,
}

impl Plan {
    /// The plan for `config`; `connections` (`--connections`) overrides its
    /// `connections_max`, and 0 there means "no number to plan for".
    pub fn new(config: &Config, connections: Option<u64>) -> Self {
        let (connections, connections_source) = match connections {
            Some(n) => (Some(n), "--connections"),
            None if config.connections_max > 0 => (Some(config.connections_max as u64), "connections_max"),
            None => (None, "none"),
        };
        Self {
            shards: config.shard_count,
            ring_entries: config.ring_entries,
            backlog: u64::try_from(config.backlog).unwrap_or(0),
            connections,
            connections_source,
            send_queue_bytes_max: config.send_queue_bytes_max as u64,
            listen_port: config.listen.port(),
            epoll: config.epoll,
        }
    }
}

/// The checks for a host snapshot, a probe answer and a plan.
pub fn run(host: &Host, probe: UringProbe, plan: &Plan) -> Vec<Check> {
    checks::all(host, probe, plan)
}

/// The process exit status for a report: 0 unless a check failed.
pub fn exit_code(checks: &[Check]) -> i32 {
    i32::from(checks.iter().any(|c| c.status == Status::Fail))
}

/// The whole report: a header naming the plan, one line per check, a
/// closing count.
pub fn render(plan: &Plan, checks: &[Check]) -> String {
    let connections = match plan.connections {
        Some(n) => format!("{} ({})", checks::count(n), plan.connections_source),
        None => "no target".to_owned(),
    };
    let mut out = format!(
        "ringcast doctor: shards={} backlog={} ring_entries={} connections={} send_queue_bytes_max={}\n",
        plan.shards, plan.backlog, plan.ring_entries, connections, plan.send_queue_bytes_max
    );
    for check in checks {
        out.push_str(&check.to_string());
        out.push('\n');
    }
    let tally = |status| checks.iter().filter(|c| c.status == status).count();
    out.push_str(&format!(
        "doctor: {} ok, {} warn, {} fail\n",
        tally(Status::Ok),
        tally(Status::Warn),
        tally(Status::Fail)
    ));
    out
}

/// `ringcast doctor`: loads the configuration the server would, checks
/// the host, prints the report, and returns the exit status.
pub fn main(cli: &Cli, args: &DoctorArgs) -> i32 {
    let config = match Config::load(cli) {
        Ok(config) => config,
        Err(error) => {
            println!(
                "{}",
                Check::fail(
                    "configuration",
                    error.to_string(),
                    "correct the file or flag named (the server refuses to start on it too)"
                )
            );
            return 1;
        }
    };
    let plan = Plan::new(&config, args.connections);
    let host = Host::read(&args.root);
    let probe = if args.root == Path::new("/") {
        probe::probe(plan.ring_entries)
    } else {
        UringProbe::NotProbed
    };
    let checks = run(&host, probe, &plan);
    print!("{}", render(&plan, &checks));
    exit_code(&checks)
}

#[cfg(test)]
mod tests;
