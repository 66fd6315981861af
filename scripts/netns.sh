#!/usr/bin/env bash
# Runs a command in a fresh network namespace that has its own TCP established-connection
# hash table, sized for the run, instead of the host's.
#
#   scripts/netns.sh [--name NAME] [--ehash N] -- COMMAND [ARGS...]
#
#   --name NAME   the namespace (default switchboard-$$); it must not exist yet
#   --ehash N     established-hash buckets for it (default 2097152; the kernel rounds up
#                 to a power of two, at most 16777216)
#
# Why: the host's table is sized once at boot from RAM (262,144 buckets on 24 GiB) and
# cannot grow. A million loopback connections are two million sockets, 8 per bucket, and
# every arriving packet walks its bucket: `__inet_lookup_established` took 9-11% of all
# CPU during a million-connection ramp (docs/capacity.md). Since Linux 6.1 a namespace
# made while net.ipv4.tcp_child_ehash_entries is set gets a table of that size (16 MiB
# for 2M buckets). Everything the command starts (Redis, nodes, load generator) talks over
# the namespace's own loopback (127.0.0.0/8, brought up here).
#
# Settings: the per-namespace ones of sysctl.conf (ports, accept and SYN queues, socket
# buffers, TIME_WAIT) start at the kernel's defaults in a new namespace, so they are
# applied inside it; the host-wide ones (fs.*, net.ipv4.tcp_mem, net.core.
# netdev_max_backlog) are the host's: run scripts/tune-kernel.sh on the host first.
#
# Undo: net.ipv4.tcp_child_ehash_entries is put back as soon as the namespace exists (it
# is read only when one is made), and the namespace is deleted when COMMAND exits,
# Ctrl-C included. Needs root and Linux >= 6.1.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
name="switchboard-$$" ehash=2097152

die() { echo "netns: $*" >&2; exit 2; }
while (($#)); do
    case "$1" in
        --name) name=${2:-}; shift ;;
        --ehash) ehash=${2:-}; shift ;;
        --) shift; break ;;
        -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
(($#)) || die "no command given (scripts/netns.sh [--ehash N] -- COMMAND...)"
[[ "$ehash" =~ ^[0-9]+$ ]] && ((ehash >= 1 && ehash <= 16777216)) || die "--ehash needs 1..16777216, got '$ehash'"
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--name '$name' is not a plain name"
(($(id -u) == 0)) || die "needs root (ip netns add, sysctl)"
command -v ip >/dev/null || die "the ip command (iproute2) is not installed"
child=/proc/sys/net/ipv4/tcp_child_ehash_entries
[[ -e "$child" ]] || die "this kernel has no net.ipv4.tcp_child_ehash_entries (Linux >= 6.1 has it)"
[[ ! -e "/run/netns/$name" ]] || die "namespace $name already exists (ip netns del $name)"

# The setting is host-wide: one namespace is made at a time (two runs starting together
# would each get the other's size, and put back the other's value).
command -v flock >/dev/null || die "the flock command (util-linux) is not installed"
lockdir=/run/lock
[[ -d "$lockdir" ]] || lockdir=/tmp
exec 9>"$lockdir/switchboard-netns.lock"
flock 9
old=$(cat "$child")
echo "$ehash" >"$child"
if ! ip netns add "$name"; then
    echo "$old" >"$child"
    die "could not create namespace $name"
fi
echo "$old" >"$child"
flock -u 9
exec 9>&-
state=$(mktemp -d)
trap 'ip netns del "$name" 2>/dev/null || true; rm -rf "$state"' EXIT
trap 'exit 130' INT TERM
ip -n "$name" link set lo up

got=$(ip netns exec "$name" cat /proc/sys/net/ipv4/tcp_ehash_entries)
echo "netns: $name, established hash $got buckets (the host's: $(cat /proc/sys/net/ipv4/tcp_ehash_entries))"
# The namespace's own settings; host-wide keys are not visible in it ("no such key").
ip netns exec "$name" "$here/tune-kernel.sh" --state "$state/before" |
    grep -E "set:|REFUSED|^set " | sed 's/^/netns: /' || true

set +e
# This shell stays in the host's namespace: preflight.sh reads host-wide keys through it.
ip netns exec "$name" env SWITCHBOARD_NETNS="$name" \
    SWITCHBOARD_HOST_NETNS="/proc/$$/ns/net" "$@"
rc=$?
set -e
exit "$rc"
