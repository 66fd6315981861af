#!/usr/bin/env bash
# The million-connection run on one host: K switchboard nodes joined by one Redis (or
# none with --standalone), the load generator opening TARGET connections, logging them
# in, holding them HOLD seconds, then chatting across nodes and (optionally) churning.
# It checks the host first (scripts/preflight.sh) and stops within seconds, naming the
# setting to change, when the run cannot succeed; otherwise it prints and always writes a
# JSON summary (also on failure, with the reason and the kernel's own TCP counters), an
# SVG chart and the load generator's log with its progress and human summary.
#
#   scripts/capacity.sh [--target N] [--hold S] [--nodes K] [--per-node N] [--port P]
#                       [--reactors R] [--standalone] [--shared-port]
#                       [--connect-rate R] [--login-rate R] [--in-flight M]
#                       [--chat-rate R] [--chat-duration S] [--churn-rate R] [--churn-duration S]
#                       [--deadline S] [--force] [--netns] [--ehash N]
#                       [-- EXTRA LOADGEN FLAGS...]
#
# Defaults (flag, or environment): TARGET=1000000 connections, HOLD=10 s idle (memory is
# sampled at its end), PER_NODE=19000 connections per node, NODES=ceil(TARGET/PER_NODE),
# PORT=9300 (node i listens on PORT+i-1; --shared-port: all on PORT with SO_REUSEPORT,
# where the load generator cannot know which node a connection reaches, so chat picks
# recipients at random), REACTORS=1, REDIS_PORT=6391, CONNECT_RATE=0 (as fast as the
# nodes accept, at most IN_FLIGHT=2000 handshakes under way), LOGIN_RATE=20000,
# CHAT_RATE=100000 messages/s for CHAT_DURATION=10 s, every message to a user on another
# node (same node with --standalone: no bus; 0 = no chat), CHURN_RATE=0 cycles/s
# (disconnect, reconnect, login) for CHURN_DURATION=10 s, DEADLINE (default: twice the
# planned time plus 2 minutes; then the load generator is told to stop and report).
# --netns: the whole run (Redis, nodes, load generator) in a network namespace of its own
# whose established-connection hash has --ehash N buckets (default: a power of two at
# least 2 x TARGET, both ends of each connection), made by scripts/netns.sh: the host's
# table is fixed at boot (262,144 buckets on 24 GiB) and at a million connections each
# lookup walks 8 sockets.
# PING_INTERVAL=300 s between the nodes' pings (their default 25 s would be 40,000 ping
# round trips a second at a million, on the cores the run needs; see below), and a login
# timeout that outlasts the planned ramp. --force runs even when the preflight refuses. Binaries: SWITCHBOARD_BIN and LOADGEN_BIN
# (default target/release/switchboard and target/release/loadgen, brought up to date).
# Example (what docs/capacity.md quotes):
#   scripts/capacity.sh --target 100000 --nodes 6 --hold 5 --chat-rate 20000
#
# Undo: nothing stays behind. Every process it starts (redis, nodes, load generator and
# its workers) is stopped on exit, Ctrl-C included (trap); it changes no kernel setting
# (scripts/tune-kernel.sh does, and undoes). It leaves logs in run/capacity/ and
# results/capacity-TIMESTAMP.{json,svg,csv}; delete them at will.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARGS=("$@")
target=${TARGET:-1000000} hold=${HOLD:-10} per_node=${PER_NODE:-19000} nodes=${NODES:-}
port=${PORT:-9300} reactors=${REACTORS:-1} redis_port=${REDIS_PORT:-6391}
connect_rate=${CONNECT_RATE:-0} login_rate=${LOGIN_RATE:-20000} in_flight=${IN_FLIGHT:-2000}
chat_rate=${CHAT_RATE:-100000} chat_duration=${CHAT_DURATION:-10}
churn_rate=${CHURN_RATE:-0} churn_duration=${CHURN_DURATION:-10} deadline=${DEADLINE:-}
standalone=0 shared_port=0 force=0 netns=${NETNS:-0} ehash=${EHASH:-} extra=()

while (($#)); do
    case "$1" in
        --target) target=$2; shift ;;
        --hold) hold=$2; shift ;;
        --nodes) nodes=$2; shift ;;
        --per-node) per_node=$2; shift ;;
        --port) port=$2; shift ;;
        --reactors) reactors=$2; shift ;;
        --connect-rate) connect_rate=$2; shift ;;
        --login-rate) login_rate=$2; shift ;;
        --in-flight) in_flight=$2; shift ;;
        --chat-rate) chat_rate=$2; shift ;;
        --chat-duration) chat_duration=$2; shift ;;
        --churn-rate) churn_rate=$2; shift ;;
        --churn-duration) churn_duration=$2; shift ;;
        --deadline) deadline=$2; shift ;;
        --standalone) standalone=1 ;;
        --shared-port) shared_port=1 ;;
        --force) force=1 ;;
        --netns) netns=1 ;;
        --ehash) ehash=$2; shift ;;
        --) shift; extra=("$@"); break ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "capacity: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for value in "$target" "$per_node" "$reactors" "$connect_rate" "$login_rate" "$in_flight" "$chat_rate" "$churn_rate"; do
    [[ "$value" =~ ^[0-9]+$ ]] || { echo "capacity: '$value' is not a whole number" >&2; exit 2; }
done
if ((netns)) && [[ -z "${SWITCHBOARD_NETNS:-}" ]]; then
    if [[ -z "$ehash" ]]; then ehash=1024; while ((ehash < 2 * target && ehash < 16777216)); do ehash=$((ehash * 2)); done; fi
    exec "$root/scripts/netns.sh" --ehash "$ehash" -- "$0" "${ARGS[@]}"
fi
[[ -n "$nodes" ]] || nodes=$(((target + per_node - 1) / per_node))
((nodes >= 1)) || nodes=1
pattern=cross-node
((nodes >= 2)) || pattern=same-node
((!standalone)) || pattern=same-node
((!shared_port)) || pattern=random

run="$root/run/capacity"
mkdir -p "$run" "$root/results"
stamp=$(date +%Y%m%d-%H%M%S)
out="$root/results/capacity-$stamp"
loadgen_json="$run/loadgen-$stamp.json" loadgen_log="$run/loadgen-$stamp.log"
preflight_json="$run/preflight-$stamp.json"
node_pids=() redis_pid="" loadgen_pid="" loadgen_rc="" reason="" started=$SECONDS
peak_fds=0 base_fds=0 base_slab=0 peak_slab=0 base_rss=0 peak_rss=0 per_node_fds=""

# Kernel slab, kB (system-wide: both ends of every loopback connection count).
slab_kb() { awk '/^Slab:/ { print $2 }' /proc/meminfo; }
nodes_rss_kb() {
    local pid total=0 kb
    for pid in "${node_pids[@]}"; do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
# TCP sockets in use on the host (both ends): cheap enough to read every second.
tcp_inuse() { awk '/^TCP:/ { print $3 }' /proc/net/sockstat; }
# Open descriptors of each node, one line each: its connections plus a few of its own.
# Since Linux 6.2 the size stat() gives /proc/PID/fd is that count, read from the
# descriptor bitmap; listing the directory instead costs real CPU at a million (`ls`
# every 10 s was 7% of all CPU samples during a ramp, every second 13-18%), so older
# kernels are listed every 10 s and when the count levels off.
if (($(stat -c %s /proc/$$/fd 2>/dev/null || echo 0) > 0)); then
    fd_count() { stat -c %s "/proc/$1/fd" 2>/dev/null || echo 0; }
    fd_every=1
else
    fd_count() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
    fd_every=10
fi
nodes_fds() { local pid; for pid in "${node_pids[@]}"; do fd_count "$pid"; done; }
# The kernel's TCP counters, absolute, without touching nstat's history.
tcp_counters() { nstat -asz 2>/dev/null || true; }

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

# On any exit: stop everything started, then write the summary (whatever happened).
finish() {
    local rc=$? pid alive=0
    trap - EXIT INT TERM
    if [[ -n "$loadgen_pid" ]] && kill -0 "$loadgen_pid" 2>/dev/null; then
        # Its workers are in its process group: stop them all.
        kill -TERM "$loadgen_pid" 2>/dev/null || true
        sleep 2
        kill -KILL -- "-$loadgen_pid" 2>/dev/null || true
        wait "$loadgen_pid" 2>/dev/null || true
    fi
    for pid in "${node_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
    tcp_counters >"$run/nstat-after-$stamp.txt"
    for pid in "${node_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${node_pids[@]}"; do stop_pid "$pid"; done
    [[ -z "$redis_pid" ]] || stop_pid "$redis_pid"
    [[ -n "$reason" || "$rc" == 0 ]] || reason="capacity.sh exited with status $rc"
    [[ ! -f "$loadgen_log" ]] || grep -E "^(run|connect|login|chat|latency|service|lag|churn|errors|why|memory|cpu|ramp|result):" "$loadgen_log" || true
    CAP_TARGET=$target CAP_NODES=$nodes CAP_ALIVE=$alive CAP_HOLD=$hold CAP_PING_INTERVAL=${ping_interval:-25} CAP_LOGIN_TIMEOUT=${login_timeout:-10} CAP_STANDALONE=$standalone \
    CAP_SHARED_PORT=$shared_port CAP_PATTERN=$pattern CAP_CHAT_RATE=$chat_rate CAP_CHAT_DURATION=$chat_duration \
    CAP_CHURN_RATE=$churn_rate CAP_CHURN_DURATION=$churn_duration CAP_CONNECT_RATE=$connect_rate \
    CAP_LOGIN_RATE=$login_rate CAP_IN_FLIGHT=$in_flight CAP_REASON=$reason CAP_COMMAND="$0 ${ARGS[*]}" \
    CAP_BASE_SLAB=$base_slab CAP_PEAK_SLAB=$peak_slab CAP_BASE_RSS=$base_rss CAP_PEAK_RSS=$peak_rss \
    CAP_BASE_FDS=$base_fds CAP_PEAK_FDS=$peak_fds CAP_FDS="$per_node_fds" CAP_LOADGEN_RC=$loadgen_rc \
    CAP_LOADGEN_JSON=$loadgen_json CAP_LOADGEN_LOG=$loadgen_log CAP_PREFLIGHT=$preflight_json \
    CAP_NSTAT_BEFORE=$run/nstat-before-$stamp.txt CAP_NSTAT_AFTER=$run/nstat-after-$stamp.txt \
    CAP_NETNS=${SWITCHBOARD_NETNS:-} \
    CAP_SUMMARY=$out.json CAP_SVG=$out.svg CAP_WALL=$((SECONDS - started)) \
        python3 "$root/scripts/capacity_summary.py" || echo "capacity: could not write $out.json" >&2
    if [[ -n "$reason" ]] || [[ "$loadgen_rc" != 0 ]] || ((alive != nodes)); then exit 1; fi
    exit 0
}
trap finish EXIT
trap 'reason="interrupted"; exit 130' INT TERM
die() { reason="$*"; echo "capacity: $*" >&2; exit 1; }

echo "capacity: $target connections over $nodes node(s), $reactors reactor(s) each, $([[ $standalone == 1 ]] && echo standalone || echo "Redis on $redis_port"), ports $([[ $shared_port == 1 ]] && echo "$port (shared)" || echo "$port-$((port + nodes - 1))")"
tcp_counters >"$run/nstat-before-$stamp.txt"

# 1. The host, before anything starts: stop in seconds with the setting to change.
if ! "$root/scripts/preflight.sh" --target "$target" --nodes "$nodes" --per-node "$(((target + nodes - 1) / nodes))" \
    --in-flight "$in_flight" --json "$preflight_json"; then
    ((force)) || die "preflight refused: this host cannot hold $target connections as it is (see the REFUSE lines; --force runs anyway)"
    echo "capacity: preflight refused; running anyway (--force)" >&2
fi

# A binary: $VAR as given, else target/release/NAME brought up to date by cargo.
binary() {
    local var=$1 name=$2 bin
    if [[ -n "${!var:-}" ]]; then
        [[ -x "${!var}" ]] || { echo "capacity: $var=${!var} is not an executable" >&2; return 1; }
        echo "${!var}"
        return
    fi
    bin=$root/target/release/$name
    if ! (cd "$root" && cargo build --release -q -p "$name" >&2); then
        [[ -x "$bin" ]] || { echo "capacity: cannot build $bin" >&2; return 1; }
        echo "warning: cargo build failed; using the existing $bin" >&2
    fi
    echo "$bin"
}
node_bin=$(binary SWITCHBOARD_BIN switchboard) || die "no switchboard binary"
loadgen_bin=$(binary LOADGEN_BIN loadgen) || die "no loadgen binary"
((standalone)) || command -v redis-server >/dev/null || die "redis-server is not installed (or pass --standalone)"

node_ports=()
for ((i = 0; i < nodes; i++)); do node_ports+=($((shared_port ? port : port + i))); done
for p in $(printf '%s\n' "${node_ports[@]}" | sort -u); do
    [[ -z "$(ss -Hltn "sport = :$p")" ]] || die "port $p is already in use (pick --port)"
done

# 2. Redis and the nodes.
redis_args=()
if ((!standalone)); then
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --logfile "$run/redis.log" &
    redis_pid=$!
    for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    redis-cli -p "$redis_port" ping >/dev/null || die "redis did not start; see $run/redis.log"
    redis_args=(--redis "redis://127.0.0.1:$redis_port")
fi
reuse=()
((!shared_port)) || reuse=(--reuse-port)
# The load generator opens every connection before it logs any in, so the first ones
# wait for the whole ramp and their turn in the logins: the nodes' login timeout
# (10 s by default, right for real clients, which log in at once) must outlast both,
# or the nodes close the early connections while later ones are still opening.
# Pings: every connection here is on loopback with both ends on this host, so at the
# default 25 s a million connections cost 40,000 ping round trips a second on the same
# two cores the ramp needs (measured: 55,731 connections closed for a pong that came
# late, the load generator's threads behind). PING_INTERVAL (default 300 s) keeps the
# check on, at a pace the host can carry; the summary records it. TCP keepalive follows
# it: a node probes a connection silent for --keepalive (60 s by default, never reached
# when pings come every 25 s), so at 300 s pings the kernel's probes took over, 16,700
# probe and ACK pairs a second at a million.
ping_interval=${PING_INTERVAL:-300}
login_timeout=$(awk -v n="$target" -v cr="$connect_rate" -v lr="$login_rate" \
    'BEGIN { printf "%d", 2 * (n / (cr > 0 ? cr : 5000) + n / (lr > 0 ? lr : 5000)) + 60 }')
for ((i = 1; i <= nodes; i++)); do
    # Thousands of connections per source address, opened as fast as loadgen can.
    RUST_LOG=${RUST_LOG:-warn} "$node_bin" --listen "127.0.0.1:${node_ports[i - 1]}" "${reuse[@]}" \
        --reactors "$reactors" --node-id "cap-$i" "${redis_args[@]}" \
        --max-connections-per-address 0 --connect-rate 0 --message-rate 1000000 --message-burst 1000000 \
        --inbox-size 1000000 --login-timeout "$login_timeout" \
        --ping-interval "$ping_interval" --pong-timeout 60 --keepalive "$ping_interval" >"$run/node-$i.log" 2>&1 &
    node_pids+=($!)
done
for ((i = 1; i <= nodes; i++)); do
    for _ in $(seq 100); do
        grep -q "switchboard listening on" "$run/node-$i.log" && break
        kill -0 "${node_pids[i - 1]}" 2>/dev/null || die "node $i exited; see $run/node-$i.log"
        sleep 0.1
    done
    grep -q "switchboard listening on" "$run/node-$i.log" || die "node $i did not start; see $run/node-$i.log"
done
sleep 0.5
base_slab=$(slab_kb) base_rss=$(nodes_rss_kb)
base_fds=$(nodes_fds | awk '{ n += $1 } END { print n + 0 }')
peak_fds=$base_fds peak_slab=$base_slab peak_rss=$base_rss

# 3. The load generator: its progress lines and human summary go to its log.
args=(--connections "$target" --hold "$hold" --connect-rate "$connect_rate" --login-rate "$login_rate"
    --max-in-flight "$in_flight" --json "$loadgen_json" --svg "$out.svg" --csv "$out.csv")
if ((shared_port)); then args+=(--url "ws://127.0.0.1:$port/ws"); else
    for p in "${node_ports[@]}"; do args+=(--url "ws://127.0.0.1:$p/ws"); done
fi
for pid in "${node_pids[@]}"; do args+=(--server-pid "$pid"); done
((chat_rate == 0)) || args+=(--rate "$chat_rate" --duration "$chat_duration" --pattern "$pattern")
((churn_rate == 0)) || args+=(--churn-rate "$churn_rate" --churn-duration "$churn_duration")
if [[ -z "$deadline" ]]; then
    planned=$(awk -v n="$target" -v cr="$connect_rate" -v lr="$login_rate" -v h="$hold" \
        -v cd="$chat_duration" -v ud="$churn_duration" -v c="$chat_rate" -v u="$churn_rate" \
        'BEGIN { t = n / (cr > 0 ? cr : 5000) + (lr > 0 ? n / lr : n / 5000) + h + 10;
                 if (c > 0) t += cd + 5; if (u > 0) t += ud; printf "%d", t }')
    deadline=$((2 * planned + 120))
fi
echo "capacity: loadgen ${args[*]} ${extra[*]} (deadline ${deadline} s; log $loadgen_log)"
setsid "$loadgen_bin" "${args[@]}" "${extra[@]}" >"$loadgen_log" 2>&1 </dev/null &
loadgen_pid=$!
launched=$SECONDS stop_sent=""

# Sample once a second while it runs; keep the sample with the most connections open on
# the nodes. Past the deadline, ask it to stop: it still writes its summary and chart.
inuse_before=$(tcp_inuse) rising=0 total=$base_fds low=0 high=0
while kill -0 "$loadgen_pid" 2>/dev/null; do
    sleep 1
    elapsed=$((SECONDS - launched))
    inuse=$(tcp_inuse)
    if ((inuse > inuse_before)); then rising=1; fi
    if ((elapsed % fd_every == 0)) || ((rising && inuse <= inuse_before)); then
        ((inuse > inuse_before)) || rising=0
        read -r total low high <<<"$(nodes_fds | sort -n | awk '{ a[NR] = $1; n += $1 } END { printf "%d %d %d", n, a[1], a[NR] }')"
        if ((total > peak_fds)); then
            peak_fds=$total peak_slab=$(slab_kb) peak_rss=$(nodes_rss_kb) per_node_fds="$low $high"
        fi
    fi
    inuse_before=$inuse
    line=$(printf '%4d s: %d connections on the nodes (%d to %d per node)' "$elapsed" \
        "$((total - base_fds))" "$((low - base_fds / nodes))" "$((high - base_fds / nodes))")
    if [[ -t 1 ]]; then printf '\r  %s  ' "$line"; elif ((elapsed % 10 == 0)); then echo "  $line"; fi
    if ((elapsed > deadline)); then
        if [[ -z "$stop_sent" ]]; then
            reason="deadline: the load generator ran past $deadline s and was told to stop (SIGTERM)"
            echo "capacity: $reason" >&2
            kill -TERM "$loadgen_pid" 2>/dev/null || true
            stop_sent=1 deadline=$((deadline + 120))
        else
            reason="$reason; it did not stop within 120 s and was killed"
            kill -KILL -- "-$loadgen_pid" 2>/dev/null || true
        fi
    fi
done
[[ ! -t 1 ]] || echo
set +e
wait "$loadgen_pid"
loadgen_rc=$?
set -e
loadgen_pid=""
