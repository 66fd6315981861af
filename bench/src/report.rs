//! The end of a run: the JSON summary (stdout and `--json`), the human summary (stderr),
//! the `--csv` timeline, the `--svg` chart, and the exit status.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::accounting::Tally;
use crate::config::{Args, Plan};
use crate::stats::{get, Counter, Percentiles, ERROR_KINDS};

/// Memory figures sampled at one moment.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct MemorySnapshot {
    /// Sum of VmRSS over the --server-pid processes.
    pub server_rss: u64,
    /// /proc/meminfo Slab (whole kernel: both ends of loopback connections).
    pub slab: u64,
    /// /proc/meminfo SUnreclaim.
    pub sunreclaim: u64,
    /// Sum of VmRSS over the load generator's worker processes.
    pub loadgen_rss: u64,
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub t: f64,
    pub phase: &'static str,
    pub connections: u64,
    pub logged_in: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub p99_us: Option<u64>,
    pub server_rss: u64,
    pub slab: u64,
    pub sunreclaim: u64,
    pub loadgen_rss: u64,
    pub loadgen_cpu_pct: f64,
    pub server_cpu_pct: f64,
    /// All processes on the machine (200 = two cores busy).
    pub machine_cpu_pct: f64,
}

/// The merged whole-run histograms (microseconds).
pub struct Histograms {
    pub connect: Histogram<u64>,
    pub login: Histogram<u64>,
    pub churn: Histogram<u64>,
    pub latency: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            connect: crate::stats::new_histogram(),
            login: crate::stats::new_histogram(),
            churn: crate::stats::new_histogram(),
            latency: crate::stats::new_histogram(),
        }
    }
}

/// Everything the coordinator measured.
#[derive(Default)]
pub struct Outcome {
    pub counters: Vec<u64>,
    pub tally: Tally,
    pub hists: Histograms,
    pub samples: Vec<String>,
    pub established: u64,
    pub logged_in: u64,
    pub open_at_full: u64,
    pub baseline: MemorySnapshot,
    pub full: MemorySnapshot,
    pub end: MemorySnapshot,
    pub connect_secs: f64,
    pub login_secs: f64,
    pub chat_secs: f64,
    pub grace_secs: f64,
    pub churn_secs: f64,
    pub wall_secs: f64,
    pub chat_skipped: Option<String>,
    /// (load generator, servers) CPU seconds over the whole run.
    pub cpu_total: (f64, f64),
    /// (load generator, servers) CPU seconds during the chat phase.
    pub chat_cpu: Option<(f64, f64, f64)>,
    pub workers: u32,
    pub threads: u32,
    pub rows: Vec<Row>,
}

#[derive(Serialize)]
struct Summary<'a> {
    ok: bool,
    exit_code: i32,
    failures: Vec<String>,
    command: Vec<String>,
    machine: Machine,
    config: ConfigSummary<'a>,
    connect: ConnectSummary,
    login: LoginSummary,
    chat: ChatSummary,
    churn: ChurnSummary,
    errors: serde_json::Map<String, serde_json::Value>,
    error_samples: &'a [String],
    memory: MemorySummary<'a>,
    cpu: CpuSummary,
    timeline: &'a [Row],
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    mem_total_bytes: u64,
    kernel: String,
}

#[derive(Serialize)]
struct ConfigSummary<'a> {
    urls: Vec<&'a str>,
    connections: u32,
    connect_rate: u32,
    connect_timeout_s: f64,
    login: bool,
    login_rate: u32,
    name_prefix: &'a str,
    hold_s: f64,
    rate: u32,
    duration_s: f64,
    payload: usize,
    pattern: crate::config::Pattern,
    grace_s: f64,
    churn_rate: u32,
    churn_duration_s: f64,
    source_addrs: usize,
    per_source: u32,
    workers: u32,
    threads_per_worker: u32,
}

#[derive(Serialize)]
struct ConnectSummary {
    target: u64,
    established: u64,
    failed: u64,
    open_at_end: u64,
    seconds: f64,
    per_second: f64,
    /// TCP connect + WebSocket handshake.
    latency: Percentiles,
}

#[derive(Serialize)]
struct LoginSummary {
    ok: u64,
    failed: u64,
    seconds: f64,
    /// Login sent until the self-addressed marker message came back.
    latency: Percentiles,
}

#[derive(Serialize)]
struct ChatSummary {
    ran: bool,
    skipped_reason: Option<String>,
    target_rate: u32,
    seconds: f64,
    grace_used_s: f64,
    sent: u64,
    received: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    misrouted: u64,
    phantom: u64,
    send_skipped: u64,
    send_behind: u64,
    sent_per_s: f64,
    delivered_per_s: f64,
    /// End to end: sender's timestamp to the recipient's read.
    latency: Percentiles,
}

#[derive(Serialize)]
struct ChurnSummary {
    rate: u32,
    seconds: f64,
    ok: u64,
    failed: u64,
    /// A churned connection's TCP connect until its re-login was confirmed.
    reconnect_latency: Percentiles,
}

#[derive(Serialize)]
struct MemorySummary<'a> {
    server_pids: &'a [u32],
    /// Before the first connection.
    baseline: MemorySnapshot,
    /// After connect, login and hold, with `connections_at_full` open.
    full: MemorySnapshot,
    end: MemorySnapshot,
    connections_at_full: u64,
    server_rss_per_connection: Option<f64>,
    /// Kernel slab growth per connection; loopback: both ends of each connection.
    slab_per_connection: Option<f64>,
    sunreclaim_per_connection: Option<f64>,
    loadgen_rss_per_connection: Option<f64>,
}

#[derive(Serialize)]
struct CpuSummary {
    wall_s: f64,
    loadgen_cpu_s: f64,
    server_cpu_s: f64,
    /// Percent of one core during the chat phase (200 = two cores busy).
    chat_loadgen_pct: Option<f64>,
    chat_server_pct: Option<f64>,
    /// Whole machine during chat: what exceeds load generator + servers went elsewhere.
    chat_machine_pct: Option<f64>,
}

/// Writes every output and returns the exit status.
pub fn finish(args: &Args, plan: &Plan, o: Outcome) -> i32 {
    let c = &o.counters;
    let target = plan.connections as u64;
    let sent = get(c, Counter::Sent);
    let chat_ran = plan.rate > 0 && o.chat_skipped.is_none() && target > 0;
    let lost = if chat_ran { o.tally.lost(sent) } else { 0 };

    let mut failures = Vec::new();
    if o.established < target {
        failures.push(format!("only {} of {target} connections established", o.established));
    }
    if plan.login && o.logged_in < o.established {
        failures.push(format!("only {} of {} connections logged in", o.logged_in, o.established));
    }
    if let Some(reason) = &o.chat_skipped {
        failures.push(reason.clone());
    }
    if lost > 0 {
        failures.push(format!("{lost} of {sent} chat messages lost"));
    }
    if o.tally.duplicates > 0 {
        failures.push(format!("{} chat messages duplicated", o.tally.duplicates));
    }
    let misrouted = get(c, Counter::Misrouted);
    if misrouted > 0 {
        failures.push(format!("{misrouted} chat messages misrouted"));
    }
    if o.tally.phantom(sent) > 0 {
        failures.push(format!("{} messages received that were never sent", o.tally.phantom(sent)));
    }
    let (skipped, behind) = (get(c, Counter::SendSkipped), get(c, Counter::SendBehind));
    if chat_ran && skipped + behind > 0 {
        failures.push(format!(
            "asked load not generated: {behind} messages dropped behind schedule (load generator \
             saturated), {skipped} skipped (no ready sender or its output full)"
        ));
    }
    let errors_seen: Vec<String> = ERROR_KINDS
        .iter()
        .filter(|(counter, _)| get(c, *counter) > 0)
        .map(|(counter, name)| format!("{name} {}", get(c, *counter)))
        .collect();
    if !errors_seen.is_empty() {
        failures.push(format!("errors: {}", errors_seen.join(", ")));
    }
    let churn_failed = get(c, Counter::ChurnFail);
    if churn_failed > 0 {
        failures.push(format!("{churn_failed} churn reconnects failed"));
    }
    let exit_code = i32::from(!failures.is_empty());

    let per_conn = |delta: (u64, u64)| {
        (o.open_at_full > 0).then(|| {
            let d = delta.1 as f64 - delta.0 as f64;
            (d / o.open_at_full as f64 * 10.0).round() / 10.0
        })
    };
    let mut errors = serde_json::Map::new();
    let mut error_total = 0;
    for (counter, name) in ERROR_KINDS {
        error_total += get(c, counter);
        errors.insert(name.into(), get(c, counter).into());
    }
    errors.insert("total".into(), error_total.into());

    let summary = Summary {
        ok: exit_code == 0,
        exit_code,
        failures: failures.clone(),
        command: std::env::args().collect(),
        machine: machine(),
        config: ConfigSummary {
            urls: plan.targets.iter().map(|t| t.url.as_str()).collect(),
            connections: plan.connections,
            connect_rate: plan.connect_rate,
            connect_timeout_s: args.connect_timeout,
            login: plan.login,
            login_rate: plan.login_rate,
            name_prefix: &plan.name_prefix,
            hold_s: args.hold,
            rate: plan.rate,
            duration_s: args.duration,
            payload: plan.payload,
            pattern: plan.pattern,
            grace_s: args.grace,
            churn_rate: plan.churn_rate,
            churn_duration_s: args.churn_duration,
            source_addrs: plan.sources.len(),
            per_source: plan.per_source,
            workers: o.workers,
            threads_per_worker: o.threads,
        },
        connect: ConnectSummary {
            target,
            established: o.established,
            failed: get(c, Counter::ConnectFail),
            open_at_end: get(c, Counter::Open),
            seconds: round3(o.connect_secs),
            per_second: rate(o.established, o.connect_secs),
            latency: Percentiles::of(&o.hists.connect),
        },
        login: LoginSummary {
            ok: get(c, Counter::LoginOk),
            failed: get(c, Counter::LoginFail),
            seconds: round3(o.login_secs),
            latency: Percentiles::of(&o.hists.login),
        },
        chat: ChatSummary {
            ran: chat_ran,
            skipped_reason: o.chat_skipped.clone(),
            target_rate: plan.rate,
            seconds: round3(o.chat_secs),
            grace_used_s: round3(o.grace_secs),
            sent,
            received: o.tally.received,
            delivered: o.tally.distinct,
            lost,
            duplicated: o.tally.duplicates,
            misrouted,
            phantom: o.tally.phantom(sent),
            send_skipped: get(c, Counter::SendSkipped),
            send_behind: get(c, Counter::SendBehind),
            sent_per_s: rate(sent, o.chat_secs),
            delivered_per_s: rate(o.tally.distinct, o.chat_secs),
            latency: Percentiles::of(&o.hists.latency),
        },
        churn: ChurnSummary {
            rate: plan.churn_rate,
            seconds: round3(o.churn_secs),
            ok: get(c, Counter::ChurnOk),
            failed: churn_failed,
            reconnect_latency: Percentiles::of(&o.hists.churn),
        },
        errors,
        error_samples: &o.samples,
        memory: MemorySummary {
            server_pids: &args.server_pids,
            baseline: o.baseline,
            full: o.full,
            end: o.end,
            connections_at_full: o.open_at_full,
            server_rss_per_connection: (!args.server_pids.is_empty())
                .then(|| per_conn((o.baseline.server_rss, o.full.server_rss)))
                .flatten(),
            slab_per_connection: per_conn((o.baseline.slab, o.full.slab)),
            sunreclaim_per_connection: per_conn((o.baseline.sunreclaim, o.full.sunreclaim)),
            loadgen_rss_per_connection: per_conn((o.baseline.loadgen_rss, o.full.loadgen_rss)),
        },
        cpu: CpuSummary {
            wall_s: round3(o.wall_secs),
            loadgen_cpu_s: round3(o.cpu_total.0),
            server_cpu_s: round3(o.cpu_total.1.max(0.0)),
            chat_loadgen_pct: o.chat_cpu.map(|(l, _, _)| round1(l / o.chat_secs.max(1e-9) * 100.0)),
            chat_server_pct: o.chat_cpu.map(|(_, s, _)| round1(s / o.chat_secs.max(1e-9) * 100.0)),
            chat_machine_pct: o.chat_cpu.map(|(_, _, m)| round1(m / o.chat_secs.max(1e-9) * 100.0)),
        },
        timeline: &o.rows,
    };

    let json = serde_json::to_string_pretty(&summary).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, &json) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = &args.csv {
        if let Err(e) = std::fs::write(path, csv(&o.rows)) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = &args.svg {
        if let Err(e) = crate::chart::draw(path, &o.rows) {
            eprintln!("loadgen: cannot write {}: {e}", path.display());
        }
    }
    eprint!("{}", human(&summary));
    println!("{json}");
    exit_code
}

/// The timeline as CSV, one row per second.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "time_s,phase,connections,logged_in,sent_per_s,delivered_per_s,p99_latency_us,\
         server_rss_bytes,slab_bytes,sunreclaim_bytes,loadgen_rss_bytes,loadgen_cpu_pct,\
         server_cpu_pct,machine_cpu_pct\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{:.0},{:.0},{},{},{},{},{},{:.1},{:.1},{:.1}",
            r.t,
            r.phase,
            r.connections,
            r.logged_in,
            r.sent_per_s,
            r.delivered_per_s,
            r.p99_us.map(|v| v.to_string()).unwrap_or_default(),
            r.server_rss,
            r.slab,
            r.sunreclaim,
            r.loadgen_rss,
            r.loadgen_cpu_pct,
            r.server_cpu_pct,
            r.machine_cpu_pct
        );
    }
    out
}

fn human(s: &Summary<'_>) -> String {
    let mut out = String::new();
    let ms = |us: u64| us as f64 / 1000.0;
    let _ = writeln!(
        out,
        "connect: {}/{} established in {:.1} s ({:.0}/s), {} failed; connect+handshake \
         p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        s.connect.established,
        s.connect.target,
        s.connect.seconds,
        s.connect.per_second,
        s.connect.failed,
        ms(s.connect.latency.p50_us),
        ms(s.connect.latency.p99_us),
        ms(s.connect.latency.max_us)
    );
    if s.config.login {
        let _ = writeln!(
            out,
            "login:   {} ok, {} failed in {:.1} s; p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            s.login.ok,
            s.login.failed,
            s.login.seconds,
            ms(s.login.latency.p50_us),
            ms(s.login.latency.p99_us),
            ms(s.login.latency.max_us)
        );
    }
    if s.chat.ran {
        let l = &s.chat.latency;
        let _ = writeln!(
            out,
            "chat:    {} sent ({:.0}/s of {} asked), {} delivered, {} lost, {} duplicated, \
             {} skipped, {} behind schedule",
            s.chat.sent,
            s.chat.sent_per_s,
            s.chat.target_rate,
            s.chat.delivered,
            s.chat.lost,
            s.chat.duplicated,
            s.chat.send_skipped,
            s.chat.send_behind
        );
        let _ = writeln!(
            out,
            "latency: p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    }
    if s.churn.rate > 0 {
        let _ = writeln!(
            out,
            "churn:   {} reconnects ok, {} failed in {:.1} s; reconnect+login p50 {:.2} ms p99 {:.2} ms \
             max {:.2} ms",
            s.churn.ok,
            s.churn.failed,
            s.churn.seconds,
            ms(s.churn.reconnect_latency.p50_us),
            ms(s.churn.reconnect_latency.p99_us),
            ms(s.churn.reconnect_latency.max_us)
        );
    }
    let errors: Vec<String> = s
        .errors
        .iter()
        .filter(|(k, v)| *k != "total" && v.as_u64() != Some(0))
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(out, "errors:  {}", if errors.is_empty() { "none".to_string() } else { errors.join(", ") });
    for sample in s.error_samples.iter().take(5) {
        let _ = writeln!(out, "         e.g. {sample}");
    }
    let m = &s.memory;
    let bytes = |v: Option<f64>| v.map_or("-".to_string(), |b| format!("{b:.0} B"));
    let _ = writeln!(
        out,
        "memory:  per connection (at {}): server RSS {}, kernel slab {} (both ends), \
         load generator RSS {}",
        m.connections_at_full,
        bytes(m.server_rss_per_connection),
        bytes(m.slab_per_connection),
        bytes(m.loadgen_rss_per_connection)
    );
    let sampled_servers = !s.memory.server_pids.is_empty();
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |p| format!("{p:.0}%"));
    let _ = writeln!(
        out,
        "cpu:     load generator {:.1} s, servers {} over {:.1} s wall ({} cores); \
         during chat: load generator {}, servers {}, whole machine {}",
        s.cpu.loadgen_cpu_s,
        if sampled_servers { format!("{:.1} s", s.cpu.server_cpu_s) } else { "- (no --server-pid)".into() },
        s.cpu.wall_s,
        s.machine.cpus,
        pct(s.cpu.chat_loadgen_pct),
        if sampled_servers { pct(s.cpu.chat_server_pct) } else { "-".into() },
        pct(s.cpu.chat_machine_pct)
    );
    if s.ok {
        let _ = writeln!(out, "result:  OK");
    } else {
        let _ = writeln!(out, "result:  FAILED: {}", s.failures.join("; "));
    }
    out
}

fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total_bytes = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    Machine {
        cpus: crate::procfs::cpu_count(),
        mem_total_bytes,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
    }
}

/// Bytes as MiB with one decimal, for the progress line.
pub fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        round1(count as f64 / secs)
    } else {
        0.0
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_one_line_per_row() {
        let row = Row {
            t: 1.0,
            phase: "chat",
            connections: 10,
            logged_in: 10,
            sent_per_s: 5.0,
            delivered_per_s: 5.0,
            p99_us: Some(250),
            server_rss: 1,
            slab: 2,
            sunreclaim: 3,
            loadgen_rss: 4,
            loadgen_cpu_pct: 50.0,
            server_cpu_pct: 25.0,
            machine_cpu_pct: 90.0,
        };
        let text = csv(&[row.clone(), row]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "1.0,chat,10,10,5,5,250,1,2,3,4,50.0,25.0,90.0");
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    }
}
