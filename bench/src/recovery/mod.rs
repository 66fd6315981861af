//! `--recover`: clients that come back. A connection the server drops after its login
//! (a node restarting, a deploy's drain, a crash) reconnects under the same name after a
//! random delay, as mobile clients do, and logs in with the last history offset it saw;
//! the node replays what it missed before its `recoverymsg`. The run reports how long
//! each took from the drop to the end of its replay, what the replays said, and (through
//! the usual exact accounting) whether any message was lost or delivered twice.
//!
//! Chat senders can be limited to some targets (`--send-from`), so that a run where one
//! group of nodes restarts counts only what the restart can cost: messages from senders
//! that stay to recipients who go and come back.

pub mod summary;

use crate::history::Outcome;
use crate::stats::Counter;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct RecoverArgs {
    /// Connections the server drops after their login reconnect and log in again with
    /// the last history offset they saw; the login is confirmed by the node's
    /// `recoverymsg` (the node needs history for users: --history-users).
    #[arg(long)]
    pub recover: bool,
    /// Longest random wait before a dropped connection (or a failed attempt) tries again,
    /// in milliseconds: clients spread their reconnects as real ones do.
    #[arg(long, default_value_t = 1000)]
    pub reconnect_delay_ms: u32,
    /// Seconds a dropped connection keeps trying before it counts as failed.
    #[arg(long, default_value_t = 60.0)]
    pub recover_timeout: f64,
    /// Only connections on the K-th --url (0-based; repeatable) send chat messages; the
    /// others only receive. Default: every connection sends.
    #[arg(long = "send-from", value_name = "K")]
    pub send_from: Vec<u32>,
}

/// The recovery settings of a run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RecoverPlan {
    pub recover: bool,
    pub reconnect_delay_ns: u64,
    pub recover_timeout_ns: u64,
    /// Per target: whether its connections send chat (empty: all do).
    pub senders: Vec<bool>,
}

impl RecoverPlan {
    /// The settings asked for, checked against the number of targets.
    ///
    /// # Errors
    /// A bad timeout, a `--send-from` beyond the targets, or Socket.IO with `--recover`.
    pub fn from_args(a: &RecoverArgs, targets: usize, socketio: bool) -> Result<Self, String> {
        if !(a.recover_timeout.is_finite() && a.recover_timeout > 0.0) {
            return Err("--recover-timeout must be a number of seconds > 0".into());
        }
        if a.recover && socketio {
            return Err(
                "--recover follows switchboard's history (Offset, recoverymsg): not with --protocol socketio".into()
            );
        }
        let mut senders = Vec::new();
        if !a.send_from.is_empty() {
            senders = vec![false; targets];
            for &k in &a.send_from {
                let Some(sends) = senders.get_mut(k as usize) else {
                    return Err(format!("--send-from {k}: there are {targets} --url targets (0 to {})", targets - 1));
                };
                *sends = true;
            }
        }
        Ok(RecoverPlan {
            recover: a.recover,
            reconnect_delay_ns: u64::from(a.reconnect_delay_ms) * 1_000_000,
            recover_timeout_ns: (a.recover_timeout * 1e9) as u64,
            senders,
        })
    }

    /// Whether connection `index` (on target `index % targets`) sends chat.
    pub fn sends(&self, index: u32) -> bool {
        self.senders.is_empty() || self.senders[index as usize % self.senders.len()]
    }

    /// A random slot among a thread's `count` connections (the first is connection
    /// `first`) that is on a sending target: connection i is on target i % targets, so
    /// a random slot moves to the next one on a sending target picked at random.
    pub fn sender_slot(&self, first: u32, count: u32, random: u64) -> u32 {
        let slot = (random % count as u64) as u32;
        let sending = self.senders.iter().filter(|&&s| s).count() as u64;
        if sending == 0 {
            return slot;
        }
        let n = self.senders.len() as u32;
        let nth = ((random >> 32) % sending) as usize;
        let target = self.senders.iter().enumerate().filter(|(_, &s)| s).nth(nth).map_or(0, |(t, _)| t as u32);
        let on = (first + slot) % n;
        let moved = slot + (target + n - on) % n;
        // Past the end: the one before on the same target (or the slot, for a thread with
        // fewer connections than targets).
        if moved < count {
            moved
        } else {
            moved.checked_sub(n).unwrap_or(slot)
        }
    }
}

/// The `recoverymsg` outcomes counted, by counter.
pub fn outcome_counter(outcome: Outcome) -> Counter {
    match outcome {
        Outcome::Recovered => Counter::RecoveredOutcome,
        Outcome::Fresh => Counter::FreshOutcome,
        Outcome::Gap => Counter::GapOutcome,
        // An answer this load generator does not know recovered nothing it can vouch for.
        Outcome::Reset | Outcome::Other => Counter::ResetOutcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(send_from: &[u32], targets: usize) -> Result<RecoverPlan, String> {
        let args =
            RecoverArgs { recover: true, recover_timeout: 5.0, send_from: send_from.to_vec(), ..Default::default() };
        RecoverPlan::from_args(&args, targets, false)
    }

    #[test]
    fn senders_are_the_targets_named() {
        let all = plan(&[], 3).unwrap();
        assert!((0..3).all(|i| all.sends(i)));
        let first = plan(&[0], 3).unwrap();
        assert_eq!((first.sends(0), first.sends(1), first.sends(2), first.sends(3)), (true, false, false, true));
        assert!(plan(&[3], 3).unwrap_err().contains("--send-from 3: there are 3 --url targets"));
    }

    #[test]
    fn sender_slots_are_on_sending_targets_and_cover_them() {
        let p = plan(&[0, 3], 9).unwrap();
        for first in [0, 5, 1000] {
            let mut seen = std::collections::BTreeSet::new();
            for r in 0..20_000u64 {
                let random = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let slot = p.sender_slot(first, 100, random);
                assert!(slot < 100);
                assert!([0, 3].contains(&((first + slot) % 9)), "slot {slot} of first {first}");
                seen.insert(slot);
            }
            // Every slot on targets 0 and 3 is picked: 100 slots, 2 of 9 targets.
            assert!(seen.len() >= 22, "{}", seen.len());
        }
        let all = plan(&[], 9).unwrap();
        assert_eq!(all.sender_slot(0, 10, 7), 7);
    }

    #[test]
    fn bad_settings_are_refused_with_the_flag() {
        let args = RecoverArgs { recover_timeout: 0.0, ..Default::default() };
        assert!(RecoverPlan::from_args(&args, 1, false).unwrap_err().contains("--recover-timeout"));
        let sio = RecoverArgs { recover: true, recover_timeout: 1.0, ..Default::default() };
        assert!(RecoverPlan::from_args(&sio, 1, true).unwrap_err().contains("socketio"));
    }
}
