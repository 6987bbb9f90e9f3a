use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::connection::test_support::{on_each_driver, socket_pair, yield_until};
use crate::protocol::frames;
use crate::shard::Shared;

/// A masked client text frame.
fn client_frame(text: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    match text.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n < 65_536 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(text.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn test_shard() -> Rc<Shard> {
    let config = crate::config::Config::load(&crate::config::Cli::default()).expect("default config");
    let mesh = ringcast_shards::Mesh::new(config.shard_count, config.mesh_queue_messages_max);
    let environments = config.environments.clone();
    Rc::new(Shard::new(
        0,
        Arc::new(Shared::new(config, mesh, None, environments)),
    ))
}

fn session(shard: &Rc<Shard>, socket: &Socket, writer: WriteHalf) -> Session {
    let outbox = Rc::new(Outbox::new(
        shard.shared.config.send_queue_bytes_max,
        socket.clone(),
        writer,
        shard.egress.clone(),
    ));
    let permit = ConnPermit::acquire(&shard.shared, std::net::Ipv4Addr::LOCALHOST.into()).unwrap();
    Session::new(shard.clone(), outbox, None, None, permit)
}

/// The heart of batching: whatever a client sent while the shard was busy
/// is handled in one step, before any writer runs, so all the replies (and
/// in real use, all the fan-out) leave in one write.
#[test]
fn everything_buffered_is_handled_in_one_step_before_any_write() {
    on_each_driver(|| async {
        let shard = test_shard();
        let (socket, writer, mut client) = socket_pair().await;
        let mut session = session(&shard, &socket, writer);
        let pings: Vec<u8> = (0..20).flat_map(|_| client_frame(b"2")).collect();
        client.write_all(&pings).unwrap();
        socket.readable(false).await.unwrap();
        let mut tail = Vec::new();
        let mut reassembler = Reassembler::new(1 << 20);
        assert!(matches!(
            session.step(&socket, &mut tail, &mut reassembler),
            Step::Drained
        ));
        assert!(
            tail.is_empty() && tail.capacity() == 0,
            "an idle connection keeps no buffer"
        );
        let pong = frames::engineio("3");
        assert_eq!(session.outbox.queued_bytes(), 20 * pong.len());
        assert_eq!(shard.stats.writes.get(), 0, "no writer ran during the step");
        yield_until(|| shard.stats.frames_written.get() == 20).await;
        assert_eq!(shard.stats.writes.get(), 1, "twenty replies, one write");
    });
}

/// A client that sends more than a turn's budget gets the rest handled on
/// the next turn; the unhandled frames wait in the connection's tail.
#[test]
fn a_flood_is_handled_a_budget_at_a_time() {
    on_each_driver(|| async {
        let shard = test_shard();
        let (socket, writer, mut client) = socket_pair().await;
        let mut session = session(&shard, &socket, writer);
        let frames: Vec<u8> = (0..100).flat_map(|_| client_frame(b"2")).collect();
        client.write_all(&frames).unwrap();
        socket.readable(false).await.unwrap();
        let mut tail = Vec::new();
        let mut reassembler = Reassembler::new(1 << 20);
        let pong = frames::engineio("3").len();
        assert!(matches!(
            session.step(&socket, &mut tail, &mut reassembler),
            Step::Yield
        ));
        assert_eq!(session.outbox.queued_bytes(), MESSAGES_PER_TURN * pong);
        assert_eq!(tail.len(), (100 - MESSAGES_PER_TURN) * client_frame(b"2").len());
        assert!(matches!(
            session.step(&socket, &mut tail, &mut reassembler),
            Step::Drained
        ));
        assert_eq!(session.outbox.queued_bytes(), 100 * pong);
        assert!(tail.is_empty());
    });
}

/// A frame larger than the shard's receive buffer is received into the
/// connection's own buffer, and that buffer is given back afterwards.
#[test]
fn a_frame_larger_than_the_shard_buffer_is_reassembled() {
    on_each_driver(|| async {
        let shard = test_shard();
        let (socket, writer, client) = socket_pair().await;
        let mut session = session(&shard, &socket, writer);
        let data = "x".repeat(3 * shard.read_buffer.borrow().len());
        let ping = client_frame(format!("2{data}").as_bytes());
        let mut client = client;
        let writer = std::thread::spawn(move || {
            // Three pieces, so the frame arrives over several receives.
            for piece in ping.chunks(ping.len() / 3 + 1) {
                client.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            client
        });
        let mut tail = Vec::new();
        let mut reassembler = Reassembler::new(1 << 20);
        let expected = frames::engineio(&format!("3{data}")).len();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while session.outbox.queued_bytes() != expected && shard.stats.bytes_out.get() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the large ping was never answered"
            );
            socket.readable(false).await.unwrap();
            let step = session.step(&socket, &mut tail, &mut reassembler);
            assert!(matches!(step, Step::Drained));
        }
        assert_eq!(tail.capacity(), 0, "the large buffer is given back");
        let _client = writer.join().unwrap();
    });
}

/// Every connection keeps one reader future alive for its whole life, so
/// its size is per-connection memory. Rarely used paths (the HTTP phase) are
/// boxed and event handling is synchronous to keep them out; this guards
/// against a change pulling one back in.
#[test]
fn the_connection_future_stays_small() {
    on_each_driver(|| async {
        let shard = test_shard();
        let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(address).unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let reader = crate::transport::serve(shard.clone(), server, address);
        let size = size_of_val(&reader);
        assert!(size <= 448, "connection future is {size} bytes");
    });
}
