#!/usr/bin/env bash
# Recovery after a node restart, at scale: RECIPIENTS users on the nodes of one port
# (SO_REUSEPORT, --b-nodes of them) receive cross-node chat from senders on one other node,
# with history on for users (Redis Streams). Mid-chat every recipients' node goes at once
# (--mode drain: SIGTERM with --drain-secs 0, every client closed with 1001 at once, as a
# deploy that restarts everything; --mode crash: kill -9, names held until the lease runs
# out) and new ones start on the same port. Every recipient reconnects (loadgen --recover,
# a random delay up to --delay-ms first) and logs in with its last Offset; the nodes
# replay what it missed. Reports the time from the drop to each recovery (p50, p99, max),
# the time until the last one, retries, replays and the exact loss/duplicate accounting.
# Writes bench/results/recovery-<mode>.json (loadgen's summary plus the restart's timings)
# and .svg.
#
#   bench/recovery.sh [--recipients 100000] [--b-nodes 6] [--rate 5000] [--mode drain|crash]
#                     [--delay-ms 1000] [--chat 45] [--restart-after 8]
#
# Needs a tuned kernel for 100,000+ connections (scripts/tune-kernel.sh; the preflight
# below names what is missing). Undo: nothing (nodes and Redis stop on exit; their logs
# stay in run/recovery/, gitignored).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
recipients=100000 b_nodes=6 rate=5000 mode=drain delay_ms=1000 chat=45 restart_after=8
while [[ $# -gt 0 ]]; do
    case $1 in
        --recipients) recipients=$2; shift 2 ;;
        --b-nodes) b_nodes=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --mode) mode=$2; shift 2 ;;
        --delay-ms) delay_ms=$2; shift 2 ;;
        --chat) chat=$2; shift 2 ;;
        --restart-after) restart_after=$2; shift 2 ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 64 ;;
    esac
done
[[ $mode == drain || $mode == crash ]] || { echo "recovery: --mode is drain or crash" >&2; exit 64; }
cd "$root"
cargo build --release --quiet --bin switchboard -p switchboard
cargo build --release --quiet --bin loadgen -p loadgen
# One sender per 8 recipients: connection i is on --url i % 9, the first URL the senders'.
urls_b=8
senders=$(((recipients + urls_b - 1) / urls_b))
total=$((recipients + senders))
per_node=$(((recipients + b_nodes - 1) / b_nodes))
((per_node <= 19000 && senders <= 19000)) || { echo "recovery: at most 19,000 connections per node (open files): raise --b-nodes" >&2; exit 64; }
scripts/preflight.sh --target "$total" --nodes $((b_nodes + 1)) --per-node "$per_node" --quiet ||
    { echo "recovery: the preflight refused (above); scripts/tune-kernel.sh fixes most" >&2; exit 1; }
work=$(mktemp -d)
pids=()
# The logs of the nodes, Redis and loadgen are kept in run/recovery/ (gitignored).
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    mkdir -p run/recovery && cp "$work"/*.log run/recovery/ 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
pick_port() { echo $((16000 + RANDOM % 16000)); }
redis_port=$(pick_port) a_port=$(pick_port) b_port=$(pick_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done
node_flags=(--redis "redis://127.0.0.1:$redis_port" --history-size 1000 --history-users true --drain-secs 0
    --lease-secs 5 --max-connections-per-address 0 --connect-rate 0 --message-rate 1000000
    --message-burst 1000000 --inbox-size 1000000 --login-timeout 300 --ping-interval 300 --pong-timeout 60)
start_node() { # NAME PORT [more flags]: starts one node, its pid in $started
    local name=$1 port=$2
    shift 2
    RUST_LOG=warn target/release/switchboard --listen "127.0.0.1:$port" "$@" "${node_flags[@]}" >"$work/$name.log" 2>&1 &
    started=$!
    pids+=("$started")
    for _ in $(seq 100); do grep -q "switchboard listening on" "$work/$name.log" && return; sleep 0.05; done
    echo "recovery: node $name did not start: $(tail -3 "$work/$name.log")" >&2
    exit 1
}
start_node a "$a_port"
a_pid=$started
b_pids=()
for ((i = 1; i <= b_nodes; i++)); do start_node "b$i" "$b_port" --reuse-port; b_pids+=("$started"); done
urls=(--url "ws://127.0.0.1:$a_port/ws")
for ((i = 0; i < urls_b; i++)); do urls+=(--url "ws://127.0.0.1:$b_port/ws"); done
mkdir -p bench/results
out=bench/results/recovery-$mode
target/release/loadgen "${urls[@]}" --connections "$total" --connect-rate 0 --pattern cross-node \
    --rate "$rate" --duration "$chat" --grace 20 --send-from 0 --recover --reconnect-delay-ms "$delay_ms" \
    --recover-timeout 60 --json "$out.loadgen.json" --svg "$out.svg" >/dev/null 2>"$work/loadgen.log" &
loadgen=$!
pids+=("$loadgen")
until grep -q " chat " "$work/loadgen.log"; do
    kill -0 "$loadgen" 2>/dev/null || { cat "$work/loadgen.log" >&2; exit 1; }
    sleep 0.2
done
sleep "$restart_after"
# Where the CPU went in the 20 s after the stop (both cores are the limit): user + system
# seconds of Redis, the senders' node, the new recipients' nodes and the load generator.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$t"; }
loadgen_pids() { echo "$loadgen" $(cat "/proc/$loadgen/task/$loadgen/children" 2>/dev/null); }
now_ms() { date +%s%3N; }
cpu0=("$(ticks "$redis_pid")" "$(ticks "$a_pid")" "$(ticks $(loadgen_pids))")
t_stop=$(now_ms)
signal=TERM
[[ $mode == crash ]] && signal=KILL
kill -s "$signal" "${b_pids[@]}"
for pid in "${b_pids[@]}"; do while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; done
t_gone=$(now_ms)
new_pids=()
for ((i = 1; i <= b_nodes; i++)); do start_node "b$i-again" "$b_port" --reuse-port; new_pids+=("$started"); done
t_back=$(now_ms)
echo "recovery: the recipients' nodes went ($mode) in $((t_gone - t_stop)) ms; new ones listened $((t_back - t_gone)) ms later" >&2
left=$((20 - (t_back - t_stop) / 1000))
((left <= 0)) || sleep "$left"
hz=$(getconf CLK_TCK)
cpu_s() { awk -v a="$1" -v b="$2" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }'; }
cpu_redis=$(cpu_s "${cpu0[0]}" "$(ticks "$redis_pid")") cpu_a=$(cpu_s "${cpu0[1]}" "$(ticks "$a_pid")")
cpu_b=$(cpu_s 0 "$(ticks "${new_pids[@]}")") cpu_loadgen=$(cpu_s "${cpu0[2]}" "$(ticks $(loadgen_pids))")
echo "recovery: CPU s in the 20 s after the stop: redis $cpu_redis, senders' node $cpu_a, new nodes $cpu_b, loadgen $cpu_loadgen" >&2
status=0
wait "$loadgen" || status=$?
grep -E "^(connect|login|chat|latency|recover|result):" "$work/loadgen.log" >&2 || tail -20 "$work/loadgen.log" >&2
python3 - "$out.loadgen.json" "$out.json" "$mode" "$((t_gone - t_stop))" "$((t_back - t_gone))" "$recipients" "$b_nodes" \
    "$cpu_redis" "$cpu_a" "$cpu_b" "$cpu_loadgen" <<'EOF'
import json, sys
src, dst, mode, gone_ms, back_ms, recipients, b_nodes, c_redis, c_a, c_b, c_loadgen = sys.argv[1:]
s = json.load(open(src))
summary = {
    "machine": s["machine"], "command": s["command"], "mode": mode, "ok": s["ok"], "failures": s["failures"],
    "recipients": int(recipients), "recipient_nodes": int(b_nodes),
    "nodes_gone_ms": int(gone_ms), "new_nodes_listening_after_ms": int(back_ms),
    "cpu_s_in_20s_after_stop": {"redis": float(c_redis), "senders_node": float(c_a),
                                "new_recipient_nodes": float(c_b), "loadgen": float(c_loadgen)},
    "recovery": s["recovery"],
    "chat": {k: s["chat"][k] for k in ("target_rate", "sent", "delivered", "lost", "duplicated", "latency")},
    "causes": s["causes"],
}
json.dump(summary, open(dst, "w"), indent=2)
print(json.dumps(summary["recovery"], indent=2))
EOF
exit "$status"
