//! Inbound floods: a client sending events as fast as the server takes
//! them does not starve another connection on the same shard (the server
//! handles a bounded number of messages per connection per turn), and
//! loses none of the flood either.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::prom::Metrics;
use crate::support::sio::event;
use crate::support::ws::{encode_frame, random_mask, OP_TEXT};
use crate::support::{connect_on_shard, TestServer};

/// Messages per chunk the flooder writes; each chunk ends with a marker the
/// flooder gets back, and it keeps at most `CHUNKS_IN_FLIGHT` chunks
/// unacknowledged. So the server always has a backlog from the flooder (as
/// with a sender faster than the server) but the backlog stays bounded and
/// drains in about a second when the flood stops, even on a debug build.
const CHUNK_MESSAGES: u64 = 2000;
const CHUNKS_IN_FLIGHT: u64 = 2;

/// Upper bounds on the flood, whatever happens: it normally runs only until
/// the round trips below are done.
const FLOOD_CHUNKS_MAX: u64 = 2000;
const FLOOD_DURATION_MAX: Duration = Duration::from_secs(30);

/// How long the flooder waits for one of its markers: a whole chunk's
/// processing on a slow, loaded machine.
const MARKER_TIMEOUT: Duration = Duration::from_secs(20);

/// Round trips measured during the flood.
const ROUND_TRIPS: usize = 3;

/// Generous on purpose: this is about starvation, not speed. A fair server
/// answers within a turn of its shard even while busy; a server that
/// served the flooder until its input ran dry would not answer until the
/// flood stopped, which happens only after the round trips (or after
/// `FLOOD_DURATION_MAX`), so any bound well under that tells them apart.
const ROUND_TRIP_MAX: Duration = Duration::from_secs(5);

#[test]
fn a_flooding_client_does_not_starve_its_shard_neighbour() {
    let server = TestServer::start(2);
    let mut flooder = connect_on_shard(&server, 0, "{}");
    let mut victim = connect_on_shard(&server, 0, "{}");
    victim.join("rt");
    victim.sentinel("rt", "ready");
    // The flooder is alone in "void" with echo off: the server parses and
    // routes every message and delivers it to no one, markers aside.
    flooder.join("void");
    flooder.sentinel("void", "ready");

    let chunks_sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (chunks_sent, stop) = (chunks_sent.clone(), stop.clone());
        std::thread::spawn(move || {
            let packet = br#"42["message",{"channel":"void","eventName":"f","message":{"n":1}}]"#;
            let mut chunk = Vec::new();
            for _ in 0..CHUNK_MESSAGES {
                chunk.extend(encode_frame(true, 0, OP_TEXT, packet, Some(random_mask())));
            }
            let started = Instant::now();
            let mut sent = 0;
            let mut acknowledged = 0;
            while !stop.load(Ordering::Relaxed)
                && sent < FLOOD_CHUNKS_MAX
                && started.elapsed() < FLOOD_DURATION_MAX
            {
                if sent - acknowledged == CHUNKS_IN_FLIGHT {
                    expect_marker(&mut flooder, acknowledged);
                    acknowledged += 1;
                }
                flooder.ws.send_raw(&chunk);
                flooder.emit(&format!(
                    r#"["message",{{"channel":"void","eventName":"mark","message":{sent},"echo":true}}]"#
                ));
                sent += 1;
                chunks_sent.store(sent, Ordering::Relaxed);
            }
            // Everything sent has been handled once the last marker is back.
            while acknowledged < sent {
                expect_marker(&mut flooder, acknowledged);
                acknowledged += 1;
            }
            (flooder, sent)
        })
    };

    // The server has a backlog from the flooder before the victim speaks.
    let head_start_deadline = Instant::now() + FLOOD_DURATION_MAX;
    while chunks_sent.load(Ordering::Relaxed) < CHUNKS_IN_FLIGHT {
        assert!(Instant::now() < head_start_deadline, "the flood never got going");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut round_trips = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let started = Instant::now();
        victim.sentinel("rt", &format!("rt{i}"));
        round_trips.push(started.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    let (mut flooder, chunks) = flood.join().expect("the flooding thread");
    eprintln!(
        "inbound flood: round trips {round_trips:?} during a flood of {chunks} x {CHUNK_MESSAGES} messages"
    );
    for (i, took) in round_trips.iter().enumerate() {
        assert!(
            *took <= ROUND_TRIP_MAX,
            "round trip {i} took {took:?} during the flood"
        );
    }
    assert!(
        chunks < FLOOD_CHUNKS_MAX,
        "the flood ran to its cap before the round trips finished"
    );

    // The flooder is still served, and no event was dropped: the flood and
    // its markers, each client's join and "ready" sentinel, and the
    // victim's round trips.
    flooder.sentinel("void", "done");
    let metrics = Metrics::scrape(server.addr());
    let expected = chunks * (CHUNK_MESSAGES + 1) + 2 * 2 + ROUND_TRIPS as u64 + 1;
    assert_eq!(metrics.sum("ringcast_events_in_total", &[]), expected);
}

/// The flooder's next frame is its marker `n` (Engine.IO pings aside).
fn expect_marker(flooder: &mut crate::support::Sio, n: u64) {
    let expected = event("mark", Some("void"), &n.to_string());
    let deadline = Instant::now() + MARKER_TIMEOUT;
    // Bounded: only a few pings can come first.
    for _ in 0..100 {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let frame = flooder
            .ws
            .read_frame_within(remaining)
            .unwrap_or_else(|error| panic!("marker {n}: {error:?}"));
        if frame.opcode == OP_TEXT && frame.payload == b"2" {
            flooder.send("3");
            continue;
        }
        assert_eq!(frame.text(), expected, "marker {n}");
        return;
    }
    panic!("marker {n}: only pings");
}
