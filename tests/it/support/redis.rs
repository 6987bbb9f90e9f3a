//! A real `redis-server` on a free loopback port, without persistence,
//! killed and reaped on drop; it can be stopped and started again on the
//! same port. `call` speaks just enough RESP to look at what ringcast
//! stored.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long redis-server may take to answer its first PING.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
}

/// A RESP reply, as far as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Status(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Self>),
}

impl RedisServer {
    pub(crate) fn start() -> Self {
        let mut redis = Self::not_started();
        redis.restart();
        redis
    }

    /// A free port where Redis is not running yet ([`Self::restart`] starts
    /// it there).
    pub(crate) fn not_started() -> Self {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("its address").port()
        };
        Self { child: None, port }
    }

    /// Sends `signal` to the server (SIGSTOP freezes it: connections stay
    /// open and nothing answers, as with a network partition).
    pub(crate) fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("redis is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, not reaped before stop() or drop.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// `redis://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (as a crash would: nothing is saved).
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on its port, empty, and waits until it answers.
    pub(crate) fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (scripts/setup.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Reply::Status(pong)) = self.try_call(&["PING"]) {
                assert_eq!(pong, "PONG");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One command and its reply (panics when Redis is not there).
    pub(crate) fn call(&self, args: &[&str]) -> Reply {
        self.try_call(args).expect("redis answers")
    }

    fn try_call(&self, args: &[&str]) -> std::io::Result<Reply> {
        let mut stream = TcpStream::connect(self.addr())?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes())?;
        read_reply(&mut BufReader::new(stream))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A frozen server must be thawed to die of SIGKILL promptly.
            self.signal(libc::SIGCONT);
        }
        self.stop();
    }
}

fn read_reply(reader: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad RESP reply");
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Integer(rest.parse().map_err(|_| bad())?),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut data = vec![0; len as usize + 2];
                reader.read_exact(&mut data)?;
                data.truncate(len as usize);
                Reply::Bulk(Some(data))
            }
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| bad())?;
            let items = (0..n.max(0))
                .map(|_| read_reply(reader))
                .collect::<Result<_, _>>()?;
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}

impl Reply {
    /// The bulk strings of an array reply, as text.
    pub(crate) fn strings(&self) -> Vec<String> {
        match self {
            Self::Array(items) => items
                .iter()
                .filter_map(|i| match i {
                    Self::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}
