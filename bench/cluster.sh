#!/usr/bin/env bash
# The cluster scenario: 2 nodes (1 shard each) on one Redis, one publisher on
# the first node, subscribers split between both; ringcast against Node
# socket.io + @socket.io/redis-adapter (2 processes), same Redis, same run.
# Reports deliveries per server CPU-second (both nodes added up), latency,
# and Redis CPU and network bytes per published message.
#
#   bench/cluster.sh                          # 1,000 subscribers, window 16, 5 s
#   bench/cluster.sh --tiny                   # 100 subscribers, window 4, 1 s: does it work
#   bench/cluster.sh --peers ringcast         # ringcast only
#   bench/cluster.sh --out /tmp/bench         # results under /tmp/bench/
#
# Writes bench/results/cluster-<time>/{ringcast,node}.json and results.md
# (with --out DIR: DIR/cluster-<time>/; with --tiny, for a check that it
# works: bench/results/tmp/cluster-<time>/);
# the servers' logs go to bench/results/tmp/cluster-logs/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

subscribers=1000
window=16
duration_s=5
warmup_s=1
peers="ringcast,node"
results=""
tiny_results=bench/results # the default folder; bench/results/tmp with --tiny
while [ $# -gt 0 ]; do
  case "$1" in
    --subscribers) subscribers="$2"; shift 2 ;;
    --window) window="$2"; shift 2 ;;
    --duration-s) duration_s="$2"; shift 2 ;;
    --warmup-s) warmup_s="$2"; shift 2 ;;
    --peers) peers="$2"; shift 2 ;;
    --out) results="$2"; shift 2 ;;
    --out=*) results="${1#--out=}"; shift ;;
    --tiny) subscribers=100; window=4; duration_s=1; warmup_s=0.5; tiny_results=bench/results/tmp; shift ;;
    *) echo "bench/cluster.sh: unknown flag $1" >&2; exit 2 ;;
  esac
done
results="${results:-$tiny_results}"

echo "[cluster.sh] building ringcast and the load generator (release)" >&2
cargo build --release --quiet -p ringcast -p ringcast-bench
if [[ "$peers" == *node* ]] && [[ ! -d bench/peers/node/node_modules/@socket.io/redis-adapter ]]; then
  echo "[cluster.sh] installing the node peer's packages" >&2
  (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)
fi

out="$results/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
logs=bench/results/tmp/cluster-logs
mkdir -p "$out" "$logs"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a server in the background (in this shell, so cleanup can stop it);
# waits for its "listening on URL" line and sets `started` to "PID URL".
start_server() {
  local log="$1"
  shift
  "$@" >"$log.out" 2>"$log.err" &
  local pid=$!
  pids+=("$pid")
  for _ in $(seq 1 300); do
    if url=$(grep -oE 'listening on http://[^ ]+' "$log.out" 2>/dev/null | head -1); then
      started="$pid ${url#listening on }"
      return 0
    fi
    sleep 0.05
  done
  echo "[cluster.sh] $* did not start; see $log.err" >&2
  return 1
}

redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$logs/redis.log" 2>&1 &
pids+=($!)
redis_pid=$!
for _ in $(seq 1 100); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.05
done

run_pair() {
  local name="$1" kind="$2" first="$3" second="$4"
  read -r pid1 url1 <<<"$first"
  read -r pid2 url2 <<<"$second"
  echo "[cluster.sh] $name: $url1 + $url2 (redis :$redis_port)" >&2
  target/release/load run --url "$url1" --pid "$pid1" --url2 "$url2" --pid2 "$pid2" \
    --redis-pid "$redis_pid" --redis-port "$redis_port" \
    --label "$name" --kind "$kind" --shards 1 --duration-s "$duration_s" --warmup-s "$warmup_s" \
    --json "$out/$name.json" --quiet \
    fanout --subscribers "$subscribers" --publishers 1 --window "$window"
  kill "$pid1" "$pid2"
  wait "$pid1" "$pid2" 2>/dev/null || true
  redis-cli -p "$redis_port" flushall >/dev/null
}

if [[ "$peers" == *ringcast* ]]; then
  token=bench-cluster
  start_server "$logs/ringcast-a" target/release/ringcast --listen 127.0.0.1:0 --shards 1 \
    --master-token "$token" --redis "redis://127.0.0.1:$redis_port" --node-id a
  a="$started"
  start_server "$logs/ringcast-b" target/release/ringcast --listen 127.0.0.1:0 --shards 1 \
    --master-token "$token" --redis "redis://127.0.0.1:$redis_port" --node-id b
  b="$started"
  # Both nodes see each other before the first client connects.
  for url in "${a#* }" "${b#* }"; do
    base="${url%/realtime/}"
    for _ in $(seq 1 100); do
      curl -s "$base/metrics" | grep -q '^ringcast_cluster_nodes 2$' && break
      sleep 0.05
    done
  done
  run_pair ringcast ringcast "$a" "$b"
fi
if [[ "$peers" == *node* ]]; then
  start_server "$logs/node-a" node bench/peers/node/server.js --listen 127.0.0.1:0 \
    --redis "redis://127.0.0.1:$redis_port"
  a="$started"
  start_server "$logs/node-b" node bench/peers/node/server.js --listen 127.0.0.1:0 \
    --redis "redis://127.0.0.1:$redis_port"
  b="$started"
  run_pair node node-socket.io "$a" "$b"
fi

python3 - "$out" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = ["| server | delivered | lost | out of order | deliveries / server CPU-s | p50 / p99 latency (µs) | Redis CPU µs / message | Redis bytes / message |",
        "|---|---|---|---|---|---|---|---|"]
for name in ["ringcast", "node"]:
    path = out / f"{name}.json"
    if not path.exists():
        continue
    r = json.loads(path.read_text())
    sent = max(r["sent"], 1)
    rows.append(f"| {name} | {r['delivered']} | {r['lost']} | {r['out_of_order']} | {r['deliveries_per_server_cpu_s']:.0f} | "
                f"{r['latency_us']['p50']} / {r['latency_us']['p99']} | {r['redis_cpu_s'] * 1e6 / sent:.1f} | {r['redis_bytes_per_message']:.0f} |")
text = "\n".join(rows) + "\n"
(out / "results.md").write_text(text)
print(text)
EOF
