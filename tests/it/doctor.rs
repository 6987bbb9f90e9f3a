//! `ringcast doctor` as a user runs it: the binary, its flags, its exit
//! status. The checks themselves are unit-tested over fake trees in
//! `src/doctor/tests.rs`; here a small fake tree (`--root`) makes the
//! exit status deterministic, and one run reads this host.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The files of a host where every check passes for 1,000 connections on
/// 2 shards (Linux 6.1, 2 CPUs, 8 GiB, the limits of ringcast.service).
const HEALTHY: &[(&str, &str)] = &[
    ("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
    (
        "proc/self/status",
        "Uid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\nSeccomp:\t0\nCpus_allowed_list:\t0-1\n",
    ),
    (
        "proc/self/limits",
        "Max open files            1048576              1048576              files     \n\
         Max locked memory         8388608              8388608              bytes     \n",
    ),
    ("proc/sys/fs/nr_open", "1048576\n"),
    ("proc/sys/fs/file-max", "9223372036854775807\n"),
    ("proc/sys/net/core/somaxconn", "4096\n"),
    ("proc/sys/net/ipv4/tcp_max_syn_backlog", "4096\n"),
    ("proc/sys/net/ipv4/tcp_mem", "94000 125000 188000\n"),
    ("proc/sys/net/ipv4/tcp_wmem", "4096 16384 4194304\n"),
    ("proc/sys/net/ipv4/ip_unprivileged_port_start", "1024\n"),
    ("proc/meminfo", "MemTotal:        8388608 kB\n"),
    ("sys/devices/system/cpu/online", "0-1\n"),
    (
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always [madvise] never\n",
    ),
    ("sys/kernel/mm/transparent_hugepage/defrag", "[madvise] never\n"),
];

/// The checks `doctor` prints, one line each.
const CHECKS: usize = 16;

struct Tree(PathBuf);

impl Tree {
    fn healthy(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("ringcast-it-doctor-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tree = Self(root);
        for (file, text) in HEALTHY {
            tree.write(file, text);
        }
        tree
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.0.join(file);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create the fake tree");
        std::fs::write(path, text).expect("write the fake tree");
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn doctor(args: &[&str], root: Option<&Path>) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    command.args(args).env_remove("RINGCAST_MASTER_TOKEN");
    if let Some(root) = root {
        command.arg("--root").arg(root);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("run ringcast doctor");
    let stdout = String::from_utf8(stdout).expect("UTF-8 report");
    assert!(stderr.is_empty(), "stderr: {}", String::from_utf8_lossy(&stderr));
    (status.code().expect("an exit code"), stdout)
}

/// The check lines of a report, asserting its shape: a header, one line
/// per check starting with its status, a closing tally that adds up.
fn check_lines(report: &str) -> Vec<&str> {
    let lines: Vec<&str> = report.lines().collect();
    assert!(lines[0].starts_with("ringcast doctor: "), "{report}");
    let checks = &lines[1..lines.len() - 1];
    assert_eq!(checks.len(), CHECKS, "{report}");
    for line in checks {
        assert!(
            ["ok    ", "warn  ", "fail  "].iter().any(|s| line.starts_with(s)),
            "{line}"
        );
        assert_eq!(line.starts_with("ok "), !line.contains("; fix: "), "{line}");
    }
    let tally = |s: &str| checks.iter().filter(|l| l.starts_with(s)).count();
    assert_eq!(
        lines[lines.len() - 1],
        format!(
            "doctor: {} ok, {} warn, {} fail",
            tally("ok "),
            tally("warn "),
            tally("fail ")
        ),
    );
    checks.to_vec()
}

#[test]
fn exit_status_is_one_exactly_when_a_check_fails() {
    let tree = Tree::healthy("exit");
    let args = ["doctor", "--shards", "2", "--connections", "1000"];
    let (code, report) = doctor(&args, Some(&tree.0));
    let lines = check_lines(&report);
    assert!(lines.iter().all(|l| l.starts_with("ok ")), "{report}");
    assert_eq!(code, 0, "{report}");

    // A warning alone still exits 0.
    tree.write("proc/sys/net/core/somaxconn", "128\n");
    let (code, report) = doctor(&args, Some(&tree.0));
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("warn  net.core.somaxconn: 128 < backlog = 1,024"),
        "{report}"
    );

    // An open-files limit too small for the target fails, with the fix.
    tree.write(
        "proc/self/limits",
        "Max open files            1024                 524288               files     \n",
    );
    let (code, report) = doctor(&args, Some(&tree.0));
    assert_eq!(code, 1, "{report}");
    assert!(
        report.contains("fail  RLIMIT_NOFILE: soft limit 1,024 is below 1,072 descriptors"),
        "{report}"
    );
    assert!(report.contains("`LimitNOFILE=2048` in the unit"), "{report}");
}

#[test]
fn takes_the_server_flags_and_file() {
    let tree = Tree::healthy("flags");
    // Flags may come before or after the subcommand, as for the server.
    let (_, before) = doctor(&["--backlog", "8192", "doctor", "--shards", "2"], Some(&tree.0));
    let (_, after) = doctor(&["doctor", "--backlog", "8192", "--shards", "2"], Some(&tree.0));
    assert_eq!(before, after);
    assert!(
        after.contains("warn  net.core.somaxconn: 4,096 < backlog = 8,192"),
        "{after}"
    );

    // The file's connections_max is the target when --connections is absent.
    let config = tree.0.join("ringcast.toml");
    std::fs::write(&config, "[server]\nshards = 2\nconnections_max = 5000\n").expect("write the config");
    let config_arg = config.to_str().expect("a UTF-8 path");
    let (code, report) = doctor(&["doctor", "--config", config_arg], Some(&tree.0));
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("connections=5,000 (connections_max)"), "{report}");

    // A file the server would refuse is a failure of its own.
    std::fs::write(&config, "[server]\nshards = \"two\"\n").expect("write the config");
    let (code, report) = doctor(&["doctor", "--config", config_arg], Some(&tree.0));
    assert_eq!(code, 1, "{report}");
    assert!(report.starts_with("fail  configuration: "), "{report}");
}

/// This host, probed for real: whatever it finds, the report is complete
/// and the exit status agrees with its lines.
#[test]
fn on_this_host() {
    let (code, report) = doctor(&["doctor", "--shards", "2", "--connections", "1000"], None);
    let lines = check_lines(&report);
    let failed = lines.iter().any(|l| l.starts_with("fail "));
    assert_eq!(code, i32::from(failed), "{report}");
    assert!(lines.iter().any(|l| l.contains(" io_uring: ")), "{report}");
}
