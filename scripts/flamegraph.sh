#!/usr/bin/env bash
# Profiles a switchboard node with perf and renders a flamegraph SVG.
#
#   scripts/flamegraph.sh [--pid PID] [--seconds N] [--freq HZ] [--name NAME] [-- LOAD...]
#
# Without --pid it starts a node of its own (SWITCHBOARD_BIN, default
# target/release/switchboard, brought up to date with cargo build) on a free loopback
# port, and stops it at the end. LOAD, if given, is a command run while perf records:
# it starts first, gets WARMUP seconds (default 1) to ramp up, and is stopped when
# recording ends. In LOAD,
# {url} is replaced by the node's ws:// URL (also exported as SWITCHBOARD_URL, with
# SWITCHBOARD_PID), e.g.
#   scripts/flamegraph.sh --seconds 10 -- target/release/loadgen --url {url} \
#       --connections 2000 --rate 20000 --duration 15 --quiet
#
# perf samples the cpu-clock software event (no hardware counters are needed, so it
# works in VMs) with DWARF call graphs (user stacks without frame pointers; the release
# profile keeps line tables). Rendering uses inferno (inferno-collapse-perf,
# inferno-flamegraph), installed with `cargo install inferno` when missing.
#
# Output: results/flamegraph-NAME-TIMESTAMP.svg, the folded stacks beside it (.folded,
# for inferno-diff-folded between two builds), and the raw perf-*.data.
# Undo: delete those files (rm results/flamegraph-* results/perf-*.data); uninstall
# inferno with `cargo uninstall inferno`. Running it again only adds new files.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
results="$root/results"
pid="" seconds=10 freq=499 name=node warmup=${WARMUP:-1}
load=()

while (($#)); do
    case "$1" in
        --pid) pid=$2; shift ;;
        --seconds) seconds=$2; shift ;;
        --freq) freq=$2; shift ;;
        --name) name=$2; shift ;;
        --) shift; load=("$@"); break ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "flamegraph: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

command -v perf >/dev/null || { echo "flamegraph: perf is not installed (apt-get install linux-perf)" >&2; exit 1; }
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v inferno-flamegraph >/dev/null || ! command -v inferno-collapse-perf >/dev/null; then
    echo "installing inferno (cargo install inferno)" >&2
    cargo install --locked inferno >&2
fi

started_pid="" load_pid=""
cleanup() {
    # Stop what this script started, and nothing else: the load's process group, the node.
    if [[ -n "$load_pid" ]] && kill -0 "$load_pid" 2>/dev/null; then
        kill -TERM -- "-$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    if [[ -n "$started_pid" ]] && kill -0 "$started_pid" 2>/dev/null; then
        kill -TERM "$started_pid" 2>/dev/null || true
        wait "$started_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$results"
stamp=$(date +%Y%m%d-%H%M%S)
base="$results/flamegraph-$name-$stamp"
data="$results/perf-$name-$stamp.data"

if [[ -z "$pid" ]]; then
    bin=${SWITCHBOARD_BIN:-$root/target/release/switchboard}
    if [[ -z "${SWITCHBOARD_BIN:-}" ]] && ! (cd "$root" && cargo build --release -q -p switchboard >&2); then
        [[ -x "$bin" ]] || { echo "flamegraph: cannot build $bin" >&2; exit 1; }
        echo "warning: cargo build failed; using the existing $bin" >&2
    fi
    log="$base.node.log"
    # Limits on, out of reach of a load generator on one host.
    "$bin" --listen 127.0.0.1:0 --max-connections-per-address 0 --connect-rate 0 --message-rate 1000000 --message-burst 1000000 --inbox-size 1000000 >"$log" 2>&1 &
    started_pid=$!
    addr=""
    for _ in $(seq 100); do
        addr=$(sed -n 's/^switchboard listening on //p' "$log")
        [[ -n "$addr" ]] && break
        kill -0 "$started_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    [[ -n "$addr" ]] || { echo "flamegraph: the node did not start; see $log" >&2; exit 1; }
    pid=$started_pid
    export SWITCHBOARD_URL="ws://$addr/ws"
    echo "started node pid $pid at $SWITCHBOARD_URL"
else
    kill -0 "$pid" 2>/dev/null || { echo "flamegraph: no process $pid" >&2; exit 1; }
    export SWITCHBOARD_URL=${SWITCHBOARD_URL:-}
fi
export SWITCHBOARD_PID=$pid

if ((${#load[@]})); then
    url=${SWITCHBOARD_URL:-}
    load=("${load[@]//\{url\}/$url}")
    echo "load: ${load[*]}"
    # Its own process group, so that cleanup stops the load and its workers together.
    setsid "${load[@]}" >"$base.load.log" 2>&1 </dev/null &
    load_pid=$!
    sleep "$warmup"
fi

echo "recording pid $pid for $seconds s at $freq Hz (cpu-clock, dwarf call graphs)"
perf record -e cpu-clock -F "$freq" --call-graph dwarf,16384 -p "$pid" -o "$data" \
    -- sleep "$seconds" 2>&1 | grep -v '^\[ perf record: Woken' >&2 || true
[[ -s "$data" ]] || { echo "flamegraph: perf wrote no samples to $data" >&2; exit 1; }

perf script -i "$data" 2>/dev/null | inferno-collapse-perf >"$base.folded"
[[ -s "$base.folded" ]] || { echo "flamegraph: no stacks in $data (was the process idle?)" >&2; exit 1; }
inferno-flamegraph --title "switchboard pid $pid, $seconds s, cpu-clock $freq Hz" \
    <"$base.folded" >"$base.svg"
cpu_ms=$(awk '{ n += $NF } END { printf "%d", n / 1e6 }' "$base.folded")
echo "flamegraph: $base.svg ($cpu_ms ms of CPU sampled; folded stacks in $base.folded)"
