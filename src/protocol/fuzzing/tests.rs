//! The committed fuzz seeds (`fuzz/seeds/<target>/`) run through the same entry points on every
//! `cargo test`, with every prefix of each (truncated input), so a seed that once crashed a
//! decoder stays a regression test on stable Rust without cargo-fuzz.

use std::path::Path;

fn run_seeds(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        for n in 0..=bytes.len() {
            entry(&bytes[..n]);
        }
        count += 1;
    }
    assert!(count >= 10, "{}: only {count} seeds", dir.display());
}

#[test]
fn websocket_frame_seeds() {
    run_seeds("websocket_frame", super::websocket_frame);
}

#[test]
fn engineio_packet_seeds() {
    run_seeds("engineio_packet", super::engineio_packet);
}

#[test]
fn socketio_packet_seeds() {
    run_seeds("socketio_packet", super::socketio_packet);
}

#[test]
fn upgrade_request_seeds() {
    run_seeds("upgrade_request", super::upgrade_request);
}
