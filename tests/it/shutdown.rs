//! Graceful shutdown on SIGTERM: new connections are refused, every client
//! gets a WebSocket close 1001 (a transport close, which socket.io-client
//! reconnects after; never Socket.IO `41`, which would stop it), spread over
//! `drain_window_ms`, and the process exits 0 by `shutdown_deadline_ms`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::ws::{ReadError, OP_CLOSE, OP_TEXT};
use crate::support::{Sio, TestServer};

const CLIENTS: usize = 50;

/// How long after the signal a new connection attempt is made: enough for
/// the signal thread to reach every shard, well inside the drain window.
const REFUSE_CHECK_DELAY: Duration = Duration::from_millis(300);

/// How long the process may take to exit beyond what the configuration
/// allows (thread teardown, a loaded machine).
const EXIT_SLACK: Duration = Duration::from_secs(2);

/// Connects `n` clients, each in its own channel so they see nothing of
/// each other, and checks each is live.
fn connect_clients(server: &TestServer, n: usize) -> Vec<Sio> {
    (0..n)
        .map(|i| {
            let mut sio = Sio::connect_default(server);
            let channel = format!("c{i}");
            sio.join(&channel);
            sio.sentinel(&channel, "ready");
            sio
        })
        .collect()
}

/// What one client saw of the shutdown.
#[derive(Debug)]
struct Closed {
    at: Instant,
    code: Option<u16>,
}

/// Reads until the server's close frame; every frame before it must be an
/// Engine.IO ping (answered). Then answers the close and waits for the end
/// of the TCP connection.
fn await_close(mut sio: Sio, timeout: Duration) -> Closed {
    let deadline = Instant::now() + timeout;
    // Bounded: only pings may come first.
    for _ in 0..100 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = match sio.ws.read_frame_within(remaining) {
            Ok(frame) => frame,
            Err(error) => panic!("client {}: {error:?} instead of a close frame", sio.id),
        };
        let at = Instant::now();
        if frame.opcode == OP_TEXT && frame.payload == b"2" {
            sio.send("3");
            continue;
        }
        assert_eq!(
            frame.opcode,
            OP_CLOSE,
            "client {} got {frame:?} instead of a close frame (a Socket.IO `41` would stop socket.io-client from reconnecting)",
            sio.id
        );
        let code = frame.close_code();
        let _ = sio.ws.try_send_raw(&crate::support::encode_frame(
            true,
            0,
            OP_CLOSE,
            &frame.payload[..frame.payload.len().min(2)],
            Some(crate::support::random_mask()),
        ));
        let remaining = deadline.saturating_duration_since(Instant::now());
        match sio.ws.read_frame_within(remaining) {
            Err(ReadError::Closed) => {}
            other => panic!("client {}: after the close frame, {other:?}", sio.id),
        }
        return Closed { at, code };
    }
    panic!("client {}: only pings", sio.id);
}

/// A connection attempt made after the signal: refused outright, or
/// accepted by the kernel but never upgraded (closed, reset or silent).
fn assert_new_connection_refused(server: &TestServer) {
    let Ok(mut stream) = TcpStream::connect(server.addr()) else {
        return;
    };
    let request = format!(
        "GET {}?EIO=4&transport=websocket HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        server.path(),
        server.addr()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return;
    }
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set the read timeout");
    let mut answer = [0u8; 64];
    match stream.read(&mut answer) {
        Ok(n) => assert!(
            !answer[..n].starts_with(b"HTTP/1.1 101"),
            "a connection made after SIGTERM was upgraded: {:?}",
            String::from_utf8_lossy(&answer[..n])
        ),
        Err(error) => assert!(
            matches!(
                error.kind(),
                ErrorKind::ConnectionReset | ErrorKind::WouldBlock | ErrorKind::TimedOut
            ),
            "unexpected error after SIGTERM: {error}"
        ),
    }
}

#[test]
fn sigterm_closes_every_client_with_1001_over_the_drain_window_and_exits_0() {
    let drain_window = Duration::from_millis(1000);
    let deadline = Duration::from_millis(10_000);
    let config = format!(
        "[server]\ndrain_window_ms = {}\nshutdown_deadline_ms = {}\n",
        drain_window.as_millis(),
        deadline.as_millis()
    );
    let mut server = TestServer::start_with(2, &[], Some(&config));
    let clients = connect_clients(&server, CLIENTS);

    let watchers: Vec<_> = clients
        .into_iter()
        .map(|sio| std::thread::spawn(move || await_close(sio, drain_window + EXIT_SLACK)))
        .collect();
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);

    std::thread::sleep(REFUSE_CHECK_DELAY);
    assert!(
        server.wait_exit(Duration::ZERO).is_none(),
        "the server exited within {REFUSE_CHECK_DELAY:?}, before its drain window ended"
    );
    assert_new_connection_refused(&server);

    let closes: Vec<Closed> = watchers
        .into_iter()
        .map(|watcher| watcher.join().expect("a client watcher"))
        .collect();
    let status = server
        .wait_exit(deadline + EXIT_SLACK)
        .expect("the server did not exit by its shutdown deadline");
    let exited_after = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");

    for close in &closes {
        assert_eq!(close.code, Some(1001), "{close:?}");
    }
    let first = closes.iter().map(|c| c.at).min().expect("clients");
    let last = closes.iter().map(|c| c.at).max().expect("clients");
    let spread = last.duration_since(first);
    eprintln!(
        "shutdown: closes from {:?} to {:?} after SIGTERM (spread {spread:?}); exit after {exited_after:?}",
        first.duration_since(signalled),
        last.duration_since(signalled),
    );
    // Spread over the window, not all at once: with the clients split over
    // two shards, each shard closes its own evenly across the window.
    assert!(
        spread >= drain_window / 2,
        "closes spread over only {spread:?} of a {drain_window:?} window"
    );
    assert!(
        last.duration_since(signalled) <= drain_window + EXIT_SLACK,
        "last close {:?} after the signal",
        last.duration_since(signalled)
    );
    assert!(
        exited_after < deadline,
        "exit after {exited_after:?}, deadline {deadline:?}"
    );
}

#[test]
fn sigterm_exits_0_by_the_deadline_even_when_the_drain_window_is_longer() {
    let drain_window = Duration::from_millis(5000);
    let deadline = Duration::from_millis(1000);
    let config = format!(
        "[server]\ndrain_window_ms = {}\nshutdown_deadline_ms = {}\n",
        drain_window.as_millis(),
        deadline.as_millis()
    );
    let mut server = TestServer::start_with(2, &[], Some(&config));
    let clients = connect_clients(&server, 20);

    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(deadline + EXIT_SLACK)
        .expect("the server did not exit by its shutdown deadline");
    let exited_after = signalled.elapsed();
    eprintln!("shutdown with a short deadline: exit after {exited_after:?}");
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    // Nobody is left connected to a dead server.
    for mut sio in clients {
        sio.ws.expect_closed();
    }
}
