#!/usr/bin/env bash
# Applies the kernel settings of sysctl.conf (a million connections on one host) and
# reports the open-file limits a node will run under.
#
#   scripts/tune-kernel.sh            apply sysctl.conf, saving the values it replaces
#   scripts/tune-kernel.sh --check    show what would change, and whether the kernel as it
#                                     is can hold --target connections (scripts/preflight.sh,
#                                     the checks scripts/capacity.sh runs); write nothing
#   scripts/tune-kernel.sh --undo     restore the saved values, then forget them
#   options: --file PATH (default: sysctl.conf beside scripts/),
#            --state PATH (default: $TUNE_KERNEL_STATE or /var/lib/switchboard/sysctl.before),
#            --target N (connections for --check's preflight, default 1000000)
#
# Undo: `scripts/tune-kernel.sh --undo` writes back every value saved before the first
# apply (the state file). Running the script again is harmless: values already in place
# are reported "unchanged", and the state file keeps the values from before the FIRST run.
# Nothing is made permanent: a reboot also undoes it (to persist, copy sysctl.conf to
# /etc/sysctl.d/60-switchboard.conf).
#
# Keys this kernel lacks (e.g. net.netfilter.* without conntrack) are skipped, and keys it
# refuses (read-only /proc/sys in a container, no privilege) are reported; neither stops
# the others. Exit status: 0 unless the arguments or the files are wrong (--check reports
# the preflight's verdict; scripts/preflight.sh alone exits 1 when it refuses).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
conf="$here/../sysctl.conf"
state="${TUNE_KERNEL_STATE:-/var/lib/switchboard/sysctl.before}"
mode=apply
target=1000000

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }

while (($#)); do
    case "$1" in
        --undo) mode=undo ;;
        --check) mode=check ;;
        --file) conf="$2"; shift ;;
        --state) state="$2"; shift ;;
        --target) target="$2"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) echo "tune-kernel: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# Prints "key<TAB>value" for each setting line of a sysctl file, whitespace normalised.
settings_of() {
    local line key value
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%%#*}"
        [[ "$line" =~ ^[[:space:]]*$ ]] && continue
        if [[ "$line" != *=* ]]; then
            echo "tune-kernel: malformed line in $1: $line" >&2
            exit 2
        fi
        key=$(echo "${line%%=*}" | xargs)
        value=$(echo "${line#*=}" | xargs)
        printf '%s\t%s\n' "$key" "$value"
    done <"$1"
}

proc_path() { echo "/proc/sys/${1//.//}"; }

# Current value with tabs and runs of spaces collapsed, as sysctl.conf writes it.
current_value() { xargs <"$(proc_path "$1")"; }

applied=0 unchanged=0 absent=0 refused=0

# Sets every key of a settings file, reporting each one.
apply_file() {
    local key value path now err
    while IFS=$'\t' read -r key value; do
        path=$(proc_path "$key")
        if [[ ! -e "$path" ]]; then
            printf '  %-34s skipped: this kernel has no such key\n' "$key"
            absent=$((absent + 1))
            continue
        fi
        now=$(current_value "$key" 2>/dev/null || echo '?')
        if [[ "$now" == "$value" ]]; then
            printf '  %-34s unchanged: %s\n' "$key" "$value"
            unchanged=$((unchanged + 1))
        elif [[ "$mode" == check ]]; then
            printf '  %-34s would change: %s -> %s\n' "$key" "$now" "$value"
            applied=$((applied + 1))
        elif err=$( { printf '%s\n' "$value" >"$path"; } 2>&1 ); then
            printf '  %-34s set: %s -> %s\n' "$key" "$now" "$(current_value "$key")"
            applied=$((applied + 1))
        else
            printf '  %-34s REFUSED (%s): stays %s\n' "$key" "${err##*: }" "$now"
            refused=$((refused + 1))
        fi
    done < <(settings_of "$1")
}

# Saves the present value of every key in sysctl.conf, once (the first apply wins).
save_state() {
    if [[ -e "$state" ]]; then
        echo "previous values already saved in $state (kept from the first run)"
        return
    fi
    mkdir -p "$(dirname "$state")"
    {
        echo "# Values before scripts/tune-kernel.sh, saved $(date -u +%FT%TZ); --undo restores them."
        local key value
        while IFS=$'\t' read -r key value; do
            [[ -e "$(proc_path "$key")" ]] && echo "$key = $(current_value "$key")"
        done < <(settings_of "$conf")
    } >"$state.tmp"
    mv "$state.tmp" "$state"
    echo "previous values saved in $state"
}

report_nofile() {
    local soft hard nr_open
    soft=$(ulimit -Sn) hard=$(ulimit -Hn) nr_open=$(cat /proc/sys/fs/nr_open)
    cat <<EOF

Open files (one per connection, per process):
  this shell: soft $soft, hard $hard; kernel ceiling fs.nr_open = $nr_open
  A node raises its soft limit to the hard limit at start and logs how many
  connections that allows (about the limit minus a few dozen for itself).
EOF
    if [[ "$hard" != unlimited && "$hard" -lt 1048576 ]]; then
        cat <<EOF
  The hard limit $hard caps one node at about $((hard - 64)) connections. To raise it:
    systemd service:   LimitNOFILE=1048576   (in [Service]; then systemctl daemon-reload)
    login sessions:    /etc/security/limits.conf:  *  soft nofile 1048576
                                                   *  hard nofile 1048576
    this shell (root): ulimit -Hn 1048576 && ulimit -Sn 1048576
    docker / compose:  --ulimit nofile=1048576:1048576  /  ulimits: nofile: ...
  If it cannot be raised (no CAP_SYS_RESOURCE, as in some sandboxes), run several nodes
  on one port with --reuse-port: scripts/cluster.sh up N --reuse-port.
EOF
    fi
}

[[ -r "$conf" ]] || { echo "tune-kernel: cannot read $conf" >&2; exit 2; }

case "$mode" in
    check)
        echo "Checking $conf against the running kernel (nothing is written):"
        apply_file "$conf"
        echo "would change $applied, unchanged $unchanged, absent $absent"
        echo
        # The same checks a capacity run makes before it starts, against the kernel as it is.
        "$here/preflight.sh" --target "$target" || true
        ;;
    apply)
        echo "Applying $conf:"
        save_state
        apply_file "$conf"
        echo "set $applied, unchanged $unchanged, absent $absent, refused $refused"
        ((refused == 0)) || echo "note: refused keys keep their old values; see above why"
        ;;
    undo)
        if [[ ! -e "$state" ]]; then
            echo "nothing to undo: no saved values at $state"
            exit 0
        fi
        echo "Restoring the values saved in $state:"
        apply_file "$state"
        echo "restored $applied, unchanged $unchanged, absent $absent, refused $refused"
        rm -f "$state"
        ;;
esac
report_nofile
