//! `--recover` in a driver thread: a logged-in connection the server drops waits a random
//! delay, reconnects under the same name and logs in with the last offset of its own
//! channel it saw (and the stream's epoch); the node replays what it missed, then says
//! `recoverymsg`, which confirms the login. Replayed messages are ordinary deliveries to
//! the exact accounting, so a recovery that misses one shows as lost and one that repeats
//! one as a duplicate. A failed attempt (refused while the node restarts, the name still
//! held by the node that went, no answer in time) is tried again after another delay,
//! until `--recover-timeout` after the drop.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::conn::State;
use super::{lock, Driver};
use crate::cause::Cause;
use crate::clock::monotonic_ns;
use crate::history::{Position, Recovery, StreamId};
use crate::message;
use crate::recovery::outcome_counter;
use crate::stats::{self, Counter};

/// A thread's recovery state; empty without `--recover`.
pub(super) struct Recover {
    /// Per slot: where the connection is in its own channel's history.
    positions: Vec<Position>,
    /// Reconnects waiting for their moment: (due, slot, generation of the dropped socket).
    waiting: BinaryHeap<Reverse<(u64, u32, u16)>>,
    /// From each drop to the new login's `recoverymsg`.
    pub(super) hist: Histogram<u64>,
}

impl Recover {
    pub(super) fn new(on: bool, count: u32) -> Self {
        let positions = if on { vec![Position::default(); count as usize] } else { Vec::new() };
        Recover { positions, waiting: BinaryHeap::new(), hist: stats::new_histogram() }
    }

    /// Where `slot` is in its channel (nothing yet: the zero position).
    pub(super) fn position(&self, slot: u32) -> Position {
        self.positions.get(slot as usize).copied().unwrap_or_default()
    }

    /// How long until the next reconnect is due, if one waits.
    pub(super) fn next_due_in(&self, now: u64) -> Option<Duration> {
        self.waiting.peek().map(|Reverse((due, _, _))| Duration::from_nanos(due.saturating_sub(now)))
    }
}

impl Driver {
    /// A delivered message's offset in the recipient's channel: its position moves on.
    pub(super) fn saw_offset(&mut self, slot: u32, offset: StreamId) {
        if let Some(position) = self.recover.positions.get_mut(slot as usize) {
            position.saw(offset);
        }
    }

    /// The node's `recoverymsg`: for the connection's own channel it carries the stream's
    /// position, and during a login it confirms it (the replay is over).
    pub(super) fn on_recovery(&mut self, slot: u32, recovery: Recovery<'_>) {
        let index = self.first + slot;
        if message::index_of_name(&recovery.channel, &self.plan.name_prefix) != Some(index) {
            return;
        }
        if let Some(position) = self.recover.positions.get_mut(slot as usize) {
            position.told(recovery.offset.unwrap_or_default(), recovery.epoch.unwrap_or_default());
        }
        self.shared.counters.add(outcome_counter(recovery.outcome), 1);
        self.shared.counters.add(Counter::Replayed, recovery.count);
        let conn = &mut self.conns[slot as usize];
        if conn.state != State::LoginPending {
            return;
        }
        if !conn.recovering {
            return self.on_login_confirmed(slot);
        }
        conn.recovering = false;
        stats::record_nanos(&mut self.recover.hist, monotonic_ns().saturating_sub(conn.started_ns));
        self.shared.counters.add(Counter::RecoverOk, 1);
        self.set_state(slot, State::Ready);
    }

    /// A connection ends because of `cause`: with `--recover`, a logged-in one (or one
    /// already recovering, within its time) is taken over here and reconnects later;
    /// false when it is an ordinary failure.
    pub(super) fn recover_from(&mut self, slot: u32, cause: &Cause) -> bool {
        if !self.plan.recovery.recover {
            return false;
        }
        let now = monotonic_ns();
        let conn = &mut self.conns[slot as usize];
        if conn.recovering {
            if now.saturating_sub(conn.started_ns) >= self.plan.recovery.recover_timeout_ns {
                // Out of time: an ordinary failure of the step it was in, and a failed recovery.
                conn.recovering = false;
                self.shared.counters.add(Counter::RecoverFail, 1);
                return false;
            }
            self.shared.counters.add(Counter::RecoverRetry, 1);
            // Counted by cause, not sampled: the samples are for errors.
            let step = format!("recover {}", conn.state.step());
            lock(&self.shared.causes).count(cause, &step);
        } else if matches!(conn.state, State::Ready | State::RoomJoining) {
            // Expected in a recovery run: the cause is counted, no error is.
            conn.recovering = true;
            conn.started_ns = now;
            self.shared.counters.add(Counter::Dropped, 1);
            lock(&self.shared.causes).count(cause, "dropped (reconnects)");
        } else {
            return false;
        }
        self.wait_to_reconnect(slot, now);
        true
    }

    /// The name is still held (the node that dropped the connection has not logged it
    /// out yet): try again after a delay.
    pub(super) fn retry_login(&mut self, slot: u32) -> bool {
        let conn = &self.conns[slot as usize];
        if !(conn.recovering && conn.state == State::LoginPending) {
            return false;
        }
        self.recover_from(slot, &Cause::login_rejected())
    }

    /// Closes the socket and queues the reconnect after a random delay.
    fn wait_to_reconnect(&mut self, slot: u32, now: u64) {
        self.drop_conn(slot);
        let delay = self.next_random() % self.plan.recovery.reconnect_delay_ns.max(1);
        let generation = self.conns[slot as usize].generation;
        self.recover.waiting.push(Reverse((now + delay, slot, generation)));
    }

    /// Starts the reconnects whose delay is over.
    pub(super) fn reconnect_due(&mut self, now: u64) {
        while let Some(&Reverse((due, slot, generation))) = self.recover.waiting.peek() {
            if due > now || self.pending >= self.max_pending {
                return;
            }
            self.recover.waiting.pop();
            let conn = &self.conns[slot as usize];
            if conn.generation == generation && conn.state == State::Closed && conn.recovering {
                self.start_connect(slot, now);
            }
        }
    }
}
