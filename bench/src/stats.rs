//! Counters shared between a driver thread (the only writer) and its worker's reporter,
//! and the histograms that travel from workers to the coordinator.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

/// Highest value a histogram records: one hour in microseconds. Larger values are clamped.
pub const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

/// Every cumulative counter a worker reports. The order is the wire order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    /// Connect phase: connections that completed the WebSocket handshake.
    ConnectOk,
    /// Connect phase: connections that failed (any error kind).
    ConnectFail,
    /// Gauge: connections open right now (handshake done, not closed).
    Open,
    LoginOk,
    LoginFail,
    /// Chat messages handed to a socket (written or queued in its output buffer).
    Sent,
    /// Chat messages received, duplicates included.
    Received,
    /// Chat sends dropped because the thread fell more than a second behind its schedule
    /// (the load generator could not keep up, or no sender could take them), or still
    /// unsent when the chat phase ended.
    SendBehind,
    ChurnOk,
    ChurnFail,
    /// Churn cycles dropped more than a second behind schedule, or never started.
    ChurnBehind,
    /// Source ports skipped because the kernel reported them in use.
    PortsSkipped,
    /// Connects whose every planned port was in use, so the kernel chose one.
    PortsFallback,
    /// Messages that arrived at the wrong connection or with a wrong `Sender`.
    Misrouted,
    /// Room joins confirmed (the joiner's own `joinmsg` back).
    RoomJoinOk,
    /// Connections that failed while joining their rooms.
    RoomJoinFail,
    /// Room messages handed to a socket.
    RoomSent,
    /// Room messages received by members, repeats included.
    RoomReceived,
    /// Room messages at a connection that is no member, for a room that does not exist,
    /// or with a `Sender` that is not the one that sent it.
    RoomMisrouted,
    /// Room messages whose sender could not send (not joined, or its output full).
    RoomUnsent,
    /// `--recover`: logged-in connections the server dropped.
    Dropped,
    /// Dropped connections back, logged in, their replay done.
    RecoverOk,
    /// Dropped connections that gave up after --recover-timeout.
    RecoverFail,
    /// Reconnect attempts that failed and were tried again.
    RecoverRetry,
    /// Messages replayed before a `recoverymsg` (the node's `Count`).
    Replayed,
    /// `recoverymsg` outcomes: recovered, fresh, gap, reset (or unknown).
    RecoveredOutcome,
    FreshOutcome,
    GapOutcome,
    ResetOutcome,
    ErrRefused,
    ErrReset,
    ErrTimeout,
    ErrProtocol,
    /// The server closed the connection with a close frame.
    ErrClosed,
    /// The server answered a login with "User already exists".
    ErrLoginRejected,
    /// The server sent an `errormsg`.
    ErrServer,
    ErrOther,
}

pub const COUNTER_COUNT: usize = Counter::ErrOther as usize + 1;

/// The error kinds, their counters and their names in reports.
pub const ERROR_KINDS: [(Counter, &str); 8] = [
    (Counter::ErrRefused, "refused"),
    (Counter::ErrReset, "reset"),
    (Counter::ErrTimeout, "timeout"),
    (Counter::ErrProtocol, "protocol"),
    (Counter::ErrClosed, "closed_by_server"),
    (Counter::ErrLoginRejected, "login_rejected"),
    (Counter::ErrServer, "server_error"),
    (Counter::ErrOther, "other"),
];

/// One driver thread's counters. Only that thread writes; others read snapshots.
#[derive(Debug)]
pub struct Counters {
    values: [AtomicU64; COUNTER_COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters { values: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Counters {
    pub fn add(&self, counter: Counter, n: u64) {
        self.values[counter as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn sub(&self, counter: Counter, n: u64) {
        self.values[counter as usize].fetch_sub(n, Ordering::Relaxed);
    }

    /// Adds this thread's values into `into` (indexed by counter).
    pub fn add_to(&self, into: &mut [u64]) {
        for (slot, value) in into.iter_mut().zip(&self.values) {
            *slot += value.load(Ordering::Relaxed);
        }
    }
}

/// A counter's value in a snapshot vector (missing entries read as zero).
pub fn get(snapshot: &[u64], counter: Counter) -> u64 {
    snapshot.get(counter as usize).copied().unwrap_or(0)
}

/// A histogram of microseconds, 3 significant digits, 1 us to one hour.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("valid histogram bounds")
}

/// Records `nanos` as microseconds, clamped into the histogram's range.
pub fn record_nanos(h: &mut Histogram<u64>, nanos: u64) {
    let us = (nanos / 1_000).clamp(1, HISTOGRAM_MAX_US);
    // In range by construction.
    let _ = h.record(us);
}

/// Serializes a histogram (V2 format) as base64 for a JSON line.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail; an unserializable histogram cannot be built here.
    let _ = V2Serializer::new().serialize(h, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads a histogram written by [`encode_histogram`].
///
/// # Errors
/// Text that is not base64 or not a V2 histogram.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| e.to_string())?;
    Deserializer::new().deserialize(&mut &bytes[..]).map_err(|e| format!("{e:?}"))
}

/// Merges `from` into `into`; values out of range are impossible (same bounds).
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    let _ = into.add(from);
}

/// Percentile summary of a histogram, in microseconds.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            mean_us: (h.mean() * 10.0).round() / 10.0,
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_the_pipe_and_merge_exactly() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000u64 {
            record_nanos(&mut a, v * 1_000);
            record_nanos(&mut b, v * 2_000_000);
        }
        let mut merged = decode_histogram(&encode_histogram(&a)).unwrap();
        merge(&mut merged, &decode_histogram(&encode_histogram(&b)).unwrap());
        assert_eq!(merged.len(), 2000);
        let mut direct = a.clone();
        direct.add(&b).unwrap();
        assert_eq!(merged, direct);
        let p = Percentiles::of(&merged);
        assert_eq!(p.count, 2000);
        assert!(p.max_us >= 1_999_000);
    }

    #[test]
    fn counters_sum_across_threads() {
        let a = Counters::default();
        let b = Counters::default();
        a.add(Counter::Sent, 3);
        b.add(Counter::Sent, 4);
        b.add(Counter::Open, 2);
        b.sub(Counter::Open, 1);
        let mut total = vec![0; COUNTER_COUNT];
        a.add_to(&mut total);
        b.add_to(&mut total);
        assert_eq!(get(&total, Counter::Sent), 7);
        assert_eq!(get(&total, Counter::Open), 1);
    }
}
