//! Process accounting from /proc and getrusage: the server's CPU seconds and
//! resident memory, and the generator's own CPU.

use std::io;

/// One look at a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// utime + stime of all its threads, in seconds.
    pub cpu_s: f64,
    /// VmRSS in bytes.
    pub rss_bytes: u64,
    pub threads: u64,
}

pub fn sample(pid: u32) -> io::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (cpu_s, threads) = parse_stat(&stat).ok_or_else(|| io::Error::other("unparsable /proc/PID/stat"))?;
    let rss_bytes = parse_status_kib(&status, "VmRSS:").ok_or_else(|| io::Error::other("no VmRSS"))? * 1024;
    Ok(ProcSample {
        cpu_s,
        rss_bytes,
        threads,
    })
}

/// CPU seconds (user + system) this process has used, all threads.
pub fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// CPU seconds of all `ksoftirqd/N` threads: network receive work the kernel
/// deferred out of the sending process's context, so it is charged to no
/// process under test (on loopback it belongs to the sender).
pub fn ksoftirqd_cpu_s() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut total = 0.0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if !stat.contains("(ksoftirqd/") {
            continue;
        }
        if let Some((cpu_s, _)) = parse_stat(&stat) {
            total += cpu_s;
        }
    }
    total
}

/// The I/O driver a process runs, from its file descriptors: `io_uring` if it
/// holds an io_uring instance, `epoll` if it holds only epoll instances.
/// Checks that a server started with a driver flag really runs that driver
/// (ringcast falls back to epoll where io_uring is unavailable).
pub fn io_driver(pid: u32) -> Option<&'static str> {
    let entries = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let mut epoll = false;
    for entry in entries.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target.contains("io_uring") {
            return Some("io_uring");
        }
        epoll |= target.contains("eventpoll");
    }
    epoll.then_some("epoll")
}

fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// `(utime + stime in seconds, threads)`. The command name may contain spaces
/// and parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<(f64, u64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name: state is field 3 of proc(5), so field N is index N - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    let threads: u64 = fields.get(20 - 3)?.parse().ok()?;
    Some(((utime + stime) as f64 / clock_ticks_per_s(), threads))
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests;
