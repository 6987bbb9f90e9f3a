#!/usr/bin/env bash
# Runs one cargo-fuzz target for a bounded time, starting from the committed seeds.
#
#   fuzz/run.sh TARGET SECONDS [extra libFuzzer flags...]
#
# TARGET is one of: websocket_frame engineio_packet socketio_packet upgrade_request config_file.
# The working corpus (fuzz/corpus/TARGET, gitignored) keeps what earlier runs found; the seeds
# in fuzz/seeds/TARGET are copied into it first. Crashes land in fuzz/artifacts/TARGET.
set -euo pipefail

if [[ $# -lt 2 ]]; then
    echo "usage: $0 TARGET SECONDS [libFuzzer flags...]" >&2
    exit 2
fi
target=$1
seconds=$2
shift 2

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if [[ ! -f "fuzz_targets/$target.rs" ]]; then
    echo "unknown target '$target'; targets: $(ls fuzz_targets | sed 's/\.rs$//' | tr '\n' ' ')" >&2
    exit 2
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "cargo-fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz
fi

mkdir -p "corpus/$target" "artifacts/$target"
if [[ -d "seeds/$target" ]]; then
    cp -n "seeds/$target"/* "corpus/$target"/ 2>/dev/null || true
fi

# -timeout: one input taking over 10 s is a hang worth reporting. -rss_limit_mb bounds memory
# (the decoders are supposed to be bounded regardless of input).
exec cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
