#!/usr/bin/env bash
# Counts the instructions a node spends per chat message, under callgrind.
#
#   scripts/callgrind.sh [--messages N] [--pairs K] [--name NAME]
#
# Builds the release node and the examples/chat_hotpath driver, then runs the
# node (2 reactors, accept handoff so the driver knows which reactor holds each
# connection) under `valgrind --tool=callgrind` three times: once idle (connect
# and log in 2K users, no chat: the baseline), once with N chat messages between
# users on the same reactor, once with N between users on different reactors.
# The driver runs as a separate, uninstrumented process, so only the node's
# instructions are counted. Per message = (run Ir - idle Ir) / N. The node's
# limits stay on, set out of reach of one fast client (the same code runs per
# message as with the defaults).
#
# Output: one JSON line plus a human line per mode, and the profiles as
# results/callgrind-NAME-{idle,same,cross}.out (read them with
# `callgrind_annotate --inclusive=yes FILE | head -60`).
# Undo: rm results/callgrind-*. Running it again overwrites the same NAME.
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

cd "$root"
cargo build --release --quiet --bin switchboard --example chat_hotpath
mkdir -p results
work=$(mktemp -d)
node_pid=""
cleanup() {
    if [[ -n $node_pid ]] && kill -0 "$node_pid" 2>/dev/null; then
        kill -TERM "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Runs the node under callgrind and the driver against it; prints total Ir.
measure() {
    local label=$1 mode=$2 count=$3
    local out="results/callgrind-$name-$label.out"
    : >"$work/stdout"
    RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" --dump-instr=no \
        target/release/switchboard --listen 127.0.0.1:0 --reactors 2 --accept handoff --drain-secs 0 \
        --max-connections-per-address 0 --connect-rate 0 --message-rate 1000000 --message-burst 1000000 \
        --inbox-size 1000000 \
        >"$work/stdout" 2>"$work/stderr-$label" &
    node_pid=$!
    local addr="" admin="" tries=0
    until admin=$(sed -n 's/^switchboard admin on //p' "$work/stdout") && [[ -n $admin ]]; do
        tries=$((tries + 1))
        if [[ $tries -gt 600 ]] || ! kill -0 "$node_pid" 2>/dev/null; then
            echo "node did not start:" >&2
            cat "$work/stderr-$label" >&2
            exit 1
        fi
        sleep 0.1
    done
    addr=$(sed -n 's/^switchboard listening on //p' "$work/stdout")
    target/release/examples/chat_hotpath --addr "$addr" --admin "$admin" --mode "$mode" --messages "$count" --pairs "$pairs" \
        >/dev/null 2>"$work/driver-$label"
    kill -TERM "$node_pid"
    wait "$node_pid" || true
    node_pid=""
    awk '/^(summary|totals):/ { print $2; exit }' "$out"
}

idle=$(measure idle cross 0)
for mode in same cross; do
    total=$(measure "$mode" "$mode" "$messages")
    per=$(( (total - idle) / messages ))
    echo "{\"name\":\"$name\",\"mode\":\"$mode\",\"messages\":$messages,\"idle_ir\":$idle,\"run_ir\":$total,\"ir_per_message\":$per}"
    echo "$mode-reactor: $(( total - idle )) node instructions for $messages messages = $per per message (idle baseline $idle)" >&2
done
