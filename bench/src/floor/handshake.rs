//! The floor of a connect: a server that does only what any Socket.IO server
//! must do to take a WebSocket connection, so `load run connect` can be
//! pointed at it and a server's handshakes per second and CPU per handshake
//! read against it.
//!
//! One thread, epoll (mio), non-blocking `accept`; per connection: read the
//! HTTP upgrade request up to its blank line, answer `101` with the
//! `Sec-WebSocket-Accept` of its key (SHA-1 + base64: work every server
//! does) and the Engine.IO open packet in one write, read the client's
//! Socket.IO connect frame, answer `40{"sid":…}`, then hold the connection
//! idle. Nothing is validated beyond what it takes to find the key and the
//! frame's end, nothing is pinged, nothing is allocated beyond a small
//! buffer while a handshake is under way: what is left is the kernel's
//! accept, epoll and loopback TCP work, the floor every server pays.

use std::io::{self, Read as _, Write as _};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::wire;

const LISTENER: Token = Token(usize::MAX);
/// The listen backlog ringcast uses by default (`[server] backlog`).
const BACKLOG: i32 = 1024;
/// A request head longer than this is not a handshake the generator sends.
const HEAD_BYTES_MAX: usize = 4096;

enum Stage {
    /// Reading the upgrade request.
    Upgrade,
    /// `101` and the open packet sent; reading the client's `40`.
    Connect,
    /// Connected; held idle.
    Held,
}

struct Conn {
    stream: TcpStream,
    stage: Stage,
    /// What has arrived of the current stage's message; emptied (and its
    /// memory returned) once the connection is held.
    input: Vec<u8>,
}

/// Serves handshakes on `addr` until the process is killed; prints the
/// listening line once bound (`listening on http://ADDR/realtime/`).
pub fn serve(addr: SocketAddr) -> io::Result<()> {
    // std's and mio's `bind` listen with a backlog of 128, which overflows
    // under a connect storm; take ringcast's.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    let listener = std::net::TcpListener::from(socket);
    println!("listening on http://{}/realtime/", listener.local_addr()?);
    serve_on(listener)
}

/// Serves handshakes on a bound, non-blocking listener until the process
/// ends (or polling fails).
pub fn serve_on(listener: std::net::TcpListener) -> io::Result<()> {
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buffer = vec![0u8; 64 * 1024];
    let mut sids = 0u64;
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns);
                continue;
            }
            let slot = event.token().0;
            let Some(conn) = conns.get_mut(slot) else {
                continue;
            };
            if !serve_readable(conn, &mut buffer, &mut sids) {
                let mut conn = conns.remove(slot);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

/// Takes every connection waiting in the backlog.
fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let entry = conns.vacant_entry();
                let registered = stream.set_nodelay(true).and_then(|()| {
                    poll.registry()
                        .register(&mut stream, Token(entry.key()), Interest::READABLE)
                });
                // A connection reset before it was taken is dropped.
                if registered.is_ok() {
                    entry.insert(Conn {
                        stream,
                        stage: Stage::Upgrade,
                        input: Vec::new(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Drained (`WouldBlock`), or out of descriptors: the next
            // readiness brings the rest.
            Err(_) => return,
        }
    }
}

/// Reads everything the connection has and moves its handshake on; false
/// when it ended (or sent what no generator sends).
fn serve_readable(conn: &mut Conn, buffer: &mut [u8], sids: &mut u64) -> bool {
    loop {
        let n = match conn.stream.read(buffer) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        if matches!(conn.stage, Stage::Held) {
            // Pongs, pings and whatever else a held client says.
            continue;
        }
        conn.input.extend_from_slice(&buffer[..n]);
        if !advance(conn, sids) {
            return false;
        }
    }
}

fn advance(conn: &mut Conn, sids: &mut u64) -> bool {
    if matches!(conn.stage, Stage::Upgrade) {
        let Some(end) = memchr::memmem::find(&conn.input, b"\r\n\r\n") else {
            return conn.input.len() <= HEAD_BYTES_MAX;
        };
        let Some(key) = wire::header_value(&conn.input[..end], "sec-websocket-key") else {
            return false;
        };
        *sids += 1;
        let mut reply = Vec::with_capacity(320);
        let _ = write!(
            reply,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            wire::websocket_accept(&String::from_utf8_lossy(key))
        );
        let open = format!(
            "0{{\"sid\":\"{:020}\",\"upgrades\":[],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}",
            *sids
        );
        server_frame(&mut reply, open.as_bytes());
        if write_all(&mut conn.stream, &reply).is_err() {
            return false;
        }
        conn.input.drain(..end + 4);
        conn.stage = Stage::Connect;
    }
    if matches!(conn.stage, Stage::Connect) {
        let Some(head) = wire::decode_frame(&conn.input) else {
            return true;
        };
        if conn.input.len() < head.frame_len() {
            return true;
        }
        let mut reply = Vec::with_capacity(64);
        server_frame(&mut reply, format!("40{{\"sid\":\"{:020}\"}}", *sids).as_bytes());
        if write_all(&mut conn.stream, &reply).is_err() {
            return false;
        }
        conn.stage = Stage::Held;
        conn.input = Vec::new();
    }
    true
}

/// An unmasked text frame, as a server sends it.
fn server_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    if payload.len() < 126 {
        out.push(payload.len() as u8);
    } else {
        out.push(126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// A handshake's replies are a few hundred bytes into an empty send
/// buffer: they go in one write; a peer that is gone fails it.
fn write_all(stream: &mut TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real client handshake against the floor server, over loopback: the
    /// upgrade answered with the right accept key and the open packet, the
    /// Socket.IO connect with a sid; the connection then stays open.
    #[test]
    fn a_client_handshake_completes() {
        use std::io::Read as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("address");
        // The server thread runs until the test process ends.
        std::thread::spawn(move || serve_on(listener));
        let mut client = std::net::TcpStream::connect(addr).expect("connect");
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        let key = wire::websocket_key(7);
        client
            .write_all(&wire::upgrade_request("localhost", "/realtime/", &key))
            .expect("upgrade request");
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let head_len = loop {
            let n = client.read(&mut buf).expect("upgrade response");
            assert!(n > 0, "closed during the upgrade");
            got.extend_from_slice(&buf[..n]);
            match wire::parse_upgrade_response(&got, &key) {
                wire::UpgradeResponse::Switched { head_len } => break head_len,
                wire::UpgradeResponse::Incomplete => {}
                refused => panic!("{refused:?}"),
            }
        };
        got.drain(..head_len);
        while wire::decode_frame(&got).is_none_or(|h| got.len() < h.frame_len()) {
            let n = client.read(&mut buf).expect("open packet");
            assert!(n > 0, "closed before the open packet");
            got.extend_from_slice(&buf[..n]);
        }
        let open = wire::decode_frame(&got).expect("a frame");
        let text = &got[open.payload_offset..open.frame_len()];
        assert_eq!(wire::Packet::classify(text), wire::Packet::Open);
        got.drain(..open.frame_len());
        let mut connect = Vec::new();
        wire::encode_frame(
            &mut connect,
            wire::OPCODE_TEXT,
            b"40{\"token\":\"x\"}",
            [1, 2, 3, 4],
        );
        client.write_all(&connect).expect("socket.io connect");
        while wire::decode_frame(&got).is_none_or(|h| got.len() < h.frame_len()) {
            let n = client.read(&mut buf).expect("connect answer");
            assert!(n > 0, "closed before the connect answer");
            got.extend_from_slice(&buf[..n]);
        }
        let answer = wire::decode_frame(&got).expect("a frame");
        match wire::Packet::classify(&got[answer.payload_offset..answer.frame_len()]) {
            wire::Packet::Connected { sid } => assert_eq!(sid.len(), 20),
            other => panic!("expected 40{{sid}}, got {other:?}"),
        }
    }

    #[test]
    fn server_frames_carry_their_length() {
        let mut out = Vec::new();
        server_frame(&mut out, b"40{}");
        assert_eq!(out, b"\x81\x0440{}");
        let mut long = Vec::new();
        server_frame(&mut long, &[b'x'; 200]);
        assert_eq!(&long[..4], &[0x81, 126, 0, 200]);
        assert_eq!(long.len(), 204);
    }
}
