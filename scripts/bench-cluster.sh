#!/usr/bin/env bash
# Benchmarks cross-node chat through Redis on this machine: for each routing
# (targeted, broadcast) and node count (2, 8, 32 by default) it starts one
# redis-server (no persistence) and N switchboard nodes (--reactors 1), runs
# loadgen's closed-loop chat (every user keeps WINDOW messages in flight to a
# user on another node) and prints one JSON line per run, also appended to
# $OUT (default target/cluster-bench.jsonl), then a table of targeted vs
# broadcast. Exits 1 if any run lost messages or failed otherwise.
# It kills every process it started on exit; nothing else to undo.
#
#   scripts/bench-cluster.sh                 # 2, 8, 32 nodes, both routings
#   NODES="2 8" USERS=1024 scripts/bench-cluster.sh
#   WINDOW=1 USERS=256 SECONDS_MEASURED=5 ROUTINGS=targeted scripts/bench-cluster.sh
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
FAILED=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }
cargo build --release --quiet -p switchboard -p loadgen
BIN=target/release/switchboard
LOADGEN=target/release/loadgen

# CPU seconds (user + system) used so far by Redis, and by a list of pids.
redis_cpu() { redis-cli -p "$REDIS_PORT" info cpu | awk -F: '/^used_cpu_(sys|user):/ {s += $2} END {printf "%.2f", s}'; }
pids_cpu() {
    local ticks=0 pid
    for pid in "$@"; do ticks=$(( ticks + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) )); done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# One JSON line from loadgen's summary (the figures of the table, plus lost and ok) on
# stdout, and the same in words on stderr.
run_line() {
    python3 - "$@" <<'PY'
import json, sys
path, label, nodes, users, window = sys.argv[1:]
s = json.load(open(path))
chat, lat = s["chat"], s["chat"]["latency"]
print(json.dumps({"label": label, "nodes": int(nodes), "users": int(users), "window": int(window),
                  "seconds": chat["seconds"], "delivered": chat["delivered"],
                  "delivered_per_s": round(chat["delivered_per_s"]), "p50_us": lat["p50_us"],
                  "p99_us": lat["p99_us"], "max_us": lat["max_us"], "lost": chat["lost"], "ok": s["ok"]},
                 separators=(",", ":")))
print(f"{label} {nodes} nodes: {round(chat['delivered_per_s'])} cross-node messages/s delivered, "
      f"p50 {lat['p50_us'] / 1000:.2f} ms, p99 {lat['p99_us'] / 1000:.2f} ms", file=sys.stderr)
PY
}

# Targeted vs broadcast per node count, from this invocation's JSON lines.
table() {
    python3 - "$1" <<'PY'
import json, sys
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[(r["nodes"], r["label"])] = r
cell = lambda r: (f"{r['delivered_per_s']:,}", f"{r['p50_us'] / 1000:.1f} / {r['p99_us'] / 1000:.1f}") if r else ("-", "-")
print("| nodes | targeted msgs/s | p50 / p99 ms | broadcast msgs/s | p50 / p99 ms | targeted / broadcast |")
print("|------:|----------------:|-------------:|-----------------:|-------------:|---------------------:|")
for n in sorted({n for n, _ in runs}):
    t, b = runs.get((n, "targeted")), runs.get((n, "broadcast"))
    ratio = f"{t['delivered_per_s'] / b['delivered_per_s']:.1f}x" if t and b and b["delivered_per_s"] else "-"
    print(f"| {n} | {' | '.join(cell(t))} | {' | '.join(cell(b))} | {ratio} |")
PY
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

mkdir -p "$(dirname "$OUT")"
: >"$WORK/lines.jsonl"
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
        # One worker with one reactor thread: the load generator takes as little of the
        # machine as it can, since the nodes and Redis share it. --payload 0 sends the
        # timing marker alone (about 30 bytes of Data).
        rc=0
        rm -f "$WORK/run.json"
        "$LOADGEN" "${urls[@]}" --pattern cross-node --connections "$users" --closed-loop "$WINDOW" \
            --duration "$SECONDS_MEASURED" --payload 0 --workers 1 --threads 1 --quiet \
            --json "$WORK/run.json" >/dev/null 2>"$WORK/loadgen.err" || rc=$?
        t1=$(date +%s.%N)
        if [[ -s "$WORK/run.json" ]]; then
            run_line "$WORK/run.json" "$routing" "$n" "$users" "$WINDOW" | tee -a "$OUT" "$WORK/lines.jsonl"
        fi
        if (( rc != 0 )); then
            FAILED+=("$routing $n nodes (loadgen exit $rc)")
            tail -n 12 "$WORK/loadgen.err" >&2
        fi
        echo "cpu over the whole run ($(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s wall, $(nproc) cores):" \
            "redis $(awk -v a="$redis0" -v b="$(redis_cpu)" 'BEGIN {printf "%.1f", b - a}') s," \
            "nodes $(awk -v a="$nodes0" -v b="$(pids_cpu "${node_pids[@]}")" 'BEGIN {printf "%.1f", b - a}') s" >&2
        kill "${node_pids[@]}" 2>/dev/null || true
        wait "${node_pids[@]}" 2>/dev/null || true
        redis-cli -p "$REDIS_PORT" flushall >/dev/null
    done
done
echo
table "$WORK/lines.jsonl"
if (( ${#FAILED[@]} > 0 )); then
    printf 'failed: %s\n' "${FAILED[@]}" >&2
    exit 1
fi
