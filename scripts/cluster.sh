#!/usr/bin/env bash
# Runs a whole switchboard cluster on this host, natively (no Docker): one redis-server,
# N nodes joined through it, and nginx in front as the WebSocket load balancer; or, with
# --reuse-port, N nodes sharing ONE port through SO_REUSEPORT (no nginx), which is how a
# million connections fit on one host whose processes are capped in open files.
#
#   scripts/cluster.sh up [N] [--reuse-port] [--no-redis]   start (N defaults to 3)
#   scripts/cluster.sh status                                what runs where (exit 1 if a
#                                                            process died, 3 if not up)
#   scripts/cluster.sh down                                  stop everything it started
#   scripts/cluster.sh render-nginx OUT LISTEN_PORT NODE_PORT...
#                                      write an nginx.conf from deploy/nginx.conf
#
# Undo: `scripts/cluster.sh down` stops every process it started (SIGTERM, then SIGKILL
# after 20 s: a node drains its clients first); `rm -rf run/cluster` removes its logs. `up` on a running cluster only
# reports it, so running it twice is harmless.
#
# Everything lives in the run dir (default run/cluster/, gitignored): pid files, logs,
# the rendered nginx.conf and its prefix directory. Settings (environment):
#   CLUSTER_DIR         run dir                                   (run/cluster)
#   CLUSTER_PORT        nginx port, or the shared node port       (8080)
#   CLUSTER_NODE_PORT   first node port in nginx mode; node i
#                       listens on CLUSTER_NODE_PORT + i - 1      (9101)
#   CLUSTER_REDIS_PORT  redis-server port                         (6390)
#   CLUSTER_REACTORS    reactor threads per node                  (1)
#   CLUSTER_NODE_ARGS   extra node flags, e.g. "--routing broadcast"
#   SWITCHBOARD_BIN     node binary (default target/release/switchboard, cargo-built)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${CLUSTER_DIR:-$root/run/cluster}
lb_port=${CLUSTER_PORT:-8080}
node_port=${CLUSTER_NODE_PORT:-9101}
redis_port=${CLUSTER_REDIS_PORT:-6390}
reactors=${CLUSTER_REACTORS:-1}
read -r -a node_args <<<"${CLUSTER_NODE_ARGS:-}"
template="$root/deploy/nginx.conf"

die() { echo "cluster: $*" >&2; exit 1; }

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

# The node binary: SWITCHBOARD_BIN as given, else target/release/switchboard brought up to
# date by cargo (a no-op when fresh; an old binary is used, with a warning, if the build fails).
node_binary() {
    if [[ -n "${SWITCHBOARD_BIN:-}" ]]; then
        [[ -x "$SWITCHBOARD_BIN" ]] || die "SWITCHBOARD_BIN=$SWITCHBOARD_BIN is not an executable"
        echo "$SWITCHBOARD_BIN"
        return
    fi
    local bin=$root/target/release/switchboard
    if ! (cd "$root" && cargo build --release -q -p switchboard >&2); then
        [[ -x "$bin" ]] || die "cannot build $bin"
        echo "warning: cargo build failed; using the existing $bin" >&2
    fi
    echo "$bin"
}

# Running (a zombie, exited but not yet reaped, does not count).
alive() {
    [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null &&
        [[ "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]]
}

pid_of() { cat "$dir/$1.pid" 2>/dev/null || true; }

# Starts a command in its own session, logging to $dir/NAME.log, and records its pid.
launch() {
    local name=$1
    shift
    setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

# Waits up to 10 s for a readiness probe, failing early if the process died.
await() {
    local name=$1 pid
    shift
    pid=$(pid_of "$name")
    for _ in $(seq 100); do
        "$@" >/dev/null 2>&1 && return 0
        if ! alive "$pid"; then
            echo "cluster: $name exited; the end of $dir/$name.log:" >&2
            tail -n 20 "$dir/$name.log" >&2 || true
            return 1
        fi
        sleep 0.1
    done
    echo "cluster: $name is not ready after 10 s; see $dir/$name.log" >&2
    return 1
}

http_ok() { curl -sf --max-time 1 -o /dev/null "$1"; }

# render_nginx OUT LISTEN_PORT NODE_PORT...: deploy/nginx.conf with local ports, and the
# pid, logs, temp files and limits of a private run dir (the directory of OUT).
render_nginx() {
    local out=$1 listen=$2
    shift 2
    (($# > 0)) || die "render-nginx needs at least one node port"
    local run nofile
    run=$(cd "$(dirname "$out")" && pwd)
    nofile=$(ulimit -Hn)
    [[ "$nofile" == unlimited ]] && nofile=1048576
    mkdir -p "$run/nginx/tmp"
    awk -v run="$run" -v listen="$listen" -v nofile="$nofile" -v ports="$*" '
        /# BEGIN upstream servers/ {
            print; n = split(ports, p, " ")
            for (i = 1; i <= n; i++) printf "        server 127.0.0.1:%s;\n", p[i]
            skip = 1; next
        }
        /# END upstream servers/ { skip = 0 }
        skip { next }
        /^worker_rlimit_nofile / { print "worker_rlimit_nofile " nofile ";"; next }
        /^ *worker_connections / { print "    worker_connections " nofile ";"; next }
        /^error_log / { print "error_log " run "/nginx-error.log warn;"; next }
        /^pid / { print "pid " run "/nginx.pid;"; next }
        /^ *listen [0-9]+/ { sub(/listen [0-9]+/, "listen 127.0.0.1:" listen) }
        { print }
        /^http \{/ {
            print "    client_body_temp_path " run "/nginx/tmp/body;"
            print "    proxy_temp_path " run "/nginx/tmp/proxy;"
        }
    ' "$template" >"$out"
}

write_state() {
    cat >"$dir/cluster.env" <<EOF
MODE=$mode
NODES=$nodes
REDIS=$with_redis
PORT=$lb_port
REDIS_PORT=$redis_port
NODE_PORTS="${ports[*]}"
EOF
}

any_alive() {
    local f
    for f in "$dir"/*.pid; do
        [[ -e "$f" ]] && alive "$(cat "$f")" && return 0
    done
    return 1
}

cmd_up() {
    nodes=3 mode=nginx with_redis=1
    while (($#)); do
        case "$1" in
            --reuse-port) mode=reuseport ;;
            --no-redis) with_redis=0 ;;
            [0-9]*) nodes=$1 ;;
            *) die "up: unknown argument $1 (see --help)" ;;
        esac
        shift
    done
    ((nodes >= 1)) || die "up: N must be at least 1"
    mkdir -p "$dir"
    if any_alive; then
        echo "cluster already up (scripts/cluster.sh down first to change it):"
        cmd_status || true
        return 0
    fi
    rm -f "$dir"/*.pid "$dir/cluster.env"
    ((with_redis)) && { command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"; }
    [[ $mode == nginx ]] && { command -v nginx >/dev/null || die "nginx is not installed (apt-get install nginx-light)"; }
    [[ $mode == nginx ]] && ((!with_redis)) && ((nodes > 1)) &&
        echo "warning: without Redis the nodes do not know each other's users" >&2
    local bin
    bin=$(node_binary)
    ports=()
    trap 'echo "cluster: start failed, stopping what started" >&2; cmd_down >&2' ERR

    local redis_args=()
    if ((with_redis)); then
        # A bus, not a store: no snapshots, no append-only file.
        launch redis redis-server --port "$redis_port" --bind 127.0.0.1 --save "" \
            --appendonly no --daemonize no --logfile ""
        await redis redis-cli -p "$redis_port" ping
        redis_args=(--redis "redis://127.0.0.1:$redis_port")
    fi

    local i port
    for ((i = 1; i <= nodes; i++)); do
        if [[ $mode == reuseport ]]; then
            port=$lb_port
            launch "node-$i" env RUST_LOG="${RUST_LOG:-info}" "$bin" \
                --listen "127.0.0.1:$port" --reuse-port --reactors "$reactors" \
                --node-id "node-$i" "${redis_args[@]}" "${node_args[@]}"
            await "node-$i" grep -q "switchboard listening on" "$dir/node-$i.log"
        else
            port=$((node_port + i - 1))
            # Behind nginx: the client's address is in X-Forwarded-For.
            launch "node-$i" env RUST_LOG="${RUST_LOG:-info}" "$bin" \
                --listen "127.0.0.1:$port" --reactors "$reactors" --trusted-proxy 127.0.0.1 \
                --node-id "node-$i" "${redis_args[@]}" "${node_args[@]}"
            await "node-$i" http_ok "http://127.0.0.1:$port/healthz"
        fi
        ports+=("$port")
    done

    if [[ $mode == nginx ]]; then
        render_nginx "$dir/nginx.conf" "$lb_port" "${ports[@]}"
        launch nginx nginx -p "$dir/nginx/" -c "$dir/nginx.conf" -g "daemon off;"
        await nginx http_ok "http://127.0.0.1:$lb_port/nginx-health"
    fi
    trap - ERR
    write_state
    cmd_status
}

# Stops one recorded process (TERM, then KILL after 20 s: a node's drain closes its
# clients over --drain-secs, 10 s by default, plus their close handshakes) and forgets it.
stop() {
    local name=$1 pid
    pid=$(pid_of "$name")
    rm -f "$dir/$name.pid"
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        alive "$pid" || { echo "stopped $name (pid $pid)"; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    echo "killed $name (pid $pid): it did not stop within 20 s"
}

cmd_down() {
    [[ -d "$dir" ]] || { echo "nothing running (no $dir)"; return 0; }
    local f name found=0
    # Front to back: nginx first (clients go away), then nodes, then the bus.
    for f in "$dir"/nginx.pid "$dir"/node-*.pid "$dir"/redis.pid; do
        [[ -e "$f" ]] || continue
        found=1
        name=$(basename "$f" .pid)
        stop "$name"
    done
    rm -f "$dir/cluster.env"
    ((found)) || echo "nothing running"
}

# The admin address a node printed (its second stdout line, in its log), or "".
admin_of() {
    sed -n 's/^switchboard admin on //p' "$dir/$1.log" 2>/dev/null | tail -n 1
}

# The first value of a metric on a node (by name: node-1...), or "?".
metric() {
    local admin
    admin=$(admin_of "$1")
    [[ -n $admin ]] || { echo "?"; return 0; }
    curl -sf --max-time 1 "http://$admin/metrics" 2>/dev/null |
        awk -v m="$2" '$1 == m { print $2; found = 1; exit } END { if (!found) print "?" }'
}

cmd_status() {
    [[ -e "$dir/cluster.env" ]] || { echo "cluster is not up ($dir/cluster.env missing)"; return 3; }
    # shellcheck disable=SC1091
    source "$dir/cluster.env"
    local down=0 f name pid state port i=0
    local -a node_ports
    read -r -a node_ports <<<"$NODE_PORTS"
    echo "mode $MODE, $NODES node(s), redis $([[ $REDIS == 1 ]] && echo "on port $REDIS_PORT" || echo off), entry ws://127.0.0.1:$PORT/ws"
    for f in "$dir"/redis.pid "$dir"/node-*.pid "$dir"/nginx.pid; do
        [[ -e "$f" ]] || continue
        name=$(basename "$f" .pid)
        pid=$(cat "$f")
        if alive "$pid"; then state=up; else state=DOWN; down=1; fi
        case $name in
            redis) port=$REDIS_PORT ;;
            nginx) port=$PORT ;;
            node-*)
                i=${name#node-}
                port=${node_ports[i - 1]}
                ;;
        esac
        if [[ $name == node-* && $state == up ]]; then
            printf '  %-8s pid %-8s %-4s port %-6s admin %-21s connections %s users %s\n' "$name" "$pid" \
                "$state" "$port" "$(admin_of "$name")" "$(metric "$name" switchboard_connections)" \
                "$(metric "$name" switchboard_users)"
        else
            printf '  %-8s pid %-8s %-4s port %s\n' "$name" "$pid" "$state" "$port"
        fi
    done
    return $down
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    render-nginx)
        shift
        (($# >= 3)) || die "usage: render-nginx OUT LISTEN_PORT NODE_PORT..."
        render_nginx "$@"
        ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
esac
