//! Engine.IO long-polling by hand: keep-alive HTTP/1.1 connections
//! ([`HttpConn`]) and a polling session over them ([`Polling`]).
//!
//! Which shard serves a connection: a fresh connection's handshake is
//! answered by the shard that accepted it, and the sid it returns names
//! that shard, so [`HttpConn::on_shard`] opens connections until one lands
//! on the wanted shard. Requests for a session of another shard sent on
//! such a connection exercise the hand-over.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sonic_rs::{JsonValueTrait, Value};

use super::http::Response;
use super::server::TestServer;
use super::ws::find;

/// Longest wait for one response (a GET waits for packets: the tests that
/// expect one send what it waits for first).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connection attempts before giving up on landing on a shard (2^-64 odds
/// of missing with two shards).
const SHARD_ATTEMPTS_MAX: usize = 64;

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct HttpConn {
    stream: TcpStream,
    addr: SocketAddr,
    buf: Vec<u8>,
}

impl HttpConn {
    pub(crate) fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to the test server");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            addr,
            buf: Vec::new(),
        }
    }

    /// Sends a request (`headers`: whole lines, each ending in CRLF).
    pub(crate) fn send(&mut self, method: &str, target: &str, headers: &str, body: &[u8]) {
        let mut request =
            format!("{method} {target} HTTP/1.1\r\nHost: {}\r\n{headers}", self.addr).into_bytes();
        if !body.is_empty() || method == "POST" {
            request.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        self.stream.write_all(&request).expect("send the request");
    }

    /// Reads the next complete response.
    pub(crate) fn response(&mut self) -> Response {
        self.response_within(RESPONSE_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no response in {RESPONSE_TIMEOUT:?}: {:?}",
                String::from_utf8_lossy(&self.buf)
            )
        })
    }

    /// The next complete response, or `None` if none came within `timeout`.
    pub(crate) fn response_within(&mut self, timeout: Duration) -> Option<Response> {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((response, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                return Some(response);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(remaining)).expect("timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!(
                    "connection closed before a complete response: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(e) => panic!("reading a response failed: {e}"),
            }
        }
    }

    /// Whether the server closed the connection (end of file within
    /// `timeout`, with nothing more sent).
    pub(crate) fn closed_within(&mut self, timeout: Duration) -> bool {
        self.stream.set_read_timeout(Some(timeout)).expect("timeout");
        let mut chunk = [0u8; 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return e.kind() == ErrorKind::ConnectionReset,
            }
        }
    }

    pub(crate) fn request(&mut self, method: &str, target: &str, headers: &str, body: &[u8]) -> Response {
        self.send(method, target, headers, body);
        self.response()
    }

    /// A connection that the shard `shard` serves, proven by a polling
    /// handshake on it (that session is left to time out).
    pub(crate) fn on_shard(server: &TestServer, shard: u8) -> Self {
        for _ in 0..SHARD_ATTEMPTS_MAX {
            let mut conn = Self::connect(server.addr());
            let open = conn.request("GET", &handshake_target(server), "", b"");
            if sid_shard(&open_sid(&open)) == shard {
                return conn;
            }
        }
        panic!("no connection landed on shard {shard}");
    }

    pub(crate) fn into_stream(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buf)
    }
}

/// A complete response at the front of `bytes`, and its length.
pub(crate) fn parse(bytes: &[u8]) -> Option<(Response, usize)> {
    let end = find(bytes, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1.1 "))
        .and_then(|l| l.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().expect("numeric Content-Length"))
        .unwrap_or(0);
    let body = bytes.get(end + 4..end + 4 + length)?;
    let response = Response {
        status,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
    };
    Some((response, end + 4 + length))
}

/// `{path}?EIO=4&transport=polling`.
pub(crate) fn handshake_target(server: &TestServer) -> String {
    format!("{}?EIO=4&transport=polling", server.path())
}

/// The sid of a polling handshake's answer (`0{"sid":...}`).
pub(crate) fn open_sid(response: &Response) -> String {
    assert_eq!(response.status, 200, "handshake answer {response:?}");
    let json = response
        .body
        .strip_prefix('0')
        .unwrap_or_else(|| panic!("not an open packet: {response:?}"));
    let value: Value = sonic_rs::from_str(json).expect("open packet JSON");
    value
        .get("sid")
        .and_then(|s| s.as_str())
        .expect("sid")
        .to_string()
}

/// The shard a sid names: byte 0 of its decoded bytes.
pub(crate) fn sid_shard(sid: &str) -> u8 {
    URL_SAFE_NO_PAD.decode(sid).expect("base64url sid")[0]
}

/// One packet of a polling response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Packet {
    Text(String),
    Binary(Vec<u8>),
}

/// The packets of a polling response body.
pub(crate) fn packets(body: &str) -> Vec<Packet> {
    body.split('\x1e')
        .map(|p| match p.strip_prefix('b') {
            Some(b64) => Packet::Binary(STANDARD.decode(b64).expect("base64 packet")),
            None => Packet::Text(p.to_string()),
        })
        .collect()
}

/// A long-polling session: one connection for `GET`s, one for `POST`s (as
/// browsers and socket.io-client use them).
pub(crate) struct Polling {
    pub(crate) get: HttpConn,
    pub(crate) post: HttpConn,
    pub(crate) sid: String,
    path: String,
}

impl Polling {
    /// Opens a session on whichever shard accepts the connection.
    pub(crate) fn open(server: &TestServer) -> Self {
        Self::open_on(
            server,
            HttpConn::connect(server.addr()),
            HttpConn::connect(server.addr()),
        )
    }

    /// Opens a session with its handshake on `get` (so on that connection's
    /// shard).
    pub(crate) fn open_on(server: &TestServer, mut get: HttpConn, post: HttpConn) -> Self {
        let open = get.request("GET", &handshake_target(server), "", b"");
        let sid = open_sid(&open);
        Self {
            get,
            post,
            sid,
            path: server.path().to_string(),
        }
    }

    /// Opens a session owned by shard `shard`.
    pub(crate) fn open_on_shard(server: &TestServer, shard: u8) -> Self {
        for _ in 0..SHARD_ATTEMPTS_MAX {
            let polling = Self::open(server);
            if polling.shard() == shard {
                return polling;
            }
        }
        panic!("no session landed on shard {shard}");
    }

    pub(crate) fn shard(&self) -> u8 {
        sid_shard(&self.sid)
    }

    pub(crate) fn target(&self) -> String {
        format!("{}?EIO=4&transport=polling&sid={}", self.path, self.sid)
    }

    /// POSTs `packets` (text, joined by `\x1e`) and expects `200 ok`.
    pub(crate) fn post(&mut self, packets: &[&str]) {
        let response = self.post_raw(packets.join("\x1e").as_bytes());
        assert_eq!(
            (response.status, response.body.as_str()),
            (200, "ok"),
            "{response:?}"
        );
    }

    pub(crate) fn post_raw(&mut self, body: &[u8]) -> Response {
        let target = self.target();
        self.post.request(
            "POST",
            &target,
            "Content-Type: text/plain;charset=UTF-8\r\n",
            body,
        )
    }

    /// One GET: the packets it returns.
    pub(crate) fn poll(&mut self) -> Vec<Packet> {
        let target = self.target();
        let response = self.get.request("GET", &target, "", b"");
        assert_eq!(response.status, 200, "{response:?}");
        packets(&response.body)
    }

    /// Polls until `want` packets (pings answered with `3` and left out)
    /// arrived, and returns them.
    pub(crate) fn poll_n(&mut self, want: usize) -> Vec<Packet> {
        let mut got = Vec::new();
        let deadline = Instant::now() + RESPONSE_TIMEOUT;
        while got.len() < want {
            assert!(Instant::now() < deadline, "only {got:?} of {want} packets");
            for packet in self.poll() {
                if packet == Packet::Text("2".into()) {
                    self.post(&["3"]);
                } else {
                    got.push(packet);
                }
            }
        }
        got
    }

    /// The Socket.IO connect: `40{auth}`, and the socket id from the reply.
    pub(crate) fn connect(&mut self, auth: &str) -> String {
        self.post(&[&format!("40{auth}")]);
        let reply = self.poll_n(1);
        let Packet::Text(text) = &reply[0] else {
            panic!("expected the connect reply, got {reply:?}")
        };
        super::sio::parse_connect_reply(text)
    }
}
