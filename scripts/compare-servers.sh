#!/usr/bin/env bash
# Compares switchboard with the reference Socket.IO server (bench/socketio/server.js:
# socket.io 4 with the Redis adapter; "socketio" its classic adapter, every message on
# one channel that every node reads, "socketio-sharded" Redis 7's sharded pub/sub with a
# channel per room) on the same run: per server, a fresh redis-server
# (no persistence) and 2 nodes joined through it, USERS users logged in, cross-node chat
# (every recipient on the other node) at each of RATES messages/s for SECONDS each, the
# whole ladder REPEAT times, the servers taking turns at each rate. One loadgen per run,
# the nodes and Redis as --server-pid. Writes every run and, per server and rate, the
# medians (delivered/s, p50/p99 from the intended send time, lost, server CPU per
# delivered message: utime + stime of the nodes and of Redis from /proc over chat and its
# grace period) to OUT, and prints them as a table.
#
#   scripts/compare-servers.sh                       # 2,000 users, 5k-100k/s, 10 s, once
#   REPEAT=3 OUT=/tmp/c.json scripts/compare-servers.sh
#   RATES="5000 20000" SECONDS_EACH=5 SERVERS=socketio scripts/compare-servers.sh
#
# Needs redis-server, node and the server's packages (npm ci --prefix bench/socketio;
# scripts/test.sh installs them). Kills every process it started on exit, removes its
# scratch directory; the only thing left is OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
RATES=${RATES:-"5000 10000 20000 50000 100000"}
SERVERS=${SERVERS:-"switchboard socketio socketio-sharded"}
USERS=${USERS:-2000}
SECONDS_EACH=${SECONDS_EACH:-10}
REPEAT=${REPEAT:-1}
OUT=${OUT:-bench/results/compare-servers.json}
WORK=$(mktemp -d /tmp/compare-servers.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

die() { echo "compare-servers: $*" >&2; exit 1; }
command -v redis-server >/dev/null || die "redis-server is missing (apt-get install redis-server)"
command -v node >/dev/null || die "node is missing (apt-get install nodejs npm)"
[[ -d bench/socketio/node_modules/socket.io ]] || die "run npm ci --prefix bench/socketio first"
cargo build --release --quiet -p switchboard -p loadgen
SWITCHBOARD=target/release/switchboard
LOADGEN=target/release/loadgen

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits until something accepts on 127.0.0.1:$1 (10 s), else shows the log $2.
await_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    cat "$2" >&2
    die "nothing listens on port $1 (log above: $2)"
}

# start_cluster SERVER: Redis and two nodes of SERVER; sets REDIS_PID, NODE_PIDS, NODE_URLS.
start_cluster() {
    local server=$1 redis_port port i
    redis_port=$(free_port)
    : >"$WORK/redis.log"
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK" \
        --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    await_port "$redis_port" "$WORK/redis.log"
    NODE_PIDS=() NODE_URLS=()
    for i in 1 2; do
        port=$(free_port)
        if [[ $server == switchboard ]]; then
            "$SWITCHBOARD" --listen "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port" --reactors 1 \
                --max-connections-per-address 0 --connect-rate 0 --message-rate 0 --inbox-size 1000000 \
                >"$WORK/node-$i.log" 2>&1 &
            NODE_URLS+=(--url "ws://127.0.0.1:$port/ws")
        else
            node bench/socketio/server.js --port "$port" --redis "redis://127.0.0.1:$redis_port" \
                --adapter "$([[ $server == socketio-sharded ]] && echo sharded || echo classic)" \
                >"$WORK/node-$i.log" 2>&1 &
            NODE_URLS+=(--url "ws://127.0.0.1:$port")
        fi
        NODE_PIDS+=($!)
        PIDS+=($!)
        await_port "$port" "$WORK/node-$i.log"
    done
}

stop_cluster() {
    kill "${NODE_PIDS[@]}" "$REDIS_PID" 2>/dev/null || true
    wait "${NODE_PIDS[@]}" "$REDIS_PID" 2>/dev/null || true
}

# run_one SERVER RATE REPEAT: one loadgen run against a fresh cluster, its summary kept.
run_one() {
    local server=$1 rate=$2 n=$3 protocol=() json
    json="$WORK/run-$server-$rate-$n.json"
    [[ $server == socketio* ]] && protocol=(--protocol socketio)
    start_cluster "$server"
    echo "compare-servers: $server, $rate/s, run $n" >&2
    # Exit 1 (lost or not generated) is a result here, not an error.
    "$LOADGEN" "${protocol[@]}" "${NODE_URLS[@]}" --server-pid "${NODE_PIDS[0]}" --server-pid "${NODE_PIDS[1]}" \
        --server-pid "$REDIS_PID" --connections "$USERS" --pattern cross-node --rate "$rate" \
        --duration "$SECONDS_EACH" --quiet --json "$json" >/dev/null 2>"$WORK/loadgen.log" || true
    [[ -s $json ]] || { cat "$WORK/loadgen.log" >&2; die "loadgen wrote no summary for $server at $rate/s"; }
    stop_cluster
    # Subscribers Redis cut off for a full output buffer (pub/sub: 32 MB by default).
    cutoffs=$(grep -c "overcoming of output buffer limits" "$WORK/redis.log" || true)
    echo "$server $rate $n ${NODE_PIDS[0]},${NODE_PIDS[1]} $REDIS_PID $json $cutoffs" >>"$WORK/runs.txt"
}

for n in $(seq 1 "$REPEAT"); do
    for rate in $RATES; do
        for server in $SERVERS; do
            run_one "$server" "$rate" "$n"
        done
    done
done

mkdir -p "$(dirname "$OUT")"
python3 - "$WORK/runs.txt" "$OUT" "$USERS" "$SECONDS_EACH" <<'PY'
import json, os, platform, statistics, subprocess, sys

runs_file, out, users, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])

def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception:
        return None

runs = []
for line in open(runs_file):
    server, rate, n, node_pids, redis_pid, path, cutoffs = line.split()
    s = json.load(open(path))
    chat, by_pid = s["chat"], s["chat"]["server_cpu_s_by_pid"]
    nodes_s = sum(by_pid.get(p, 0.0) for p in node_pids.split(","))
    redis_s = by_pid.get(redis_pid, 0.0)
    delivered = chat["delivered"]
    per = lambda cpu: round(cpu / delivered * 1e6, 2) if delivered else None
    runs.append({
        "server": server, "rate": int(rate), "run": int(n), "exit_code": s["exit_code"],
        "sent": chat["sent"], "delivered": delivered, "lost": chat["lost"], "duplicated": chat["duplicated"],
        "send_behind": chat["send_behind"], "sent_per_s": chat["sent_per_s"],
        "delivered_per_s": chat["delivered_per_s"],
        "p50_ms": chat["latency"]["p50_us"] / 1000, "p99_ms": chat["latency"]["p99_us"] / 1000,
        "service_p99_ms": chat["service_latency"]["p99_us"] / 1000,
        "nodes_cpu_s": round(nodes_s, 3), "redis_cpu_s": round(redis_s, 3),
        "nodes_us_per_delivered": per(nodes_s), "redis_us_per_delivered": per(redis_s),
        "servers_us_per_delivered": per(nodes_s + redis_s),
        "loadgen_us_per_delivered": chat["cpu"]["loadgen_us_per_op"],
        "chat_machine_pct": s["cpu"]["chat_machine_pct"], "chat_loadgen_pct": s["cpu"]["chat_loadgen_pct"],
        "chat_servers_pct": s["cpu"]["chat_server_pct"],
        # What other processes on the shared machine took meanwhile.
        "chat_others_pct": round(s["cpu"]["chat_machine_pct"] - s["cpu"]["chat_loadgen_pct"] - s["cpu"]["chat_server_pct"], 1),
        "redis_subscribers_cut_off": int(cutoffs), "failures": s["failures"],
    })

def median(rows, key):
    values = [r[key] for r in rows if r[key] is not None]
    return round(statistics.median(values), 2) if values else None

keys = ["delivered_per_s", "p50_ms", "p99_ms", "lost", "send_behind", "servers_us_per_delivered",
        "nodes_us_per_delivered", "redis_us_per_delivered", "loadgen_us_per_delivered", "chat_machine_pct",
        "chat_servers_pct", "chat_others_pct", "redis_subscribers_cut_off"]
medians = []
for server in dict.fromkeys(r["server"] for r in runs):
    for rate in dict.fromkeys(r["rate"] for r in runs):
        rows = [r for r in runs if r["server"] == server and r["rate"] == rate]
        if rows:
            medians.append({"server": server, "rate": rate, "runs": len(rows), **{k: median(rows, k) for k in keys}})

result = {
    "what": "2 nodes + Redis per server, cross-node chat, open loop at each rate; latency from the intended send time; "
            "CPU is utime+stime from /proc of the nodes and of Redis over chat and its grace period, per delivered message",
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "note": "one machine: load generator, both nodes and Redis share its cores"},
    "versions": {"node": version(["node", "--version"]), "redis": version(["redis-server", "--version"]),
                 "commit": version(["git", "rev-parse", "--short", "HEAD"])},
    "users": users, "seconds_each": seconds,
    "medians": medians, "runs": runs,
}
json.dump(result, open(out, "w"), indent=1)
print(f"{'server':<16} {'rate/s':>8} {'delivered/s':>11} {'p50 ms':>9} {'p99 ms':>9} {'lost':>8} "
      f"{'behind':>8} {'server us/msg':>13} {'(nodes':>7} {'redis)':>7}")
for m in medians:
    print(f"{m['server']:<16} {m['rate']:>8} {m['delivered_per_s']:>11} {m['p50_ms']:>9} {m['p99_ms']:>9} "
          f"{m['lost']:>8} {m['send_behind']:>8} {m['servers_us_per_delivered']!s:>13} "
          f"{m['nodes_us_per_delivered']!s:>7} {m['redis_us_per_delivered']!s:>7}")
print(f"written to {out}")
PY
