//! Rate limits that no client can steer: clients whose IP is unknown do not
//! share one budget, and events the full table lets through unchecked are
//! counted in `/metrics`.
//!
//! Client IPs are TCP peers picked from 127.0.0.0/8. 127.0.0.1 is a trusted
//! proxy here: a client connecting from it without `X-Forwarded-For` has no
//! known IP.

use std::net::IpAddr;
use std::time::Duration;

use crate::support::net::{connect_from, upgrade};
use crate::support::prom::scrape_until;
use crate::support::sio::{engine_open_over, engine_target, event};
use crate::support::{channel_event, Sio, TestServer};

const RATE_ERROR: &str = r#"42["error",{"code":"rate_limit_exceeded","message":"two per five minutes"}]"#;

/// A Socket.IO client of environment `default` connecting from `source`.
fn sio_from(server: &TestServer, source: &str) -> Sio {
    let source: IpAddr = source.parse().expect("an IP address");
    let ws = upgrade(connect_from(source, server.addr()), &engine_target(server), b"").switched();
    Sio::connect_after_open(engine_open_over(ws), "{}")
}

fn message(channel: &str, n: u32) -> String {
    format!(r#"["message",{{"channel":"{channel}","eventName":"m","message":{n}}}]"#)
}

/// Two clients behind a proxy that forwards no client IP: one spends its
/// whole budget, the other still has all of its own (they used to share
/// one `0.0.0.0` budget, so the first starved the second).
#[test]
fn clients_of_unknown_ip_do_not_share_one_budget() {
    let config = r#"
[server]
trusted_proxies = ["127.0.0.1"]

[[environments]]
id = "default"
rate_limits = [{ limit = 2, window_s = 300, message = "two per five minutes" }]
"#;
    let server = TestServer::start_with(2, &[], Some(config));
    let mut receiver = sio_from(&server, "127.0.0.2");
    receiver.emit(r#"["join",{"channel":"c","echo":true}]"#);
    receiver.expect(&channel_event("join", "c", &receiver.id, "null"));
    let mut greedy = sio_from(&server, "127.0.0.1");
    let mut other = sio_from(&server, "127.0.0.1");

    for n in 1..=3 {
        greedy.emit(&message("c", n));
    }
    greedy.expect(RATE_ERROR);
    receiver.expect(&event("m", Some("c"), "1"));
    receiver.expect(&event("m", Some("c"), "2"));

    other.emit(&message("c", 10));
    other.emit(&message("c", 11));
    receiver.expect(&event("m", Some("c"), "10"));
    receiver.expect(&event("m", Some("c"), "11"));
    // Its third event is over its own budget.
    other.emit(&message("c", 12));
    other.expect(RATE_ERROR);
}

/// A table of 8 slots holds 8 keys (every key may probe all 8): the ninth
/// client's events pass unchecked and are counted, once per event; clients
/// that hold a slot are still limited.
#[test]
fn events_let_through_by_a_full_rate_table_are_counted() {
    let config = r#"
[server]
rate_limit_slots = 8

[[environments]]
id = "default"
rate_limits = [{ limit = 2, window_s = 300, message = "two per five minutes" }]
"#;
    let server = TestServer::start_with(2, &[], Some(config));
    let mut clients: Vec<Sio> = (10..19)
        .map(|i| sio_from(&server, &format!("127.0.0.{i}")))
        .collect();
    // One event each, a join of a channel of its own echoed back to the
    // sender: handled once it is back. The first eight take the eight slots
    // (whatever their order across shards), the ninth finds none.
    for (i, sio) in clients.iter_mut().enumerate() {
        sio.emit(&format!(r#"["join",{{"channel":"own{i}","echo":true}}]"#));
        let id = sio.id.clone();
        sio.expect(&channel_event("join", &format!("own{i}"), &id, "null"));
    }
    let metrics = scrape_until(
        server.addr(),
        "ringcast_rate_table_saturated_total",
        &[],
        1,
        Duration::from_secs(5),
    );
    assert_eq!(metrics.sum("ringcast_rate_table_saturated_total", &[]), 1);
    assert_eq!(metrics.sum("ringcast_rate_limited_events_total", &[]), 0);

    // Every client sends a second event: eight are counted (now at their
    // limit of 2), one more passes unchecked. A third event is over the
    // limit for the eight, and unchecked again for the one without a slot.
    for (i, sio) in clients.iter_mut().enumerate() {
        sio.sentinel(&format!("own{i}"), "s");
    }
    let mut unchecked = 0;
    for (i, sio) in clients.iter_mut().enumerate() {
        let channel = format!("own{i}");
        sio.emit(&format!(
            r#"["message",{{"channel":"{channel}","eventName":"s","message":3,"echo":true}}]"#
        ));
        let reply = sio.recv_text();
        if reply == RATE_ERROR {
            continue;
        }
        assert_eq!(
            reply,
            event("s", Some(&channel), "3"),
            "a third event either passes unchecked or is limited"
        );
        unchecked += 1;
    }
    assert_eq!(unchecked, 1, "exactly one client holds no slot");
    let metrics = scrape_until(
        server.addr(),
        "ringcast_rate_table_saturated_total",
        &[],
        3,
        Duration::from_secs(5),
    );
    assert_eq!(metrics.sum("ringcast_rate_table_saturated_total", &[]), 3);
    assert_eq!(metrics.sum("ringcast_rate_limited_events_total", &[]), 8);
}
