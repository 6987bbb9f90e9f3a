//! The live io_uring probe: the one check that asks the running kernel
//! instead of reading a file.
//!
//! It creates (and drops) one ring of the configured size, so the answer
//! covers everything in the way, whichever it is: `kernel.io_uring_disabled`,
//! a seccomp filter, the locked-memory limit on old kernels, a kernel built
//! without io_uring. Then it asks monoio whether every operation its driver
//! uses is supported, which is the test the server itself makes at start-up
//! before it falls back to epoll.

/// What the probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UringProbe {
    /// Not run: the snapshot describes another host (`--root`).
    NotProbed,
    /// A ring works and supports every operation monoio uses.
    Works,
    /// `MONOIO_FORCE_LEGACY_DRIVER` is set: monoio will use epoll.
    ForcedLegacy,
    /// A ring works but lacks an operation monoio uses (old kernel).
    MissingOperations,
    /// `io_uring_setup` failed with this errno.
    SetupFailed(i32),
}

/// Probes io_uring with a ring of `ring_entries` entries.
pub fn probe(ring_entries: u32) -> UringProbe {
    if forced_legacy() {
        return UringProbe::ForcedLegacy;
    }
    match io_uring::IoUring::new(ring_entries) {
        Ok(ring) => drop(ring),
        Err(error) => return UringProbe::SetupFailed(error.raw_os_error().unwrap_or(0)),
    }
    if monoio::utils::detect_uring() {
        UringProbe::Works
    } else {
        UringProbe::MissingOperations
    }
}

/// Mirrors monoio's own reading of the variable (`uring_detect.rs`).
fn forced_legacy() -> bool {
    std::env::var("MONOIO_FORCE_LEGACY_DRIVER")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}
