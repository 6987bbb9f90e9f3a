//! Doctor over fake `/proc` and `/sys` trees: a healthy host, then one
//! file changed at a time, each case naming the check, its status and a
//! piece of its fix. One test runs on the real host.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use expect_test::expect;

use super::host::{self, Host};
use super::probe::{self, UringProbe};
use super::{exit_code, render, run, Check, Plan, Status};
use crate::config::{Cli, Config};

/// The files of a healthy 8-CPU, 32 GiB host running Linux 6.1, seen by
/// the `ringcast` user (uid 998) under its unit's limits.
const HEALTHY: &[(&str, &str)] = &[
    ("proc/sys/kernel/osrelease", "6.1.0-18-amd64\n"),
    (
        "proc/self/status",
        "Name:\tringcast\nUid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\nGroups:\t\n\
         CapEff:\t0000000000000000\nSeccomp:\t0\nCpus_allowed_list:\t0-7\n",
    ),
    (
        "proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units     \n\
         Max open files            1048576              1048576              files     \n\
         Max locked memory         8388608              8388608              bytes     \n",
    ),
    ("proc/sys/fs/nr_open", "1048576\n"),
    ("proc/sys/fs/file-max", "9223372036854775807\n"),
    ("proc/sys/net/core/somaxconn", "4096\n"),
    ("proc/sys/net/ipv4/tcp_max_syn_backlog", "4096\n"),
    ("proc/sys/net/ipv4/tcp_mem", "383866\t511822\t767732\n"),
    ("proc/sys/net/ipv4/tcp_wmem", "4096\t16384\t4194304\n"),
    ("proc/sys/net/ipv4/ip_unprivileged_port_start", "1024\n"),
    (
        "proc/net/sockstat",
        "sockets: used 120\nTCP: inuse 3 orphan 0 tw 0 alloc 4 mem 2\n",
    ),
    (
        "proc/meminfo",
        "MemTotal:       33554432 kB\nMemFree:        30000000 kB\n",
    ),
    ("sys/devices/system/cpu/online", "0-7\n"),
    (
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always [madvise] never\n",
    ),
    (
        "sys/kernel/mm/transparent_hugepage/defrag",
        "always defer defer+madvise [madvise] never\n",
    ),
    ("sys/devices/system/node/online", "0\n"),
    ("sys/devices/system/node/node0/cpulist", "0-7\n"),
];

/// 8 shards, 100,000 connections, 256 KiB send queues, port 4000.
fn plan() -> Plan {
    Plan {
        shards: 8,
        ring_entries: 1024,
        backlog: 1024,
        connections: Some(100_000),
        connections_source: "--connections",
        send_queue_bytes_max: 256 * 1024,
        listen_port: 4000,
        epoll: false,
    }
}

/// A directory tree under the system temp dir, removed on drop.
struct FakeRoot {
    path: PathBuf,
}

impl FakeRoot {
    /// The healthy tree with `changes` applied: `Some(text)` writes the
    /// file, `None` removes it.
    fn new(changes: &[(&str, Option<&str>)]) -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ringcast-doctor-{}-{n}", std::process::id()));
        let root = Self { path };
        for (file, text) in HEALTHY {
            root.write(file, text);
        }
        for (file, text) in changes {
            match text {
                Some(text) => root.write(file, text),
                None => std::fs::remove_file(root.path.join(file)).expect("remove a fake file"),
            }
        }
        root
    }

    fn write(&self, file: &str, text: &str) {
        let path = self.path.join(file);
        std::fs::create_dir_all(path.parent().expect("files have a parent")).expect("create fake dirs");
        std::fs::write(path, text).expect("write a fake file");
    }

    fn host(&self) -> Host {
        let mut host = Host::read(&self.path);
        // The report's numbers assume 4 KiB pages whatever the test machine has.
        host.page_bytes = 4096;
        host
    }
}

impl Drop for FakeRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn checks_for(changes: &[(&str, Option<&str>)], probe: UringProbe, plan: &Plan) -> Vec<Check> {
    run(&FakeRoot::new(changes).host(), probe, plan)
}

fn find<'a>(checks: &'a [Check], name: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check named {name} in {checks:#?}"))
}

/// One case: after `changes`, check `name` has `status` and its fix
/// contains `fix` (`""` for an ok check, which has none).
fn case(
    changes: &[(&str, Option<&str>)],
    probe: UringProbe,
    plan: &Plan,
    name: &str,
    status: Status,
    fix: &str,
) {
    let checks = checks_for(changes, probe, plan);
    let check = find(&checks, name);
    assert_eq!(check.status, status, "{check}");
    match &check.fix {
        None => assert!(fix.is_empty(), "{check}: expected a fix with {fix:?}"),
        Some(text) => assert!(text.contains(fix), "{check}: fix lacks {fix:?}"),
    }
}

#[test]
fn healthy_host_passes_every_check() {
    let root = FakeRoot::new(&[]);
    let checks = run(&root.host(), UringProbe::Works, &plan());
    assert_eq!(exit_code(&checks), 0);
    expect![[r#"
        ringcast doctor: shards=8 backlog=1024 ring_entries=1024 connections=100,000 (--connections) send_queue_bytes_max=262144
        ok    kernel: 6.1.0-18-amd64: io_uring with every operation monoio uses (5.7+)
        ok    kernel.io_uring_disabled: absent (Linux before 6.6): io_uring cannot be switched off by sysctl
        ok    seccomp: no seccomp filter on this process
        ok    RLIMIT_MEMLOCK: not used for io_uring rings since Linux 5.12
        ok    io_uring: a 1024-entry ring works and supports every operation monoio uses
        ok    RLIMIT_NOFILE: soft limit 1,048,576 covers 100,096 descriptors for 100,000 connections (--connections) and 8 shards
        ok    fs.nr_open: 1,048,576 ≥ 100,096 descriptors: LimitNOFILE can be raised far enough
        ok    fs.file-max: 9,223,372,036,854,775,807 system-wide ≥ twice the 100,096 ringcast needs
        ok    net.core.somaxconn: 4,096 ≥ backlog = 1,024: each shard's accept queue holds 1,024
        ok    net.ipv4.tcp_max_syn_backlog: 4,096 ≥ backlog = 1,024
        ok    net.ipv4.tcp_mem: 100,000 connections × 16 KiB default send buffer (tcp_wmem) = 1.5 GiB fits below the pressure threshold (pressure at 2.0 GiB, limit 2.9 GiB; 8 KiB in use now)
        ok    send_queue_bytes_max: 100,000 connections × 256 KiB = 24.4 GiB if every one stalls with frames of its own (broadcast frames are shared, so real use is lower), RAM 32 GiB
        ok    cores: 8 shards on 8 usable CPUs
        ok    transparent hugepages: enabled = madvise, defrag = madvise
        ok    NUMA: one node
        ok    listen port: 4000 needs no privilege (unprivileged from 1024)
        doctor: 16 ok, 0 warn, 0 fail
    "#]]
    .assert_eq(&render(&plan(), &checks));
}

#[test]
fn io_uring_switched_off_by_sysctl() {
    let kernel_6_8 = ("proc/sys/kernel/osrelease", Some("6.8.0-31-generic\n"));
    let p = plan();
    let disabled = |mode| [kernel_6_8, ("proc/sys/kernel/io_uring_disabled", Some(mode))];
    case(
        &disabled("0\n"),
        UringProbe::Works,
        &p,
        "kernel.io_uring_disabled",
        Status::Ok,
        "",
    );
    case(
        &disabled("2\n"),
        UringProbe::SetupFailed(libc::EPERM),
        &p,
        "kernel.io_uring_disabled",
        Status::Fail,
        "`kernel.io_uring_disabled = 0` in /etc/sysctl.d/60-ringcast.conf",
    );
    // The probe's verdict names the same cause.
    case(
        &disabled("2\n"),
        UringProbe::SetupFailed(libc::EPERM),
        &p,
        "io_uring",
        Status::Fail,
        "`kernel.io_uring_disabled = 0`",
    );
    // A 6.6+ kernel without the file: unreadable, not "too old".
    case(
        &[kernel_6_8],
        UringProbe::Works,
        &p,
        "kernel.io_uring_disabled",
        Status::Warn,
        "readable",
    );
}

#[test]
fn io_uring_restricted_to_a_group() {
    let p = plan();
    let restricted = |group: &'static str, status: &'static str| {
        [
            ("proc/sys/kernel/osrelease", Some("6.6.15\n")),
            ("proc/sys/kernel/io_uring_disabled", Some("1\n")),
            ("proc/sys/kernel/io_uring_group", Some(group)),
            ("proc/self/status", Some(status)),
        ]
    };
    let ringcast_user =
        "Uid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\nGroups:\t\nCapEff:\t0\nSeccomp:\t0\n";
    let in_group_990 =
        "Uid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\nGroups:\t990\nCapEff:\t0\nSeccomp:\t0\n";
    let root = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t0\nCapEff:\t000001ffffffffff\nSeccomp:\t0\n";
    let name = "kernel.io_uring_disabled";
    // The service's user outside the group: its own gid goes into the fix.
    case(
        &restricted("-1\n", ringcast_user),
        UringProbe::SetupFailed(libc::EPERM),
        &p,
        name,
        Status::Fail,
        "`kernel.io_uring_group = 998`",
    );
    case(
        &restricted("990\n", in_group_990),
        UringProbe::Works,
        &p,
        name,
        Status::Ok,
        "",
    );
    // Root passes, the service's user would not: a warning with a lookup.
    case(
        &restricted("-1\n", root),
        UringProbe::Works,
        &p,
        name,
        Status::Warn,
        "getent group ringcast",
    );
}

#[test]
fn seccomp_filter() {
    let p = plan();
    let filtered = [(
        "proc/self/status",
        Some("Uid:\t998\t998\t998\t998\nGid:\t998\t998\t998\t998\nSeccomp:\t2\nCpus_allowed_list:\t0-7\n"),
    )];
    case(&filtered, UringProbe::Works, &p, "seccomp", Status::Ok, "");
    let fix = "SystemCallFilter=@system-service io_uring_setup io_uring_enter io_uring_register";
    case(
        &filtered,
        UringProbe::SetupFailed(libc::EPERM),
        &p,
        "seccomp",
        Status::Fail,
        fix,
    );
    case(
        &filtered,
        UringProbe::SetupFailed(libc::ENOSYS),
        &p,
        "io_uring",
        Status::Fail,
        fix,
    );
    case(&filtered, UringProbe::NotProbed, &p, "seccomp", Status::Warn, fix);
    // Not probed: the verdict follows the worst line above it.
    case(
        &filtered,
        UringProbe::NotProbed,
        &p,
        "io_uring",
        Status::Warn,
        fix,
    );
    case(&[], UringProbe::NotProbed, &p, "io_uring", Status::Ok, "");
}

#[test]
fn old_kernels() {
    let p = plan();
    let kernel = |release| [("proc/sys/kernel/osrelease", Some(release))];
    case(
        &kernel("4.19.0-26-amd64\n"),
        UringProbe::NotProbed,
        &p,
        "kernel",
        Status::Fail,
        "upgrade to Linux 5.15",
    );
    case(
        &kernel("5.4.0-150-generic\n"),
        UringProbe::NotProbed,
        &p,
        "kernel",
        Status::Fail,
        "upgrade to Linux 5.15",
    );
    case(
        &kernel("5.10.0-28-amd64\n"),
        UringProbe::Works,
        &p,
        "kernel",
        Status::Ok,
        "",
    );
    // Before 5.12 rings count against RLIMIT_MEMLOCK: 8 rings of 1024
    // entries need 8 × (64 KiB + 40 KiB) = 832 KiB, more than 64 KiB.
    let small_memlock = [
        ("proc/sys/kernel/osrelease", Some("5.10.0-28-amd64\n")),
        (
            "proc/self/limits",
            Some(
                "Max open files            1048576              1048576              files     \n\
                 Max locked memory         65536                65536                bytes     \n",
            ),
        ),
    ];
    case(
        &small_memlock,
        UringProbe::NotProbed,
        &p,
        "RLIMIT_MEMLOCK",
        Status::Fail,
        "`LimitMEMLOCK=832K`",
    );
    case(
        &small_memlock,
        UringProbe::SetupFailed(libc::ENOMEM),
        &p,
        "io_uring",
        Status::Fail,
        "`LimitMEMLOCK=832K`",
    );
    case(
        &kernel("5.10.0-28-amd64\n"),
        UringProbe::NotProbed,
        &p,
        "RLIMIT_MEMLOCK",
        Status::Ok,
        "",
    );
}

#[test]
fn probe_answers() {
    let p = plan();
    case(
        &[],
        UringProbe::MissingOperations,
        &p,
        "io_uring",
        Status::Fail,
        "upgrade to Linux",
    );
    case(
        &[],
        UringProbe::ForcedLegacy,
        &p,
        "io_uring",
        Status::Warn,
        "unset MONOIO_FORCE_LEGACY_DRIVER",
    );
    case(
        &[],
        UringProbe::SetupFailed(libc::EINVAL),
        &p,
        "io_uring",
        Status::Fail,
        "`ring_entries = 128` (the default",
    );
    let epoll = Plan {
        epoll: true,
        ..plan()
    };
    case(
        &[],
        UringProbe::Works,
        &epoll,
        "io_uring",
        Status::Warn,
        "drop --epoll",
    );
}

#[test]
fn open_files_against_the_target() {
    let limits = |soft: u64, hard: u64| {
        format!(
            "Max open files            {soft}                 {hard}                 files     \n\
             Max locked memory         8388608              8388608              bytes     \n"
        )
    };
    let p = plan();
    // 100,000 connections + 64 + 4 × 8 shards = 100,096 → 100,352 rounded.
    let soft_1024 = limits(1024, 524_288);
    let changes = [("proc/self/limits", Some(soft_1024.as_str()))];
    case(
        &changes,
        UringProbe::Works,
        &p,
        "RLIMIT_NOFILE",
        Status::Fail,
        "`LimitNOFILE=100352` in the unit",
    );
    case(
        &changes,
        UringProbe::Works,
        &p,
        "RLIMIT_NOFILE",
        Status::Fail,
        "`ulimit -n 100352`",
    );
    let hard_low = limits(1024, 4096);
    let changes = [("proc/self/limits", Some(hard_low.as_str()))];
    case(
        &changes,
        UringProbe::Works,
        &p,
        "RLIMIT_NOFILE",
        Status::Fail,
        "`ringcast hard nofile 100352`",
    );
    // No target: the limit is turned into a connections_max to set.
    let no_target = Plan {
        connections: None,
        connections_source: "none",
        ..plan()
    };
    let soft_20k = limits(20_000, 20_000);
    let changes = [("proc/self/limits", Some(soft_20k.as_str()))];
    case(
        &changes,
        UringProbe::Works,
        &no_target,
        "RLIMIT_NOFILE",
        Status::Warn,
        "`connections_max = 19904`",
    );
    // The system-wide knobs.
    case(
        &[("proc/sys/fs/nr_open", Some("65536\n"))],
        UringProbe::Works,
        &p,
        "fs.nr_open",
        Status::Fail,
        "`fs.nr_open = 100352`",
    );
    case(
        &[("proc/sys/fs/file-max", Some("150000\n"))],
        UringProbe::Works,
        &p,
        "fs.file-max",
        Status::Fail,
        "`fs.file-max = 200704`",
    );
}

#[test]
fn listen_queues_against_the_backlog() {
    let p = plan();
    case(
        &[("proc/sys/net/core/somaxconn", Some("128\n"))],
        UringProbe::Works,
        &p,
        "net.core.somaxconn",
        Status::Warn,
        "`net.core.somaxconn = 1024`",
    );
    case(
        &[("proc/sys/net/ipv4/tcp_max_syn_backlog", Some("512\n"))],
        UringProbe::Works,
        &p,
        "net.ipv4.tcp_max_syn_backlog",
        Status::Warn,
        "`net.ipv4.tcp_max_syn_backlog = 1024`",
    );
}

#[test]
fn tcp_memory_against_connections() {
    let p = plan();
    // 100,000 × 16 KiB = 400,000 pages of 4 KiB: over a 300,000-page
    // pressure threshold (warn), over a 350,000-page limit (fail).
    let pressure = [("proc/sys/net/ipv4/tcp_mem", Some("200000 300000 450000\n"))];
    case(
        &pressure,
        UringProbe::Works,
        &p,
        "net.ipv4.tcp_mem",
        Status::Warn,
        "`net.ipv4.tcp_mem = 200000 400000 600000`",
    );
    let limit = [("proc/sys/net/ipv4/tcp_mem", Some("200000 300000 350000\n"))];
    case(
        &limit,
        UringProbe::Works,
        &p,
        "net.ipv4.tcp_mem",
        Status::Fail,
        "`net.ipv4.tcp_mem = 200000 400000 600000`",
    );
    // Send queues: 100,000 × 4 MiB is far over 32 GiB; 32 GiB / 100,000 =
    // 343 KiB, so 256 KiB.
    let big_queues = Plan {
        send_queue_bytes_max: 4 << 20,
        ..plan()
    };
    case(
        &[],
        UringProbe::Works,
        &big_queues,
        "send_queue_bytes_max",
        Status::Warn,
        "`send_queue_bytes_max = 262144`",
    );
}

#[test]
fn cores_against_shards() {
    let p = plan();
    case(
        &[("sys/devices/system/cpu/online", Some("0-3\n"))],
        UringProbe::Works,
        &p,
        "cores",
        Status::Warn,
        "`--shards 4`",
    );
    // The affinity mask counts too (taskset, CPUAffinity=).
    let pinned = [(
        "proc/self/status",
        Some("Uid:\t998\t998\t998\t998\nSeccomp:\t0\nCpus_allowed_list:\t0-1,4\n"),
    )];
    case(
        &pinned,
        UringProbe::Works,
        &p,
        "cores",
        Status::Warn,
        "`--shards 3`",
    );
    // A cgroup v2 quota of 2.5 CPUs.
    let quota = [
        ("proc/self/cgroup", Some("0::/system.slice/ringcast.service\n")),
        (
            "sys/fs/cgroup/system.slice/ringcast.service/cpu.max",
            Some("250000 100000\n"),
        ),
    ];
    case(
        &quota,
        UringProbe::Works,
        &p,
        "cores",
        Status::Warn,
        "`CPUQuota=800%`",
    );
    let fewer = Plan { shards: 6, ..plan() };
    case(&[], UringProbe::Works, &fewer, "cores", Status::Ok, "");
}

#[test]
fn hugepages_and_numa() {
    let p = plan();
    let thp = "sys/kernel/mm/transparent_hugepage/enabled";
    case(
        &[(thp, Some("[always] madvise never\n"))],
        UringProbe::Works,
        &p,
        "transparent hugepages",
        Status::Warn,
        "transparent_hugepage=madvise",
    );
    case(
        &[(thp, Some("always madvise [never]\n"))],
        UringProbe::Works,
        &p,
        "transparent hugepages",
        Status::Ok,
        "",
    );
    case(
        &[(thp, None)],
        UringProbe::Works,
        &p,
        "transparent hugepages",
        Status::Ok,
        "",
    );
    let two_nodes = [
        ("sys/devices/system/node/online", Some("0-1\n")),
        ("sys/devices/system/node/node0/cpulist", Some("0-3,8-11\n")),
    ];
    case(
        &two_nodes,
        UringProbe::Works,
        &p,
        "NUMA",
        Status::Warn,
        "--shards 8` (systemd: `CPUAffinity=0-3,8-11`",
    );
}

#[test]
fn privileged_port() {
    let port_80 = Plan {
        listen_port: 80,
        ..plan()
    };
    case(
        &[],
        UringProbe::Works,
        &port_80,
        "listen port",
        Status::Fail,
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    );
    let with_cap = [(
        "proc/self/status",
        Some("Uid:\t998\t998\t998\t998\nCapEff:\t0000000000000400\nSeccomp:\t0\nCpus_allowed_list:\t0-7\n"),
    )];
    case(
        &with_cap,
        UringProbe::Works,
        &port_80,
        "listen port",
        Status::Ok,
        "",
    );
}

#[test]
fn missing_files_never_panic_and_every_warning_has_a_fix() {
    let root = FakeRoot::new(&[]);
    std::fs::remove_dir_all(&root.path).expect("empty the fake root");
    let checks = run(&root.host(), UringProbe::NotProbed, &plan());
    assert_eq!(checks.len(), 16);
    for check in &checks {
        assert_ne!(check.status, Status::Fail, "{check}");
        assert_eq!(check.fix.is_some(), check.status != Status::Ok, "{check}");
    }
    assert_eq!(exit_code(&checks), 0);
    assert!(find(&checks, "net.core.somaxconn").detail.contains("cannot read"));
}

#[test]
fn plan_follows_the_configuration() {
    let cli = Cli {
        shards: Some(3),
        backlog: Some(2048),
        ..Cli::default()
    };
    let text = "[server]\nconnections_max = 50000\nsend_queue_bytes_max = 65536\n";
    let config = Config::from_toml(&cli, "test.toml", text).expect("valid config");
    let plan = Plan::new(&config, None);
    assert_eq!(
        (
            plan.shards,
            plan.backlog,
            plan.connections,
            plan.connections_source
        ),
        (3, 2048, Some(50_000), "connections_max")
    );
    assert_eq!(plan.send_queue_bytes_max, 65_536);
    // --connections wins over the file.
    assert_eq!(Plan::new(&config, Some(7)).connections, Some(7));
    let unlimited = Config::from_toml(&cli, "test.toml", "").expect("valid config");
    assert_eq!(Plan::new(&unlimited, None).connections, None);
}

#[test]
fn parsers() {
    assert_eq!(host::count_cpu_list("0-3,8-11\n"), Some(8));
    assert_eq!(host::count_cpu_list("0"), Some(1));
    assert_eq!(host::count_cpu_list("3-1"), None);
    assert_eq!(host::count_cpu_list("x"), None);
    let v = host::parse_kernel_version("6.18.44-fc-v782").expect("a version");
    assert_eq!((v.major, v.minor, v.patch), (6, 18, 44));
    assert_eq!(host::parse_kernel_version("5.10").map(|v| v.patch), Some(0));
    assert_eq!(host::parse_kernel_version("garbage"), None);
    assert_eq!(host::parse_triple("1 2 3\n"), Some([1, 2, 3]));
    assert_eq!(host::parse_triple("1 2"), None);
    assert_eq!(host::parse_triple("1 2 3 4"), None);
    let limits = "Max locked memory         unlimited            unlimited            bytes     \n";
    assert_eq!(
        host::parse_limit(limits, "Max locked memory"),
        Some(host::Rlimit {
            soft: u64::MAX,
            hard: u64::MAX
        })
    );
    assert_eq!(
        host::selected("always defer [madvise] never"),
        Some("madvise".into())
    );
    assert_eq!(host::parse_cpu_max("max 100000"), None);
    assert_eq!(host::parse_cpu_max("150000 100000"), Some(1.5));
    assert_eq!(host::cgroup_v2_path("12:cpu:/x\n0::/a/b\n"), Some("/a/b".into()));
    assert_eq!(
        host::parse_sockstat_tcp_mem("TCP: inuse 1 orphan 0 tw 0 alloc 2 mem 33\n"),
        Some(33)
    );
    assert_eq!(host::parse_mem_total("MemTotal:  1024 kB\n"), Some(1 << 20));
    let status = host::parse_status("Uid:\t1\t2\t3\t4\nGroups:\t5 6\nCapEff:\t0000000000000400\n");
    assert_eq!((status.euid, status.groups.clone()), (Some(2), vec![5, 6]));
    assert!(status.has_capability(host::CAP_NET_BIND_SERVICE));
    assert_eq!(super::checks::bytes(1536), "1.5 KiB");
    assert_eq!(super::checks::count(1_048_576), "1,048,576");
}

/// The real host, read and probed as `ringcast doctor` does. It asserts
/// what holds on any Linux host and prints the report (`--nocapture`).
#[test]
fn real_host() {
    let config = Config::load(&Cli::default()).expect("the default configuration");
    let plan = Plan::new(&config, Some(1_000));
    let host = Host::read(Path::new("/"));
    let probe = probe::probe(plan.ring_entries);
    let checks = run(&host, probe, &plan);
    println!("{}", render(&plan, &checks));
    assert_eq!(checks.len(), 16);
    assert!(host.kernel.is_some() && host.nofile.is_some() && host.process.is_some());
    assert!(host.cpus_online.is_some_and(|n| n >= 1));
    // The probe agrees with the test the server makes before choosing its driver.
    assert_eq!(
        probe == UringProbe::Works,
        monoio::utils::detect_uring(),
        "{probe:?}"
    );
    for check in &checks {
        assert_eq!(check.fix.is_some(), check.status != Status::Ok, "{check}");
    }
}
