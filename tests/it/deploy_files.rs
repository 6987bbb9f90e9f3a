//! The deployment files under `deploy/` agree with the code: the shipped
//! configuration loads, the unit's stop timeout and file limit cover it,
//! and the sysctl file holds every kernel setting `ringcast doctor` can
//! ask for, with active values that pass doctor's checks.
//!
//! `deploy/test-package.sh` checks the same files inside the built
//! package, and `systemd-analyze verify` checks the unit's syntax there.

use std::collections::BTreeSet;
use std::path::Path;

use ringcast::config::{Cli, Config};
use ringcast::doctor::checks::{self, FDS_FIXED, FDS_PER_SHARD};
use ringcast::doctor::host::{Host, KernelVersion, ProcessStatus, Rlimit};
use ringcast::doctor::probe::UringProbe;
use ringcast::doctor::{Plan, Status};

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The value of `key=` in the unit (the last one, as systemd takes it).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .rev()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in deploy/ringcast.service"))
        .trim()
        .to_owned()
}

fn load(path: &str) -> Config {
    Config::from_toml(&Cli::default(), path, &read(path)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn unit_covers_the_shipped_configuration() {
    let unit = read("deploy/ringcast.service");
    let stop_timeout_s: u64 = unit_value(&unit, "TimeoutStopSec")
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .expect("TimeoutStopSec in seconds");
    let nofile: u64 = unit_value(&unit, "LimitNOFILE").parse().expect("a number");
    for path in ["deploy/ringcast.toml", "ringcast.example.toml"] {
        let config = load(path);
        // systemd must not SIGKILL a server that is still draining.
        assert!(
            config.shutdown_deadline.as_secs() < stop_timeout_s,
            "{path}: shutdown_deadline_ms {:?} is not below TimeoutStopSec={stop_timeout_s}s",
            config.shutdown_deadline
        );
        assert!(config.drain_window <= config.shutdown_deadline, "{path}");
        let fds = config.connections_max as u64 + FDS_FIXED + FDS_PER_SHARD * 255;
        assert!(fds <= nofile, "{path}: {fds} descriptors > LimitNOFILE={nofile}");
    }
    // The unit starts what the package installs, with the file it installs.
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        "/usr/bin/ringcast --config /etc/ringcast/ringcast.toml"
    );
    assert_eq!(unit_value(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    let filter = unit
        .lines()
        .find(|l| l.starts_with("SystemCallFilter=@"))
        .expect("an allow-list");
    for syscall in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        assert!(filter.contains(syscall), "{filter} lacks {syscall}");
    }
    // The shipped file listens behind a local proxy and trusts only it.
    let shipped = load("deploy/ringcast.toml");
    assert!(shipped.listen.ip().is_loopback(), "{}", shipped.listen);
    assert!(
        shipped.connections_max > 0,
        "the shipped file sets connections_max"
    );
    assert!(!read("deploy/ringcast.toml")
        .lines()
        .any(|l| l.starts_with("master_token")));
}

/// The `key = value` lines of the sysctl file, and the keys it mentions
/// in commented-out lines (`# key = value`, `# -key = value`).
fn sysctl_file() -> (Vec<(String, String)>, BTreeSet<String>) {
    let text = read("deploy/sysctl.d/60-ringcast.conf");
    let mut active = Vec::new();
    let mut commented = BTreeSet::new();
    for line in text.lines() {
        let (is_comment, body) = match line.strip_prefix('#') {
            Some(rest) => (true, rest.trim()),
            None => (false, line.trim()),
        };
        let Some((key, value)) = body.split_once(" = ") else {
            continue;
        };
        let key = key.trim_start_matches('-');
        if !key.contains('.') || key.contains(' ') {
            continue;
        }
        if is_comment {
            commented.insert(key.to_owned());
        } else {
            active.push((key.to_owned(), value.trim().to_owned()));
        }
    }
    (active, commented)
}

/// A host where every sysctl doctor looks at is too small, in two
/// variants of io_uring_disabled (2 asks for 0, 1 asks for a group).
fn bad_hosts() -> Vec<Host> {
    let base = Host {
        kernel_release: Some("6.8.0".into()),
        kernel: Some(KernelVersion::new(6, 8, 0)),
        io_uring_disabled: Some(2),
        io_uring_group: Some(-1),
        process: Some(ProcessStatus {
            seccomp_mode: Some(0),
            euid: Some(998),
            egid: Some(998),
            cpus_allowed: Some(2),
            ..ProcessStatus::default()
        }),
        nofile: Some(Rlimit {
            soft: 1024,
            hard: 1024,
        }),
        memlock: Some(Rlimit {
            soft: 65536,
            hard: 65536,
        }),
        nr_open: Some(1024),
        file_max: Some(1024),
        somaxconn: Some(128),
        tcp_max_syn_backlog: Some(128),
        tcp_mem_pages: Some([1000, 2000, 3000]),
        tcp_wmem_bytes: Some([4096, 16384, 4194304]),
        unprivileged_port_start: Some(1024),
        mem_total_bytes: Some(1 << 30),
        cpus_online: Some(2),
        page_bytes: 4096,
        ..Host::default()
    };
    let group_only = Host {
        io_uring_disabled: Some(1),
        ..base.clone()
    };
    vec![base, group_only]
}

fn plan(connections: Option<u64>) -> Plan {
    Plan::new(&load("deploy/ringcast.toml"), connections)
}

/// The sysctl keys named in doctor's fixes (`` `key = value` ``).
fn keys_in_fixes(fixes: impl Iterator<Item = String>) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for fix in fixes {
        for quoted in fix.split('`').skip(1).step_by(2) {
            if let Some((key, _)) = quoted.split_once(" = ") {
                if key.contains('.') && !key.contains(' ') {
                    keys.insert(key.to_owned());
                }
            }
        }
    }
    keys
}

#[test]
fn sysctl_file_holds_every_setting_doctor_asks_for() {
    let (active, commented) = sysctl_file();
    let mut in_file: BTreeSet<String> = active.iter().map(|(k, _)| k.clone()).collect();
    in_file.extend(commented);
    let fixes = bad_hosts().into_iter().flat_map(|host| {
        checks::all(
            &host,
            UringProbe::SetupFailed(libc::EPERM),
            &plan(Some(1_000_000)),
        )
        .into_iter()
        .filter_map(|c| c.fix)
    });
    let asked = keys_in_fixes(fixes);
    assert!(asked.len() >= 7, "doctor's fixes name few sysctls: {asked:?}");
    let missing: Vec<&String> = asked.difference(&in_file).collect();
    assert!(
        missing.is_empty(),
        "doctor asks for {missing:?}, not in deploy/sysctl.d/60-ringcast.conf"
    );
    // And the file names only real kernel settings doctor knows about.
    let unknown: Vec<&String> = in_file.difference(&asked).collect();
    assert!(
        unknown.is_empty(),
        "the sysctl file names {unknown:?}, which doctor never asks for"
    );
}

#[test]
fn sysctl_file_values_pass_doctor() {
    let (active, _) = sysctl_file();
    let mut host = bad_hosts().remove(0);
    for (key, value) in &active {
        let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("{key} = {value}"));
        match key.as_str() {
            "net.core.somaxconn" => host.somaxconn = Some(number()),
            "net.ipv4.tcp_max_syn_backlog" => host.tcp_max_syn_backlog = Some(number()),
            other => panic!("an active line for {other}: add it to this test"),
        }
    }
    // The file's values pass for the shipped configuration's backlog.
    let shipped = plan(None);
    let checks = checks::all(&host, UringProbe::Works, &shipped);
    for name in ["net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"] {
        let check = checks.iter().find(|c| c.name == name).expect("the check");
        assert_eq!(check.status, Status::Ok, "{check}");
    }
}
