#!/usr/bin/env bash
# The million-connection run on one host: K switchboard nodes share one port through
# SO_REUSEPORT (each process is capped in open files, about 19,000 sockets here), joined
# by one Redis (or none with --standalone); the load generator opens TARGET connections,
# logs them in and holds them HOLD seconds; then this prints node memory per connection
# and kernel slab per connection, as one JSON summary plus a human line.
#
#   scripts/capacity.sh [--target N] [--hold S] [--nodes K] [--per-node N] [--port P]
#                       [--reactors R] [--standalone] [-- EXTRA LOADGEN FLAGS...]
#
# Defaults (flag, or environment): TARGET=1000000 connections, HOLD=10 s, PER_NODE=19000
# sockets per node, NODES=ceil(TARGET/PER_NODE), PORT=9300, REACTORS=1 per node,
# REDIS_PORT=6391. Binaries: SWITCHBOARD_BIN and LOADGEN_BIN (default target/release/
# switchboard and target/release/loadgen, brought up to date with cargo build).
# Example (what docs/operations.md quotes): scripts/capacity.sh --target 40000 --nodes 3
#
# A million needs ~8 GB of kernel memory with both ends on this host (DESIGN.md) and
# fs.file-max above 2.1M: run scripts/tune-kernel.sh first (this script changes no
# kernel setting). Loopback source addresses 127.0.0.2 and up are used by the load
# generator (about 20,000 connections each).
#
# Undo: nothing stays behind. Every process it starts (redis, nodes, load generator and
# its workers) is stopped on exit, Ctrl-C included (trap). It leaves logs in
# run/capacity/ and the summary in results/capacity-TIMESTAMP.json; delete them at will.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${TARGET:-1000000}
hold=${HOLD:-10}
per_node=${PER_NODE:-19000}
nodes=${NODES:-}
port=${PORT:-9300}
reactors=${REACTORS:-1}
redis_port=${REDIS_PORT:-6391}
standalone=0
extra=()

while (($#)); do
    case "$1" in
        --target) target=$2; shift ;;
        --hold) hold=$2; shift ;;
        --nodes) nodes=$2; shift ;;
        --per-node) per_node=$2; shift ;;
        --port) port=$2; shift ;;
        --reactors) reactors=$2; shift ;;
        --standalone) standalone=1 ;;
        --) shift; extra=("$@"); break ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "capacity: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ -n "$nodes" ]] || nodes=$(((target + per_node - 1) / per_node))

die() { echo "capacity: $*" >&2; exit 1; }

# A binary: $VAR as given, else target/release/NAME brought up to date by cargo (a no-op
# when fresh; an old binary is used, with a warning, if the build fails).
binary() {
    local var=$1 name=$2 bin
    if [[ -n "${!var:-}" ]]; then
        [[ -x "${!var}" ]] || die "$var=${!var} is not an executable"
        echo "${!var}"
        return
    fi
    bin=$root/target/release/$name
    if ! (cd "$root" && cargo build --release -q -p "$name" >&2); then
        [[ -x "$bin" ]] || die "cannot build $bin"
        echo "warning: cargo build failed; using the existing $bin" >&2
    fi
    echo "$bin"
}

node_bin=$(binary SWITCHBOARD_BIN switchboard)
loadgen_bin=$(binary LOADGEN_BIN loadgen)
((standalone)) || command -v redis-server >/dev/null || die "redis-server is not installed (or pass --standalone)"

hard=$(ulimit -Hn)
if [[ "$hard" != unlimited ]] && ((per_node + 64 > hard)); then
    die "--per-node $per_node does not fit the open-file limit $hard (about $((hard - 64)) per node)"
fi
if [[ -n "$(ss -Hltn "sport = :$port")" ]]; then
    die "port $port is already in use: nodes with --reuse-port would join it; pick --port"
fi
avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
if ((target * 10 > avail_kb)); then
    echo "warning: $target connections need about $((target * 10 / 1024 / 1024)) GiB (10 KB each, both ends); $((avail_kb / 1024 / 1024)) GiB available" >&2
fi

run="$root/run/capacity"
mkdir -p "$run" "$root/results"
stamp=$(date +%Y%m%d-%H%M%S)
summary="$root/results/capacity-$stamp.json"
loadgen_json="$run/loadgen-$stamp.json"

node_pids=() redis_pid="" loadgen_pid=""

# Stops one child: TERM, then KILL after 5 s.
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    trap - EXIT INT TERM
    # The load generator runs in its own process group with its workers: stop them all.
    if [[ -n "$loadgen_pid" ]] && kill -0 "$loadgen_pid" 2>/dev/null; then
        kill -TERM -- "-$loadgen_pid" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$loadgen_pid" 2>/dev/null || true
        wait "$loadgen_pid" 2>/dev/null || true
    fi
    for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${node_pids[@]}"; do stop_pid "$pid"; done
    [[ -z "$redis_pid" ]] || stop_pid "$redis_pid"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Kernel slab, kB (system-wide: both ends of every loopback connection count).
slab_kb() { awk '/^Slab:/ { print $2 }' /proc/meminfo; }
# Sum of the nodes' resident memory, kB.
nodes_rss_kb() {
    local pid total=0 kb
    for pid in "${node_pids[@]}"; do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
# Open descriptors of each node, one line each: its connections plus a few of its own.
nodes_fds() {
    local pid
    for pid in "${node_pids[@]}"; do ls "/proc/$pid/fd" 2>/dev/null | wc -l; done
}

echo "capacity: $target connections over $nodes node(s) on port $port, $reactors reactor(s) each, $([[ $standalone == 1 ]] && echo standalone || echo "Redis on $redis_port")"

redis_args=()
if ((!standalone)); then
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --logfile "$run/redis.log" &
    redis_pid=$!
    for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$redis_port" ping >/dev/null || die "redis did not start; see $run/redis.log"
    redis_args=(--redis "redis://127.0.0.1:$redis_port")
fi

for ((i = 1; i <= nodes; i++)); do
    log="$run/node-$i.log"
    # Thousands of connections per source address, opened as fast as loadgen can.
    RUST_LOG=${RUST_LOG:-warn} "$node_bin" --listen "127.0.0.1:$port" --reuse-port \
        --reactors "$reactors" --node-id "cap-$i" "${redis_args[@]}" \
        --max-connections-per-address 0 --connect-rate 0 --message-rate 1000000 --message-burst 1000000 --inbox-size 1000000 >"$log" 2>&1 &
    node_pids+=($!)
done
for ((i = 1; i <= nodes; i++)); do
    log="$run/node-$i.log"
    for _ in $(seq 100); do
        grep -q "switchboard listening on" "$log" && break
        kill -0 "${node_pids[i - 1]}" 2>/dev/null || { cat "$log" >&2; die "node $i exited"; }
        sleep 0.1
    done
    grep -q "switchboard listening on" "$log" || die "node $i did not start; see $log"
done

sleep 0.5
base_slab=$(slab_kb) base_rss=$(nodes_rss_kb)
base_fds=$(nodes_fds | awk '{ n += $1 } END { print n }')
peak_fds=$base_fds peak_slab=$base_slab peak_rss=$base_rss per_node_fds=""

server_pid_args=()
for pid in "${node_pids[@]}"; do server_pid_args+=(--server-pid "$pid"); done
setsid "$loadgen_bin" --url "ws://127.0.0.1:$port/ws" --connections "$target" --hold "$hold" \
    "${server_pid_args[@]}" --json "$loadgen_json" --quiet "${extra[@]}" \
    >"$run/loadgen.log" 2>&1 </dev/null &
loadgen_pid=$!
started=$SECONDS

# Sample once a second while the load generator runs; keep the sample with the most
# connections open on the nodes (the hold phase).
while kill -0 "$loadgen_pid" 2>/dev/null; do
    sleep 1
    fds=$(nodes_fds | sort -n | awk '{ a[NR] = $1; n += $1 } END { printf "%d %d %d", n, a[1], a[NR] }')
    read -r total low high <<<"$fds"
    if ((total > peak_fds)); then
        peak_fds=$total peak_slab=$(slab_kb) peak_rss=$(nodes_rss_kb) per_node_fds="$low $high"
    fi
    line=$(printf '%4d s: %d connections on the nodes (%d to %d per node)' "$((SECONDS - started))" \
        "$((total - base_fds))" "$((low - base_fds / nodes))" "$((high - base_fds / nodes))")
    # A live line on a terminal; one line every 10 s in a log.
    if [[ -t 1 ]]; then printf '\r  %s  ' "$line"; elif (( (SECONDS - started) % 10 == 0 )); then echo "  $line"; fi
done
[[ ! -t 1 ]] || echo
set +e
wait "$loadgen_pid"
loadgen_rc=$?
set -e
loadgen_pid=""
alive=0
for pid in "${node_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
grep -E "^(connect|login|hold|errors|memory|cpu|result):" "$run/loadgen.log" || tail -n 5 "$run/loadgen.log"

CAP_TARGET=$target CAP_NODES=$nodes CAP_ALIVE=$alive CAP_HOLD=$hold CAP_STANDALONE=$standalone \
CAP_BASE_SLAB=$base_slab CAP_PEAK_SLAB=$peak_slab CAP_BASE_RSS=$base_rss CAP_PEAK_RSS=$peak_rss \
CAP_BASE_FDS=$base_fds CAP_PEAK_FDS=$peak_fds CAP_FDS="$per_node_fds" \
CAP_LOADGEN_RC=$loadgen_rc CAP_LOADGEN_JSON=$loadgen_json CAP_SUMMARY=$summary \
python3 - <<'EOF'
import json, os
e = os.environ
conns = int(e["CAP_PEAK_FDS"]) - int(e["CAP_BASE_FDS"])
per = lambda kb: round((kb * 1024) / conns, 1) if conns else None
rss_delta = int(e["CAP_PEAK_RSS"]) - int(e["CAP_BASE_RSS"])
slab_delta = int(e["CAP_PEAK_SLAB"]) - int(e["CAP_BASE_SLAB"])
fds = e["CAP_FDS"].split()
try:
    with open(e["CAP_LOADGEN_JSON"]) as f:
        lg = json.load(f)
except (OSError, ValueError):
    lg = {}
summary = {
    "target": int(e["CAP_TARGET"]),
    "nodes": int(e["CAP_NODES"]),
    "nodes_alive_at_end": int(e["CAP_ALIVE"]),
    "redis": e["CAP_STANDALONE"] != "1",
    "hold_s": float(e["CAP_HOLD"]),
    "connections_at_peak": conns,
    "established": lg.get("connect", {}).get("established"),
    "logged_in": lg.get("login", {}).get("ok"),
    "node_rss_kb": {"baseline": int(e["CAP_BASE_RSS"]), "peak": int(e["CAP_PEAK_RSS"])},
    "node_rss_per_connection_bytes": per(rss_delta),
    "slab_kb": {"baseline": int(e["CAP_BASE_SLAB"]), "peak": int(e["CAP_PEAK_SLAB"])},
    "slab_per_connection_bytes_both_ends": per(slab_delta),
    "node_fds_min_max_at_peak": [int(x) for x in fds] if fds else None,
    "loadgen_exit": int(e["CAP_LOADGEN_RC"]),
    "loadgen_memory": lg.get("memory"),
    "loadgen_json": e["CAP_LOADGEN_JSON"],
}
with open(e["CAP_SUMMARY"], "w") as f:
    json.dump(summary, f, indent=2)
print(json.dumps(summary))
fd = f", {fds[0]}-{fds[1]} fds per node" if fds else ""
print(f"capacity: {conns}/{summary['target']} connections on {summary['nodes']} nodes"
      f" ({summary['nodes_alive_at_end']} alive at end){fd}; node RSS "
      f"{summary['node_rss_per_connection_bytes']} B/conn, kernel slab "
      f"{summary['slab_per_connection_bytes_both_ends']} B/conn (both ends);"
      f" loadgen exit {summary['loadgen_exit']}; summary {e['CAP_SUMMARY']}")
EOF
((loadgen_rc == 0 && alive == nodes)) || exit 1
