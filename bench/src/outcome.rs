//! What the coordinator measured over a run, handed to the report: the workers' summed
//! counters, receipt tally and histograms, the memory snapshots, the phase durations and
//! the CPU used.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::accounting::Tally;
use crate::config::Plan;
use crate::stats::{self, get, Counter};
use crate::timeline::Row;

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
            connect: stats::new_histogram(),
            login: stats::new_histogram(),
            churn: stats::new_histogram(),
            latency: stats::new_histogram(),
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
    /// (load generator, servers, whole machine) CPU seconds during the chat phase.
    pub chat_cpu: Option<(f64, f64, f64)>,
    pub workers: u32,
    pub threads: u32,
    pub rows: Vec<Row>,
}

impl Outcome {
    /// A summed counter.
    pub fn count(&self, counter: Counter) -> u64 {
        get(&self.counters, counter)
    }

    /// Whether the chat phase ran (it was asked for and everyone was there for it).
    pub fn chat_ran(&self, plan: &Plan) -> bool {
        plan.chats() && self.chat_skipped.is_none() && plan.connections > 0
    }

    /// Chat messages sent and never delivered; none when chat did not run.
    pub fn lost(&self, plan: &Plan) -> u64 {
        if self.chat_ran(plan) {
            self.tally.lost(self.count(Counter::Sent))
        } else {
            0
        }
    }
}
