#!/usr/bin/env bash
# Flamegraph of ringcast under one benchmark scenario.
#
#   perf/flamegraph.sh SCENARIO [--shards N] [--duration S] [--window W] [--subscribers N] [--epoll] [--dwarf] [--bin PATH]
#   SCENARIO: fanout | rooms | broadcast | connect | latency
#
# Builds ringcast with the `profiling` cargo profile (release + debug symbols)
# and frame pointers, starts it on 127.0.0.1, records it with
# `perf record -e cpu-clock -g` (hardware counters are not available on these
# VMs) while `load` drives the scenario, and writes into perf/out/ (ignored):
#   SCENARIO-sN.svg       the flamegraph (inferno)
#   SCENARIO-sN.top.txt   the hottest functions (self time), from perf report
#   SCENARIO-sN.breakdown.txt  share of samples under each hot-path stage
#   SCENARIO-sN.json      what load measured during the recording
# --dwarf records DWARF call graphs instead of frame pointers (bigger, slower,
# but it also unwinds through std and libc frames built without frame pointers).
# --bin profiles an existing ringcast binary instead of building one (use
# --dwarf with it unless it was built with frame pointers).
# --window W publishes closed-loop (fanout, rooms, broadcast): W messages in
# flight per publisher, the server saturated; --subscribers N sets fanout's
# subscriber count (1000); --epoll runs ringcast's epoll driver instead of
# io_uring. All three show in the output names.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 1 ]] || usage
scenario="$1"; shift
shards=1
duration=10
callgraph=(-g)
server_bin=""
window=0
subscribers=1000
server_flags=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --shards) shards="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --dwarf) callgraph=(--call-graph dwarf,16384); shift ;;
    --bin) server_bin="$2"; shift 2 ;;
    --window) window="$2"; shift 2 ;;
    --subscribers) subscribers="$2"; shift 2 ;;
    --epoll) server_flags+=(--epoll); shift ;;
    *) usage ;;
  esac
done

case "$scenario" in
  fanout)    load_args=(fanout --subscribers "$subscribers" --publishers 1 --rate 200) ;;
  rooms)     load_args=(rooms --channels 1000 --members 10 --rate-per-member 2) ;;
  broadcast) load_args=(broadcast --connections 1000 --publishers 1 --rate 100) ;;
  connect)   load_args=(connect --connections 10000 --hold-s "$duration") ;;
  latency)   load_args=(latency --subscribers 100 --publishers 10 --rate 1000) ;;
  *) echo "unknown scenario $scenario" >&2; usage ;;
esac
if [[ "$window" != 0 ]]; then
  case "$scenario" in
    fanout|rooms|broadcast) load_args+=(--window "$window") ;;
    *) echo "--window applies to fanout, rooms and broadcast" >&2; usage ;;
  esac
fi

if ! command -v perf >/dev/null; then
  echo "[flamegraph] installing perf (linux-perf)" >&2
  apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null
fi
if ! command -v inferno-flamegraph >/dev/null; then
  echo "[flamegraph] installing inferno" >&2
  cargo install --locked inferno
fi

# A separate target dir: frame pointers change RUSTFLAGS, which would
# otherwise rebuild the shared target dir for everyone.
if [[ -z "$server_bin" ]]; then
  profile_target="$PWD/target/profiling-fp"
  echo "[flamegraph] building ringcast (profiling profile, frame pointers)" >&2
  CARGO_TARGET_DIR="$profile_target" RUSTFLAGS="-C force-frame-pointers=yes" \
    cargo build --quiet --profile profiling -p ringcast
  server_bin="$profile_target/profiling/ringcast"
fi
cargo build --quiet --release -p ringcast-bench

out_dir=perf/out
mkdir -p "$out_dir"
name="$scenario-s$shards"
[[ "$scenario" == fanout && "$subscribers" != 1000 ]] && name="$name-n$subscribers"
[[ "$window" != 0 ]] && name="$name-w$window"
[[ ${#server_flags[@]} -gt 0 ]] && name="$name-epoll"
data="$out_dir/$name.perf.data"
server_log="$out_dir/$name.server.log"

"$server_bin" --listen 127.0.0.1:0 --shards "$shards" "${server_flags[@]}" >"$server_log" 2>&1 &
server_pid=$!
perf_pid=""
cleanup() {
  [[ -n "$perf_pid" ]] && kill -INT "$perf_pid" 2>/dev/null || true
  kill "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

url=""
for _ in $(seq 100); do
  url=$(grep -o 'http://[^ ]*' "$server_log" | head -1 || true)
  [[ -n "$url" ]] && break
  sleep 0.1
done
[[ -n "$url" ]] || { echo "ringcast printed no listening line" >&2; cat "$server_log" >&2; exit 1; }
echo "[flamegraph] ringcast pid $server_pid at $url" >&2

perf record -e cpu-clock -F 999 "${callgraph[@]}" -p "$server_pid" -o "$data" 2>"$out_dir/$name.perf.log" &
perf_pid=$!
sleep 0.5
driver=io_uring
[[ ${#server_flags[@]} -gt 0 ]] && driver=epoll
target/release/load run --url "$url" --pid "$server_pid" --label "ringcast-s$shards" --shards "$shards" --driver "$driver" \
  --duration-s "$duration" --json "$out_dir/$name.json" --quiet "${load_args[@]}"
kill -INT "$perf_pid"
wait "$perf_pid" || true
perf_pid=""

echo "[flamegraph] rendering" >&2
perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$out_dir/$name.folded"
inferno-flamegraph --title "ringcast $name" <"$out_dir/$name.folded" >"$out_dir/$name.svg"
perf report -i "$data" --no-children --sort symbol --stdio -g none --percent-limit 0.5 2>/dev/null \
  | { grep -v "^#" || true; } | { grep -v "^$" || true; } | head -40 >"$out_dir/$name.top.txt" || true
# Inclusive share of samples whose stack contains each stage's frame. Fat LTO
# inlines a lot, so stages are named by the frames that survive inlining.
awk '
  BEGIN {
    n = split("ingress: socket read (kernel)=tcp_recvmsg|ingress: Session::on_event=Session::on_event|ingress: socketio decode/validate=protocol::socketio|ingress: realtime::events=realtime::events|ingress: JSON (sonic_rs)=sonic_rs|egress: Shard::publish=Shard::publish|egress: Outbox::push=Outbox::push|egress: send ring pass (io_uring)=RingEgress::pass|egress: send ring completions=RingEgress::reap|egress: writer task (TLS, epoll)=outbox::flush|egress: TCP send (kernel, incl. loopback receive)=tcp_sendmsg|runtime: io_uring_enter=io_uring_enter|runtime: monoio task poll=monoio::task|alloc: mimalloc=_mi_|http upgrade=driver::upgrade|cross-shard: inbox=inbox::|cross-shard: mesh=mesh::", stage, "|")
  }
  { count = $NF; total += count; for (i = 1; i <= n; i++) { split(stage[i], kv, "="); if (index($0, kv[2]) > 0) hits[i] += count } }
  END { for (i = 1; i <= n; i++) { split(stage[i], kv, "="); printf "%6.1f%%  %s\n", 100 * hits[i] / total, kv[1] } }
' "$out_dir/$name.folded" >"$out_dir/$name.breakdown.txt"
echo "[flamegraph] $out_dir/$name.svg" >&2
echo "[flamegraph] share of samples by stage:" >&2
cat "$out_dir/$name.breakdown.txt" >&2
echo "[flamegraph] top frames (self time):" >&2
head -25 "$out_dir/$name.top.txt" >&2
