//! The checks: pure functions from a host snapshot, the io_uring probe's
//! answer and the plan (what the server would run with) to one [`Check`].
//!
//! No I/O happens here, so every branch is tested with made-up hosts. Each
//! check that does not pass says exactly what to change: a sysctl line, a
//! systemd directive, a `[server]` setting or a kernel version. Numbers in
//! fixes are computed from the plan, never placeholders, except where only
//! the operator knows them (the `ringcast` group's id on another host).

use std::fmt::Display;

use super::host::{Host, KernelVersion, ProcessStatus, CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN};
use super::probe::UringProbe;
use super::{Check, Plan, Status};
use crate::config::RING_ENTRIES_DEFAULT;

/// Where the sysctl fixes go (deploy/sysctl.d/60-ringcast.conf installs there).
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/60-ringcast.conf";

/// Descriptors a shard holds besides connections: its listener, its ring,
/// its wake-up eventfd (3, counted in `/proc/PID/fd`), and one spare.
pub const FDS_PER_SHARD: u64 = 4;

/// Descriptors of the process besides shards: stdio, the signal thread's
/// pipe, the config file on reload (7 counted), with room to spare.
pub const FDS_FIXED: u64 = 64;

/// io_uring's most entries per ring (`IORING_MAX_ENTRIES`).
const RING_ENTRIES_MAX: u32 = 32_768;

/// The first kernel with every io_uring operation monoio's driver uses
/// (provide-buffers arrived in 5.7).
const KERNEL_URING_OPS: KernelVersion = KernelVersion::new(5, 7, 0);

/// The first kernel that no longer counts rings against RLIMIT_MEMLOCK.
const KERNEL_URING_NO_MEMLOCK: KernelVersion = KernelVersion::new(5, 12, 0);

/// The first kernel with `kernel.io_uring_disabled`.
const KERNEL_URING_SYSCTL: KernelVersion = KernelVersion::new(6, 6, 0);

const UPGRADE_KERNEL: &str = "upgrade to Linux 5.15 or newer (Debian 12 ships 6.1); \
     until then the shards run on epoll (say so with --epoll)";

const SECCOMP_FIX: &str = "let io_uring_setup, io_uring_enter and io_uring_register through: \
     in systemd `SystemCallFilter=@system-service io_uring_setup io_uring_enter io_uring_register` \
     (as deploy/ringcast.service has); in a container, a seccomp profile that allows them \
     (Docker's default profile blocks them)";

const GROUP_OF_RINGCAST: &str = "$(getent group ringcast | cut -d: -f3)";

/// Every check, in the order they print.
pub fn all(host: &Host, probe: UringProbe, plan: &Plan) -> Vec<Check> {
    let mut checks = vec![
        kernel(host),
        io_uring_disabled(host),
        seccomp(host, probe),
        memlock(host, plan),
    ];
    checks.push(io_uring(host, probe, plan, &checks));
    checks.extend([
        open_files(host, plan),
        nr_open(host, plan),
        file_max(host, plan),
        somaxconn(host, plan),
        syn_backlog(host, plan),
        tcp_mem(host, plan),
        send_queues(host, plan),
        cores(host, plan),
        hugepages(host),
        numa(host),
        listen_port(host, plan),
    ]);
    checks
}

pub fn kernel(host: &Host) -> Check {
    const NAME: &str = "kernel";
    let (Some(version), Some(release)) = (host.kernel, host.kernel_release.as_deref()) else {
        return unreadable(NAME, "proc/sys/kernel/osrelease");
    };
    if version < KernelVersion::new(5, 1, 0) {
        return Check::fail(
            NAME,
            format!("{release} has no io_uring (Linux 5.1+)"),
            UPGRADE_KERNEL,
        );
    }
    if version < KERNEL_URING_OPS {
        return Check::fail(
            NAME,
            format!("{release}: io_uring lacks operations monoio uses (Linux 5.7+)"),
            UPGRADE_KERNEL,
        );
    }
    Check::ok(
        NAME,
        format!("{release}: io_uring with every operation monoio uses (5.7+)"),
    )
}

pub fn io_uring_disabled(host: &Host) -> Check {
    const NAME: &str = "kernel.io_uring_disabled";
    let Some(mode) = host.io_uring_disabled else {
        if host.kernel.is_none_or(|k| k >= KERNEL_URING_SYSCTL) {
            return unreadable(NAME, "proc/sys/kernel/io_uring_disabled");
        }
        return Check::ok(
            NAME,
            "absent (Linux before 6.6): io_uring cannot be switched off by sysctl",
        );
    };
    if mode == 0 {
        return Check::ok(NAME, "0: every process may create rings");
    }
    if mode >= 2 {
        return Check::fail(
            NAME,
            format!("{mode}: io_uring is disabled for every process"),
            format!(
                "{} (or 1 with kernel.io_uring_group = the ringcast group's id)",
                sysctl("kernel.io_uring_disabled", 0)
            ),
        );
    }
    let group = host.io_uring_group.and_then(|g| u32::try_from(g).ok());
    let process = host.process.clone().unwrap_or_default();
    let group_text = group.map_or_else(|| "no kernel.io_uring_group".to_owned(), |g| format!("group {g}"));
    if group.is_some_and(|g| process.in_group(g)) {
        return Check::ok(
            NAME,
            format!("1, and this process is in kernel.io_uring_group ({group_text})"),
        );
    }
    // The service's own group id when doctor runs as that user (e.g. from
    // the unit's ExecStartPre); a lookup to paste when it runs as root.
    let service_gid = match (process.euid, process.egid) {
        (Some(uid), Some(gid)) if uid != 0 => gid.to_string(),
        _ => GROUP_OF_RINGCAST.to_owned(),
    };
    let fix = format!(
        "{} (or {})",
        sysctl("kernel.io_uring_group", service_gid),
        sysctl("kernel.io_uring_disabled", 0)
    );
    let detail = format!("1: only CAP_SYS_ADMIN and {group_text} may create rings");
    if process.euid == Some(0) || process.has_capability(CAP_SYS_ADMIN) {
        return Check::warn(
            NAME,
            format!("{detail}; this process may (it has CAP_SYS_ADMIN), the service's user may not"),
            fix,
        );
    }
    Check::fail(NAME, format!("{detail}; this process may not"), fix)
}

pub fn seccomp(host: &Host, probe: UringProbe) -> Check {
    const NAME: &str = "seccomp";
    let Some(mode) = host.process.as_ref().and_then(|p| p.seccomp_mode) else {
        return unreadable(NAME, "proc/self/status");
    };
    if mode == 0 {
        return Check::ok(NAME, "no seccomp filter on this process");
    }
    let disabled_by_sysctl = host.io_uring_disabled.is_some_and(|m| m != 0);
    match probe {
        UringProbe::Works | UringProbe::MissingOperations => {
            Check::ok(NAME, "a seccomp filter is active and lets io_uring_setup through")
        }
        UringProbe::SetupFailed(errno)
            if matches!(errno, libc::EPERM | libc::ENOSYS) && !disabled_by_sysctl =>
        {
            Check::fail(
                NAME,
                format!("a seccomp filter blocks io_uring_setup ({})", errno_text(errno)),
                SECCOMP_FIX,
            )
        }
        UringProbe::SetupFailed(errno) if !matches!(errno, libc::EPERM | libc::ENOSYS) => Check::ok(
            NAME,
            format!(
                "a seccomp filter is active and lets io_uring_setup through (it failed later: {})",
                errno_text(errno)
            ),
        ),
        _ => Check::warn(
            NAME,
            "a seccomp filter is active; whether it allows io_uring was not probed",
            SECCOMP_FIX,
        ),
    }
}

pub fn memlock(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "RLIMIT_MEMLOCK";
    if host.kernel.is_some_and(|k| k >= KERNEL_URING_NO_MEMLOCK) {
        return Check::ok(NAME, "not used for io_uring rings since Linux 5.12");
    }
    let Some(limit) = host.memlock else {
        return unreadable(NAME, "proc/self/limits");
    };
    let need = ring_bytes(plan.ring_entries).saturating_mul(plan.shards as u64);
    let what = format!(
        "about {} for {} rings of {} entries (kernels before 5.12 count rings against it)",
        bytes(need),
        plan.shards,
        plan.ring_entries
    );
    if limit.soft >= need {
        return Check::ok(
            NAME,
            format!("soft limit {} covers {what}", limit_bytes(limit.soft)),
        );
    }
    let kib = need.div_ceil(1024);
    Check::fail(
        NAME,
        format!("soft limit {} is below {what}", limit_bytes(limit.soft)),
        format!(
            "`LimitMEMLOCK={}K` in the unit, or `ulimit -l {kib}` before starting",
            kib
        ),
    )
}

/// The verdict on io_uring: the probe's answer, or (not probed) the worst
/// of the file-based lines before it.
pub fn io_uring(host: &Host, probe: UringProbe, plan: &Plan, earlier: &[Check]) -> Check {
    const NAME: &str = "io_uring";
    if plan.epoll {
        return Check::warn(
            NAME,
            "--epoll given: the shards run monoio's epoll driver even where io_uring works",
            "drop --epoll",
        );
    }
    let entries = plan.ring_entries;
    match probe {
        UringProbe::Works => Check::ok(
            NAME,
            format!("a {entries}-entry ring works and supports every operation monoio uses"),
        ),
        UringProbe::ForcedLegacy => Check::warn(
            NAME,
            "MONOIO_FORCE_LEGACY_DRIVER is set: the shards run epoll",
            "unset MONOIO_FORCE_LEGACY_DRIVER",
        ),
        UringProbe::MissingOperations => Check::fail(
            NAME,
            "rings work but an operation monoio uses is missing; the shards would fall back to epoll",
            UPGRADE_KERNEL,
        ),
        UringProbe::SetupFailed(errno) => {
            let (cause, fix) = setup_failure(host, plan, errno);
            Check::fail(
                NAME,
                format!(
                    "io_uring_setup({entries}) failed: {} ({cause}); the shards would fall back to epoll",
                    errno_text(errno)
                ),
                fix,
            )
        }
        UringProbe::NotProbed => {
            let worst = earlier
                .iter()
                .filter(|c| c.status != Status::Ok)
                .max_by_key(|c| c.status);
            match worst {
                None => Check::ok(
                    NAME,
                    "not probed (--root describes another host); its files allow io_uring",
                ),
                Some(check) => Check::new(
                    NAME,
                    check.status,
                    format!("not probed (--root); `{}` above says it may not work", check.name),
                    check.fix.clone(),
                ),
            }
        }
    }
}

/// The likely cause of an `io_uring_setup` errno, and its fix.
fn setup_failure(host: &Host, plan: &Plan, errno: i32) -> (String, String) {
    match errno {
        libc::EPERM if host.io_uring_disabled.is_some_and(|m| m != 0) => (
            "kernel.io_uring_disabled".into(),
            sysctl("kernel.io_uring_disabled", 0),
        ),
        libc::EPERM => ("a seccomp filter or an LSM".into(), SECCOMP_FIX.into()),
        libc::ENOSYS => (
            "a kernel without CONFIG_IO_URING, or a seccomp filter".into(),
            format!("a kernel built with CONFIG_IO_URING=y (Debian's are); otherwise {SECCOMP_FIX}"),
        ),
        libc::ENOMEM => {
            let kib = ring_bytes(plan.ring_entries)
                .saturating_mul(plan.shards as u64)
                .div_ceil(1024);
            (
                "locked-memory limit (kernels before 5.12) or memory".into(),
                format!("`LimitMEMLOCK={kib}K` in the unit, or `ulimit -l {kib}`; or free memory"),
            )
        }
        libc::EINVAL => (
            format!(
                "ring_entries = {} is more than the kernel takes",
                plan.ring_entries
            ),
            format!(
                "`ring_entries = {RING_ENTRIES_DEFAULT}` (the default; at most {RING_ENTRIES_MAX}) in [server]"
            ),
        ),
        _ => (
            "unexpected".into(),
            "see io_uring_setup(2) for this error; until it is fixed the shards run on epoll".into(),
        ),
    }
}

pub fn open_files(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "RLIMIT_NOFILE";
    let Some(limit) = host.nofile else {
        return unreadable(NAME, "proc/self/limits");
    };
    let reserve = fds_reserved(plan);
    let Some(connections) = plan.connections else {
        let room = limit.soft.saturating_sub(reserve);
        return Check::warn(
            NAME,
            format!(
                "connections_max = 0 (no limit) and no --connections: the soft limit {} fits about {} \
                 connections; past that accepts fail and back off",
                count(limit.soft),
                count(room)
            ),
            format!(
                "`connections_max = {room}` in [server] (upgrades over it get 503), or plan for a \
                 number with `ringcast doctor --connections N`"
            ),
        );
    };
    let need = connections.saturating_add(reserve);
    let what = format!(
        "{} descriptors for {} connections ({}) and {} shards",
        count(need),
        count(connections),
        plan.connections_source,
        plan.shards
    );
    if limit.soft >= need {
        return Check::ok(NAME, format!("soft limit {} covers {what}", count(limit.soft)));
    }
    let target = round_up(need, 1024);
    let shell = if target <= limit.hard {
        format!("`ulimit -n {target}` before starting")
    } else {
        format!(
            "raise the hard limit {} too (limits.conf: `ringcast hard nofile {target}`)",
            count(limit.hard)
        )
    };
    Check::fail(
        NAME,
        format!("soft limit {} is below {what}", count(limit.soft)),
        format!("`LimitNOFILE={target}` in the unit (deploy/ringcast.service sets 1048576), or {shell}"),
    )
}

pub fn nr_open(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "fs.nr_open";
    let Some(nr_open) = host.nr_open else {
        return unreadable(NAME, "proc/sys/fs/nr_open");
    };
    let Some(connections) = plan.connections else {
        return Check::ok(NAME, format!("{}: LimitNOFILE may go up to it", count(nr_open)));
    };
    let need = connections.saturating_add(fds_reserved(plan));
    if nr_open >= need {
        return Check::ok(
            NAME,
            format!(
                "{} ≥ {} descriptors: LimitNOFILE can be raised far enough",
                count(nr_open),
                count(need)
            ),
        );
    }
    Check::fail(
        NAME,
        format!(
            "{}: no process may open {} descriptors, whatever LimitNOFILE says",
            count(nr_open),
            count(need)
        ),
        sysctl("fs.nr_open", round_up(need, 1024)),
    )
}

pub fn file_max(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "fs.file-max";
    let Some(file_max) = host.file_max else {
        return unreadable(NAME, "proc/sys/fs/file-max");
    };
    let Some(connections) = plan.connections else {
        return Check::ok(NAME, format!("{} open files system-wide", count(file_max)));
    };
    let need = connections.saturating_add(fds_reserved(plan));
    if file_max >= need.saturating_mul(2) {
        return Check::ok(
            NAME,
            format!(
                "{} system-wide ≥ twice the {} ringcast needs",
                count(file_max),
                count(need)
            ),
        );
    }
    // Every other process on the host needs files too: leave as many again.
    Check::fail(
        NAME,
        format!(
            "{} system-wide leaves too little beside the {} ringcast needs",
            count(file_max),
            count(need)
        ),
        sysctl("fs.file-max", round_up(need.saturating_mul(2), 1024)),
    )
}

pub fn somaxconn(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "net.core.somaxconn";
    let Some(value) = host.somaxconn else {
        return unreadable(NAME, "proc/sys/net/core/somaxconn");
    };
    if value >= plan.backlog {
        return Check::ok(
            NAME,
            format!(
                "{} ≥ backlog = {}: each shard's accept queue holds {}",
                count(value),
                count(plan.backlog),
                count(plan.backlog)
            ),
        );
    }
    Check::warn(
        NAME,
        format!(
            "{} < backlog = {}: the kernel caps each shard's accept queue at {}; a reconnect storm \
             beyond it is dropped and retried a second later",
            count(value),
            count(plan.backlog),
            count(value)
        ),
        sysctl("net.core.somaxconn", plan.backlog),
    )
}

pub fn syn_backlog(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "net.ipv4.tcp_max_syn_backlog";
    let Some(value) = host.tcp_max_syn_backlog else {
        return unreadable(NAME, "proc/sys/net/ipv4/tcp_max_syn_backlog");
    };
    if value >= plan.backlog {
        return Check::ok(
            NAME,
            format!("{} ≥ backlog = {}", count(value), count(plan.backlog)),
        );
    }
    Check::warn(
        NAME,
        format!(
            "{} < backlog = {}: half-open connections beyond it fall back to SYN cookies (or are \
             dropped without them) during a reconnect storm",
            count(value),
            count(plan.backlog)
        ),
        sysctl("net.ipv4.tcp_max_syn_backlog", plan.backlog),
    )
}

/// Kernel TCP memory against every connection holding a default send
/// buffer of unacknowledged data at once, as after a broadcast. Queued
/// frames are shared between recipients in ringcast's memory, but the
/// kernel copies each into every recipient's socket: this is where
/// connections × message size really costs.
pub fn tcp_mem(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "net.ipv4.tcp_mem";
    let (Some(mem), Some(wmem)) = (host.tcp_mem_pages, host.tcp_wmem_bytes) else {
        return unreadable(NAME, "proc/sys/net/ipv4/tcp_mem and tcp_wmem");
    };
    let page = host.page_bytes.max(1);
    let [low, pressure, high] = mem;
    let in_use = host
        .tcp_mem_in_use_pages
        .map(|p| format!("; {} in use now", bytes(p.saturating_mul(page))))
        .unwrap_or_default();
    let Some(connections) = plan.connections else {
        let per_connection = pressure.saturating_mul(page);
        return Check::ok(
            NAME,
            format!(
                "pressure at {} (limit {}){in_use}: room for {} connections each holding a {} \
                 default send buffer (plan a number with --connections N)",
                bytes(per_connection),
                bytes(high.saturating_mul(page)),
                count(per_connection / wmem[1].max(1)),
                bytes(wmem[1])
            ),
        );
    };
    let need_bytes = connections.saturating_mul(wmem[1]);
    let need_pages = need_bytes.div_ceil(page);
    let what = format!(
        "{} connections × {} default send buffer (tcp_wmem) = {}",
        count(connections),
        bytes(wmem[1]),
        bytes(need_bytes)
    );
    let limits = format!(
        "pressure at {}, limit {}{in_use}",
        bytes(pressure.saturating_mul(page)),
        bytes(high.saturating_mul(page))
    );
    if need_pages <= pressure {
        return Check::ok(
            NAME,
            format!("{what} fits below the pressure threshold ({limits})"),
        );
    }
    let fix = sysctl(
        "net.ipv4.tcp_mem",
        format!(
            "{} {} {}",
            low.min(need_pages),
            need_pages,
            high.max(need_pages.saturating_add(need_pages / 2))
        ),
    );
    if need_pages <= high {
        return Check::warn(
            NAME,
            format!("{what} is over the pressure threshold ({limits}): a broadcast burst makes the kernel shrink every socket's buffers"),
            fix,
        );
    }
    Check::fail(
        NAME,
        format!(
            "{what} is over the hard limit ({limits}): sends stall and packets drop under a broadcast burst"
        ),
        fix,
    )
}

/// ringcast's own queues: the worst case of every connection holding
/// `send_queue_bytes_max` of frames nobody else shares, against the RAM.
pub fn send_queues(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "send_queue_bytes_max";
    let Some(mem_total) = host.mem_total_bytes else {
        return unreadable(NAME, "proc/meminfo");
    };
    let Some(connections) = plan.connections else {
        return Check::ok(
            NAME,
            format!(
                "{} per connection; RAM {} (plan a number with --connections N)",
                bytes(plan.send_queue_bytes_max),
                bytes(mem_total)
            ),
        );
    };
    let worst = connections.saturating_mul(plan.send_queue_bytes_max);
    let what = format!(
        "{} connections × {} = {} if every one stalls with frames of its own (broadcast frames are \
         shared, so real use is lower), RAM {}",
        count(connections),
        bytes(plan.send_queue_bytes_max),
        bytes(worst),
        bytes(mem_total)
    );
    if worst <= mem_total {
        return Check::ok(NAME, what);
    }
    // The largest power of two that keeps the worst case within the RAM,
    // and no lower than the server accepts.
    let per_connection = (mem_total / connections.max(1)).max(4096);
    let suggested = 1u64 << (63 - per_connection.leading_zeros());
    Check::warn(
        NAME,
        what,
        format!("`send_queue_bytes_max = {suggested}` in [server] (or a lower connections_max)"),
    )
}

pub fn cores(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "cores";
    let allowed = host.process.as_ref().and_then(|p| p.cpus_allowed);
    let Some(usable) = [allowed, host.cpus_online].into_iter().flatten().min() else {
        return unreadable(NAME, "sys/devices/system/cpu/online");
    };
    let shards = plan.shards;
    if shards > usable {
        return Check::warn(
            NAME,
            format!(
                "{shards} shards on {usable} usable CPUs: shards share cores (shard i is pinned to \
                 CPU i mod {usable}) and time-slice"
            ),
            format!("`--shards {usable}` (or `shards = {usable}` in [server])"),
        );
    }
    if let Some(quota) = host.cgroup_cpus.filter(|&q| q < shards as f64) {
        let fit = (quota.floor() as usize).max(1);
        return Check::warn(
            NAME,
            format!(
                "the cgroup CPU quota is {quota:.1} CPUs for {shards} shards: pinned shards get throttled"
            ),
            format!(
                "`CPUQuota={}%` for the unit (or none), or `--shards {fit}`",
                shards * 100
            ),
        );
    }
    let spare = match usable - shards {
        0 => String::new(),
        n => format!("; {n} left for the kernel's network stack and other work"),
    };
    Check::ok(NAME, format!("{shards} shards on {usable} usable CPUs{spare}"))
}

pub fn hugepages(host: &Host) -> Check {
    const NAME: &str = "transparent hugepages";
    let Some(enabled) = host.thp_enabled.as_deref() else {
        return Check::ok(NAME, "not built into this kernel");
    };
    let defrag = host.thp_defrag.as_deref().unwrap_or("unknown");
    let mut fixes = Vec::new();
    if enabled == "always" {
        fixes.push(
            "`echo madvise > /sys/kernel/mm/transparent_hugepage/enabled` (at boot: kernel \
             command line `transparent_hugepage=madvise`)",
        );
    }
    if defrag == "always" {
        fixes.push("`echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag`");
    }
    let detail = format!("enabled = {enabled}, defrag = {defrag}");
    if fixes.is_empty() {
        return Check::ok(NAME, detail);
    }
    Check::warn(
        NAME,
        format!(
            "{detail}: ringcast opts its own heap out (prctl), but page faults elsewhere may \
             stall on compaction"
        ),
        fixes.join(" and "),
    )
}

pub fn numa(host: &Host) -> Check {
    const NAME: &str = "NUMA";
    let nodes = host.numa_nodes.unwrap_or(1);
    if nodes <= 1 {
        return Check::ok(NAME, "one node");
    }
    let cpus = host.numa_node0_cpus.as_deref().unwrap_or("<CPUs of node 0>");
    let shards = host
        .numa_node0_cpus
        .as_deref()
        .and_then(super::host::count_cpu_list)
        .map_or_else(|| "<its CPU count>".to_owned(), |n| n.to_string());
    Check::warn(
        NAME,
        format!(
            "{nodes} nodes: shards are pinned in CPU order across nodes, so cross-shard messages \
             and the shared rate-limit table cross the interconnect"
        ),
        format!(
            "one ringcast per node, e.g. node 0: `numactl --cpunodebind=0 --membind=0 ringcast \
             --shards {shards}` (systemd: `CPUAffinity={cpus}`, `NUMAPolicy=bind`, `NUMAMask=0`), \
             the next node's instance on another port behind the proxy"
        ),
    )
}

pub fn listen_port(host: &Host, plan: &Plan) -> Check {
    const NAME: &str = "listen port";
    let port = u64::from(plan.listen_port);
    let start = host.unprivileged_port_start.unwrap_or(1024);
    if port == 0 || port >= start {
        return Check::ok(
            NAME,
            format!("{port} needs no privilege (unprivileged from {start})"),
        );
    }
    let process: ProcessStatus = host.process.clone().unwrap_or_default();
    let fix = format!(
        "`AmbientCapabilities=CAP_NET_BIND_SERVICE` and `CapabilityBoundingSet=CAP_NET_BIND_SERVICE` \
         in the unit, or listen on a port ≥ {start} behind nginx or HAProxy"
    );
    if process.has_capability(CAP_NET_BIND_SERVICE) && process.euid != Some(0) {
        return Check::ok(
            NAME,
            format!("{port} < {start}, and this process has CAP_NET_BIND_SERVICE"),
        );
    }
    if process.euid == Some(0) {
        return Check::warn(
            NAME,
            format!("{port} < {start}: allowed as root, not as the service's own user"),
            fix,
        );
    }
    Check::fail(
        NAME,
        format!("{port} < {start} and this process lacks CAP_NET_BIND_SERVICE"),
        fix,
    )
}

/// A file a check needs could not be read.
fn unreadable(name: &'static str, path: &str) -> Check {
    Check::warn(
        name,
        format!("cannot read {path}"),
        format!("run doctor where /{path} is readable (/proc and /sys mounted)"),
    )
}

fn fds_reserved(plan: &Plan) -> u64 {
    FDS_FIXED + FDS_PER_SHARD * plan.shards as u64
}

/// Bytes of ring memory for `entries` entries, as kernels before 5.12
/// count it: the submission entries (64 bytes each), and the rings with
/// twice as many completion entries (16 bytes each) and the index array.
fn ring_bytes(entries: u32) -> u64 {
    let entries = u64::from(entries);
    round_up(entries * 64, 4096) + round_up(entries * 2 * 16 + entries * 4 + 1024, 4096)
}

/// A sysctl fix: the line to add and how to apply it.
fn sysctl(key: &str, value: impl Display) -> String {
    format!("`{key} = {value}` in {SYSCTL_FILE}, then `sysctl --system`")
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

fn limit_bytes(n: u64) -> String {
    if n == u64::MAX {
        "unlimited".into()
    } else {
        bytes(n)
    }
}

/// `1536` → `1.5 KiB`; exact values print without decimals.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    let mut scaled = n as f64;
    while scaled >= 1024.0 && unit + 1 < UNITS.len() {
        scaled /= 1024.0;
        unit += 1;
    }
    if scaled.fract() == 0.0 {
        format!("{scaled:.0} {}", UNITS[unit])
    } else {
        format!("{scaled:.1} {}", UNITS[unit])
    }
}

/// `1048576` → `1,048,576`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
