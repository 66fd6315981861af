//! What a driver thread shares with its worker while it runs, and what it hands back at
//! the end.

use std::sync::atomic::{AtomicU64, AtomicU8};
use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::accounting::Tally;
use crate::cause::Causes;
use crate::ipc::Command;
use crate::rooms::fanout::Record;
use crate::stats::{self, Counters};

/// What a driver thread shares with its worker's reporter.
pub struct Shared {
    pub counters: Counters,
    /// Chat latencies (from the intended send time) since the reporter last took them.
    pub interval_latency: Mutex<Histogram<u64>>,
    /// How far behind its schedule the thread sent, since the reporter last took it.
    pub interval_lag: Mutex<Histogram<u64>>,
    /// Failed connections by cause, cumulative.
    pub causes: Mutex<Causes>,
    /// Error descriptions not yet reported.
    pub samples: Mutex<Vec<String>>,
    pub commands: Mutex<Vec<Command>>,
    /// The last phase this thread finished.
    pub done_phase: AtomicU8,
    /// The common start of the latest phase ordered (`Order::start_ns`).
    pub phase_start_ns: AtomicU64,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            interval_latency: Mutex::new(stats::new_histogram()),
            interval_lag: Mutex::new(stats::new_histogram()),
            causes: Mutex::default(),
            samples: Mutex::default(),
            commands: Mutex::default(),
            done_phase: AtomicU8::new(0),
            phase_start_ns: AtomicU64::new(0),
        }
    }
}

/// The whole-run histograms of one thread (microseconds).
pub struct Final {
    pub connect: Histogram<u64>,
    pub login: Histogram<u64>,
    /// Churn cycles, from the intended start to the re-login's confirmation.
    pub churn: Histogram<u64>,
    /// Chat, from the intended send time to the delivery.
    pub latency: Histogram<u64>,
    /// Chat, from the actual send to the delivery.
    pub service: Histogram<u64>,
    /// Chat sends: actual minus intended time.
    pub lag: Histogram<u64>,
    /// `--recover`: from a drop to the new login's `recoverymsg`.
    pub recovery: Histogram<u64>,
    pub tally: Tally,
    pub rooms: RoomFinal,
}

/// One thread's room figures: join confirmations, member deliveries (from the intended
/// send time) and send lags, and what it received per room message.
pub struct RoomFinal {
    pub join: Histogram<u64>,
    pub member: Histogram<u64>,
    pub lag: Histogram<u64>,
    pub records: Vec<Record>,
}

/// Locks a mutex, ignoring poisoning: the data are counters and samples, still usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
