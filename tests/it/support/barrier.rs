//! `ShardBarrier`: waits until every shard has handled everything any shard
//! sent it so far.
//!
//! Why tests need it: a publish reaches other shards through their inbound
//! queues, and a remote shard delivers it to whoever is a member *when it
//! processes the message*. A client that joins on that shard right after the
//! publisher saw its own echo can still be handed the earlier publish (the
//! Redis-adapter design has the same window). Tests that join after a
//! publish call [`ShardBarrier::sync`] first so exact assertions hold.
//!
//! How: one listener per shard sits in a private channel. `sync` makes every
//! listener publish a numbered marker and waits until every listener has
//! seen every marker. Queues between two shards are FIFO, so once a marker
//! from shard A has been delivered on shard B, everything A sent B before it
//! has been processed too.

use super::server::TestServer;
use super::sio::{connect_on_shard, event, Sio};

const CHANNEL: &str = "__it_barrier";

/// Frames a listener may skip (joins, env-wide test traffic) per sync.
const FRAMES_SKIPPED_MAX: usize = 100_000;

pub(crate) struct ShardBarrier {
    listeners: Vec<Sio>,
    round: u64,
}

impl ShardBarrier {
    pub(crate) fn new(server: &TestServer) -> Self {
        let mut listeners = Vec::with_capacity(server.shards());
        for shard in 0..server.shards() {
            let shard = u8::try_from(shard).expect("fewer than 256 shards");
            let mut listener = connect_on_shard(server, shard, "{}");
            listener.join(CHANNEL);
            // Its own echo proves the join has landed on its shard, so
            // markers processed there from now on reach it.
            listener.emit(&format!(
                r#"["message",{{"channel":"{CHANNEL}","eventName":"ready","message":{shard},"echo":true}}]"#
            ));
            let ready = event("ready", Some(CHANNEL), &shard.to_string());
            skip_until(&mut listener, &[&ready]);
            listeners.push(listener);
        }
        let mut barrier = Self { listeners, round: 0 };
        // Every listener's join has landed everywhere before the first real sync.
        barrier.sync();
        barrier
    }

    /// Returns once every shard has processed every cross-shard message
    /// that any shard had sent before this call.
    pub(crate) fn sync(&mut self) {
        self.round += 1;
        let round = self.round;
        let markers: Vec<String> = (0..self.listeners.len())
            .map(|from| event("barrier", Some(CHANNEL), &format!("\"{round}.{from}\"")))
            .collect();
        for (from, listener) in self.listeners.iter_mut().enumerate() {
            listener.emit(&format!(
                r#"["message",{{"channel":"{CHANNEL}","eventName":"barrier","message":"{round}.{from}","echo":true}}]"#
            ));
        }
        let markers: Vec<&String> = markers.iter().collect();
        for listener in &mut self.listeners {
            skip_until(listener, &markers);
        }
    }
}

/// Reads frames until every one of `wanted` has been seen, skipping others.
fn skip_until(listener: &mut Sio, wanted: &[&String]) {
    let mut missing = wanted.to_vec();
    for _ in 0..FRAMES_SKIPPED_MAX {
        if missing.is_empty() {
            return;
        }
        let frame = listener.recv();
        if let Ok(text) = std::str::from_utf8(&frame.payload) {
            missing.retain(|marker| marker.as_str() != text);
        }
    }
    assert!(missing.is_empty(), "barrier markers never arrived: {missing:?}");
}
