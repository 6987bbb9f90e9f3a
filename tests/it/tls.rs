//! TLS (`https://`, `wss://`): the handshake with the configured
//! certificate (TLS 1.3, and 1.2 for clients that offer only it), HTTP and
//! Socket.IO over WebSocket and long-polling through it, a plain-HTTP
//! client on the TLS port, failed handshakes, the certificate reloaded on
//! SIGHUP while a connection stays up (and a bad pair refused), a TLS
//! long-polling connection handed to the shard that owns its session, and a
//! bad pair at start-up. Then what an operator meets on the open internet:
//! handshakes that stall or never start, an oversized ClientHello, a frame
//! pipelined behind the upgrade, clients that end with close_notify, and
//! clean TLS ends on idle keep-alive connections and on the drain.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::poll::{handshake_target, open_sid, sid_shard};
use crate::support::prom::Metrics;
use crate::support::sio::event;
use crate::support::tls::{client_config, client_config_trusting, TempDir, TestCert, TlsConn};
use crate::support::ws::{encode_frame, random_key, random_mask, OP_CLOSE, OP_TEXT};
use crate::support::TestServer;

/// Longest wait for the server to act on a signal or count something.
const WAIT: Duration = Duration::from_secs(10);
/// Connection attempts before giving up on landing on a shard.
const SHARD_ATTEMPTS_MAX: usize = 64;

/// A server on a TLS listener with `cert` (its files in `dir`).
fn tls_server(shards: usize, cert: &TestCert, dir: &TempDir) -> TestServer {
    let (cert_file, key_file) = cert.write_to(&dir.0);
    let (cert_file, key_file) = (cert_file.display().to_string(), key_file.display().to_string());
    TestServer::start_with(shards, &["--tls-cert", &cert_file, "--tls-key", &key_file], None)
}

/// A server on a TLS listener with `cert` and the `[server]` settings
/// `server_toml`.
fn tls_server_with(shards: usize, cert: &TestCert, dir: &TempDir, server_toml: &str) -> TestServer {
    let (cert_file, key_file) = cert.write_to(&dir.0);
    let (cert_file, key_file) = (cert_file.display().to_string(), key_file.display().to_string());
    let config = format!("[server]\n{server_toml}\n");
    TestServer::start_with(
        shards,
        &["--tls-cert", &cert_file, "--tls-key", &key_file],
        Some(&config),
    )
}

/// Reads a raw TCP connection until the server ends it (end of file, or a
/// reset when it closed with bytes unread); what it sent before. Panics if
/// the server keeps it open for [`WAIT`].
fn read_until_server_closes(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("the server kept the connection open ({e}); received {received:02x?}"),
        }
    }
}

/// `/metrics`, fetched over TLS by a client trusting each of `trust` (the
/// certificates the server may present).
fn scrape(server: &TestServer, trust: &[&TestCert]) -> Metrics {
    let trust: Vec<_> = trust.iter().map(|cert| &cert.der).collect();
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let config = client_config_trusting(&trust, &versions);
    let mut conn = TlsConn::connect_with(server.addr(), config).expect("TLS handshake");
    let response = conn.request("GET", "/metrics", "", b"");
    assert_eq!(response.status, 200, "{response:?}");
    Metrics::parse(&response.body)
}

/// Scrapes until `name{labels}` reaches `at_least` (at most [`WAIT`]).
fn scrape_until(
    server: &TestServer,
    trust: &[&TestCert],
    name: &str,
    labels: &[(&str, &str)],
    at_least: u64,
) -> Metrics {
    let deadline = Instant::now() + WAIT;
    loop {
        let metrics = scrape(server, trust);
        if metrics.sum(name, labels) >= at_least || Instant::now() >= deadline {
            return metrics;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn websocket_target(server: &TestServer) -> String {
    format!("{}?EIO=4&transport=websocket", server.path())
}

/// A Socket.IO client over `wss://`, connected; its socket id.
fn wss_client(server: &TestServer, cert: &TestCert) -> (TlsConn, String) {
    let mut conn = TlsConn::connect(server.addr(), &cert.der);
    conn.upgrade(&websocket_target(server));
    let id = conn.socketio_connect("{}");
    (conn, id)
}

/// Joins `channel` with echo and checks the echo comes back.
fn join_with_echo(conn: &mut TlsConn, id: &str, channel: &str) {
    conn.send_text(&format!(r#"42["join",{{"channel":"{channel}","echo":true}}]"#));
    let message = format!(r#"{{"id":"{id}","data":null}}"#);
    assert_eq!(conn.read_text(), event("channel:join", Some(channel), &message));
}

#[test]
fn https_and_wss_speak_tls13_with_the_configured_certificate() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(2, &cert, &dir);

    let mut conn = TlsConn::connect(server.addr(), &cert.der);
    assert_eq!(
        conn.stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(conn.stream.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(conn.server_cert(), cert.der);
    let health = conn.request("GET", "/health", "", b"");
    assert_eq!((health.status, health.body.as_str()), (200, r#"{"status":"ok"}"#));
    // Keep-alive over TLS, then a clean end: close_notify before the FIN.
    let metrics = conn.request("GET", "/metrics", "Connection: close\r\n", b"");
    assert_eq!(metrics.status, 200);
    assert!(
        conn.read_to_close_notify(),
        "the server ended the TLS stream with close_notify"
    );

    // Socket.IO over wss://, with a message bigger than a TLS record (16 KiB)
    // both ways, so records are split and reassembled on each side.
    let (mut ws, id) = wss_client(&server, &cert);
    join_with_echo(&mut ws, &id, "room");
    let big = "x".repeat(100_000);
    ws.send_text(&format!(
        r#"42["message",{{"channel":"room","eventName":"big","message":"{big}","echo":true}}]"#
    ));
    assert_eq!(ws.read_text(), event("big", Some("room"), &format!("\"{big}\"")));

    let metrics = scrape(&server, &[&cert]);
    assert_eq!(metrics.sum("ringcast_tls_handshake_failures_total", &[]), 0);
    // This scrape's own handshake is counted once its request is read.
    assert_eq!(metrics.sum("ringcast_tls_handshakes_total", &[]), 3);
}

#[test]
fn a_client_offering_only_tls12_is_served() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(1, &cert, &dir);
    let config = client_config(&cert.der, &[&rustls::version::TLS12]);
    let mut conn = TlsConn::connect_with(server.addr(), config).expect("TLS 1.2 handshake");
    assert_eq!(
        conn.stream.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let suite = conn
        .stream
        .conn
        .negotiated_cipher_suite()
        .expect("a suite")
        .suite();
    assert!(
        format!("{suite:?}").contains("ECDHE") && !format!("{suite:?}").contains("CBC"),
        "forward secrecy and an AEAD: {suite:?}"
    );
    let health = conn.request("GET", "/health", "", b"");
    assert_eq!(health.status, 200);
}

#[test]
fn plain_http_on_the_tls_port_is_answered_400_and_closed_cleanly() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(1, &cert, &dir);
    let mut plain = TcpStream::connect(server.addr()).expect("connect");
    plain.set_read_timeout(Some(WAIT)).expect("timeout");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut answer = Vec::new();
    // A clean close: end of file after the answer, not a reset.
    plain
        .read_to_end(&mut answer)
        .expect("the whole answer, then end of file");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(answer.contains("Connection: close"), "{answer}");
    assert!(answer.contains(r#""code":"tls_required""#), "{answer}");
    let metrics = scrape(&server, &[&cert]);
    assert_eq!(metrics.sum("ringcast_tls_plain_requests_total", &[]), 1);
    assert_eq!(metrics.sum("ringcast_tls_handshake_failures_total", &[]), 0);
}

#[test]
fn a_failed_handshake_is_counted_and_the_server_carries_on() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(1, &cert, &dir);
    // A client that trusts another certificate refuses this one (and
    // tells the server with an alert).
    let stranger = TestCert::new();
    let versions = [&rustls::version::TLS13];
    let refused = TlsConn::connect_with(server.addr(), client_config(&stranger.der, &versions));
    assert!(
        matches!(refused, Err(rustls::Error::InvalidCertificate(_))),
        "the client refuses an unknown issuer"
    );
    // Garbage instead of a ClientHello.
    let mut garbage = TcpStream::connect(server.addr()).expect("connect");
    garbage.set_read_timeout(Some(WAIT)).expect("timeout");
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .expect("send");
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    assert!(
        rest.first().is_none_or(|&b| b == 0x15),
        "an alert record or nothing: {rest:02x?}"
    );

    let metrics = scrape_until(&server, &[&cert], "ringcast_tls_handshake_failures_total", &[], 2);
    assert_eq!(metrics.sum("ringcast_tls_handshake_failures_total", &[]), 2);
    let (mut ws, id) = wss_client(&server, &cert);
    join_with_echo(&mut ws, &id, "after");
}

#[test]
fn sighup_reloads_the_pair_while_a_connection_stays_up() {
    let (first, dir) = (TestCert::new(), TempDir::new());
    let (cert_file, key_file) = first.write_to(&dir.0);
    let config = format!(
        "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert_file.display().to_string(),
        key_file.display().to_string()
    );
    let server = TestServer::start_with(2, &[], Some(&config));
    let (mut up, id) = wss_client(&server, &first);
    join_with_echo(&mut up, &id, "before");

    // A new pair: new handshakes present it, the connection up stays up.
    let second = TestCert::new();
    second.write_to(&dir.0);
    server.signal(libc::SIGHUP);
    // The scrape's handshake may meet either pair.
    let metrics = scrape_until(
        &server,
        &[&first, &second],
        "ringcast_tls_reloads_total",
        &[("outcome", "applied")],
        1,
    );
    assert_eq!(
        metrics.sum("ringcast_tls_reloads_total", &[("outcome", "applied")]),
        1
    );
    let fresh = TlsConn::connect(server.addr(), &second.der);
    assert_eq!(fresh.server_cert(), second.der);
    join_with_echo(&mut up, &id, "after-reload");

    // A bad key is refused: the running pair stays, and so does the
    // connection.
    std::fs::write(dir.0.join("key.pem"), "not a key\n").expect("spoil the key");
    server.signal(libc::SIGHUP);
    let metrics = scrape_until(
        &server,
        &[&second],
        "ringcast_tls_reloads_total",
        &[("outcome", "refused")],
        1,
    );
    assert_eq!(
        metrics.sum("ringcast_tls_reloads_total", &[("outcome", "refused")]),
        1
    );
    assert_eq!(
        metrics.sum("ringcast_tls_reloads_total", &[("outcome", "applied")]),
        1
    );
    let fresh = TlsConn::connect(server.addr(), &second.der);
    assert_eq!(fresh.server_cert(), second.der);
    join_with_echo(&mut up, &id, "after-refusal");
}

/// A polling request that reaches a shard other than its session's is
/// handed over with the connection's TLS state: the owner answers on the
/// same TLS stream (the client would fail to decrypt anything else), and
/// the connection's later requests go on there.
#[test]
fn a_tls_polling_connection_handed_to_another_shard_keeps_its_tls_state() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(2, &cert, &dir);
    let mut first = TlsConn::connect(server.addr(), &cert.der);
    let sid = open_sid(&first.request("GET", &handshake_target(&server), "", b""));
    let owner = sid_shard(&sid);
    let mut other = (0..SHARD_ATTEMPTS_MAX)
        .map(|_| {
            let mut conn = TlsConn::connect(server.addr(), &cert.der);
            let open = conn.request("GET", &handshake_target(&server), "", b"");
            (sid_shard(&open_sid(&open)), conn)
        })
        .find(|(shard, _)| *shard != owner)
        .map(|(_, conn)| conn)
        .expect("a TLS connection on the other shard");

    let target = format!("{}?EIO=4&transport=polling&sid={sid}", server.path());
    let posted = other.request("POST", &target, "Content-Type: text/plain\r\n", b"40");
    assert_eq!((posted.status, posted.body.as_str()), (200, "ok"), "{posted:?}");
    let polled = other.request("GET", &target, "", b"");
    assert_eq!(polled.status, 200);
    assert!(polled.body.starts_with(r#"40{"sid":""#), "{polled:?}");
    let id = &polled.body[r#"40{"sid":""#.len()..polled.body.len() - 2];
    let join = r#"42["join",{"channel":"handed","echo":true}]"#;
    assert_eq!(other.request("POST", &target, "", join.as_bytes()).status, 200);
    let message = format!(r#"{{"id":"{id}","data":null}}"#);
    assert_eq!(
        other.request("GET", &target, "", b"").body,
        event("channel:join", Some("handed"), &message)
    );
    let metrics = scrape(&server, &[&cert]);
    assert_eq!(metrics.sum("ringcast_handovers_total", &[]), 1);
}

#[test]
fn a_bad_pair_at_start_up_stops_the_server_naming_the_file() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let (cert_file, _) = cert.write_to(&dir.0);
    let other = TestCert::new();
    let other_key = dir.0.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).expect("write the other key");
    let cases = [
        (
            dir.0.join("missing.pem"),
            dir.0.join("key.pem"),
            "missing.pem: cannot read",
        ),
        (
            cert_file.clone(),
            other_key.clone(),
            "other-key.pem: the private key does not match the certificate",
        ),
    ];
    for (cert_path, key_path, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_ringcast"))
            .args(["--listen", "127.0.0.1:0", "--shards", "1", "--master-token", "t"])
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .stdin(Stdio::null())
            .output()
            .expect("run ringcast");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "expected {expected:?} in {stderr}");
    }
    // One of the pair without the other is a configuration error too.
    let output = Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["--listen", "127.0.0.1:0", "--shards", "1", "--master-token", "t"])
        .arg("--tls-cert")
        .arg(&cert_file)
        .stdin(Stdio::null())
        .output()
        .expect("run ringcast");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`tls_cert` is set without `tls_key`"), "{stderr}");
}

/// A client that opens TCP and never starts the handshake, and one that
/// stops in the middle of its ClientHello, hold a connection no longer
/// than a plain client that sends no request: the handshake has the HTTP
/// head timeout as its deadline, and each is counted as a failed handshake.
#[test]
fn a_handshake_that_never_starts_or_stalls_ends_at_the_head_timeout() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server_with(1, &cert, &dir, "http_head_timeout_ms = 200");
    let mut silent = TcpStream::connect(server.addr()).expect("connect");
    let mut stalled = TcpStream::connect(server.addr()).expect("connect");
    // A handshake record announcing 512 bytes, of which 4 come.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .expect("send");
    assert_eq!(read_until_server_closes(&mut silent), b"");
    assert_eq!(read_until_server_closes(&mut stalled), b"");
    let metrics = scrape_until(&server, &[&cert], "ringcast_tls_handshake_failures_total", &[], 2);
    assert_eq!(metrics.sum("ringcast_tls_handshake_failures_total", &[]), 2);
    // The scrape's own handshake is the only one that completed.
    assert_eq!(metrics.sum("ringcast_tls_handshakes_total", &[]), 1);
}

/// A load balancer's TCP health check connects and closes (with a FIN, or
/// with a reset) without a byte: counted as a probe, not as a failed
/// handshake, and the server carries on.
#[test]
fn a_tcp_health_check_is_a_probe_not_a_failed_handshake() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(1, &cert, &dir);
    let closed = TcpStream::connect(server.addr()).expect("connect");
    drop(closed);
    let reset = socket2::Socket::from(TcpStream::connect(server.addr()).expect("connect"));
    reset
        .set_linger(Some(Duration::ZERO))
        .expect("linger 0: close sends a reset");
    drop(reset);

    let metrics = scrape_until(&server, &[&cert], "ringcast_tls_probes_total", &[], 2);
    assert_eq!(metrics.sum("ringcast_tls_probes_total", &[]), 2);
    assert_eq!(metrics.sum("ringcast_tls_handshake_failures_total", &[]), 0);
    // A client that sends a byte and leaves is a failed handshake.
    let mut partial = TcpStream::connect(server.addr()).expect("connect");
    partial.write_all(&[0x16]).expect("send");
    drop(partial);
    let metrics = scrape_until(&server, &[&cert], "ringcast_tls_handshake_failures_total", &[], 1);
    assert_eq!(metrics.sum("ringcast_tls_handshake_failures_total", &[]), 1);
    assert_eq!(metrics.sum("ringcast_tls_probes_total", &[]), 2);
    let (mut ws, id) = wss_client(&server, &cert);
    join_with_echo(&mut ws, &id, "after");
}

/// A ClientHello announcing more than rustls's 64 KiB limit for a
/// handshake message is refused as soon as its header arrives: the server
/// buffers no more of it, answers an alert (or nothing) and closes.
#[test]
fn an_oversized_client_hello_is_refused_at_its_header() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(1, &cert, &dir);
    let mut client = TcpStream::connect(server.addr()).expect("connect");
    // One full record (16 KiB) opening a ClientHello of 16 MiB - 1.
    let mut record = vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0xff, 0xff, 0xff];
    record.resize(5 + 0x4000, 0);
    // The server may close before it has read everything.
    let _ = client.write_all(&record);
    let answer = read_until_server_closes(&mut client);
    assert!(
        answer.first().is_none_or(|&b| b == 0x15),
        "an alert record or nothing: {answer:02x?}"
    );
    let metrics = scrape_until(&server, &[&cert], "ringcast_tls_handshake_failures_total", &[], 1);
    assert_eq!(metrics.sum("ringcast_tls_handshake_failures_total", &[]), 1);
}

/// A client may send its first WebSocket frame right behind the upgrade
/// request, in the same TLS record. When the request head exactly fills
/// the server's first read, the frame is left decrypted inside rustls,
/// where the socket's readiness cannot see it: the WebSocket must read it
/// without waiting for more bytes from the client (which waits for the
/// answer to that very frame).
#[test]
fn a_frame_pipelined_behind_the_upgrade_is_handled() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(1, &cert, &dir);
    let mut conn = TlsConn::connect(server.addr(), &cert.der);
    let head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nX-Pad: ",
        websocket_target(&server),
        server.addr(),
        random_key()
    );
    // The server's first read of a request head takes 1 KiB.
    let padding = 1024 - head.len() - "\r\n\r\n".len();
    let mut request = format!("{head}{}\r\n\r\n", "p".repeat(padding)).into_bytes();
    assert_eq!(request.len(), 1024);
    request.extend_from_slice(&encode_frame(true, 0, OP_TEXT, b"40", Some(random_mask())));
    conn.send_raw(&request);
    assert_eq!(conn.response().status, 101);
    let open = conn.read_text();
    assert!(open.starts_with(r#"0{"sid""#), "{open}");
    let ack = conn.read_text();
    assert!(ack.starts_with(r#"40{"sid""#), "the connect is answered: {ack}");
}

/// A long-polling client whose waiting `GET`'s connection ends with
/// close_notify (the TCP connection still open) has left that connection:
/// the server gives it up, and the session, with what was queued for it,
/// waits for the client's next `GET` on a new connection (a second `GET`
/// while the first one still waited would close the session).
#[test]
fn a_waiting_get_whose_client_sends_close_notify_is_given_up() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server(1, &cert, &dir);
    let mut first = TlsConn::connect(server.addr(), &cert.der);
    let sid = open_sid(&first.request("GET", &handshake_target(&server), "", b""));
    let target = format!("{}?EIO=4&transport=polling&sid={sid}", server.path());
    assert_eq!(first.request("POST", &target, "", b"40").status, 200);
    let connected = first.request("GET", &target, "", b"");
    assert!(connected.body.starts_with(r#"40{"sid":""#), "{connected:?}");
    let id = connected.body[r#"40{"sid":""#.len()..connected.body.len() - 2].to_string();

    // A GET that waits, then the client's close_notify once it waits.
    let requests = scrape(&server, &[&cert]).sum("ringcast_polling_requests_total", &[]);
    first.send("GET", &target, "", b"");
    scrape_until(
        &server,
        &[&cert],
        "ringcast_polling_requests_total",
        &[],
        requests + 1,
    );
    first.send_close_notify();
    // The server ends the connection (it does not wait for the next ping).
    let _ = first.read_to_close_notify();

    let mut second = TlsConn::connect(server.addr(), &cert.der);
    let join = r#"42["join",{"channel":"after","echo":true}]"#;
    let posted = second.request("POST", &target, "", join.as_bytes());
    assert_eq!((posted.status, posted.body.as_str()), (200, "ok"), "{posted:?}");
    let polled = second.request("GET", &target, "", b"");
    let message = format!(r#"{{"id":"{id}","data":null}}"#);
    assert_eq!(polled.body, event("channel:join", Some("after"), &message));
}

/// An idle keep-alive connection closed at the head timeout ends its TLS
/// stream with close_notify, as after a `Connection: close` answer.
#[test]
fn an_idle_keep_alive_connection_ends_with_close_notify() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server_with(1, &cert, &dir, "http_head_timeout_ms = 200");
    let mut conn = TlsConn::connect(server.addr(), &cert.der);
    assert_eq!(conn.request("GET", "/health", "", b"").status, 200);
    assert!(
        conn.read_to_close_notify(),
        "the server ended the idle TLS stream with close_notify"
    );
}

/// The drain (SIGTERM) ends a wss:// client as a plain one, with a close
/// frame, and then ends the TLS stream with close_notify.
#[test]
fn the_drain_ends_a_wss_client_with_a_close_frame_then_close_notify() {
    let (cert, dir) = (TestCert::new(), TempDir::new());
    let server = tls_server_with(1, &cert, &dir, "drain_window_ms = 0");
    let (mut ws, id) = wss_client(&server, &cert);
    join_with_echo(&mut ws, &id, "draining");
    server.signal(libc::SIGTERM);
    let close = loop {
        let frame = ws.read_frame();
        if frame.opcode == OP_CLOSE {
            break frame;
        }
    };
    assert_eq!(close.close_code(), Some(1001), "going away");
    assert!(
        ws.read_to_close_notify(),
        "the server ended the TLS stream with close_notify"
    );
}
