use super::*;

#[test]
fn counters_are_summed_over_shards() {
    let page = "\
# HELP ringcast_writes_total Vectored writes to client sockets.
# TYPE ringcast_writes_total counter
ringcast_writes_total{shard=\"0\"} 100
ringcast_writes_total{shard=\"1\"} 50
ringcast_frames_written_total{shard=\"0\"} 1000
ringcast_frames_written_total{shard=\"1\"} 200
ringcast_messages_out_total{shard=\"0\"} 1300
ringcast_bytes_out_total{shard=\"0\"} 99
ringcast_writes_total_other{shard=\"0\"} 7
ringcast_sockets{shard=\"0\"} 3
";
    let counters = parse(page);
    assert_eq!(
        counters,
        ServerCounters {
            writes: 150,
            frames_written: 1200,
            messages_out: 1300,
            bytes_out: 99,
        }
    );
    assert!((counters.frames_per_write() - 8.0).abs() < 1e-12);
    let later = ServerCounters {
        writes: 160,
        frames_written: 1300,
        messages_out: 1400,
        bytes_out: 100,
    };
    let delta = counters.delta(&later);
    assert_eq!(delta.writes, 10);
    assert!((delta.frames_per_write() - 10.0).abs() < 1e-12);
    assert_eq!(ServerCounters::default().frames_per_write(), 0.0);
}

#[test]
fn no_server_no_counters() {
    // Nothing listens on port 1 of loopback.
    let addr: SocketAddr = "127.0.0.1:1".parse().expect("address");
    assert_eq!(scrape(addr, "127.0.0.1:1", None), None);
}
