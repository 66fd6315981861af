//! What the load generator reads from /proc and the resource limits it sets: process RSS
//! and CPU time, the kernel's slab memory and TCP counters, and the open-file limit.

use std::fs;

/// Resident set size of a process in bytes (VmRSS), if it is still alive.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&text, "VmRSS:")
}

/// User and system CPU time of a process in seconds (utime and stime of /proc/PID/stat).
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it are fixed.
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall, 12 and 13 after the name and state.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = clock_ticks_per_second();
    Some((utime / ticks, stime / ticks))
}

/// CPU seconds (user + system) of this process and of its waited-for children, from
/// getrusage: exact for worker processes once they have exited.
pub fn rusage_cpu_seconds() -> f64 {
    let mut total = 0.0;
    for who in [libc::RUSAGE_SELF, libc::RUSAGE_CHILDREN] {
        // SAFETY: rusage is plain data; getrusage fills it.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid, writable rusage.
        if unsafe { libc::getrusage(who, &mut usage) } == 0 {
            for t in [usage.ru_utime, usage.ru_stime] {
                total += t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            }
        }
    }
    total
}

/// Busy CPU seconds of the whole machine, all cores (from the `cpu` line of /proc/stat):
/// shows how much CPU went to processes other than the load generator and the servers.
pub fn machine_busy_seconds() -> f64 {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<f64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: f64 = ticks.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / clock_ticks_per_second()
}

/// Kernel slab memory: (Slab, SUnreclaim) in bytes, from /proc/meminfo.
pub fn slab_bytes() -> (u64, u64) {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    (kib_field(&text, "Slab:").unwrap_or(0), kib_field(&text, "SUnreclaim:").unwrap_or(0))
}

/// The kernel's TCP counters that say why connections failed or queued, by their nstat
/// names (`/proc/net/snmp` `Tcp:` and `/proc/net/netstat` `TcpExt:`).
pub const TCP_COUNTERS: [&str; 12] = [
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
    "TcpExtTCPAbortOnMemory",
    "TcpExtTCPTimeWaitOverflow",
];

/// The values of [`TCP_COUNTERS`] now (network-namespace wide: every process counts).
pub fn tcp_counters() -> Vec<(&'static str, u64)> {
    let mut text = fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    text.push_str(&fs::read_to_string("/proc/net/netstat").unwrap_or_default());
    let all = parse_counters(&text);
    TCP_COUNTERS.iter().map(|&name| (name, all.get(name).copied().unwrap_or(0))).collect()
}

/// `Prefix: name name ...` / `Prefix: value value ...` line pairs, as nstat names them.
fn parse_counters(text: &str) -> std::collections::HashMap<String, u64> {
    let mut counters = std::collections::HashMap::new();
    let lines: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once(':')).collect();
    // A names line is followed by the values line of the same prefix.
    for pair in lines.windows(2) {
        let [(prefix, names), (next, values)] = pair else { continue };
        if prefix != next || names.split_whitespace().next().is_some_and(|n| n.parse::<i64>().is_ok()) {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(value) = value.parse() {
                counters.insert(format!("{prefix}{name}"), value);
            }
        }
    }
    counters
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: `raised` is a valid rlimit; raising soft up to hard needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// Online CPUs.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Physical memory in bytes (/proc/meminfo MemTotal), 0 if unreadable.
pub fn mem_total_bytes() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    kib_field(&meminfo, "MemTotal:").unwrap_or(0)
}

/// The running kernel's release, empty if unreadable.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process_and_meminfo() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        let (user, system) = cpu_split(pid).unwrap();
        assert!(user >= 0.0 && system >= 0.0);
        assert!(slab_bytes().0 > 0);
        assert!(raise_nofile_limit() > 0);
        assert_eq!(rss_bytes(u32::MAX), None);
        assert_eq!(cpu_split(u32::MAX), None);
        assert_eq!(tcp_counters().len(), TCP_COUNTERS.len());
    }

    #[test]
    fn counters_read_as_nstat_names_them() {
        let text = "Ip: Forwarding\nIp: 2\nTcp: RtoAlgorithm EstabResets OutRsts\nTcp: 1 7 9\n\
                    TcpExt: ListenOverflows TW\nTcpExt: 3 5\n";
        let c = parse_counters(text);
        assert_eq!((c["TcpEstabResets"], c["TcpOutRsts"], c["TcpExtListenOverflows"]), (7, 9, 3));
    }
}
