#!/usr/bin/env bash
# The room fan-out benchmark: one room of MEMBERS members spread over NODES switchboard
# nodes (--reactors 1 each, joined through a fresh redis-server), and SENDS room
# messages sent one at a time (RATE a second, so each has 1/RATE s to reach every member
# before the next), each from the next member in turn. The load generator reports, per
# message, the time from its intended send until the last member had it, per member
# delivery the same, exact per-member loss and duplicates, and the nodes' CPU (from
# /proc) per member delivery. Usage:
#   scripts/room-fanout.sh NODES MEMBERS [loadgen args...]
# Env: SENDS (200), RATE (10), REDIS_PORT (6391), OUT (JSON summary, default
# bench/results/room-fanout-<MEMBERS>-<NODES>nodes.json), NODE_ARGS (more node flags).
set -euo pipefail
nodes=$1 members=$2; shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
port=${REDIS_PORT:-6391}
out=${OUT:-$root/bench/results/room-fanout-$members-${nodes}nodes.json}
if redis-cli -p "$port" ping >/dev/null 2>&1; then
  echo "room-fanout: something already answers on port $port (REDIS_PORT): every run needs a fresh redis-server" >&2
  exit 2
fi
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --logfile "/tmp/room-fanout-redis-$port.log"
# SHUTDOWN returns once the server is gone: the next run's server can take the port.
trap 'redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
# A room this big is quiet (a join announced to 10,000 members is 10,000 messages); the
# load test comes from a few source addresses, as fast as the nodes take it, and logs in
# only once every connection is made (100,000 at 10,000/s take 10 s: the login timeout).
export NODE_ARGS="--join-notices false --max-connections-per-address 0 --connect-rate 0 --message-rate 0 --login-timeout 120 ${NODE_ARGS:-}"
REDIS_URL="redis://127.0.0.1:$port" "$root/bench/run-benchmark.sh" "$nodes" \
  --connections "$members" --rooms 1 --room-size "$members" \
  --room-rate "${RATE:-10}" --room-messages "${SENDS:-200}" --json "$out" "$@"
