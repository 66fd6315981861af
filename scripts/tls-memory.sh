#!/usr/bin/env bash
# Measures what TLS costs the load generator per connection: one switchboard node with
# nginx in front of it (the config scripts/cluster.sh render-nginx renders from
# deploy/nginx.conf, with 4 workers), once with `ssl` on nginx's listen line (a test CA
# and certificate made here with openssl, trusted through --ca) and once plain. For each
# of COUNTS, loadgen connects, logs in and holds that many users, and reports its
# workers' RSS growth per connection (memory.loadgen_rss_per_connection), and nginx's plus
# the node's. Writes OUT and prints a table.
#
#   scripts/tls-memory.sh                      # 10,000 and 18,000 connections
#   COUNTS="5000" OUT=/tmp/m.json scripts/tls-memory.sh
#
# Needs nginx and openssl. Kills every process it started on exit and removes its
# scratch directory; the only thing left is OUT.
set -euo pipefail

cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-"10000 18000"}
HOLD=${HOLD:-3}
OUT=${OUT:-bench/results/tls-memory.json}
WORK=$(mktemp -d /tmp/tls-memory.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

die() { echo "tls-memory: $*" >&2; exit 1; }
command -v nginx >/dev/null || die "nginx is missing (apt-get install nginx-light)"
command -v openssl >/dev/null || die "openssl is missing (apt-get install openssl)"
cargo build --release --quiet -p switchboard -p loadgen

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

await_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "nothing listens on port $1"
}

# A test CA and a certificate for localhost it signed (webpki refuses a CA certificate
# as the server's own, so a plain `openssl req -x509` one would not do).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=tls-memory-ca \
    -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/cert.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 2 \
    -extfile "$WORK/ext" -out "$WORK/cert.pem" 2>/dev/null

node_port=$(free_port)
target/release/switchboard --listen "127.0.0.1:$node_port" --reactors 1 --max-connections-per-address 0 \
    --connect-rate 0 --message-rate 0 >"$WORK/node.log" 2>&1 &
node_pid=$!
PIDS+=("$node_pid")
await_port "$node_port"

# start_nginx tls|plain: sets NGINX_PORT and NGINX_PIDS (master and workers).
start_nginx() {
    local mode=$1 conf=$WORK/nginx-$1.conf
    NGINX_PORT=$(free_port)
    scripts/cluster.sh render-nginx "$conf" "$NGINX_PORT" "$node_port"
    sed -i 's/^worker_processes auto;/worker_processes 4;/' "$conf"
    if [[ $mode == tls ]]; then
        sed -i "s|listen 127.0.0.1:$NGINX_PORT |listen 127.0.0.1:$NGINX_PORT ssl |; s|^\( *\)location / {|\1ssl_certificate $WORK/cert.pem;\n\1ssl_certificate_key $WORK/key.pem;\n\1location / {|" "$conf"
    fi
    nginx -p "$WORK/nginx/" -c "$conf" -g "daemon off;" >"$WORK/nginx-$mode.log" 2>&1 &
    NGINX_MASTER=$!
    PIDS+=("$NGINX_MASTER")
    await_port "$NGINX_PORT"
    sleep 0.5
    mapfile -t NGINX_PIDS < <(echo "$NGINX_MASTER"; pgrep -P "$NGINX_MASTER")
}

stop_nginx() {
    kill "$NGINX_MASTER" 2>/dev/null || true
    wait "$NGINX_MASTER" 2>/dev/null || true
}

: >"$WORK/runs.txt"
for mode in plain tls; do
    start_nginx "$mode"
    for count in $COUNTS; do
        url="ws://127.0.0.1:$NGINX_PORT/ws" extra=()
        [[ $mode == tls ]] && url="wss://localhost:$NGINX_PORT/ws" extra=(--ca "$WORK/ca.pem")
        pids=(--server-pid "$node_pid")
        for p in "${NGINX_PIDS[@]}"; do pids+=(--server-pid "$p"); done
        echo "tls-memory: $mode, $count connections" >&2
        json=$WORK/$mode-$count.json
        # Source ports below the kernel's ephemeral range: a port the load generator binds
        # is one the kernel no longer hands to nginx's connects to the node.
        target/release/loadgen --url "$url" "${extra[@]}" "${pids[@]}" --connections "$count" --hold "$HOLD" \
            --source-port-range 10000-30000 \
            --quiet --json "$json" >/dev/null 2>"$WORK/loadgen.log" || { cat "$WORK/loadgen.log" >&2; die "loadgen failed"; }
        echo "$mode $count $json" >>"$WORK/runs.txt"
    done
    stop_nginx
done

mkdir -p "$(dirname "$OUT")"
python3 - "$WORK/runs.txt" "$OUT" <<'PY'
import json, os, platform, sys

rows = []
for line in open(sys.argv[1]):
    mode, count, path = line.split()
    s = json.load(open(path))
    m = s["memory"]
    rows.append({
        "mode": mode, "connections": int(count), "established": s["connect"]["established"],
        "logged_in": s["login"]["ok"], "workers": s["config"]["workers"],
        "loadgen_rss_per_connection": m["loadgen_rss_per_connection"],
        "loadgen_rss_bytes": m["full"]["loadgen_rss"] - m["baseline"]["loadgen_rss"],
        "nginx_and_node_rss_per_connection": m["server_rss_per_connection"],
        "slab_per_connection": m["slab_per_connection"],
        "connect_p50_ms": s["connect"]["latency"]["p50_us"] / 1000,
        "connect_p99_ms": s["connect"]["latency"]["p99_us"] / 1000,
        "connect_loadgen_us_per_connection": s["connect"]["cpu"]["loadgen_us_per_op"],
    })
result = {
    "what": "load generator RSS growth per connection (connect, login, hold) through nginx, TLS (wss://) vs plain (ws://); "
            "server figures are nginx (master and workers) plus the node",
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release()},
    "runs": rows,
}
json.dump(result, open(sys.argv[2], "w"), indent=1)
print(f"{'mode':<6} {'connections':>11} {'loadgen B/conn':>14} {'nginx+node B/conn':>17} {'slab B/conn':>11} {'connect us/conn':>15}")
for r in rows:
    print(f"{r['mode']:<6} {r['connections']:>11} {r['loadgen_rss_per_connection']!s:>14} "
          f"{r['nginx_and_node_rss_per_connection']!s:>17} {r['slab_per_connection']!s:>11} "
          f"{r['connect_loadgen_us_per_connection']!s:>15}")
print(f"written to {sys.argv[2]}")
PY
