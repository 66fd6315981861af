//! What the coordinator and its worker processes say to each other: one JSON object per
//! line, commands on the worker's stdin, reports on its stdout. Histograms travel in
//! hdrhistogram's V2 format (base64), so merging them in the coordinator is exact.

use std::io::{self, BufRead, Write};

use crate::accounting::Tally;
use crate::cause::CauseCount;

/// What the coordinator orders and each worker passes on to its threads. The
/// discriminant is the phase id reported in `done_phase` when the phase is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Command {
    Connect = 1,
    Login = 2,
    /// Every connection joins its rooms (`--rooms`).
    Join = 3,
    Chat = 4,
    /// Room messages on their schedule (`--room-rate`).
    Rooms = 5,
    Churn = 6,
    Finish = 7,
}

/// Coordinator to worker (the first line is a [`crate::config::WorkerSetup`] instead).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Order {
    pub command: Command,
    /// When a phase with one schedule for the whole run (room messages) starts
    /// (CLOCK_MONOTONIC ns): the same instant in every worker.
    #[serde(default)]
    pub start_ns: u64,
}

/// Worker to coordinator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Report {
    /// Threads are up and idle.
    Ready { pid: u32 },
    /// Once a second: cumulative counters, the lowest phase every thread has finished,
    /// the interval's chat latencies and send lags, failures by cause so far, and new
    /// error descriptions.
    Stats {
        counters: Vec<u64>,
        done_phase: u8,
        latency: Option<String>,
        lag: Option<String>,
        causes: Vec<CauseCount>,
        samples: Vec<String>,
    },
    /// After `finish`: final counters and causes, whole-run histograms and the receipt
    /// tally.
    Final {
        counters: Vec<u64>,
        causes: Vec<CauseCount>,
        histograms: Box<FinalHistograms>,
        tally: Tally,
        #[serde(default)]
        rooms: RoomsFinal,
    },
}

/// A worker's room figures: join confirmations, member deliveries and send lags
/// (histograms as in [`FinalHistograms`]), and its per-message records.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RoomsFinal {
    pub join: String,
    pub member: String,
    pub lag: String,
    pub records: Vec<crate::rooms::fanout::Record>,
}

/// A worker's whole-run histograms, each V2-serialized and base64-encoded.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FinalHistograms {
    pub connect: String,
    pub login: String,
    pub churn: String,
    /// Chat, from the intended send time.
    pub latency: String,
    /// Chat, from the actual send.
    pub service: String,
    /// Chat sends behind schedule.
    pub lag: String,
    /// `--recover`: drops to recovered logins.
    pub recovery: String,
}

/// Writes one value as a JSON line and flushes it.
///
/// # Errors
/// The pipe is closed.
pub fn send_line<T: serde::Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Reads one JSON line; `Ok(None)` at end of input.
///
/// # Errors
/// A read error or a line that is not the expected JSON.
pub fn read_line<T: serde::de::DeserializeOwned>(input: &mut impl BufRead) -> io::Result<Option<T>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {line:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        let mut buf = Vec::new();
        send_line(
            &mut buf,
            &Report::Stats {
                counters: vec![1, 2],
                done_phase: 3,
                latency: None,
                lag: None,
                causes: vec![(crate::cause::Side::Kernel, "ECONNRESET during open".into(), 4)],
                samples: vec!["x".into()],
            },
        )
        .unwrap();
        send_line(&mut buf, &Order { command: Command::Chat, start_ns: 0 }).unwrap();
        let mut input = &buf[..];
        let report: Report = read_line(&mut input).unwrap().unwrap();
        assert!(matches!(report, Report::Stats { done_phase: 3, ref causes, .. } if causes[0].2 == 4));
        let order: Order = read_line(&mut input).unwrap().unwrap();
        assert_eq!(order.command, Command::Chat);
        assert!(read_line::<Order>(&mut input).unwrap().is_none());
    }
}
