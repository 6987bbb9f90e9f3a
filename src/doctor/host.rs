//! A snapshot of the host: the `/proc` and `/sys` files `doctor` looks at,
//! read once under a root directory and parsed into plain values.
//!
//! [`Host::read`] is the only function here that touches the file system;
//! the parsers are pure and take the file's text. A file that is missing or
//! unreadable becomes `None`, never an error: the check that needs it says
//! so. Process-level facts (limits, seccomp, uid, affinity) come from
//! `proc/self/`, so under a test root they are as fake as the rest.

use std::path::Path;

/// A resource limit as `/proc/self/limits` shows it; `u64::MAX` is
/// "unlimited" (the same value as `RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: u64,
    pub hard: u64,
}

/// A kernel version, e.g. 6.1.0 for `6.1.0-18-amd64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self { major, minor, patch }
    }
}

/// What `/proc/self/status` says about the process doing the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessStatus {
    /// 0: none, 1: strict, 2: filter.
    pub seccomp_mode: Option<u32>,
    pub euid: Option<u32>,
    pub egid: Option<u32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Effective capability bits (`CapEff`).
    pub cap_eff: Option<u64>,
    /// CPUs this process may run on (`Cpus_allowed_list`), counted.
    pub cpus_allowed: Option<usize>,
}

/// Capability bit numbers (linux/capability.h).
pub const CAP_NET_BIND_SERVICE: u32 = 10;
pub const CAP_SYS_ADMIN: u32 = 21;

impl ProcessStatus {
    pub fn has_capability(&self, bit: u32) -> bool {
        self.cap_eff.is_some_and(|caps| caps & (1 << bit) != 0)
    }

    /// Whether the process is root or a member of `gid`.
    pub fn in_group(&self, gid: u32) -> bool {
        self.egid == Some(gid) || self.groups.contains(&gid)
    }
}

/// Everything the checks read. `None`: the file was missing or unreadable.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// `proc/sys/kernel/osrelease`, as written.
    pub kernel_release: Option<String>,
    pub kernel: Option<KernelVersion>,
    /// `kernel.io_uring_disabled` (Linux 6.6+; absent before).
    pub io_uring_disabled: Option<u32>,
    /// `kernel.io_uring_group`; -1 is "no group".
    pub io_uring_group: Option<i64>,
    pub process: Option<ProcessStatus>,
    pub nofile: Option<Rlimit>,
    pub memlock: Option<Rlimit>,
    pub nr_open: Option<u64>,
    pub file_max: Option<u64>,
    pub somaxconn: Option<u64>,
    pub tcp_max_syn_backlog: Option<u64>,
    /// `net.ipv4.tcp_mem`: low, pressure, high, in pages.
    pub tcp_mem_pages: Option<[u64; 3]>,
    /// `net.ipv4.tcp_wmem`: min, default, max, in bytes.
    pub tcp_wmem_bytes: Option<[u64; 3]>,
    /// Pages TCP uses now (`mem` of the `TCP:` line of `proc/net/sockstat`).
    pub tcp_mem_in_use_pages: Option<u64>,
    pub unprivileged_port_start: Option<u64>,
    pub mem_total_bytes: Option<u64>,
    /// CPUs online (`sys/devices/system/cpu/online`), counted.
    pub cpus_online: Option<usize>,
    /// The cgroup v2 CPU quota of this process (`cpu.max`), in CPUs;
    /// `None` when there is none (or no cgroup v2).
    pub cgroup_cpus: Option<f64>,
    /// The selected value of `transparent_hugepage/enabled` and `defrag`.
    pub thp_enabled: Option<String>,
    pub thp_defrag: Option<String>,
    /// NUMA nodes online; `None` when the kernel shows no node directory.
    pub numa_nodes: Option<usize>,
    /// CPU list of node 0, as written (`0-15,32-47`).
    pub numa_node0_cpus: Option<String>,
    /// The page size the `tcp_mem` pages are counted in.
    pub page_bytes: u64,
}

impl Host {
    /// Reads the snapshot from `root` (`/` for this host).
    pub fn read(root: &Path) -> Self {
        let text = |path: &str| std::fs::read_to_string(root.join(path)).ok();
        let number = |path: &str| text(path).and_then(|t| t.trim().parse::<u64>().ok());
        let triple = |path: &str| text(path).and_then(|t| parse_triple(&t));
        let limits = text("proc/self/limits");
        let kernel_release = text("proc/sys/kernel/osrelease").map(|t| t.trim().to_owned());
        let cgroup_cpus = text("proc/self/cgroup")
            .and_then(|t| cgroup_v2_path(&t))
            .and_then(|path| text(&format!("sys/fs/cgroup{path}/cpu.max")))
            .and_then(|t| parse_cpu_max(&t));
        Self {
            kernel: kernel_release.as_deref().and_then(parse_kernel_version),
            kernel_release,
            io_uring_disabled: number("proc/sys/kernel/io_uring_disabled")
                .and_then(|n| u32::try_from(n).ok()),
            io_uring_group: text("proc/sys/kernel/io_uring_group").and_then(|t| t.trim().parse().ok()),
            process: text("proc/self/status").map(|t| parse_status(&t)),
            nofile: limits.as_deref().and_then(|t| parse_limit(t, "Max open files")),
            memlock: limits
                .as_deref()
                .and_then(|t| parse_limit(t, "Max locked memory")),
            nr_open: number("proc/sys/fs/nr_open"),
            file_max: number("proc/sys/fs/file-max"),
            somaxconn: number("proc/sys/net/core/somaxconn"),
            tcp_max_syn_backlog: number("proc/sys/net/ipv4/tcp_max_syn_backlog"),
            tcp_mem_pages: triple("proc/sys/net/ipv4/tcp_mem"),
            tcp_wmem_bytes: triple("proc/sys/net/ipv4/tcp_wmem"),
            tcp_mem_in_use_pages: text("proc/net/sockstat").and_then(|t| parse_sockstat_tcp_mem(&t)),
            unprivileged_port_start: number("proc/sys/net/ipv4/ip_unprivileged_port_start"),
            mem_total_bytes: text("proc/meminfo").and_then(|t| parse_mem_total(&t)),
            cpus_online: text("sys/devices/system/cpu/online").and_then(|t| count_cpu_list(&t)),
            cgroup_cpus,
            thp_enabled: text("sys/kernel/mm/transparent_hugepage/enabled").and_then(|t| selected(&t)),
            thp_defrag: text("sys/kernel/mm/transparent_hugepage/defrag").and_then(|t| selected(&t)),
            numa_nodes: text("sys/devices/system/node/online").and_then(|t| count_cpu_list(&t)),
            numa_node0_cpus: text("sys/devices/system/node/node0/cpulist").map(|t| t.trim().to_owned()),
            page_bytes: page_bytes(),
        }
    }
}

/// The page size of this machine (the unit of `tcp_mem`).
fn page_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
}

/// `6.1.0-18-amd64` → 6.1.0; `5.10` → 5.10.0.
pub fn parse_kernel_version(release: &str) -> Option<KernelVersion> {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    let patch = numbers.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some(KernelVersion { major, minor, patch })
}

/// Three whitespace-separated numbers (`tcp_mem`, `tcp_wmem`).
pub fn parse_triple(text: &str) -> Option<[u64; 3]> {
    let mut values = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let triple = [values.next()??, values.next()??, values.next()??];
    values.next().is_none().then_some(triple)
}

/// The soft and hard value of the `/proc/self/limits` row named `name`.
pub fn parse_limit(text: &str, name: &str) -> Option<Rlimit> {
    let row = text.lines().find_map(|line| line.strip_prefix(name))?;
    let mut values = row.split_whitespace().map(|v| match v {
        "unlimited" => Some(u64::MAX),
        v => v.parse().ok(),
    });
    Some(Rlimit {
        soft: values.next()??,
        hard: values.next()??,
    })
}

/// The fields of `/proc/self/status` the checks use.
pub fn parse_status(text: &str) -> ProcessStatus {
    let mut status = ProcessStatus::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Seccomp" => status.seccomp_mode = value.parse().ok(),
            // Real, effective, saved, filesystem.
            "Uid" => status.euid = value.split_whitespace().nth(1).and_then(|v| v.parse().ok()),
            "Gid" => status.egid = value.split_whitespace().nth(1).and_then(|v| v.parse().ok()),
            "Groups" => status.groups = value.split_whitespace().filter_map(|v| v.parse().ok()).collect(),
            "CapEff" => status.cap_eff = u64::from_str_radix(value, 16).ok(),
            "Cpus_allowed_list" => status.cpus_allowed = count_cpu_list(value),
            _ => {}
        }
    }
    status
}

/// Counts a kernel CPU (or node) list: `0-3,8-11` → 8. `None` if malformed.
pub fn count_cpu_list(text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    let mut count = 0usize;
    for part in text.split(',') {
        count += match part.split_once('-') {
            Some((first, last)) => {
                let first: usize = first.parse().ok()?;
                let last: usize = last.parse().ok()?;
                last.checked_sub(first)? + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(count)
}

/// `MemTotal:  24683656 kB` → bytes.
pub fn parse_mem_total(text: &str) -> Option<u64> {
    let row = text.lines().find_map(|line| line.strip_prefix("MemTotal:"))?;
    let kib: u64 = row.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// `TCP: inuse 5 orphan 0 tw 0 alloc 7 mem 1` → 1 (pages).
pub fn parse_sockstat_tcp_mem(text: &str) -> Option<u64> {
    let row = text.lines().find_map(|line| line.strip_prefix("TCP:"))?;
    let fields: Vec<&str> = row.split_whitespace().collect();
    let at = fields.iter().position(|&f| f == "mem")?;
    fields.get(at + 1)?.parse().ok()
}

/// The selected value of a sysfs choice: `always [madvise] never` → `madvise`.
pub fn selected(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

/// The cgroup v2 path of `/proc/self/cgroup` (`0::/system.slice/x.service`).
pub fn cgroup_v2_path(text: &str) -> Option<String> {
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    Some(path.trim().trim_end_matches('/').to_owned())
}

/// `cpu.max` (`200000 100000` → 2.0 CPUs; `max 100000` → no quota).
pub fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota: f64 = fields.next()?.parse().ok()?;
    let period: f64 = fields.next()?.parse().ok()?;
    (period > 0.0).then(|| quota / period)
}
