#!/usr/bin/env bash
# Chat throughput with history on against off, on one run: 2 nodes (--reactors 1) and one
# Redis, the load generator's open-loop rate ramp (cross-node pairs), each step measured
# for delivered messages/s, latency and the CPU of Redis and of the nodes (from /proc).
# "on" is --history-size 1000 --history-users: every message goes through the history
# script (XADD + PUBLISH). Writes bench/results/history-on-off.json and .svg.
#   bench/history-on-off.sh [--rates 2000,5000,10000,20000,40000] [--seconds 5] [--connections 200]
# Undo: nothing (the Redis and the nodes are killed on exit, Redis keeps no files).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rates=2000,5000,10000,20000,40000 seconds=5 connections=200
while [[ $# -gt 0 ]]; do
    case $1 in
        --rates) rates=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --connections) connections=$2; shift 2 ;;
        *) echo "usage: $0 [--rates R,R,...] [--seconds S] [--connections N]" >&2; exit 64 ;;
    esac
done
cd "$root"
cargo build --release --quiet --bin switchboard -p switchboard
cargo build --release --quiet --bin loadgen -p loadgen
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$((16000 + RANDOM % 20000))
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
limits=(--max-connections-per-address 0 --connect-rate 0 --message-rate 1000000 --message-burst 1000000 --inbox-size 1000000)
steps=()
for mode in off on; do
    history=()
    [[ $mode == on ]] && history=(--history-size 1000 --history-users true)
    redis-cli -p "$port" flushall >/dev/null
    node_pids=() urls=()
    for n in 1 2; do
        out="$work/node-$mode-$n"
        target/release/switchboard --listen 127.0.0.1:0 --reactors 1 --redis "redis://127.0.0.1:$port" \
            "${limits[@]}" "${history[@]}" >"$out" 2>"$out.err" &
        node_pids+=($!)
        pids+=($!)
        until grep -q "^switchboard listening on" "$out" 2>/dev/null; do sleep 0.1; done
        urls+=(--url "ws://$(sed -n 's/^switchboard listening on //p' "$out")/ws")
    done
    sleep 1
    for rate in ${rates//,/ }; do
        r0=$(ticks "$redis_pid"); n0=$(( $(ticks "${node_pids[0]}") + $(ticks "${node_pids[1]}") )); t0=$(date +%s.%N)
        target/release/loadgen "${urls[@]}" --connections "$connections" --rate "$rate" --duration "$seconds" \
            --pattern cross-node --grace 2 --quiet --json "$work/$mode-$rate.json" >/dev/null 2>&1 || true
        r1=$(ticks "$redis_pid"); n1=$(( $(ticks "${node_pids[0]}") + $(ticks "${node_pids[1]}") )); t1=$(date +%s.%N)
        steps+=("$mode $rate $work/$mode-$rate.json $((r1 - r0)) $((n1 - n0)) $t0 $t1")
        echo "history $mode, $rate/s offered: done" >&2
    done
    kill "${node_pids[@]}"
    wait "${node_pids[@]}" 2>/dev/null || true
done
printf '%s\n' "${steps[@]}" >"$work/steps"
python3 - "$hz" "$seconds" "$connections" "$root/bench/results/history-on-off" "$work/steps" <<'PY'
import json, sys
hz, seconds, connections, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
steps = []
for line in open(sys.argv[5]).read().split("\n"):
    if not line.strip():
        continue
    mode, rate, path, redis_ticks, node_ticks, t0, t1 = line.split()
    run = json.load(open(path))
    chat = run["chat"]
    wall = float(t1) - float(t0)
    steps.append({
        "history": mode, "offered_per_s": int(rate),
        "delivered_per_s": round(chat["delivered_per_s"], 1), "sent": chat["sent"],
        "delivered": chat["delivered"], "lost": chat["lost"], "duplicated": chat["duplicated"],
        "p50_us": chat["latency"]["p50_us"], "p99_us": chat["latency"]["p99_us"],
        # CPU over the whole loadgen run (connect, login, chat, grace), as % of one core.
        "redis_cpu_pct": round(100 * int(redis_ticks) / hz / wall, 1),
        "nodes_cpu_pct": round(100 * int(node_ticks) / hz / wall, 1),
        "loadgen_errors": run["errors"]["total"],
    })
result = {
    "what": "2 nodes (--reactors 1) + 1 Redis on one 2-core machine, loadgen open-loop cross-node chat, "
            f"{connections} connections, {seconds:g} s per step; history on = --history-size 1000 --history-users true",
    "note": "loadgen_errors with history on are the one recoverymsg per login, a message this load generator does not know",
    "steps": steps,
}
json.dump(result, open(out + ".json", "w"), indent=1)
# A small SVG: delivered/s and Redis CPU against offered rate, both modes.
W, H, L, B = 640, 360, 60, 40
top = max(s["offered_per_s"] for s in steps)
def x(v): return L + (W - L - 20) * v / top
def y(v, m): return H - B - (H - B - 20) * v / m
rate_max = max(s["delivered_per_s"] for s in steps) or 1
cpu_max = max(100.0, max(s["redis_cpu_pct"] for s in steps))
parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
         f'<text x="{L}" y="14">delivered msgs/s (solid) and Redis CPU % of a core (dashed) vs offered msgs/s</text>',
         f'<line x1="{L}" y1="{H-B}" x2="{W-20}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="20" x2="{L}" y2="{H-B}" stroke="black"/>']
for mode, colour in (("off", "#1f77b4"), ("on", "#d62728")):
    pts = [s for s in steps if s["history"] == mode]
    line = " ".join(f"{x(s['offered_per_s']):.1f},{y(s['delivered_per_s'], rate_max):.1f}" for s in pts)
    cpu = " ".join(f"{x(s['offered_per_s']):.1f},{y(s['redis_cpu_pct'], cpu_max):.1f}" for s in pts)
    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
    parts.append(f'<polyline fill="none" stroke="{colour}" stroke-dasharray="4,3" points="{cpu}"/>')
    last = pts[-1]
    parts.append(f'<text x="{x(last["offered_per_s"]) - 70:.1f}" y="{y(last["delivered_per_s"], rate_max) - 6:.1f}" fill="{colour}">history {mode}</text>')
for s in sorted({s["offered_per_s"] for s in steps}):
    parts.append(f'<text x="{x(s):.1f}" y="{H-B+14}" text-anchor="middle">{s}</text>')
parts.append(f'<text x="4" y="{y(rate_max, rate_max)+4:.1f}">{rate_max:.0f}/s</text><text x="4" y="{H-B}">0</text>')
parts.append("</svg>")
open(out + ".svg", "w").write("\n".join(parts))
print(json.dumps(result, indent=1))
PY
