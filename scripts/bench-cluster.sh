#!/usr/bin/env bash
# Benchmarks cross-node chat through Redis on this machine: for each routing
# (targeted, broadcast) and node count (2, 8, 32 by default) it starts one
# redis-server (no persistence) and N switchboard nodes (--reactors 1), runs
# examples/cluster_bench (closed loop: every user keeps WINDOW messages in
# flight to a user on another node) and prints one JSON line per run, also
# appended to $OUT (default target/cluster-bench.jsonl).
# It kills every process it started on exit; nothing else to undo.
#
#   scripts/bench-cluster.sh                 # 2, 8, 32 nodes, both routings
#   NODES="2 8" USERS=1024 scripts/bench-cluster.sh
set -euo pipefail

cd "$(dirname "$0")/.."
NODES=${NODES:-"2 8 32"}
ROUTINGS=${ROUTINGS:-"targeted broadcast"}
USERS=${USERS:-512}
WINDOW=${WINDOW:-16}
SECONDS_MEASURED=${SECONDS_MEASURED:-5}
OUT=${OUT:-target/cluster-bench.jsonl}
WORK=$(mktemp -d /tmp/sb-bench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet --bin switchboard --example cluster_bench
BIN=target/release/switchboard
BENCH=target/release/examples/cluster_bench

# CPU seconds (user + system) used so far by Redis, and by a list of pids.
redis_cpu() { redis-cli -p "$REDIS_PORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.2f", s}'; }
pids_cpu() {
    local ticks=0 pid
    for pid in "$@"; do ticks=$(( ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) )); done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

mkdir -p "$(dirname "$OUT")"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; redis $(redis-server --version | awk '{print $3}')" >&2
for routing in $ROUTINGS; do
    for n in $NODES; do
        node_pids=()
        urls=()
        for i in $(seq "$n"); do
            # Limits on, out of reach of a closed-loop client on one host.
            RUST_LOG=warn "$BIN" --listen 127.0.0.1:0 --reactors 1 --routing "$routing" \
                --redis "redis://127.0.0.1:$REDIS_PORT" --max-connections-per-address 0 --connect-rate 0 --message-rate 1000000 --message-burst 1000000 --inbox-size 1000000 \
                >"$WORK/node$i.out" 2>"$WORK/node$i.err" &
            node_pids+=($!)
            PIDS+=($!)
        done
        for i in $(seq "$n"); do
            for _ in $(seq 200); do grep -q listening "$WORK/node$i.out" && break; sleep 0.05; done
            urls+=(--url "ws://$(sed -n 's/^switchboard listening on //p' "$WORK/node$i.out")/ws")
        done
        users=$(( USERS > n ? USERS : n ))
        redis0=$(redis_cpu); nodes0=$(pids_cpu "${node_pids[@]}"); t0=$(date +%s.%N)
        "$BENCH" "${urls[@]}" --users "$users" --window "$WINDOW" --seconds "$SECONDS_MEASURED" \
            --label "$routing" | tee -a "$OUT"
        t1=$(date +%s.%N)
        echo "cpu over the whole run ($(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s wall, 2 cores):" \
            "redis $(awk -v a="$redis0" -v b="$(redis_cpu)" 'BEGIN {printf "%.1f", b - a}') s," \
            "nodes $(awk -v a="$nodes0" -v b="$(pids_cpu "${node_pids[@]}")" 'BEGIN {printf "%.1f", b - a}') s" >&2
        kill "${node_pids[@]}" 2>/dev/null || true
        wait "${node_pids[@]}" 2>/dev/null || true
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
    done
done
