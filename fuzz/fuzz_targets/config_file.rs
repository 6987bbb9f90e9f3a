#![no_main]

use ringcast::config::{Cli, Config};

// Called directly rather than through `protocol::fuzzing`: `protocol` must not depend on the
// product side, and the config parser is one call anyway. Errors are expected; panics are bugs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::from_toml(&Cli::default(), "fuzz.toml", text);
    }
});
