//! The human summary on stderr: a few lines per phase, read off the JSON summary.

use std::fmt::Write as _;

use crate::summary::Summary;

/// The summary as text, one line per phase plus errors, memory, CPU and the verdict.
pub fn render(s: &Summary<'_>) -> String {
    let mut out = String::new();
    connect_line(&mut out, s);
    if s.config.login {
        login_line(&mut out, s);
    }
    if s.chat.ran {
        chat_lines(&mut out, s);
    }
    if s.churn.rate > 0 {
        churn_line(&mut out, s);
    }
    error_lines(&mut out, s);
    memory_line(&mut out, s);
    cpu_line(&mut out, s);
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
        "login:   {} ok, {} failed in {:.1} s; p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        s.login.ok,
        s.login.failed,
        s.login.seconds,
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
        "chat:    {} sent ({pace}), {} delivered, {} lost, {} duplicated, \
         {} skipped, {} behind schedule",
        s.chat.sent, s.chat.delivered, s.chat.lost, s.chat.duplicated, s.chat.send_skipped, s.chat.send_behind
    );
    let l = &s.chat.latency;
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

fn churn_line(out: &mut String, s: &Summary<'_>) {
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

fn cpu_line(out: &mut String, s: &Summary<'_>) {
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
}
