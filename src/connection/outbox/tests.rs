use std::io::Read;

use super::*;
use crate::connection::test_support::{on_each_driver, socket_pair, yield_until};

fn frame(text: &str) -> Bytes {
    crate::protocol::frames::engineio(text)
}

#[test]
fn frames_queued_in_one_turn_leave_in_one_write_and_the_writer_ends() {
    on_each_driver(|| async {
        let (server, writer, client) = socket_pair().await;
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), Duration::from_millis(100)));
        let outbox = Rc::new(Outbox::new(1 << 20, server, writer, egress.clone()));
        assert!(outbox.idle_writer.take().is_some_and(|w| {
            outbox.idle_writer.set(Some(w));
            true
        }));
        for text in ["a", "bb", "ccc"] {
            outbox.push(frame(text));
        }
        assert!(
            outbox.idle_writer.take().is_none(),
            "the first push starts the writer"
        );
        yield_until(|| stats.writes.get() == 1 && outbox.is_empty()).await;
        yield_until(|| {
            let idle = outbox.idle_writer.take();
            let back = idle.is_some();
            outbox.idle_writer.set(idle);
            back
        })
        .await;
        assert_eq!(stats.frames_written.get(), 3);
        let expected = [frame("a"), frame("bb"), frame("ccc")].concat();
        let mut received = vec![0; expected.len()];
        let mut client = client;
        client.read_exact(&mut received).unwrap();
        assert_eq!(received, expected);
    });
}

#[test]
fn a_queue_over_its_cap_closes_the_connection_as_a_slow_consumer() {
    on_each_driver(|| async {
        let (server, writer, client) = socket_pair().await;
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), Duration::from_millis(100)));
        let outbox = Rc::new(Outbox::new(10, server, writer, egress.clone()));
        outbox.push(frame("12345678"));
        outbox.push(frame("12345678"));
        assert_eq!(outbox.closing(), Some(CloseReason::SlowConsumer));
        // Later pushes are dropped, and the socket is shut down: the client
        // reads to end of file after at most what was written.
        outbox.push(frame("x"));
        yield_until(|| {
            let idle = outbox.idle_writer.take();
            outbox.idle_writer.set(idle);
            stats.writes.get() <= 1
        })
        .await;
        let mut client = client;
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        assert!(all.len() <= frame("12345678").len());
    });
}

#[test]
fn a_graceful_close_flushes_what_was_queued() {
    on_each_driver(|| async {
        let (server, writer, client) = socket_pair().await;
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), Duration::from_millis(100)));
        let outbox = Rc::new(Outbox::new(1 << 20, server, writer, egress.clone()));
        outbox.push(frame("last words"));
        outbox.close(CloseReason::ServerDisconnect);
        let mut client = client;
        let mut all = Vec::new();
        let reader = std::thread::spawn(move || {
            client.read_to_end(&mut all).unwrap();
            all
        });
        yield_until(|| reader.is_finished()).await;
        assert_eq!(reader.join().unwrap(), frame("last words"));
    });
}

#[test]
fn frame_batch_advances_across_frames() {
    let mut batch = FrameBatch {
        frames: vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")],
        iovecs: Vec::new(),
    };
    batch.advance(2);
    assert_eq!(
        batch.frames,
        vec![Bytes::from_static(b"c"), Bytes::from_static(b"defg")]
    );
    batch.advance(3);
    assert_eq!(batch.frames, vec![Bytes::from_static(b"fg")]);
    batch.refresh_iovecs();
    assert_eq!(batch.iovecs.len(), 1);
    assert_eq!(batch.iovecs[0].iov_len, 2);
    batch.advance(2);
    assert!(batch.frames.is_empty());
}

/// The writer future lives only while a connection has something to write,
/// but at saturation every connection has one: keep it small.
#[test]
fn the_writer_future_stays_small() {
    on_each_driver(|| async {
        let (server, writer, _client) = socket_pair().await;
        let (_, spare_writer, _spare_client) = socket_pair().await;
        let egress = Rc::new(Egress::new(Rc::new(Stats::default()), Duration::from_millis(100)));
        let outbox = Rc::new(Outbox::new(1, server, writer, egress));
        let writer = write_loop(outbox, spare_writer);
        let size = size_of_val(&writer);
        assert!(size <= 384, "writer future is {size} bytes");
    });
}
