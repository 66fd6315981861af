//! What the coordinator measured over a run, handed to the report: the workers' summed
//! counters, receipt tally and histograms, the memory snapshots, the phase durations and
//! the CPU used (per phase also as [`PhaseCpu`]), and the rooms' figures ([`RoomOutcome`]).

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::accounting::Tally;
use crate::cause::Causes;
use crate::config::Plan;
use crate::rooms::fanout::{Record, Totals};
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
    /// Churn cycles, from their intended start.
    pub churn: Histogram<u64>,
    /// Chat, from the intended send time (the headline figure).
    pub latency: Histogram<u64>,
    /// Chat, from the actual send (service time).
    pub service: Histogram<u64>,
    /// Chat sends: how far behind schedule.
    pub lag: Histogram<u64>,
    /// `--recover`: from a drop to the new login's `recoverymsg`.
    pub recovery: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        let new = stats::new_histogram;
        Self { connect: new(), login: new(), churn: new(), latency: new(), service: new(), lag: new(), recovery: new() }
    }
}

/// CPU seconds spent during a span (a phase), from /proc: user and system time of the
/// load generator (coordinator and workers) and of the servers, and the whole machine.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CpuSpan {
    pub loadgen_user: f64,
    pub loadgen_system: f64,
    pub servers_user: f64,
    pub servers_system: f64,
    pub machine: f64,
}

impl CpuSpan {
    /// What was spent between two readings of cumulative CPU time.
    pub fn between(before: &CpuSpan, after: &CpuSpan) -> CpuSpan {
        CpuSpan {
            loadgen_user: after.loadgen_user - before.loadgen_user,
            loadgen_system: after.loadgen_system - before.loadgen_system,
            servers_user: after.servers_user - before.servers_user,
            servers_system: after.servers_system - before.servers_system,
            machine: after.machine - before.machine,
        }
    }

    pub fn loadgen(&self) -> f64 {
        self.loadgen_user + self.loadgen_system
    }

    pub fn servers(&self) -> f64 {
        self.servers_user + self.servers_system
    }
}

/// Everything the coordinator measured.
#[derive(Default)]
pub struct Outcome {
    pub counters: Vec<u64>,
    pub causes: Causes,
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
    /// CPU during the connect phase and during the login phase.
    pub connect_cpu: CpuSpan,
    pub login_cpu: CpuSpan,
    /// CPU during chat and its grace period (everything sent until it arrived), and the
    /// same per `--server-pid` (user + system seconds).
    pub delivery_cpu: CpuSpan,
    pub delivery_cpu_by_pid: Vec<(u32, f64)>,
    /// Why the run ended early (a signal, or the workers failing), if it did.
    pub cut_short: Option<String>,
    /// How much the kernel's TCP counters moved from the start to the end of the phases
    /// (before the connections close).
    pub kernel_tcp: Vec<(&'static str, i64)>,
    pub workers: u32,
    pub threads: u32,
    pub rows: Vec<Row>,
    /// The rooms phases (`--rooms`).
    pub rooms: RoomOutcome,
    /// The workers' per-room-message records, until merged into `rooms.totals`.
    pub rooms_records: Vec<Record>,
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

/// CPU of one phase from /proc (utime, stime), and per operation (connection or login).
#[derive(Serialize)]
pub struct PhaseCpu {
    pub loadgen_user_s: f64,
    pub loadgen_system_s: f64,
    pub servers_user_s: f64,
    pub servers_system_s: f64,
    pub machine_s: f64,
    pub loadgen_us_per_op: Option<f64>,
    pub servers_us_per_op: Option<f64>,
    /// Whole machine: both ends, and whatever else ran.
    pub machine_us_per_op: Option<f64>,
}

impl PhaseCpu {
    pub fn new(cpu: &CpuSpan, ops: u64) -> Self {
        let per_op = |seconds: f64| (ops > 0).then(|| round1(seconds.max(0.0) / ops as f64 * 1e6));
        PhaseCpu {
            loadgen_user_s: round3(cpu.loadgen_user),
            loadgen_system_s: round3(cpu.loadgen_system),
            servers_user_s: round3(cpu.servers_user),
            servers_system_s: round3(cpu.servers_system),
            machine_s: round3(cpu.machine),
            loadgen_us_per_op: per_op(cpu.loadgen()),
            servers_us_per_op: per_op(cpu.servers()),
            machine_us_per_op: per_op(cpu.machine),
        }
    }
}

/// What the coordinator measured of the rooms.
pub struct RoomOutcome {
    pub join_secs: f64,
    pub join_cpu: CpuSpan,
    /// Why the room messages did not run, when asked for.
    pub skipped: Option<String>,
    pub send_secs: f64,
    pub grace_secs: f64,
    /// CPU from the first room message to the end of their grace period, and the same
    /// per `--server-pid`.
    pub cpu: CpuSpan,
    pub cpu_by_pid: Vec<(u32, f64)>,
    pub join: Histogram<u64>,
    pub member: Histogram<u64>,
    pub lag: Histogram<u64>,
    /// The workers' per-message records, merged.
    pub totals: Option<Totals>,
}

impl Default for RoomOutcome {
    fn default() -> Self {
        let new = stats::new_histogram;
        RoomOutcome {
            join_secs: 0.0,
            join_cpu: CpuSpan::default(),
            skipped: None,
            send_secs: 0.0,
            grace_secs: 0.0,
            cpu: CpuSpan::default(),
            cpu_by_pid: Vec::new(),
            join: new(),
            member: new(),
            lag: new(),
            totals: None,
        }
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
