//! The per-second timeline: one row per second of the run, kept in the JSON summary,
//! written by `--csv` and drawn by `--svg`.

use std::fmt::Write as _;

use serde::Serialize;

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub t: f64,
    pub phase: &'static str,
    pub connections: u64,
    pub logged_in: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    /// Chat latency p99 of the second, from the intended send time.
    pub p99_us: Option<u64>,
    /// How far behind schedule the load generator sent, p99 of the second.
    pub lag_p99_us: Option<u64>,
    pub server_rss: u64,
    pub slab: u64,
    pub sunreclaim: u64,
    pub loadgen_rss: u64,
    pub loadgen_cpu_pct: f64,
    pub server_cpu_pct: f64,
    /// All processes on the machine (200 = two cores busy).
    pub machine_cpu_pct: f64,
}

/// The timeline as CSV, one row per second.
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from(
        "time_s,phase,connections,logged_in,sent_per_s,delivered_per_s,p99_latency_us,\
         p99_lag_us,server_rss_bytes,slab_bytes,sunreclaim_bytes,loadgen_rss_bytes,loadgen_cpu_pct,\
         server_cpu_pct,machine_cpu_pct\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{:.0},{:.0},{},{},{},{},{},{},{:.1},{:.1},{:.1}",
            r.t,
            r.phase,
            r.connections,
            r.logged_in,
            r.sent_per_s,
            r.delivered_per_s,
            r.p99_us.map(|v| v.to_string()).unwrap_or_default(),
            r.lag_p99_us.map(|v| v.to_string()).unwrap_or_default(),
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
            lag_p99_us: None,
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
        assert_eq!(lines[1], "1.0,chat,10,10,5,5,250,,1,2,3,4,50.0,25.0,90.0");
        assert_eq!(lines[0].split(',').count(), lines[1].split(',').count());
    }
}
