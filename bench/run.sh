#!/usr/bin/env bash
# The benchmark suite in one command: builds ringcast (release), the load
# generator, `floor` and the peers, then runs `suite` (the physical floor;
# ringcast with the io_uring and epoll drivers at 1, 2, 4, ... cores shards;
# Node socket.io, socketioxide; saturated and fixed-rate scenarios) and writes
# tables + charts to bench/results/<timestamp>/ and bench/results/latest/.
#
#   bench/run.sh                 # the full suite (about an hour on 2 cores)
#   bench/run.sh --smoke         # seconds, ringcast with 1 shard only (CI)
#   bench/run.sh --scenarios fanout-s1000-w16,rooms-w1 --peers node   # a subset
#   bench/run.sh --shards 1,2,4,8 --drivers epoll                     # the sweep, one driver
#
# Any flag is passed to `suite` (see `target/release/suite --help`). A run
# of the whole suite (none of --smoke, --scenarios, --shards, --drivers,
# --peers, --skip-floor; --out and settings such as --duration-s keep it
# whole) then runs bench/cluster.sh too, into the same output folder: 2
# nodes on one Redis, ringcast against Node socket.io + redis-adapter.
set -euo pipefail
cd "$(dirname "$0")/.."

peers="node,socketioxide"
out=""
whole=1
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --smoke) peers="" ;;
    --peers) peers="${args[$((i + 1))]:-}" ;;
    --peers=*) peers="${args[$i]#--peers=}" ;;
  esac
  case "${args[$i]}" in
    --out) out="${args[$((i + 1))]:-}" ;;
    --out=*) out="${args[$i]#--out=}" ;;
    --smoke | --scenarios* | --shards* | --drivers* | --peers* | --skip-floor) whole=0 ;;
  esac
done

echo "[run.sh] building ringcast and the bench (release)" >&2
cargo build --release --quiet -p ringcast -p ringcast-bench

if [[ "$peers" == *node* ]]; then
  if ! command -v node >/dev/null; then
    echo "[run.sh] node is not installed (apt-get install nodejs npm)" >&2
    exit 1
  fi
  if [[ ! -d bench/peers/node/node_modules/socket.io ]]; then
    echo "[run.sh] installing the node peer's packages" >&2
    (cd bench/peers/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
if [[ "$peers" == *socketioxide* ]]; then
  echo "[run.sh] building the socketioxide peer (release, its own cargo project)" >&2
  CARGO_TARGET_DIR="$PWD/target/peer-socketioxide" \
    cargo build --release --quiet --manifest-path bench/peers/socketioxide/Cargo.toml
fi

# With --smoke the results go to the ignored bench/results/tmp/.
target/release/suite "$@"
# The whole suite (no flag narrows it; --out may move it) ends with the
# cluster scenario, in the same output folder.
if [ "$whole" = 1 ]; then
  bash bench/cluster.sh ${out:+--out "$out"}
fi
