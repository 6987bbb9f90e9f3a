//! `GET /metrics`: Prometheus text whose counters match a known sequence of
//! connects, joins, messages and one slow-consumer disconnect exactly.
//!
//! Counters are per shard; the assertions sum the shard lines.

use std::time::Duration;

use crate::support::prom::scrape_until;
use crate::support::sio::event;
use crate::support::{channel_event, Sio, TestServer};

/// The smallest queue cap the server accepts. A single frame bigger than it
/// overflows a connection's queue at once, which makes the slow-consumer
/// disconnect below deterministic (no race between reading and flooding).
const QUEUE_CAP_BYTES: usize = 4096;

#[test]
fn counters_follow_a_known_sequence() {
    let config = format!("[server]\nsend_queue_bytes_max = {QUEUE_CAP_BYTES}\n");
    let server = TestServer::start_with(2, &[], Some(&config));

    // Two clients connect and each joins a channel, asking for its own
    // `channel:join` back, which proves the join landed. Separate channels
    // keep either join's presence event from racing the other's join
    // across shards, so every count below is exact.
    let mut a = Sio::connect_default(&server);
    let mut b = Sio::connect_default(&server);
    a.emit(r#"["join",{"channel":"m","echo":true}]"#);
    a.expect(&channel_event("join", "m", &a.id, "null"));
    b.emit(r#"["join",{"channel":"n","echo":true}]"#);
    b.expect(&channel_event("join", "n", &b.id, "null"));

    // Three messages from `a` reach `b`.
    for n in 1..=3 {
        a.emit(&format!(
            r#"["message",{{"channel":"n","eventName":"e","message":{n}}}]"#
        ));
    }
    for n in 1..=3 {
        b.expect(&event("e", Some("n"), &n.to_string()));
    }

    // One slow consumer: `c` alone in "big" gets a frame larger than its
    // whole queue cap, so the server closes it as a slow consumer.
    let mut c = Sio::connect_default(&server);
    c.emit(r#"["join",{"channel":"big","echo":true}]"#);
    c.expect(&channel_event("join", "big", &c.id, "null"));
    let big = "x".repeat(QUEUE_CAP_BYTES + 1000);
    a.emit(&format!(
        r#"["message",{{"channel":"big","eventName":"big","message":"{big}"}}]"#
    ));
    c.ws.expect_closed();

    let metrics = scrape_until(
        server.addr(),
        "ringcast_disconnects_total",
        &[("reason", "slow_consumer")],
        1,
        Duration::from_secs(5),
    );
    let sum = |name: &str| metrics.sum(name, &[]);
    assert_eq!(sum("ringcast_connects_total"), 3, "a, b and c");
    assert_eq!(sum("ringcast_joins_total"), 3, "a in m, b in n, c in big");
    assert_eq!(sum("ringcast_leaves_total"), 1, "c leaving big as it is closed");
    // join, join, 3 messages, join, big (each client event counted once).
    assert_eq!(sum("ringcast_events_in_total"), 7);
    // a's and b's echoed joins, 3 messages to b, c's echoed join, and the
    // big message to c (queued or not, it was handed over).
    assert_eq!(sum("ringcast_messages_out_total"), 7);
    // Those 7 publishes, plus c's leave (to nobody), each encoded once.
    assert_eq!(sum("ringcast_publishes_total"), 8);
    assert_eq!(sum("ringcast_refused_connects_total"), 0);
    assert_eq!(sum("ringcast_refused_upgrades_total"), 0);
    assert_eq!(
        metrics.sum("ringcast_disconnects_total", &[("reason", "slow_consumer")]),
        1
    );
    assert_eq!(sum("ringcast_disconnects_total"), 1, "no other disconnect");
    assert_eq!(
        metrics.sum("ringcast_connections", &[("env", "default")]),
        2,
        "a and b are still connected"
    );
    assert_eq!(sum("ringcast_sockets"), 2);
    assert_eq!(sum("ringcast_master_connections"), 0);

    // "m" has a member on a's shard, "n" on b's, "big" on none any more.
    let expected_channels: Vec<(String, u64)> = (0..server.shards())
        .map(|shard| {
            let here = [&a, &b]
                .iter()
                .filter(|sio| usize::from(sio.shard()) == shard)
                .count();
            (shard.to_string(), here as u64)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let mut channels = metrics.by_label("ringcast_channels", "shard");
    channels.retain(|(_, n)| *n > 0);
    assert_eq!(channels, expected_channels, "channels with members, per shard");

    // Every counter has one line per shard.
    let shards: Vec<String> = (0..server.shards()).map(|s| s.to_string()).collect();
    let counter_shards: Vec<String> = metrics
        .by_label("ringcast_connects_total", "shard")
        .into_iter()
        .map(|(shard, _)| shard)
        .collect();
    assert_eq!(counter_shards, shards);

    // A write carries at least one frame; coalescing makes it more.
    let writes = sum("ringcast_writes_total");
    let frames = sum("ringcast_frames_written_total");
    assert!(writes > 0, "no writes counted");
    assert!(writes <= frames, "{writes} writes for {frames} frames");
    assert!(sum("ringcast_bytes_in_total") > 0);
    assert!(sum("ringcast_bytes_out_total") > 0);
}
