//! The bounded cross-shard backlog: a publisher that outruns another shard
//! stops being read (its messages wait in the kernel and in its own TCP
//! window) instead of piling up without bound in its shard, and nothing is
//! lost or reordered.

use std::thread;
use std::time::Duration;

use crate::support::prom::scrape_until;
use crate::support::sio::{event, message_frames};
use crate::support::{connect_on_shard, join_all, ShardBarrier, TestServer};

/// A two-slot inbox and an eight-message backlog; a small queue cap and a
/// long stall timeout, so a receiver that pauses holds shard 1's inbox
/// drain (it paces itself to the receiver) without being given up on.
const CONFIG: &str = "[server]
mesh_queue_messages_max = 2
mesh_backlog_messages_max = 8
send_queue_bytes_max = 65536
send_stall_timeout_ms = 30000
";
const MESSAGES: usize = 5_000;
const MESSAGE_BYTES: usize = 1_000;

#[test]
fn a_flooding_publisher_is_stopped_at_the_backlog_bound_and_nothing_is_lost() {
    let server = TestServer::start_with(2, &[], Some(CONFIG));
    let mut barrier = ShardBarrier::new(&server);
    let mut sender = connect_on_shard(&server, 0, "{}");
    let mut receiver = connect_on_shard(&server, 1, "{}");
    join_all(&mut barrier, &mut [&mut receiver, &mut sender], "flood");

    let message = |i: usize| format!("{i:05}-{}", "x".repeat(MESSAGE_BYTES));
    let batch = message_frames("flood", "seq", (0..MESSAGES).map(message));
    // The flood goes out from another thread: once the server stops reading
    // it, the write blocks.
    let flood = thread::spawn(move || {
        sender.ws.send_raw(&batch);
        sender
    });
    // The receiver reads nothing until shard 0's reader has stopped at the
    // bound: shard 1 paces its inbox to the receiver, its inbox fills, and
    // shard 0's held-back messages reach the bound.
    let metrics = scrape_until(
        server.addr(),
        "ringcast_mesh_backlog_stalls_total",
        &[],
        1,
        Duration::from_secs(20),
    );
    assert!(
        metrics.sum("ringcast_mesh_backlog_stalls_total", &[]) >= 1,
        "the publisher's reader stopped at the bound"
    );
    assert!(
        metrics.sum("ringcast_mesh_backlog_messages", &[]) <= 8 + 1,
        "held-back messages stay within the bound (plus the message being handled)"
    );
    for i in 0..MESSAGES {
        let expected = event("seq", Some("flood"), &format!("\"{}\"", message(i)));
        assert_eq!(receiver.recv_text(), expected, "message {i}");
    }
    let mut sender = flood.join().expect("the flood was written");
    // Both are still connected: the sender's next message arrives.
    sender.emit(r#"["message",{"channel":"flood","eventName":"after","message":"done"}]"#);
    receiver.expect(&event("after", Some("flood"), r#""done""#));
}
