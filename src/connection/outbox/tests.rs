use std::io::Read;

use super::*;
use crate::connection::test_support::{on_each_driver, small_socket_pair, socket_pair, yield_until};

fn frame(text: &str) -> Bytes {
    crate::protocol::frames::engineio(text)
}

/// Reads exactly `total` bytes from `client` on a thread of its own.
fn read_in_thread(
    mut client: std::net::TcpStream,
    total: usize,
) -> std::thread::JoinHandle<std::io::Result<usize>> {
    std::thread::spawn(move || {
        let mut all = vec![0; total];
        client.read_exact(&mut all).map(|()| all.len())
    })
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
fn an_idle_connection_gives_its_queue_and_send_buffer_to_the_next_writer() {
    on_each_driver(|| async {
        let (server, writer, client) = socket_pair().await;
        let (server2, writer2, client2) = socket_pair().await;
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), Duration::from_millis(100)));
        let first = Rc::new(Outbox::new(1 << 20, server, writer, egress.clone()));
        let second = Rc::new(Outbox::new(1 << 20, server2, writer2, egress.clone()));
        let writer_back = |outbox: &Rc<Outbox>| {
            let idle = outbox.idle_writer.take();
            let back = idle.is_some();
            outbox.idle_writer.set(idle);
            back
        };
        for text in ["a", "bb", "ccc"] {
            first.push(frame(text));
        }
        yield_until(|| stats.writes.get() == 1 && writer_back(&first)).await;
        assert_eq!(
            first.queue.borrow().capacity(),
            0,
            "an idle connection holds no queue memory"
        );
        // The queue the frames were pushed into (swapped into the batch
        // for the write) and the send buffer they were copied into are
        // kept; nothing was pushed during the write, so the outbox's own
        // queue (the batch's empty one) never had memory.
        assert_eq!(egress.spares(), (1, 1));
        let spare_capacity = egress.spares.borrow().queues[0].capacity();
        second.push(frame("dd"));
        assert_eq!(
            egress.spares().0,
            0,
            "the next push on an idle connection takes the queue kept"
        );
        assert_eq!(second.queue.borrow().capacity(), spare_capacity);
        second.push(frame("e"));
        yield_until(|| stats.writes.get() == 2 && writer_back(&second)).await;
        assert_eq!(second.queue.borrow().capacity(), 0);
        assert_eq!(egress.spares(), (1, 1), "the same buffers went back");
        egress.trim_spares();
        assert_eq!(egress.spares(), (0, 0));
        for (client, expected) in [
            (client, [frame("a"), frame("bb"), frame("ccc")].concat()),
            (client2, [frame("dd"), frame("e")].concat()),
        ] {
            let mut received = vec![0; expected.len()];
            let mut client = client;
            client.read_exact(&mut received).unwrap();
            assert_eq!(received, expected);
        }
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

/// A write that fails takes its unsent frames with it: the memory of its
/// queue goes back to the shard for the next writer, its frames must not
/// (they would leave on another connection, ahead of that one's own).
#[test]
fn a_failed_write_leaves_nothing_for_the_next_connection() {
    on_each_driver(|| async {
        let (lost_server, lost_writer, lost_client) = socket_pair().await;
        let (server, writer, mut client) = socket_pair().await;
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), Duration::from_millis(100)));
        let lost = Rc::new(Outbox::new(1 << 20, lost_server, lost_writer, egress.clone()));
        let outbox = Rc::new(Outbox::new(1 << 20, server, writer, egress.clone()));
        // The client resets its connection: the server's next send fails.
        socket2::SockRef::from(&lost_client)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(lost_client);
        lost.push(frame("for the client that left"));
        yield_until(|| lost.closing() == Some(CloseReason::Io)).await;
        outbox.push(frame("mine"));
        let expected = frame("mine");
        let mut got = vec![0; expected.len()];
        let reader = std::thread::spawn(move || {
            client.read_exact(&mut got).unwrap();
            got
        });
        yield_until(|| reader.is_finished()).await;
        assert_eq!(reader.join().unwrap(), expected);
    });
}

/// Frames far larger than the socket's buffer leave in several partial
/// writes, each continuing where the last stopped: the client reads every
/// byte, in order.
#[test]
fn a_batch_larger_than_the_socket_buffer_leaves_whole_in_partial_writes() {
    on_each_driver(|| async {
        let (server, writer, client) = small_socket_pair(8 << 10, 8 << 10).await;
        let stats = Rc::new(Stats::default());
        let egress = Rc::new(Egress::new(stats.clone(), Duration::from_secs(10)));
        let outbox = Rc::new(Outbox::new(4 << 20, server, writer, egress.clone()));
        let frames: Vec<Bytes> = (0..64u8)
            .map(|i| frame(&String::from(char::from(b'a' + i % 26)).repeat(8 << 10)))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let reader = read_all_in_thread(client, expected.len());
        for f in frames {
            outbox.push(f);
        }
        yield_until(|| reader.is_finished()).await;
        assert_eq!(reader.join().unwrap(), expected);
        assert!(stats.writes.get() > 1, "{} writes", stats.writes.get());
        assert_eq!(stats.bytes_out.get(), expected.len() as u64);
    });
}

/// Reads exactly `total` bytes from `client` on a thread of its own and
/// returns them.
fn read_all_in_thread(mut client: std::net::TcpStream, total: usize) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = vec![0; total];
        client.read_exact(&mut all).unwrap();
        all
    })
}

fn fr(bytes: &'static [u8]) -> Frame {
    Frame::from(Bytes::from_static(bytes))
}

/// The unsent bytes of each frame of `batch`.
fn unsent_frames(batch: &FrameBatch) -> Vec<Vec<u8>> {
    batch.frames.iter().map(|f| f.to_vec()).collect()
}

#[test]
fn frame_batch_advances_across_frames() {
    let mut batch = FrameBatch::default();
    batch.frames.extend([fr(b"abc"), fr(b"defg")]);
    batch.advance(2);
    assert_eq!(unsent_frames(&batch), [b"c".to_vec(), b"defg".to_vec()]);
    batch.advance(3);
    assert_eq!(unsent_frames(&batch), [b"fg".to_vec()]);
    batch.refresh_iovecs();
    assert_eq!(batch.iovecs.len(), 1);
    assert_eq!(batch.iovecs[0].iov_len, 2);
    assert!(
        batch.coalesce(&RefCell::default(), &Stats::default()),
        "one frame left"
    );
    let sent = Coalesced(batch);
    assert_eq!(sent.buffer(), b"fg", "its unsent part is sent");
    let mut batch = sent.0;
    batch.advance(2);
    assert!(batch.frames.is_empty());
}

/// A copy after a partial write starts at the first unsent byte.
#[test]
fn a_copy_after_a_partial_write_starts_where_it_stopped() {
    let mut batch = FrameBatch::default();
    batch.frames.extend([fr(b"abc"), fr(b"defg"), fr(b"h")]);
    batch.advance(4);
    assert!(batch.coalesce(&RefCell::default(), &Stats::default()));
    assert_eq!(batch.flat, b"efgh");
}

#[test]
fn small_frames_are_coalesced_into_one_buffer_and_large_batches_are_not() {
    let (last, stats) = (RefCell::default(), Stats::default());
    let unsent = |batch: &FrameBatch| batch.flat.clone();
    let mut batch = FrameBatch::default();
    batch.frames.push_back(fr(b"abc"));
    assert!(batch.coalesce(&last, &stats), "one frame is sent");
    assert!(batch.flat.is_empty(), "from its own buffer");
    assert_eq!(Coalesced(std::mem::take(&mut batch)).buffer(), b"abc");
    batch.frames.push_back(fr(b"abc"));
    batch.frames.push_back(fr(b"defg"));
    assert!(batch.coalesce(&last, &stats), "two small frames");
    assert_eq!(batch.flat, b"abcdefg");
    assert!(
        batch.frames.is_empty(),
        "the frames are out of the batch once copied"
    );
    // A partial send: the rest of the same buffer goes next.
    batch.advance(5);
    assert!(!batch.is_empty());
    assert!(batch.coalesce(&last, &stats), "the rest of the copy");
    assert_eq!(unsent(&batch), b"fg");
    batch.advance(2);
    assert!(batch.is_empty());
    // The next batch reuses the buffer from its start.
    batch.frames.push_back(fr(b"h"));
    batch.frames.push_back(fr(b"ij"));
    assert!(batch.coalesce(&last, &stats));
    assert_eq!(unsent(&batch), b"hij");
    batch.advance(3);
    assert!(batch.is_empty());
    let mut large = FrameBatch::default();
    large
        .frames
        .push_back(Frame::from(Bytes::from(vec![1u8; COALESCE_BYTES_MAX])));
    large.frames.push_back(fr(b"x"));
    assert!(
        !large.coalesce(&last, &stats),
        "past the cap the frames go as iovecs"
    );
}

/// A fan-out's recipients all get the same frames: the first writer copies
/// them, the second makes the one shared copy, and every later one sends
/// that copy; a batch of other frames (even with equal bytes) is copied
/// again, and a partial send of the shared copy sends its rest.
#[test]
fn the_same_frames_in_many_batches_are_copied_once_and_shared() {
    let (last, stats) = (RefCell::default(), Stats::default());
    let (a, b) = (fr(b"abc"), fr(b"de"));
    let batch_of = |frames: &[&Frame]| {
        let mut batch = FrameBatch::default();
        batch.frames.extend(frames.iter().map(|&f| f.clone()));
        batch
    };
    let mut first = batch_of(&[&a, &b]);
    assert!(first.coalesce(&last, &stats));
    assert_eq!(first.flat, b"abcde", "the first writer copies");
    let shared: Vec<*const u8> = (0..3)
        .map(|_| {
            let mut batch = batch_of(&[&a, &b]);
            assert!(batch.coalesce(&last, &stats));
            assert!(batch.flat.is_empty(), "no copy of its own");
            let sent = Coalesced(batch);
            assert_eq!(sent.buffer(), b"abcde");
            sent.buffer().as_ptr()
        })
        .collect();
    assert!(shared.iter().all(|&p| p == shared[0]), "one shared copy");
    assert_eq!(stats.shared_copies.get(), 3);

    // Another frame of the same bytes, or the frames in another order, are
    // other frames.
    let a2 = Frame::from(a.bytes().clone());
    for frames in [[&a2, &b], [&b, &a]] {
        let mut batch = batch_of(&frames);
        assert!(batch.coalesce(&last, &stats));
        assert!(!batch.flat.is_empty(), "copied");
    }

    // A partial send of a shared copy: the rest goes next, still shared.
    let mut batch = batch_of(&[&b, &a]);
    assert!(batch.coalesce(&last, &stats));
    assert!(batch.flat.is_empty());
    batch.advance(3);
    assert!(batch.coalesce(&last, &stats));
    let sent = Coalesced(batch);
    assert_eq!(sent.buffer(), b"bc");
    let mut batch = sent.0;
    batch.advance(2);
    assert!(batch.is_empty());
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
        // 464 bytes since small frames are coalesced into one buffer (the
        // batch keeps it beside its frames and iovecs), 496 since the
        // batch's frames are a queue swapped with the outbox's, 504 since
        // one frame is sent from its own buffer: only connections with
        // something to write have one.
        assert!(size <= 512, "writer future is {size} bytes");
    });
}

/// A client that reads but is half its cap behind asks its producer to wait
/// for it; once its writes have made no progress for the stall timeout it
/// asks no more (it costs no one else anything) and is closed at the cap.
#[test]
fn producers_pace_to_a_client_that_reads_but_not_to_a_stalled_one() {
    on_each_driver(|| async {
        let (server, writer, client) = small_socket_pair(4096, 4096).await;
        let stall_timeout = Duration::from_millis(20);
        let egress = Rc::new(Egress::new(Rc::new(Stats::default()), stall_timeout));
        let cap = 64 * 1024;
        let outbox = Rc::new(Outbox::new(cap, server, writer, egress.clone()));
        let kilobyte = frame(&"k".repeat(1000));
        // Before any write is stuck: past half the cap, pacing is asked for.
        while outbox.queued_bytes() <= cap / 2 {
            outbox.push(kilobyte.clone());
        }
        assert!(egress
            .take_pace_request()
            .is_some_and(|pace| pace.0 .0.len() == 1 && Rc::ptr_eq(&pace.0 .0[0], &outbox)));
        // The client never reads: the writer's write gets stuck, and after
        // the stall timeout the client counts as stalled.
        yield_until(|| outbox.is_stalled()).await;
        egress.take_pace_request();
        outbox.push(kilobyte.clone());
        assert!(
            egress.take_pace_request().is_none(),
            "no one waits for a stalled client"
        );
        while outbox.closing().is_none() {
            outbox.push(kilobyte.clone());
        }
        assert_eq!(outbox.closing(), Some(CloseReason::SlowConsumer));
        assert!(egress.take_pace_request().is_none());
        drop(client);
    });
}

/// A producer waits for every recipient its message left half a cap
/// behind, not only the last one: the last may stop counting (it closed, or
/// stalled a moment later) while an earlier one still reads and would be
/// filled to its cap and closed. (The slow-consumer integration test lost
/// its reading client that way on a busy machine, about one run in eight.)
#[test]
fn a_paced_producer_waits_for_every_recipient_behind_not_only_the_last() {
    on_each_driver(|| async {
        let (server, writer, reader_client) = small_socket_pair(4096, 4096).await;
        let (server2, writer2, _quiet_client) = small_socket_pair(4096, 4096).await;
        let egress = Rc::new(Egress::new(Rc::new(Stats::default()), Duration::from_secs(10)));
        let cap = 64 * 1024;
        let reading = Rc::new(Outbox::new(cap, server, writer, egress.clone()));
        let leaving = Rc::new(Outbox::new(cap, server2, writer2, egress.clone()));
        let kilobyte = frame(&"k".repeat(1000));
        // One message after the other, to both; `leaving` is the last
        // recipient of each.
        while reading.queued_bytes() <= cap / 2 || leaving.queued_bytes() <= cap / 2 {
            reading.push(kilobyte.clone());
            leaving.push(kilobyte.clone());
        }
        let pace = egress.take_pace_request().expect("pacing asked for");
        assert_eq!(pace.0 .0.len(), 2, "both recipients behind are in the request");
        leaving.close(CloseReason::Io);
        let total = reading.queued_bytes();
        let reader = read_in_thread(reader_client, total);
        egress.paced(pace).await;
        assert!(
            reading.queued_bytes() <= cap / 2,
            "the producer went on while a reading client was still behind"
        );
        yield_until(|| reader.is_finished()).await;
        assert_eq!(reader.join().unwrap().unwrap(), total);
    });
}

/// A producer waiting for a client that reads resumes once the client has
/// read enough for the queue to fall under half the cap.
#[test]
fn a_paced_producer_resumes_when_the_client_catches_up() {
    on_each_driver(|| async {
        let (server, writer, client) = small_socket_pair(4096, 4096).await;
        let egress = Rc::new(Egress::new(Rc::new(Stats::default()), Duration::from_secs(10)));
        let cap = 64 * 1024;
        let outbox = Rc::new(Outbox::new(cap, server, writer, egress.clone()));
        let kilobyte = frame(&"k".repeat(1000));
        while outbox.queued_bytes() <= cap / 2 {
            outbox.push(kilobyte.clone());
        }
        let recipient = egress.take_pace_request().expect("pacing asked for");
        let total = outbox.queued_bytes();
        let reader = read_in_thread(client, total);
        egress.paced(recipient).await;
        assert!(
            outbox.queued_bytes() <= cap / 2,
            "released only once under half the cap"
        );
        // The rest is written while the runtime runs.
        yield_until(|| reader.is_finished()).await;
        assert_eq!(reader.join().unwrap().unwrap(), total);
    });
}
