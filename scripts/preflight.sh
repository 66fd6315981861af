#!/usr/bin/env bash
# Checks whether this host can hold TARGET WebSocket connections with both ends on it (K
# nodes and the load generator), before a capacity run starts, and names the exact
# setting to change for each check that fails. scripts/capacity.sh runs it first and
# stops at once when it refuses; scripts/tune-kernel.sh --check runs it too.
#
#   scripts/preflight.sh [--target N] [--nodes K] [--per-node P] [--in-flight M]
#                        [--per-source S] [--source-addrs A] [--json FILE] [--quiet]
#
#   --target N        connections (default 1000000)
#   --nodes K         node processes (default ceil(N / per-node))
#   --per-node P      connections per node (default 19000)
#   --in-flight M     handshakes the load generator keeps under way (default 2000)
#   --per-source S    connections per source address (default half the port range)
#   --source-addrs A  source addresses available (default: as many as needed, loopback)
#   --json FILE       also write the checks as JSON: [{check, ok, have, need, fix}]
#
# Checks: source ports x addresses, fs.file-max, fs.nr_open and the per-process open-file
# limit against connections per node, net.core.somaxconn and net.ipv4.tcp_max_syn_backlog
# against the handshakes in flight, net.ipv4.tcp_mem against N sockets, and free memory.
# Exit status: 0 when the run can succeed (notes allowed), 1 when a check refuses, 2 on
# bad arguments. Reads PREFLIGHT_PROC (default /proc) and PREFLIGHT_NOFILE (default
# `ulimit -Hn`) instead of the real ones, for tests.
#
# Undo: nothing to undo; it only reads /proc and writes nothing but --json FILE.
set -euo pipefail

proc=${PREFLIGHT_PROC:-/proc}
nofile=${PREFLIGHT_NOFILE:-$(ulimit -Hn)}
target=1000000 nodes="" per_node=19000 in_flight=2000 per_source="" source_addrs="" json="" quiet=0

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }
number() { [[ "$2" =~ ^[0-9]+$ ]] || { echo "preflight: $1 needs a whole number, got '$2'" >&2; exit 2; }; }

while (($#)); do
    case "$1" in
        --target) number "$1" "${2:-}"; target=$2; shift ;;
        --nodes) number "$1" "${2:-}"; nodes=$2; shift ;;
        --per-node) number "$1" "${2:-}"; per_node=$2; shift ;;
        --in-flight) number "$1" "${2:-}"; in_flight=$2; shift ;;
        --per-source) number "$1" "${2:-}"; per_source=$2; shift ;;
        --source-addrs) number "$1" "${2:-}"; source_addrs=$2; shift ;;
        --json) json=${2:-}; shift ;;
        --quiet) quiet=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "preflight: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
((per_node > 0)) || { echo "preflight: --per-node must be > 0" >&2; exit 2; }
[[ -n "$nodes" ]] || nodes=$(((target + per_node - 1) / per_node))
((nodes > 0)) || nodes=1

# A /proc/sys value by its sysctl name. In a network namespace of its own
# (scripts/netns.sh) host-wide keys such as net.ipv4.tcp_mem are not visible: they are
# read in the host's namespace, which netns.sh names in SWITCHBOARD_HOST_NETNS.
sysctl_value() {
    local path="$proc/sys/${1//.//}"
    if [[ ! -r "$path" && "$proc" == /proc && -n "${SWITCHBOARD_HOST_NETNS:-}" ]]; then
        nsenter --net="$SWITCHBOARD_HOST_NETNS" cat "$path" 2>/dev/null | xargs
        return
    fi
    [[ -r "$path" ]] || { echo ""; return; }
    xargs <"$path"
}
meminfo_kb() { awk -v k="$1:" '$1 == k { print $2 }' "$proc/meminfo" 2>/dev/null; }

refused=0
results=()

# Records one check: name, ok (1/0), what the host has, what the run needs, the fix.
check() {
    local name=$1 ok=$2 have=$3 need=$4 fix=$5
    if ((ok)); then
        ((quiet)) || printf '  ok      %-30s %s (needs %s)\n' "$name" "$have" "$need"
    else
        refused=$((refused + 1))
        printf '  REFUSE  %-30s %s, needs %s\n          change: %s\n' "$name" "$have" "$need" "$fix"
    fi
    results+=("$(printf '{"check":"%s","ok":%s,"have":"%s","need":"%s","fix":"%s"}' \
        "$name" "$([[ $ok == 1 ]] && echo true || echo false)" "$have" "$need" "${fix//\"/\\\"}")")
}
note() { ((quiet)) || printf '  note    %s\n' "$*"; }

((quiet)) || echo "preflight: $target connections over $nodes node(s), both ends on this host ($proc)"

# Source ports: the load generator keeps each source address at most half full.
read -r port_lo port_hi <<<"$(sysctl_value net.ipv4.ip_local_port_range)"
ports=$((port_hi - port_lo + 1))
[[ -n "$per_source" ]] || per_source=$((ports / 2))
((per_source > 0)) || per_source=1
addrs_needed=$(((target + per_source - 1) / per_source))
addrs_have=${source_addrs:-16777213}
check "source ports x addresses" $((addrs_needed <= addrs_have && addrs_needed <= 65536 && per_source <= ports)) \
    "$ports ports per address ($port_lo-$port_hi), $per_source used per address" \
    "$addrs_needed source addresses$([[ -n "$source_addrs" ]] && echo " ($source_addrs given)")" \
    "sysctl -w net.ipv4.ip_local_port_range='10000 65535' (or more --source-addrs)"
((per_source * 2 <= ports)) || note "more than half of each address's ports in use: a kernel-chosen port (--source-ports kernel) searches long"

# File handles, system-wide: both ends of every connection, plus what is open now.
file_max=$(sysctl_value fs.file-max)
read -r files_open _ _ <<<"$(sysctl_value fs.file-nr)"
files_need=$((2 * target + nodes * 64 + 20000 + ${files_open:-0}))
check "fs.file-max" $((file_max >= files_need)) "$file_max" \
    "$files_need (2 x $target sockets + ${files_open:-0} open now + margin)" \
    "sysctl -w fs.file-max=$(( files_need > 4194304 ? files_need : 4194304 ))"

# One node's descriptors: its connections plus a few dozen of its own.
nr_open=$(sysctl_value fs.nr_open)
per_process=$((per_node + 64))
check "fs.nr_open" $((nr_open >= per_process)) "$nr_open" "$per_process per node ($per_node connections)" \
    "sysctl -w fs.nr_open=$(( per_process > 2097152 ? per_process : 2097152 ))"
if [[ "$nofile" == unlimited ]]; then nofile=$nr_open; fi
check "open files per process" $((nofile >= per_process)) "hard limit $nofile" \
    "$per_process per node ($per_node connections)" \
    "ulimit -Hn $per_process (LimitNOFILE=), or more nodes: --per-node $((nofile > 64 ? nofile - 64 : 1))"

# Accept and SYN queues: every handshake the load generator has under way may wait in one.
# Loopback packets wait in this per-CPU backlog; past it they are dropped, and a
# keepalive probe dropped three times aborts its connection.
backlog=$(sysctl_value net.core.netdev_max_backlog)
need_backlog=$(( target >= 200000 ? 262144 : 1000 ))
check "net.core.netdev_max_backlog" $((backlog >= need_backlog)) "$backlog" "$need_backlog (loopback packets queued per CPU)" \
    "sysctl -w net.core.netdev_max_backlog=262144 (scripts/tune-kernel.sh applies sysctl.conf)"
somaxconn=$(sysctl_value net.core.somaxconn)
check "net.core.somaxconn" $((somaxconn >= in_flight)) "$somaxconn" "$in_flight (handshakes in flight)" \
    "sysctl -w net.core.somaxconn=65535 (or loadgen --max-in-flight $somaxconn)"
syn_backlog=$(sysctl_value net.ipv4.tcp_max_syn_backlog)
check "net.ipv4.tcp_max_syn_backlog" $((syn_backlog >= in_flight)) "$syn_backlog" "$in_flight (handshakes in flight)" \
    "sysctl -w net.ipv4.tcp_max_syn_backlog=65535 (or loadgen --max-in-flight $syn_backlog)"

# Socket buffer memory: a message queued on every connection at once charges each at
# least one page; past the hard limit (third value, in pages) the kernel drops and resets.
read -r _ mem_pressure mem_high <<<"$(sysctl_value net.ipv4.tcp_mem)"
check "net.ipv4.tcp_mem" $((mem_high >= target)) "max $mem_high pages ($((mem_high * 4 / 1024)) MiB)" \
    "$target pages (one 4 KiB page queued on each connection)" \
    "sysctl -w net.ipv4.tcp_mem='$((target)) $((target * 3 / 2)) $((target * 2))'"
((mem_pressure >= target)) || note "net.ipv4.tcp_mem pressure at $mem_pressure pages: with data queued on more sockets than that, buffers shrink"

# Memory: about 8.1 KB of kernel memory per connection for both ends (measured), plus the
# nodes' and the load generator's own few hundred bytes; 10 KiB each, and 1 GiB spare.
avail_kb=$(meminfo_kb MemAvailable)
mem_need_kb=$((target * 10 + 1048576))
check "free memory" $((${avail_kb:-0} >= mem_need_kb)) "MemAvailable $((${avail_kb:-0} / 1024)) MiB" \
    "$((mem_need_kb / 1024)) MiB (10 KiB per connection, both ends, + 1 GiB)" \
    "free memory (stop other work), or a smaller --target"

ehash=$(sysctl_value net.ipv4.tcp_ehash_entries)
if [[ -n "$ehash" && "$ehash" =~ ^-?[0-9]+$ ]]; then
    ehash=${ehash#-}
    ((ehash == 0 || 2 * target <= 8 * ehash)) ||
        note "$((2 * target)) sockets in $ehash established-hash buckets: $((2 * target / ehash)) per lookup (a fresh netns with net.ipv4.tcp_child_ehash_entries gets its own table)"
fi

if [[ -n "$json" ]]; then
    (IFS=,; echo "[${results[*]}]") >"$json"
fi
if ((refused)); then
    echo "preflight: REFUSED ($refused check(s)): $target connections cannot succeed on this host as it is; change the settings above (scripts/tune-kernel.sh applies sysctl.conf)"
    exit 1
fi
((quiet)) || echo "preflight: OK for $target connections"
