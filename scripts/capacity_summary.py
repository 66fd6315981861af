"""The summary of one scripts/capacity.sh run, written whatever happened.

capacity.sh passes its facts in CAP_* environment variables; this reads them with the
load generator's JSON summary (when it got that far), the preflight checks and the
kernel's TCP counters before and after (nstat), and writes one JSON object to
CAP_SUMMARY, then prints it and a few human lines. A run that failed says why in
`reason` (the preflight's refusal, a deadline, the load generator's own failures).

Undo: nothing to undo; it only writes CAP_SUMMARY.
"""

import csv
import json
import os

# The kernel's counters that say why connections failed or queued (nstat names).
TCP_COUNTERS = [
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPAbortOnTimeout",
    "TcpExtTCPTimeouts",
    "TcpExtTCPSynRetrans",
    "TcpExtSyncookiesSent",
    "TcpEstabResets",
    "TcpOutRsts",
    "TcpAttemptFails",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnClose",
    "TcpExtTCPAbortOnMemory",
    "TcpExtTCPMemoryPressures",
    "TcpExtTCPTimeWaitOverflow",
]

env = os.environ


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_nstat(path):
    counters = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    counters[parts[0]] = int(parts[1])
    except OSError:
        pass
    return counters


def kernel_counters():
    before, after = read_nstat(env["CAP_NSTAT_BEFORE"]), read_nstat(env["CAP_NSTAT_AFTER"])
    if not after:
        return None
    return {name: after.get(name, 0) - before.get(name, 0) for name in TCP_COUNTERS}


def ehash_buckets():
    """The established-connection hash the run's sockets were in (its namespace's)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
            return abs(int(f.read()))
    except (OSError, ValueError):
        return None


def phase_cpu():
    """Mean CPU per phase, in % of one core, from the run's per-second CSV (the machine's,
    the load generator's, the nodes'), in the order the phases ran."""
    try:
        with open(env["CAP_SVG"][: -len(".svg")] + ".csv") as f:
            rows = list(csv.DictReader(f))
    except (OSError, csv.Error):
        return None
    phases = {}
    for row in rows:
        phases.setdefault(row["phase"], []).append(row)

    def mean(samples, key):
        return round(sum(float(r[key] or 0) for r in samples) / len(samples), 1)

    return {
        name: {"samples": len(samples), "machine_pct": mean(samples, "machine_cpu_pct"),
               "loadgen_pct": mean(samples, "loadgen_cpu_pct"), "nodes_pct": mean(samples, "server_cpu_pct")}
        for name, samples in phases.items()
    }


def first_limit(ok, phases, cpus):
    """What ran out first in a run that fell short: the CPU, when a phase that does work
    kept the whole machine at 90% of its cores or more; None when no phase did."""
    if ok or not phases or not cpus:
        return None
    for name, p in phases.items():
        if name in ("connect", "login", "chat", "churn") and p["machine_pct"] >= 90 * cpus:
            rest = round(p["machine_pct"] - p["loadgen_pct"] - p["nodes_pct"], 1)
            return {"resource": "cpu", "phase": name, "machine_pct": p["machine_pct"], "of_pct": 100 * cpus,
                    "loadgen_pct": p["loadgen_pct"], "nodes_pct": p["nodes_pct"], "rest_pct": rest}
    return None


def per_connection(delta_kb, conns):
    return round(delta_kb * 1024 / conns, 1) if conns > 0 else None


def pick(d, *path):
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def loadgen_part(lg):
    """What the load generator measured, the headline figures of each phase."""
    if lg is None:
        return None
    return {
        "ok": lg.get("ok"),
        "failures": lg.get("failures"),
        "cut_short": lg.get("cut_short"),
        "connect": {k: pick(lg, "connect", k) for k in ("established", "failed", "seconds", "per_second",
                                                        "ports_skipped", "ports_fallback", "latency", "cpu")},
        "login": {k: pick(lg, "login", k) for k in ("ok", "failed", "seconds", "per_second", "latency", "cpu")},
        "chat": {k: pick(lg, "chat", k) for k in ("ran", "skipped_reason", "target_rate", "sent", "delivered", "lost",
                                                  "duplicated", "misrouted", "send_behind", "sent_per_s",
                                                  "delivered_per_s", "latency", "service_latency",
                                                  "generator_lag")},
        "churn": lg.get("churn"),
        "errors": lg.get("errors"),
        "causes": lg.get("causes"),
        # The kernel's TCP counters from the start to the end of the phases, before the
        # connections close (the whole run's, teardown included, are kernel_tcp_counters).
        "kernel_tcp": lg.get("kernel_tcp"),
        "memory": lg.get("memory"),
        "cpu": lg.get("cpu"),
        "config": lg.get("config"),
    }


def log_tail():
    """The load generator's last words, from its log."""
    try:
        with open(env["CAP_LOADGEN_LOG"]) as f:
            lines = [line.strip() for line in f if line.strip() and not line.startswith(("Usage:", "For more"))]
    except OSError:
        return "no log"
    return " / ".join(lines[-2:]) or "empty log"


def reason_of(lg, rc):
    if env["CAP_REASON"]:
        return env["CAP_REASON"]
    if lg is None:
        return f"the load generator wrote no summary (exit status {rc or 'none'}): {log_tail()}"
    if not lg.get("ok"):
        return "; ".join(lg.get("failures") or ["the load generator reported a failure"])
    return None


def main():
    lg = read_json(env["CAP_LOADGEN_JSON"])
    rc = env["CAP_LOADGEN_RC"]
    conns = int(env["CAP_PEAK_FDS"]) - int(env["CAP_BASE_FDS"])
    fds = env["CAP_FDS"].split()
    reason = reason_of(lg, rc)
    summary = {
        "ok": reason is None and int(env["CAP_ALIVE"]) == int(env["CAP_NODES"]),
        "reason": reason,
        "command": env["CAP_COMMAND"],
        "machine": pick(lg, "machine"),
        "target": int(env["CAP_TARGET"]),
        "nodes": int(env["CAP_NODES"]),
        "nodes_alive_at_end": int(env["CAP_ALIVE"]),
        "redis": env["CAP_STANDALONE"] != "1",
        "shared_port": env["CAP_SHARED_PORT"] == "1",
        "hold_s": float(env["CAP_HOLD"]),
        "node_ping_interval_s": int(env.get("CAP_PING_INTERVAL", "25")),
        "node_login_timeout_s": int(env.get("CAP_LOGIN_TIMEOUT", "10")),
        "connect_rate": int(env["CAP_CONNECT_RATE"]),
        "login_rate": int(env["CAP_LOGIN_RATE"]),
        "max_in_flight": int(env["CAP_IN_FLIGHT"]),
        "chat": {"rate": int(env["CAP_CHAT_RATE"]), "duration_s": float(env["CAP_CHAT_DURATION"]),
                 "pattern": env["CAP_PATTERN"]},
        "churn": {"rate": int(env["CAP_CHURN_RATE"]), "duration_s": float(env["CAP_CHURN_DURATION"])},
        "wall_s": int(env["CAP_WALL"]),
        "netns": env.get("CAP_NETNS") or None,
        "ehash_buckets": ehash_buckets(),
        "preflight": read_json(env["CAP_PREFLIGHT"]),
        "connections_at_peak": conns,
        "node_fds_min_max_at_peak": [int(x) for x in fds] if fds else None,
        "node_rss_kb": {"baseline": int(env["CAP_BASE_RSS"]), "peak": int(env["CAP_PEAK_RSS"])},
        "node_rss_per_connection_bytes": per_connection(int(env["CAP_PEAK_RSS"]) - int(env["CAP_BASE_RSS"]), conns),
        "slab_kb": {"baseline": int(env["CAP_BASE_SLAB"]), "peak": int(env["CAP_PEAK_SLAB"])},
        "slab_per_connection_bytes_both_ends":
            per_connection(int(env["CAP_PEAK_SLAB"]) - int(env["CAP_BASE_SLAB"]), conns),
        # nstat from before the nodes start to after everything stopped: the teardown's
        # resets and TIME_WAIT overflows included; loadgen.kernel_tcp leaves them out.
        "kernel_tcp_counters": kernel_counters(),
        "loadgen_exit": int(rc) if rc else None,
        "loadgen": loadgen_part(lg),
        "loadgen_json": env["CAP_LOADGEN_JSON"],
        "loadgen_log": env["CAP_LOADGEN_LOG"],
        "chart": env["CAP_SVG"] if os.path.exists(env["CAP_SVG"]) else None,
    }
    summary["cpu_by_phase"] = phase_cpu()
    summary["limit"] = first_limit(summary["ok"], summary["cpu_by_phase"], pick(lg, "machine", "cpus"))
    with open(env["CAP_SUMMARY"], "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps(summary))
    human(summary)


def human(s):
    lg = s["loadgen"] or {}
    ramp = pick(lg, "connect", "cpu") or {}
    fds = s["node_fds_min_max_at_peak"]
    spread = f", {fds[0]}-{fds[1]} fds per node" if fds else ""
    print(f"capacity: {s['connections_at_peak']}/{s['target']} connections on {s['nodes']} nodes"
          f" ({s['nodes_alive_at_end']} alive at end){spread}; node RSS {s['node_rss_per_connection_bytes']} B/conn,"
          f" kernel slab {s['slab_per_connection_bytes_both_ends']} B/conn (both ends)")
    if ramp:
        print(f"ramp cpu: per connection load generator {ramp.get('loadgen_us_per_op')} us,"
              f" nodes {ramp.get('servers_us_per_op')} us, whole machine {ramp.get('machine_us_per_op')} us")
    during = pick(lg, "kernel_tcp") or {}
    moved = ", ".join(f"{k} {v}" for k, v in during.items() if v)
    print(f"kernel:   during the run: {moved or 'no TCP error counter moved'} (whole machine)")
    counters = s["kernel_tcp_counters"] or {}
    moved = ", ".join(f"{k} {v}" for k, v in counters.items() if v)
    print(f"          with start and teardown: {moved or 'no TCP error counter moved'} (nstat)")
    limit = s["limit"]
    if limit:
        print(f"limit:    CPU first: the machine at {limit['machine_pct']:.0f}% of {limit['of_pct']}% during"
              f" {limit['phase']} (load generator {limit['loadgen_pct']:.0f}%, nodes {limit['nodes_pct']:.0f}%,"
              f" the rest {limit['rest_pct']:.0f}%: Redis, the kernel's softirq work, other processes)")
    print(f"verdict:  {'OK' if s['ok'] else 'FAILED: ' + str(s['reason'])}; summary {env['CAP_SUMMARY']}")


if __name__ == "__main__":
    main()
