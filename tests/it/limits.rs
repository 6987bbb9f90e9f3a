//! Connection limits and the request head size limit.
//!
//! Over `connections_per_ip_max` or `connections_max` an upgrade gets `503`
//! JSON `{"error":..,"code":"too_many_connections"}`; the admitted
//! connections keep working, and a slot frees when one of them closes. A
//! request head over `http_head_bytes_max` gets `431` JSON.

use std::net::IpAddr;
use std::time::Duration;

use sonic_rs::JsonValueTrait;

use crate::support::http::{get, Response};
use crate::support::net::{connect_from, upgrade, upgrade_head, upgrade_with, Upgrade};
use crate::support::prom::Metrics;
use crate::support::sio::{engine_open_over, engine_target};
use crate::support::ws::random_key;
use crate::support::{Sio, TestServer};

/// Attempts made while waiting for a closed connection's slot to free.
/// The slot is released when the server's task for that connection ends,
/// a moment after the client sees its TCP connection close.
const FREED_SLOT_ATTEMPTS_MAX: usize = 100;
const FREED_SLOT_RETRY_DELAY: Duration = Duration::from_millis(20);

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

/// A Socket.IO client connecting from `source`.
fn sio_from(server: &TestServer, source: &str) -> Sio {
    let ws = upgrade(
        connect_from(ip(source), server.addr()),
        &engine_target(server),
        b"",
    )
    .switched();
    Sio::connect_after_open(engine_open_over(ws), "{}")
}

/// An upgrade from `source` that must be refused for being over a limit.
fn assert_refused_from(server: &TestServer, source: &str) {
    let response = upgrade(
        connect_from(ip(source), server.addr()),
        &engine_target(server),
        b"",
    )
    .refused();
    assert_too_many_connections(&response);
}

fn assert_too_many_connections(response: &Response) {
    response.assert_json_error(503);
    assert_eq!(
        response.json().get("code").as_str(),
        Some("too_many_connections"),
        "{response:?}"
    );
}

/// Each admitted client still does a round trip of its own.
fn assert_each_works(clients: &mut [Sio], tag: &str) {
    for (i, sio) in clients.iter_mut().enumerate() {
        let channel = format!("{tag}-{i}");
        sio.join(&channel);
        sio.sentinel(&channel, "alive");
    }
}

/// Closes `sio` with a WebSocket close and waits for the server's answer and
/// the end of the TCP connection.
fn close(mut sio: Sio) {
    sio.ws.send_close(1000, "");
    sio.ws.expect_close_code(1000);
}

/// Connects from `source` until the upgrade is admitted (bounded); returns
/// the client and how many refusals came first.
fn connect_once_a_slot_frees(server: &TestServer, source: &str) -> (Sio, u64) {
    let mut refusals = 0;
    for _ in 0..FREED_SLOT_ATTEMPTS_MAX {
        match upgrade(
            connect_from(ip(source), server.addr()),
            &engine_target(server),
            b"",
        ) {
            Upgrade::Switched(ws) => return (Sio::connect_after_open(engine_open_over(ws), "{}"), refusals),
            Upgrade::Refused(response) => {
                assert_too_many_connections(&response);
                refusals += 1;
                std::thread::sleep(FREED_SLOT_RETRY_DELAY);
            }
        }
    }
    panic!("no slot freed after {FREED_SLOT_ATTEMPTS_MAX} attempts");
}

#[test]
fn per_ip_limit_refuses_with_503_and_frees_a_slot_on_close() {
    let server = TestServer::start_with(2, &[], Some("[server]\nconnections_per_ip_max = 3\n"));
    let mut first: Vec<Sio> = (0..3).map(|_| sio_from(&server, "127.0.0.1")).collect();
    assert_refused_from(&server, "127.0.0.1");
    // A refusal takes no slot: the next attempt is refused the same way.
    assert_refused_from(&server, "127.0.0.1");
    // Another address has its own three.
    let mut second: Vec<Sio> = (0..3).map(|_| sio_from(&server, "127.0.0.2")).collect();
    assert_refused_from(&server, "127.0.0.2");
    let mut refusals = 3;

    assert_each_works(&mut first, "first");
    assert_each_works(&mut second, "second");

    close(first.remove(0));
    let (newcomer, retries) = connect_once_a_slot_frees(&server, "127.0.0.1");
    refusals += retries;
    first.push(newcomer);
    assert_refused_from(&server, "127.0.0.1");
    refusals += 1;
    assert_each_works(&mut first, "first-again");
    assert_each_works(&mut second, "second-again");

    let metrics = Metrics::scrape(server.addr());
    assert_eq!(metrics.sum("ringcast_refused_upgrades_total", &[]), refusals);
    assert_eq!(metrics.sum("ringcast_sockets", &[]), 6);
}

#[test]
fn global_limit_refuses_every_address_with_503_and_frees_a_slot_on_close() {
    let server = TestServer::start_with(2, &[], Some("[server]\nconnections_max = 4\n"));
    let mut clients = vec![
        sio_from(&server, "127.0.0.1"),
        sio_from(&server, "127.0.0.1"),
        sio_from(&server, "127.0.0.2"),
        sio_from(&server, "127.0.0.3"),
    ];
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.4"] {
        assert_refused_from(&server, source);
    }
    // Plain HTTP is not a WebSocket connection and is still answered.
    let health = get(server.addr(), "/health");
    assert_eq!(health.status, 200, "{health:?}");
    assert_each_works(&mut clients, "full");

    // Dropping the client ends its TCP connection without a closing handshake.
    drop(clients.remove(2));
    let (newcomer, _) = connect_once_a_slot_frees(&server, "127.0.0.5");
    clients.push(newcomer);
    assert_refused_from(&server, "127.0.0.2");
    assert_each_works(&mut clients, "full-again");
}

#[test]
fn request_head_up_to_the_limit_upgrades_and_one_byte_more_gets_431() {
    let server = TestServer::start_with(2, &[], Some("[server]\nhttp_head_bytes_max = 2048\n"));
    let target = engine_target(&server);
    // The key is always 24 characters, so any key gives the same length.
    let unpadded = upgrade_head(server.addr(), &target, &random_key(), "X-Pad: \r\n").len();
    let pad = |head_bytes: usize| format!("X-Pad: {}\r\n", "p".repeat(head_bytes - unpadded));

    let at_limit = upgrade_with(
        connect_from(ip("127.0.0.1"), server.addr()),
        &target,
        &pad(2048),
        b"",
    );
    let sio = Sio::connect_after_open(engine_open_over(at_limit.switched()), "{}");
    drop(sio);

    let over = upgrade_with(
        connect_from(ip("127.0.0.1"), server.addr()),
        &target,
        &pad(2049),
        b"",
    )
    .refused();
    over.assert_json_error(431);
}

#[test]
fn default_request_head_limit_is_16_kib() {
    let server = TestServer::start(2);
    let target = engine_target(&server);
    let unpadded = upgrade_head(server.addr(), &target, &random_key(), "X-Pad: \r\n").len();
    let pad = |head_bytes: usize| format!("X-Pad: {}\r\n", "p".repeat(head_bytes - unpadded));
    let at_limit = upgrade_with(
        connect_from(ip("127.0.0.1"), server.addr()),
        &target,
        &pad(16 * 1024),
        b"",
    );
    drop(Sio::connect_after_open(
        engine_open_over(at_limit.switched()),
        "{}",
    ));
    let over = upgrade_with(
        connect_from(ip("127.0.0.1"), server.addr()),
        &target,
        &pad(16 * 1024 + 1),
        b"",
    )
    .refused();
    over.assert_json_error(431);
}
