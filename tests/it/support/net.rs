//! TCP sockets made with options `TcpStream::connect` cannot set, and a
//! WebSocket upgrade that may be refused.
//!
//! The limit tests need a client bound to a chosen loopback source address
//! (per-IP limits), a client with a tiny receive buffer (so a stalled reader
//! fills the server's queue instead of the kernel's), and an upgrade attempt
//! that returns the server's refusal (`503` JSON) instead of panicking.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::http::{parse_response, Response};
use super::ws::{accept_key, find, random_key, WsClient};

/// How long an upgrade attempt may take to get its complete answer.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);

/// Upper bound on an upgrade answer (head plus an error body).
const ANSWER_BYTES_MAX: usize = 64 * 1024;

/// What the server made of an upgrade request.
pub(crate) enum Upgrade {
    /// `101`; the Engine.IO open packet is the next frame.
    Switched(WsClient),
    /// Anything else, read up to its Content-Length.
    Refused(Response),
}

impl Upgrade {
    /// The upgraded client, panicking with the refusal if there was one.
    pub(crate) fn switched(self) -> WsClient {
        match self {
            Self::Switched(ws) => ws,
            Self::Refused(response) => panic!("upgrade refused: {response:?}"),
        }
    }

    /// The refusal, panicking if the upgrade succeeded.
    pub(crate) fn refused(self) -> Response {
        match self {
            Self::Switched(_) => panic!("expected the upgrade to be refused, got 101"),
            Self::Refused(response) => response,
        }
    }
}

/// A TCP connection to `addr` from `source` (any port), e.g. `127.0.0.2`:
/// all of 127.0.0.0/8 is local, so each address is a distinct client IP.
pub(crate) fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = new_socket(addr);
    socket
        .bind(&SockAddr::from(SocketAddr::new(source, 0)))
        .unwrap_or_else(|error| panic!("bind to {source}: {error}"));
    finish_connect(socket, addr)
}

/// A TCP connection to `addr` that holds little data in the kernel when its
/// reader stalls, on either end: its receive buffer is `rcvbuf_bytes`, and
/// it advertises an MSS of `mss_bytes`. Both are set before connecting. The
/// MSS matters because Linux sizes the *sender's* send buffer from the MSS
/// its peer advertised (two segments' worth per congestion window slot):
/// at the loopback MSS of 64 KiB that is the 4 MiB maximum per connection,
/// at a small MSS a few tens of KiB. (Linux doubles `rcvbuf_bytes` and
/// enforces minimums on both.)
pub(crate) fn connect_with_small_buffers(addr: SocketAddr, rcvbuf_bytes: usize, mss_bytes: u32) -> TcpStream {
    let socket = new_socket(addr);
    socket.set_recv_buffer_size(rcvbuf_bytes).expect("set SO_RCVBUF");
    socket.set_tcp_mss(mss_bytes).expect("set TCP_MAXSEG");
    finish_connect(socket, addr)
}

fn new_socket(addr: SocketAddr) -> Socket {
    Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).expect("create a TCP socket")
}

fn finish_connect(socket: Socket, addr: SocketAddr) -> TcpStream {
    socket
        .connect(&SockAddr::from(addr))
        .unwrap_or_else(|error| panic!("connect to {addr}: {error}"));
    socket.set_tcp_nodelay(true).expect("set TCP_NODELAY");
    socket.into()
}

/// Sends a WebSocket upgrade for `target` over `stream`, with `early` (raw
/// frames) right behind the head in the same write, and reads the answer.
/// A `101` must carry the right `Sec-WebSocket-Accept`.
pub(crate) fn upgrade(stream: TcpStream, target: &str, early: &[u8]) -> Upgrade {
    upgrade_with(stream, target, "", early)
}

/// The upgrade request head `upgrade_with` sends: `extra_headers` (each
/// line ending in CRLF) go last, before the blank line.
pub(crate) fn upgrade_head(addr: SocketAddr, target: &str, key: &str, extra_headers: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// [`upgrade`] with `extra_headers` in the request head (see [`upgrade_head`]).
pub(crate) fn upgrade_with(stream: TcpStream, target: &str, extra_headers: &str, early: &[u8]) -> Upgrade {
    send_upgrade(stream, target, extra_headers, early).answer()
}

/// An upgrade request that was sent and whose answer is still to be read:
/// many can be in flight at once, so that connecting a thousand clients
/// does not take a thousand sequential round trips.
pub(crate) struct PendingUpgrade {
    stream: TcpStream,
    key: String,
}

/// Sends the upgrade request of [`upgrade_with`] without waiting for the answer.
pub(crate) fn send_upgrade(
    mut stream: TcpStream,
    target: &str,
    extra_headers: &str,
    early: &[u8],
) -> PendingUpgrade {
    let addr = stream.peer_addr().expect("connected stream");
    let key = random_key();
    let mut request = upgrade_head(addr, target, &key, extra_headers).into_bytes();
    request.extend_from_slice(early);
    stream.write_all(&request).expect("send the upgrade request");
    PendingUpgrade { stream, key }
}

impl PendingUpgrade {
    /// Reads the answer; a `101` must carry the right `Sec-WebSocket-Accept`.
    pub(crate) fn answer(self) -> Upgrade {
        let Self { mut stream, key } = self;
        read_answer(&mut stream, &key).map_or_else(Upgrade::Refused, |rest| {
            Upgrade::Switched(WsClient::from_upgraded(stream, rest))
        })
    }
}

/// Reads an upgrade answer: `Ok` with the bytes after a `101` head, or `Err`
/// with any other complete response.
fn read_answer(stream: &mut TcpStream, key: &str) -> Result<Vec<u8>, Response> {
    let deadline = Instant::now() + UPGRADE_TIMEOUT;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(&bytes, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
            if head.starts_with("HTTP/1.1 101") {
                let accept = head
                    .split("\r\n")
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|(_, value)| value.trim().to_string());
                assert_eq!(
                    accept.as_deref(),
                    Some(accept_key(key).as_str()),
                    "Sec-WebSocket-Accept in {head:?}"
                );
                return Ok(bytes.split_off(end + 4));
            }
            if let Some(response) = parse_response(&bytes) {
                return Err(response);
            }
        }
        assert!(bytes.len() < ANSWER_BYTES_MAX, "upgrade answer too long");
        let remaining = deadline.saturating_duration_since(Instant::now());
        assert!(
            !remaining.is_zero(),
            "no complete upgrade answer in {UPGRADE_TIMEOUT:?}: {:?}",
            String::from_utf8_lossy(&bytes)
        );
        stream
            .set_read_timeout(Some(remaining))
            .expect("set the read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a complete upgrade answer: {:?}",
                String::from_utf8_lossy(&bytes)
            ),
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => panic!(
                "reading the upgrade answer failed ({error}): {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
    }
}
