//! The human summary on stderr: a few lines per phase, read off the JSON summary.

use std::fmt::Write as _;

use crate::cause::Side;
use crate::summary::Summary;

/// The summary as text, one line per phase plus errors and their causes, memory, CPU
/// and the verdict.
pub fn render(s: &Summary<'_>) -> String {
    let mut out = String::new();
    if let Some(why) = s.cut_short {
        let _ = writeln!(out, "run:     cut short ({why}); the figures cover what ran");
    }
    connect_line(&mut out, s);
    if s.config.login {
        login_line(&mut out, s);
    }
    if s.chat.ran {
        chat_lines(&mut out, s);
    }
    if let Some(rooms) = &s.rooms {
        rooms.render(&mut out);
    }
    if let Some(recovery) = &s.recovery {
        recovery.render(&mut out);
    }
    if s.churn.rate > 0 {
        churn_line(&mut out, s);
    }
    error_lines(&mut out, s);
    cause_lines(&mut out, s);
    kernel_line(&mut out, s);
    memory_line(&mut out, s);
    cpu_lines(&mut out, s);
    if s.ok {
        let _ = writeln!(out, "result:  OK");
    } else {
        let _ = writeln!(out, "result:  FAILED: {}", s.failures.join("; "));
    }
    out
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn connect_line(out: &mut String, s: &Summary<'_>) {
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
}

fn login_line(out: &mut String, s: &Summary<'_>) {
    let _ = writeln!(
        out,
        "login:   {} ok, {} failed in {:.1} s ({:.0}/s); p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        s.login.ok,
        s.login.failed,
        s.login.seconds,
        s.login.per_second,
        ms(s.login.latency.p50_us),
        ms(s.login.latency.p99_us),
        ms(s.login.latency.max_us)
    );
}

fn chat_lines(out: &mut String, s: &Summary<'_>) {
    let pace = match s.config.closed_loop {
        Some(n) => format!("{:.0}/s, closed loop, {n} in flight per connection", s.chat.sent_per_s),
        None => format!("{:.0}/s of {} asked", s.chat.sent_per_s, s.chat.target_rate),
    };
    let _ = writeln!(
        out,
        "chat:    {} sent ({pace}), {} delivered, {} lost, {} duplicated, {} behind schedule",
        s.chat.sent, s.chat.delivered, s.chat.lost, s.chat.duplicated, s.chat.send_behind
    );
    let percentiles = |l: &crate::stats::Percentiles| {
        format!(
            "p50 {:.2} ms p90 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
            ms(l.p50_us),
            ms(l.p90_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        )
    };
    let _ = writeln!(out, "latency: {} (from the intended send time)", percentiles(&s.chat.latency));
    let _ = writeln!(out, "service: {} (from the actual send)", percentiles(&s.chat.service_latency));
    if s.config.closed_loop.is_none() {
        let lag = &s.chat.generator_lag;
        let _ = writeln!(
            out,
            "lag:     load generator behind schedule p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            ms(lag.p50_us),
            ms(lag.p99_us),
            ms(lag.max_us)
        );
    }
}

fn churn_line(out: &mut String, s: &Summary<'_>) {
    let _ = writeln!(
        out,
        "churn:   {} cycles ok, {} failed, {} behind schedule in {:.1} s; close+reconnect+login from \
         the intended start p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        s.churn.ok,
        s.churn.failed,
        s.churn.behind,
        s.churn.seconds,
        ms(s.churn.reconnect_latency.p50_us),
        ms(s.churn.reconnect_latency.p99_us),
        ms(s.churn.reconnect_latency.max_us)
    );
}

fn error_lines(out: &mut String, s: &Summary<'_>) {
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
}

/// Failed connections by who ended them: one line per side with its most frequent causes.
fn cause_lines(out: &mut String, s: &Summary<'_>) {
    for side in Side::ALL {
        let Some(entry) = s.causes.get(side.key()) else { continue };
        let total = entry["total"].as_u64().unwrap_or(0);
        if total == 0 {
            continue;
        }
        let mut counts: Vec<(&String, u64)> = entry["by_cause"]
            .as_object()
            .map(|m| m.iter().map(|(what, n)| (what, n.as_u64().unwrap_or(0))).collect())
            .unwrap_or_default();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let causes: Vec<String> = counts.iter().take(4).map(|(what, n)| format!("{what} {n}")).collect();
        let more = counts.len().saturating_sub(4);
        let more = if more > 0 { format!(", and {more} more") } else { String::new() };
        let _ = writeln!(out, "why:     {} {total}: {}{more}", side.label(), causes.join(", "));
    }
}

/// The kernel's TCP counters that moved during the run, if any did.
fn kernel_line(out: &mut String, s: &Summary<'_>) {
    let moved: Vec<String> = s
        .kernel_tcp
        .iter()
        .filter(|(_, v)| v.as_i64().unwrap_or(0) != 0)
        .map(|(k, v)| format!("{} {v}", k.trim_start_matches("TcpExt").trim_start_matches("Tcp")))
        .collect();
    if !moved.is_empty() {
        let _ = writeln!(out, "kernel:  {} (TCP counters during the run, whole machine)", moved.join(", "));
    }
}

fn memory_line(out: &mut String, s: &Summary<'_>) {
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
}

fn cpu_lines(out: &mut String, s: &Summary<'_>) {
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
    let c = &s.connect.cpu;
    let us = |v: Option<f64>| v.map_or("-".to_string(), |u| format!("{u:.1} us"));
    let _ = writeln!(
        out,
        "ramp:    per connection load generator {} ({:.2} s user, {:.2} s system), servers {} \
         ({:.2} s user, {:.2} s system), whole machine {}",
        us(c.loadgen_us_per_op),
        c.loadgen_user_s,
        c.loadgen_system_s,
        if sampled_servers { us(c.servers_us_per_op) } else { "-".into() },
        c.servers_user_s,
        c.servers_system_s,
        us(c.machine_us_per_op)
    );
}
