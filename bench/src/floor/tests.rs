use super::*;

fn point(frames_per_write: u32, us_per_write: f64) -> FloorPoint {
    FloorPoint {
        connections: 1000,
        frames_per_write,
        writes: 1000,
        sender_cpu_us_per_write: us_per_write,
        ..FloorPoint::default()
    }
}

#[test]
fn floor_interpolates_per_write_cost_between_points() {
    let report = FloorReport {
        points: vec![point(1, 4.0), point(4, 4.0), point(16, 4.6), point(64, 8.0)],
        ..FloorReport::default()
    };
    assert_eq!(report.us_per_write_at(1000, 1.0), Some(4.0));
    assert_eq!(report.us_per_write_at(1000, 0.5), Some(4.0));
    assert_eq!(report.us_per_write_at(1000, 100.0), Some(8.0));
    let at_10 = report.us_per_write_at(1000, 10.0).expect("inside");
    assert!((at_10 - 4.3).abs() < 1e-9, "{at_10}");
    let per_frame = report.us_per_frame_at(1000, 16.0).expect("a point");
    assert!((per_frame - 4.6 / 16.0).abs() < 1e-12);
    // Fewer than one frame per write costs a whole write per frame.
    assert_eq!(report.us_per_frame_at(1000, 0.2), Some(4.0));
    assert_eq!(FloorReport::default().us_per_frame_at(1000, 16.0), None);
}

#[test]
fn rows_are_read_against_the_nearest_connection_count() {
    let mut points = Vec::new();
    for (n, us) in [(100, 3.0), (1000, 6.0), (5000, 9.0)] {
        for k in [1, 16] {
            points.push(FloorPoint {
                connections: n,
                ..point(k, us)
            });
        }
    }
    let report = FloorReport {
        points,
        ..FloorReport::default()
    };
    assert_eq!(report.nearest_connections(50), Some(100));
    assert_eq!(report.nearest_connections(300), Some(100));
    assert_eq!(report.nearest_connections(400), Some(1000));
    assert_eq!(report.nearest_connections(1001), Some(1000));
    assert_eq!(report.nearest_connections(10_000), Some(5000));
    assert_eq!(report.us_per_write_at(101, 4.0), Some(3.0));
    assert_eq!(report.us_per_frame_at(10_000, 16.0), Some(9.0 / 16.0));
}

#[test]
fn the_latency_floor_is_the_kernels_work_for_the_first_deliveries_over_the_cores() {
    let single = |connections: u32, sender: f64, receiver: f64| FloorPoint {
        connections,
        sender_cpu_us_per_frame: sender,
        receiver_cpu_us_per_frame: receiver,
        ..point(1, sender)
    };
    let batched = FloorPoint {
        sender_cpu_us_per_frame: 0.5,
        receiver_cpu_us_per_frame: 0.4,
        ..point(16, 8.0)
    };
    let report = FloorReport {
        points: vec![single(100, 4.0, 3.0), single(1000, 10.0, 8.0), batched],
        ..FloorReport::default()
    };
    // 990 one-frame deliveries of 18 µs each, on 2 cores.
    let us = report.delivery_latency_floor_us(1000, 990, 2).expect("a point");
    assert!((us - 8910.0).abs() < 1e-6, "{us}");
    // Read at the nearest measured connection count.
    let us = report.delivery_latency_floor_us(120, 99, 2).expect("a point");
    assert!((us - 346.5).abs() < 1e-6, "{us}");
    // Without a one-frame point there is no latency floor.
    let only_batched = FloorReport {
        points: vec![FloorPoint {
            sender_cpu_us_per_frame: 0.5,
            ..point(16, 8.0)
        }],
        ..FloorReport::default()
    };
    assert_eq!(only_batched.delivery_latency_floor_us(1000, 990, 2), None);
}

#[test]
fn frames_are_websocket_text_frames_of_the_asked_size() {
    let small = frame(100, 3);
    assert_eq!(small.len(), 300);
    assert_eq!(&small[..2], &[0x81, 98]);
    assert_eq!(&small[100..102], &[0x81, 98]);
    let large = frame(1000, 2);
    assert_eq!(&large[..4], &[0x81, 126, 0x03, 0xE4]);
}

#[test]
fn a_tiny_floor_run_measures_every_point() {
    for iovecs in [false, true] {
        let report = run(&FloorOptions {
            connections: vec![4, 2],
            frames: vec![1, 8],
            frame_bytes: 130,
            duration_s: 0.05,
            repeats: 2,
            warmup_s: 0.01,
            pin: false,
            iovecs,
        })
        .expect("loopback works");
        assert_eq!(report.points.len(), 4);
        for p in &report.points {
            assert!(p.connections == 4 || p.connections == 2, "{p:?}");
            assert!(p.writes > 0, "{p:?}");
            assert_eq!(p.frames, p.writes * u64::from(p.frames_per_write), "{p:?}");
        }
    }
}
