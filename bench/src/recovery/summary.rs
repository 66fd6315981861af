//! What the recoveries of a run (`--recover`) added up to: the summary's `recovery`
//! object, its line in the human summary, and the failures it gives the verdict.

use std::fmt::Write as _;

use crate::outcome::Outcome;
use crate::stats::{Counter, Percentiles};

/// What the recoveries of a run added up to.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoverySummary {
    /// Logged-in connections the server dropped.
    pub dropped: u64,
    /// Of them, back and logged in again with their replay done.
    pub recovered: u64,
    /// Gave up after --recover-timeout.
    pub failed: u64,
    /// Attempts that failed and were tried again (refused connects, a name still held).
    pub retries: u64,
    /// Messages replayed before the `recoverymsg`s, by the node's count.
    pub replayed: u64,
    /// The `recoverymsg` outcomes of every login of the run (first logins included).
    pub outcomes: Outcomes,
    /// From the drop to the `recoverymsg` of the new login.
    pub time: Percentiles,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcomes {
    pub recovered: u64,
    pub fresh: u64,
    pub gap: u64,
    pub reset: u64,
}

impl RecoverySummary {
    pub fn new(o: &Outcome) -> Self {
        RecoverySummary {
            dropped: o.count(Counter::Dropped),
            recovered: o.count(Counter::RecoverOk),
            failed: o.count(Counter::RecoverFail),
            retries: o.count(Counter::RecoverRetry),
            replayed: o.count(Counter::Replayed),
            outcomes: Outcomes {
                recovered: o.count(Counter::RecoveredOutcome),
                fresh: o.count(Counter::FreshOutcome),
                gap: o.count(Counter::GapOutcome),
                reset: o.count(Counter::ResetOutcome),
            },
            time: Percentiles::of(&o.hists.recovery),
        }
    }

    /// The human summary's line.
    pub fn render(&self, out: &mut String) {
        let ms = |us: u64| us as f64 / 1000.0;
        let o = &self.outcomes;
        let _ = writeln!(
            out,
            "recover: {} dropped, {} back, {} failed ({} retries); {} replayed; answers: {} recovered, {} fresh, \
             {} gap, {} reset; drop to replay done p50 {:.1} ms p99 {:.1} ms max {:.1} ms",
            self.dropped,
            self.recovered,
            self.failed,
            self.retries,
            self.replayed,
            o.recovered,
            o.fresh,
            o.gap,
            o.reset,
            ms(self.time.p50_us),
            ms(self.time.p99_us),
            ms(self.time.max_us)
        );
    }

    /// Why the recoveries fail the run: some never came back, or the history could
    /// not give them all they missed.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.failed > 0 {
            failures.push(format!("{} dropped connections did not recover", self.failed));
        }
        let (gap, reset) = (self.outcomes.gap, self.outcomes.reset);
        if gap + reset > 0 {
            failures.push(format!("recovery incomplete: {gap} gap and {reset} reset answers"));
        }
        failures
    }
}
