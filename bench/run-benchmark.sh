#!/usr/bin/env bash
# Starts N switchboard nodes (release build, --reactors 1, ports 9101 upward), runs loadgen
# against them with the arguments given, then stops the nodes. Nothing to undo: the nodes
# are killed on exit. Usage:
#   bench/run-benchmark.sh NODES [loadgen args...]
# Env: SWITCHBOARD (node binary), LOADGEN (loadgen binary), REDIS_URL (adds --redis),
# NODE_ARGS (more node flags, split on spaces).
set -euo pipefail
nodes=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
node_bin=${SWITCHBOARD:-$root/target/release/switchboard}
loadgen_bin=${LOADGEN:-$root/target/release/loadgen}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
urls=()
server_pids=()
for i in $(seq 1 "$nodes"); do
  port=$((9100 + i))
  extra=()
  if [[ -n "${REDIS_URL:-}" ]]; then extra=(--redis "$REDIS_URL"); fi
  # shellcheck disable=SC2206 # split on purpose: several flags in one variable
  extra+=(${NODE_ARGS:-})
  "$node_bin" --listen "127.0.0.1:$port" --reactors 1 "${extra[@]}" >"/tmp/switchboard-$port.log" 2>&1 &
  pids+=($!)
  urls+=(--url "ws://127.0.0.1:$port/ws")
  server_pids+=(--server-pid "$!")
done
for i in $(seq 1 "$nodes"); do
  port=$((9100 + i))
  up=no
  for _ in $(seq 1 50); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=yes; break; fi
    sleep 0.1
  done
  if [[ $up == no ]]; then
    echo "node on port $port did not start; its log (/tmp/switchboard-$port.log):" >&2
    cat "/tmp/switchboard-$port.log" >&2
    exit 1
  fi
done
"$loadgen_bin" "${urls[@]}" "${server_pids[@]}" "$@"
