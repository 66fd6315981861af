#!/usr/bin/env bash
# Counts the instructions a node spends per cross-node chat message, under
# callgrind: what the Redis bus adds to the chat hot path.
#
#   scripts/callgrind-bus.sh [--messages N] [--pairs K] [--name NAME]
#
# Starts a redis-server on a free port and two release nodes joined through it:
# node A under `valgrind --tool=callgrind` (2 reactors, accept handoff), node B
# plain. The examples/chat_hotpath driver (`--mode node`) then sends N chat
# messages between users on different nodes, three times: idle (log in only,
# the baseline), "publish" (senders on A, recipients on B: A encodes and
# publishes each message) and "deliver" (senders on B, recipients on A: A
# receives each message from Redis and delivers it). Per message =
# (run Ir - idle Ir) / N, for node A only; Redis and B are not counted.
#
# Output: one JSON line plus a human line per direction; the profiles as
# results/callgrind-bus-NAME-{idle,publish,deliver}.out.
# Undo: rm results/callgrind-bus-*. Running it again overwrites the same NAME.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
messages=100000 pairs=4 name=current
while [[ $# -gt 0 ]]; do
    case $1 in
        --messages) messages=$2; shift 2 ;;
        --pairs) pairs=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        *) echo "usage: $0 [--messages N] [--pairs K] [--name NAME]" >&2; exit 64 ;;
    esac
done
command -v valgrind >/dev/null || { echo "valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is missing (apt-get install redis-server)" >&2; exit 1; }

cd "$root"
cargo build --release --quiet --bin switchboard --example chat_hotpath
mkdir -p results
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        stopped "$pid"
    done
    rm -rf "$work"
}
trap cleanup EXIT

# Waits until process $1 (not necessarily our child) has exited.
stopped() {
    while kill -0 "$1" 2>/dev/null; do sleep 0.1; done
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null &
pids+=($!)
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
redis="redis://127.0.0.1:$port"

# Starts a node (optionally under callgrind) and prints its address and its
# admin address.
start_node() {
    local label=$1; shift
    : >"$work/stdout-$label"
    # The per-address, per-second and rate limits out of reach (the driver floods from one
    # address), no pings (a run under callgrind outlasts --ping-interval; the driver reads
    # chat only), and a stop closes at once.
    RUST_LOG=warn "$@" --listen 127.0.0.1:0 --reactors 2 --accept handoff --redis "$redis" --drain-secs 0 \
        --max-connections-per-address 0 --connect-rate 0 --message-rate 1000000 --message-burst 1000000 \
        --inbox-size 1000000 --ping-interval 0 \
        >"$work/stdout-$label" 2>"$work/stderr-$label" &
    echo $! >"$work/pid-$label"
    local addr="" admin="" tries=0
    until addr=$(sed -n 's/^switchboard listening on //p' "$work/stdout-$label") && [[ -n $addr ]] &&
        admin=$(sed -n 's/^switchboard admin on //p' "$work/stdout-$label") && [[ -n $admin ]]; do
        tries=$((tries + 1))
        if [[ $tries -gt 600 ]]; then
            echo "node $label did not start:" >&2
            cat "$work/stderr-$label" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "$addr $admin"
}

read -r b b_admin <<<"$(start_node b target/release/switchboard)"
pids+=("$(cat "$work/pid-b")")

# Runs node A under callgrind and the driver between A and B; prints total Ir.
measure() {
    local label=$1 direction=$2 count=$3
    local out="results/callgrind-bus-$name-$label.out"
    local a a_admin
    read -r a a_admin <<<"$(start_node "a-$label" valgrind --tool=callgrind --callgrind-out-file="$out" \
        --dump-instr=no target/release/switchboard)"
    local a_pid
    a_pid=$(cat "$work/pid-a-$label")
    if [[ $direction == publish ]]; then
        target/release/examples/chat_hotpath --addr "$a" --admin "$a_admin" --peer "$b" --peer-admin "$b_admin" \
            --mode node --messages "$count" --pairs "$pairs" >/dev/null 2>"$work/driver-$label"
    else
        target/release/examples/chat_hotpath --addr "$b" --admin "$b_admin" --peer "$a" --peer-admin "$a_admin" \
            --mode node --messages "$count" --pairs "$pairs" >/dev/null 2>"$work/driver-$label"
    fi
    kill -TERM "$a_pid"
    stopped "$a_pid"
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

idle=$(measure idle publish 0)
for direction in publish deliver; do
    total=$(measure "$direction" "$direction" "$messages")
    per=$(( (total - idle) / messages ))
    echo "{\"name\":\"$name\",\"direction\":\"$direction\",\"messages\":$messages,\"idle_ir\":$idle,\"run_ir\":$total,\"ir_per_message\":$per}"
    echo "$direction: $(( total - idle )) node instructions for $messages cross-node messages = $per per message (idle baseline $idle)" >&2
done
