//! The live progress line on stderr, once a second: drawn with indicatif on a terminal,
//! printed as plain lines otherwise, nothing with `--quiet`.

use std::io::IsTerminal as _;

use crate::stats::{get, Counter};
use crate::timeline::Row;

/// The live progress line on stderr: indicatif on a terminal, a plain line otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    plain: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        if quiet {
            return Self { bar: None, plain: false };
        }
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            Self { bar: Some(bar), plain: false }
        } else {
            Self { bar: None, plain: true }
        }
    }

    pub fn show(&self, row: &Row, totals: &[u64], errors: u64, target: u32) {
        let p99 = row.p99_us.map_or("-".into(), |us| format!("{:.2}ms", us as f64 / 1000.0));
        let line = format!(
            "{:>5.0}s {:<7} conns {}/{} login {} | sent {:.0}/s deliv {:.0}/s p99 {p99} | \
             sent {} recv {} err {errors} | cpu loadgen {:.0}% server {:.0}% machine {:.0}% | server rss {} slab {}",
            row.t,
            row.phase,
            row.connections,
            target,
            row.logged_in,
            row.sent_per_s,
            row.delivered_per_s,
            get(totals, Counter::Sent),
            get(totals, Counter::Received),
            row.loadgen_cpu_pct,
            row.server_cpu_pct,
            row.machine_cpu_pct,
            mib(row.server_rss),
            mib(row.slab),
        );
        if let Some(bar) = &self.bar {
            bar.set_message(line);
            bar.tick();
        } else if self.plain {
            eprintln!("{line}");
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// Bytes as MiB with one decimal, for the progress line.
fn mib(bytes: u64) -> String {
    format!("{:.1}MiB", bytes as f64 / (1024.0 * 1024.0))
}
