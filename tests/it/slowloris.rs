//! Handshake deadlines: hundreds of connections that never finish their
//! HTTP request head (`http_head_timeout_ms`), or that upgrade and never
//! send the Socket.IO connect (`connect_timeout_ms`), neither stop new
//! clients from connecting and talking nor outlive their deadline.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::prom::scrape_until;
use crate::support::sio::{assert_fresh_clients_exchange, engine_open};
use crate::support::ws::WsClient;
use crate::support::TestServer;

/// Half-open connections per test: "hundreds".
const HALF_OPEN: usize = 300;

/// The deadline under test. Long enough that opening 300 connections and
/// one exchange between new clients fits well inside it even on a loaded
/// 2-core machine (that takes tens of milliseconds), so the "still open"
/// check below cannot race the deadline; short enough to keep the test fast.
const DEADLINE: Duration = Duration::from_millis(2000);

/// How long after its deadline a connection may take to be closed: the
/// server checks connect deadlines on a heartbeat tick (a quarter of the
/// deadline here) and a loaded machine adds scheduling delay.
const CLOSE_SLACK: Duration = Duration::from_secs(3);

/// Timers may round to the millisecond; a close this much before the
/// deadline still counts as on time.
const TIMER_SLACK: Duration = Duration::from_millis(10);

#[test]
fn unfinished_http_heads_do_not_block_new_clients_and_are_closed_at_the_deadline() {
    let config = format!("[server]\nhttp_head_timeout_ms = {}\n", DEADLINE.as_millis());
    let server = TestServer::start_with(2, &[], Some(&config));
    let partial_head = format!(
        "GET {}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n",
        server.path(),
        server.addr()
    );
    let first_opened = Instant::now();
    let mut half_open: Vec<(Instant, TcpStream)> = (0..HALF_OPEN)
        .map(|_| {
            let opened = Instant::now();
            let mut stream = TcpStream::connect(server.addr()).expect("connect");
            stream
                .write_all(partial_head.as_bytes())
                .expect("send a partial head");
            (opened, stream)
        })
        .collect();

    assert_fresh_clients_exchange(&server, "while-slowloris");

    let states: Vec<PollState> = half_open.iter().map(|(_, stream)| poll_state(stream)).collect();
    assert_checked_before_deadline(first_opened);
    for (i, state) in states.iter().enumerate() {
        assert_eq!(
            *state,
            PollState::Open,
            "half-open connection {i} before its deadline"
        );
    }

    for (i, (opened, stream)) in half_open.iter_mut().enumerate() {
        let closed_at = wait_closed(stream, first_opened + DEADLINE + CLOSE_SLACK)
            .unwrap_or_else(|what| panic!("half-open connection {i}: {what}"));
        let lived = closed_at.duration_since(*opened);
        assert!(
            lived + TIMER_SLACK >= DEADLINE,
            "half-open connection {i} closed after {lived:?}, before the {DEADLINE:?} deadline"
        );
    }
    // And the server still serves after shedding them.
    assert_fresh_clients_exchange(&server, "after-slowloris");
}

#[test]
fn upgraded_connections_without_a_socket_io_connect_are_closed_at_the_deadline() {
    let config = format!("[server]\nconnect_timeout_ms = {}\n", DEADLINE.as_millis());
    let server = TestServer::start_with(2, &[], Some(&config));
    let first_opened = Instant::now();
    let mut silent: Vec<(Instant, WsClient)> = (0..HALF_OPEN)
        .map(|_| {
            let opened = Instant::now();
            (opened, engine_open(&server).ws)
        })
        .collect();

    assert_fresh_clients_exchange(&server, "while-silent");

    let states: Vec<PollState> = silent.iter().map(|(_, ws)| poll_state(ws.stream())).collect();
    assert_checked_before_deadline(first_opened);
    for (i, state) in states.iter().enumerate() {
        assert_eq!(
            *state,
            PollState::Open,
            "silent connection {i} before its deadline"
        );
    }

    for (i, (opened, ws)) in silent.iter_mut().enumerate() {
        // The server owes a silent client nothing more: the TCP connection
        // just ends (a close frame first is allowed; no data frame is).
        ws.expect_closed();
        let lived = opened.elapsed();
        assert!(
            lived + TIMER_SLACK >= DEADLINE,
            "silent connection {i} closed after {lived:?}, before the {DEADLINE:?} deadline"
        );
        assert!(
            lived <= DEADLINE + CLOSE_SLACK,
            "silent connection {i} closed only after {lived:?}"
        );
    }
    assert_fresh_clients_exchange(&server, "after-silent");

    let metrics = scrape_until(
        server.addr(),
        "ringcast_disconnects_total",
        &[("reason", "connect_timeout")],
        HALF_OPEN as u64,
        CLOSE_SLACK,
    );
    assert_eq!(
        metrics.sum("ringcast_disconnects_total", &[("reason", "connect_timeout")]),
        HALF_OPEN as u64,
        "connect_timeout disconnects"
    );
}

/// The "still open" checks mean something only if they ran before the
/// first connection's deadline; setup takes a small fraction of it.
fn assert_checked_before_deadline(first_opened: Instant) {
    let elapsed = first_opened.elapsed();
    assert!(
        elapsed < DEADLINE,
        "setup and checks took {elapsed:?}, past the {DEADLINE:?} deadline: the machine is too slow for this test"
    );
}

#[derive(Debug, PartialEq, Eq)]
enum PollState {
    Open,
    Closed,
    Data,
}

/// Whether the server has closed `stream` (or sent something) yet, without waiting.
fn poll_state(stream: &TcpStream) -> PollState {
    stream.set_nonblocking(true).expect("set non-blocking");
    let mut byte = [0u8; 1];
    let state = match stream.peek(&mut byte) {
        Ok(0) => PollState::Closed,
        Ok(_) => PollState::Data,
        Err(error) if error.kind() == ErrorKind::WouldBlock => PollState::Open,
        Err(_) => PollState::Closed,
    };
    stream.set_nonblocking(false).expect("set blocking");
    state
}

/// Waits until the server closes `stream` (end of file or reset) and
/// returns when; an error if it sends anything or stays open past `deadline`.
fn wait_closed(stream: &mut TcpStream, deadline: Instant) -> Result<Instant, String> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return match poll_state(stream) {
            PollState::Closed => Ok(Instant::now()),
            other => Err(format!("still {other:?} at the deadline")),
        };
    }
    stream
        .set_read_timeout(Some(remaining))
        .expect("set the read timeout");
    let mut buf = [0u8; 1024];
    match stream.read(&mut buf) {
        Ok(0) => Ok(Instant::now()),
        Ok(n) => Err(format!(
            "expected the connection to close, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        )),
        Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            Err("not closed by the deadline".to_string())
        }
        Err(_) => Ok(Instant::now()),
    }
}
