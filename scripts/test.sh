#!/usr/bin/env bash
# The project's whole test suite: the README's test command, and what CI runs
# (`.ci/run` execs this script from a fresh clone with CI=true).
#
# Steps, in order:
#   setup     scripts/setup.sh (npm packages of tests/interop, redis-server, ...)
#   fmt       cargo fmt --all -- --check
#   clippy    cargo clippy --all-targets -- -D warnings   (workspace default members)
#   cargo     cargo test                                  (unit tests + the tests/it binary, whose
#             `dependencies` test fails on a dependency nothing uses or only tests use)
#   build     cargo build --release -p ringcast
#   package   deploy/test-package.sh --no-build: builds the .deb from that binary,
#             checks its fields and files, installs it into a throwaway root,
#             verifies the systemd unit
#   interop-websocket, interop-polling, interop-default
#             node --test in tests/interop against target/release/ringcast, three
#             times: WebSocket only (as Agnost's client library connects),
#             HTTP long-polling only, and socket.io-client's defaults
#             (long-polling, then the upgrade); RINGCAST_INTEROP_TRANSPORT
#             selects the transport
#   interop-cluster  the suite once more with RINGCAST_INTEROP_CLUSTER=3: every server
#             is 3 nodes on a real redis-server behind a round-robin TCP proxy
#   clients   node --test in clients/js (client + server libraries) and clients/demo
#             (chat page in headless Chromium), against target/release/ringcast
#   console   node --test in tests/console: the web console at /admin/ in headless
#             Chromium against two target/release/ringcast nodes on a real redis-server
#   soak      tests/soak/soak.mjs --duration-s 60: a 1-minute mixed load (good,
#             churning, slow and bad clients) against target/release/ringcast
#   bench     bench/run.sh --smoke: every benchmark scenario for seconds, ringcast only
#
# Every step runs even when an earlier one failed (so one run shows every
# problem), except that nothing runs without setup and interop needs the
# build. The output ends with one line per step and a closing
#   summary: N passed, M failed
# line, where N/M count the tests of cargo test and node --test (the soak counts
# as one test, the package step its checks), and every failed step that has no failing test of its own (fmt,
# clippy, a build or a timeout) counts as one more failure. Exit status is 0
# only if every step passed.
set -uo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

target_dir="${CARGO_TARGET_DIR:-$repo_root/target}"
export RINGCAST_BIN="${RINGCAST_BIN:-$target_dir/release/ringcast}"

# Bounds on the steps that run tests, so a hung test cannot hang CI.
CARGO_TEST_TIMEOUT_S=1200
INTEROP_TIMEOUT_S=900
CLIENTS_TIMEOUT_S=300
CONSOLE_TIMEOUT_S=300
PACKAGE_TIMEOUT_S=300
SOAK_TIMEOUT_S=300
BENCH_TIMEOUT_S=900

log_dir="$(mktemp -d)"
trap 'rm -rf "$log_dir"' EXIT

step_names=()
step_results=()
step_seconds=()
total_passed=0
total_failed=0

# run_step NAME COMMAND...: runs the command with its output shown live and
# kept in $log_dir/NAME.log; records PASS/FAIL and the duration.
run_step() {
    local name="$1"
    shift
    local started=$SECONDS
    echo
    echo "==> [$name] $*"
    "$@" 2>&1 | tee "$log_dir/$name.log"
    local status=${PIPESTATUS[0]}
    step_names+=("$name")
    step_seconds+=($((SECONDS - started)))
    if [ "$status" -eq 0 ]; then
        step_results+=("PASS")
    else
        step_results+=("FAIL")
        echo "==> [$name] FAILED with exit status $status"
    fi
    return "$status"
}

skip_step() {
    step_names+=("$1")
    step_seconds+=(0)
    step_results+=("SKIP ($2)")
}

# count_tests NAME FAILED_STATUS: adds the pass/fail counts found in the step's
# log to the totals. A step that failed without a failing test counts as one.
count_tests() {
    local name="$1" step_failed="$2" passed=0 failed=0
    local log="$log_dir/$name.log"
    case "$name" in
        cargo)
            # "test result: ok. 12 passed; 0 failed; 0 ignored; ..."
            passed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" |
                grep -oE '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
            failed=$(grep -oE 'test result: [A-Za-z]+\. [0-9]+ passed; [0-9]+ failed' "$log" |
                grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
            ;;
        interop*)
            # spec reporter: "ℹ pass 45" / "ℹ fail 0"
            passed=$(grep -oE '^ℹ pass [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
            failed=$(grep -oE '^ℹ fail [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
            ;;
        clients | console)
            # node --test runs (clients/js and clients/demo; tests/console), spec reporter
            passed=$(grep -oE '^ℹ pass [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
            failed=$(grep -oE '^ℹ fail [0-9]+' "$log" | awk '{s+=$3} END {print s+0}')
            ;;
        bench)
            # its closing line: "bench smoke: N passed, M failed"
            passed=$(grep -oE '^bench smoke: [0-9]+ passed' "$log" | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')
            failed=$(grep -oE '^bench smoke: [0-9]+ passed, [0-9]+ failed' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
            ;;
        package)
            # its closing line: "package test: N passed, M failed"
            passed=$(grep -oE '^package test: [0-9]+ passed' "$log" | grep -oE '[0-9]+' | awk '{s+=$1} END {print s+0}')
            failed=$(grep -oE '^package test: [0-9]+ passed, [0-9]+ failed' "$log" | grep -oE '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
            ;;
        soak)
            # its verdict line: "soak PASSED: ..." / "soak FAILED: ..."
            passed=$(grep -cE '^soak PASSED' "$log")
            failed=$(grep -cE '^soak FAILED' "$log")
            ;;
    esac
    if [ "$step_failed" -ne 0 ] && [ "$failed" -eq 0 ]; then
        failed=1
    fi
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
}

print_summary() {
    echo
    echo "==================== ringcast test summary ===================="
    local i
    for i in "${!step_names[@]}"; do
        printf '  %-14s %-26s %5ss\n' "${step_names[$i]}" "${step_results[$i]}" "${step_seconds[$i]}"
    done
    if [ "$total_failed" -ne 0 ]; then
        echo "  interop server logs: tests/interop/artifacts/"
        echo "  client test server logs and screenshots: clients/artifacts/"
        echo "  console test server logs and screenshots: tests/console/artifacts/"
        echo "  soak reports and server logs: tests/soak/artifacts/"
    fi
    echo "summary: $total_passed passed, $total_failed failed"
}

# --- setup (nothing else can run without it) ---------------------------------
if ! run_step setup bash scripts/setup.sh; then
    total_failed=$((total_failed + 1))
    print_summary
    exit 1
fi

# --- static checks --------------------------------------------------------------
run_step fmt cargo fmt --all -- --check
count_tests fmt $?

run_step clippy cargo clippy --all-targets -- -D warnings
count_tests clippy $?

# --- Rust tests (unit + tests/it integration binary) ---------------------------
run_step cargo timeout -k 10 "$CARGO_TEST_TIMEOUT_S" cargo test
count_tests cargo $?

# --- release server + real-client interop suite ---------------------------------
if run_step build cargo build --release -p ringcast; then
    count_tests build 0
    # The Debian package of that binary, checked without touching this system.
    run_step package timeout -k 10 "$PACKAGE_TIMEOUT_S" bash deploy/test-package.sh --no-build
    count_tests package $?
    # The interop suite once per transport (see the header).
    for transport in websocket polling default; do
        run_step "interop-$transport" timeout -k 10 "$INTEROP_TIMEOUT_S" \
            env RINGCAST_INTEROP_TRANSPORT="$transport" \
            bash -c 'cd tests/interop && exec node --test --test-concurrency=1 \
                --test-reporter=spec --test-timeout=240000 ./*.test.mjs'
        count_tests "interop-$transport" $?
    done
    run_step interop-cluster timeout -k 10 "$INTEROP_TIMEOUT_S" \
        bash -c 'cd tests/interop && RINGCAST_INTEROP_CLUSTER=3 exec node --test --test-concurrency=1 \
            --test-reporter=spec --test-timeout=240000 ./*.test.mjs'
    count_tests interop-cluster $?
    # Both suites run even when the first fails; the step fails if either did.
    run_step clients timeout -k 10 "$CLIENTS_TIMEOUT_S" \
        bash -c 'status=0
            (cd clients/js && exec node --test --test-concurrency=1 \
                --test-reporter=spec --test-timeout=120000 ./test/*.test.mjs) || status=1
            (cd clients/demo && exec node --test --test-concurrency=1 \
                --test-reporter=spec --test-timeout=180000 ./test/*.test.mjs) || status=1
            exit $status'
    count_tests clients $?
    run_step console timeout -k 10 "$CONSOLE_TIMEOUT_S" \
        bash -c 'cd tests/console && exec node --test --test-concurrency=1 \
            --test-reporter=spec --test-timeout=240000 ./*.test.mjs'
    count_tests console $?
    # setup.sh installs the soak's npm packages; installed here too when
    # missing, so the step also runs alone.
    run_step soak timeout -k 10 "$SOAK_TIMEOUT_S" \
        bash -c 'cd tests/soak && { [ -d node_modules/socket.io-client ] ||
            npm ci --no-audit --no-fund; } && exec node soak.mjs --duration-s 60'
    count_tests soak $?
    # A smoke run of the benchmark suite: seconds per scenario, ringcast only.
    run_step bench timeout -k 10 "$BENCH_TIMEOUT_S" bash bench/run.sh --smoke
    count_tests bench $?
else
    count_tests build 1
    skip_step package "no release build"
    total_failed=$((total_failed + 1))
    for transport in websocket polling default; do
        skip_step "interop-$transport" "no release build"
        total_failed=$((total_failed + 1))
    done
    skip_step interop-cluster "no release build"
    total_failed=$((total_failed + 1))
    skip_step clients "no release build"
    total_failed=$((total_failed + 1))
    skip_step console "no release build"
    total_failed=$((total_failed + 1))
    skip_step soak "no release build"
    total_failed=$((total_failed + 1))
    skip_step bench "no release build"
    total_failed=$((total_failed + 1))
fi

print_summary
[ "$total_failed" -eq 0 ]
