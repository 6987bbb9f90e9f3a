//! `TestServer`: the real `ringcast` binary listening on `127.0.0.1:0`.
//!
//! It owns the child process and its optional config file, and kills and
//! reaps the child on drop so a failing test never leaks a server.
//! It knows nothing about WebSocket; clients live in the sibling modules.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The master token every test server is started with.
pub(crate) const MASTER_TOKEN: &str = "it-master-token";

/// How long the binary may take to print its listening line.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Distinguishes config files of servers started by the same test process.
static CONFIG_COUNTER: AtomicU64 = AtomicU64::new(0);

pub(crate) struct TestServer {
    child: Child,
    addr: SocketAddr,
    shards: usize,
    path: String,
    config_path: Option<PathBuf>,
}

impl TestServer {
    /// Starts the binary with `shards` shards and every other setting at its default.
    pub(crate) fn start(shards: usize) -> Self {
        Self::start_with(shards, &[], None)
    }

    /// Starts the binary with `shards` shards, `extra_args` appended to the
    /// command line and, when given, `config_toml` written to a file passed
    /// as `--config`.
    pub(crate) fn start_with(shards: usize, extra_args: &[&str], config_toml: Option<&str>) -> Self {
        let config_path = config_toml.map(write_config);
        let shards_arg = shards.to_string();
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringcast"));
        command
            .args(["--listen", "127.0.0.1:0", "--shards", &shards_arg])
            .args(["--master-token", MASTER_TOKEN])
            .args(extra_args)
            .env_remove("RINGCAST_MASTER_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        // The server logs to stderr; keep test output readable unless asked.
        if std::env::var_os("RINGCAST_IT_STDERR").is_some() {
            command.stderr(Stdio::inherit());
        } else {
            command.stderr(Stdio::null());
        }
        if let Some(path) = &config_path {
            command.arg("--config").arg(path);
        }
        let mut child = command.spawn().expect("spawn the ringcast binary");
        let stdout = child.stdout.take().expect("stdout is piped");

        // A thread drains stdout for the whole life of the child, so the
        // server never blocks on a full pipe; lines reach us over a channel.
        let (line_sender, line_receiver) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = line_sender.send(line);
            }
        });

        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut seen = Vec::new();
        let listening = loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match line_receiver.recv_timeout(remaining) {
                Ok(line) if line.starts_with("ringcast listening on ") => break line,
                Ok(line) => seen.push(line),
                Err(error) => {
                    let _ = child.kill();
                    let status = child.wait();
                    panic!(
                        "ringcast did not print its listening line ({error}); \
                         exit status {status:?}; stdout so far: {seen:?}"
                    );
                }
            }
        };
        let (addr, path) = parse_listening_line(&listening, shards);
        Self {
            child,
            addr,
            shards,
            path,
            config_path,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// The Engine.IO path the server announced, e.g. `/realtime/`.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the server process.
    pub(crate) fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, which is not reaped before `Drop` (or `wait_exit`), so
        // it cannot name an unrelated process.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            result,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the process to exit; its exit status, or
    /// `None` if it is still running then.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the server process") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The server's resident set size in KiB.
    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid()).unwrap_or_else(|| panic!("no VmRSS for pid {}", self.pid()))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.config_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `VmRSS` of `/proc/<pid>/status` in KiB; `None` once the process is gone.
/// A free function so a sampling thread can use it without the server.
pub(crate) fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
}

fn write_config(toml: &str) -> PathBuf {
    let n = CONFIG_COUNTER.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ringcast-it-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, toml).expect("write the test config file");
    path
}

/// Parses `ringcast listening on http://127.0.0.1:PORT/PATH shards=N`
/// (`https://` with TLS).
fn parse_listening_line(line: &str, shards: usize) -> (SocketAddr, String) {
    let rest = line
        .strip_prefix("ringcast listening on http://")
        .or_else(|| line.strip_prefix("ringcast listening on https://"))
        .unwrap_or_else(|| panic!("unexpected listening line {line:?}"));
    let (url, shards_part) = rest
        .split_once(' ')
        .unwrap_or_else(|| panic!("no shards= in listening line {line:?}"));
    assert_eq!(shards_part, format!("shards={shards}"), "listening line {line:?}");
    let slash = url
        .find('/')
        .unwrap_or_else(|| panic!("no path in listening line {line:?}"));
    let addr: SocketAddr = url[..slash]
        .parse()
        .unwrap_or_else(|error| panic!("bad address in {line:?}: {error}"));
    assert_eq!(addr.ip().to_string(), "127.0.0.1", "listening line {line:?}");
    assert_ne!(addr.port(), 0, "listening line {line:?}");
    (addr, url[slash..].to_string())
}
