//! Sending chat messages, paced one of two ways:
//! - open loop (`--rate`): at the thread's share of the rate, from a random ready sender,
//!   whatever the server does. Each message carries the time its schedule meant it to go
//!   and how late it actually went (the load generator's own lag), so a load generator
//!   that falls behind, or whose senders wait for a stalled server, shows up in latency
//!   instead of hiding (coordinated omission);
//! - closed loop (`--closed-loop N`): every connection keeps N messages under way and
//!   sends the next one when one of its messages is delivered, so the run measures what
//!   the server sustains. There is no schedule: a message is meant to go when it goes.
//!
//! Either way `--pattern` decides the recipient and the message carries a timed `Data`
//! marker. Open loop picks a recipient per message; closed loop gives each connection one
//! partner in its own thread for the whole run (see `refill_windows`) and keeps its
//! windows in `window`.

use super::conn::State;
use super::schedule::Schedule;
use super::Driver;
use crate::clock::monotonic_ns;
use crate::codec;
use crate::message;
use crate::protocol::Protocol;
use crate::socketio;
use crate::stats::{self, Counter};

/// Output a connection may have waiting before chat sends pass it by: a server that stops
/// reading must not make the load generator grow without bound.
pub(super) const OUTPUT_LIMIT: usize = 256 * 1024;

/// Random senders tried for one message before it waits for a later turn.
const SENDER_TRIES: u32 = 8;

impl Driver {
    /// Open loop: sends the messages `schedule` has due by `now`, at most `budget`, each
    /// from a random ready sender and stamped with its intended time. When no sender can
    /// take one (none logged in, or all with full output: the server is not reading),
    /// the rest wait for a later turn and their lag grows.
    pub(super) fn send_due(&mut self, schedule: &mut Schedule, now: u64, budget: u64) {
        let due = schedule.due(now, u64::MAX).min(schedule.next() + budget);
        while schedule.next() < due {
            let Some(slot) = self.pick_sender() else {
                return;
            };
            let intended_ns = schedule.intended_ns(schedule.next());
            let actual_ns = monotonic_ns().max(intended_ns);
            let lag = actual_ns - intended_ns;
            stats::record_nanos(&mut self.lag_hist, lag);
            stats::record_nanos(&mut self.interval_lag, lag);
            let sender = self.first + slot;
            let random = self.next_random();
            let nodes = self.plan.targets.len() as u32;
            let recipient = self.plan.pattern.pick_recipient(sender, 0..self.plan.connections, nodes, random);
            self.wbuf.clear();
            self.push_chat(slot, recipient, intended_ns, lag);
            if self.send_wbuf(slot) {
                self.shared.counters.add(Counter::Sent, 1);
            }
            schedule.advance(1);
        }
    }

    /// A random connection that can send now, if a few tries find one.
    fn pick_sender(&mut self) -> Option<u32> {
        let count = self.conns.len() as u32;
        if count == 0 {
            return None;
        }
        for _ in 0..SENDER_TRIES {
            let random = self.next_random();
            let slot = self.plan.recovery.sender_slot(self.first, count, random);
            if self.can_send(slot) {
                return Some(slot);
            }
        }
        None
    }

    /// Closed loop: fills the windows that deliveries (or drained output) opened, each
    /// connection's new messages in one write, at most `budget` messages this turn.
    pub(super) fn refill_windows(&mut self, mut budget: u64) {
        // The partner is one of this thread's own connections: only this thread sees the
        // delivery that lets the sender go on. It stays the same all run, as in a
        // conversation: the deliveries one read brings back then release one sender,
        // whose next messages go out in one write. A recipient per message costs a write
        // here and a read at the node per message: through Redis that measured about half
        // the throughput, the load generator's work rather than the cluster's.
        let among = self.first..self.first + self.count;
        let nodes = self.plan.targets.len() as u32;
        while budget > 0 {
            let Some(slot) = self.windows.next_ready() else {
                return;
            };
            // A connection whose output is full is woken again when it drains.
            if !self.can_send(slot) {
                continue;
            }
            let room = self.windows.room(slot);
            let n = (room as u64).min(budget) as u16;
            if n == 0 {
                continue;
            }
            let recipient = self.plan.pattern.partner(self.first + slot, among.clone(), nodes);
            // One write, one send time; no schedule, so no lag.
            let now = monotonic_ns();
            self.wbuf.clear();
            for _ in 0..n {
                self.push_chat(slot, recipient, now, 0);
            }
            if self.send_wbuf(slot) {
                self.shared.counters.add(Counter::Sent, n as u64);
                self.windows.sent(slot, n);
            }
            budget -= n as u64;
            if n < room {
                // Out of budget for this turn: the rest next turn.
                self.windows.later(slot);
            }
        }
    }

    /// Logged in, output not full, and on a target whose connections send (`--send-from`).
    fn can_send(&self, slot: u32) -> bool {
        let conn = &self.conns[slot as usize];
        conn.state == State::Ready && conn.out.len() < OUTPUT_LIMIT && self.plan.recovery.sends(self.first + slot)
    }

    /// Fills `self.data` with the next timed `Data` of `slot` (its sequence number moves on).
    pub(super) fn stamp_data(&mut self, slot: u32, intended_ns: u64, lag_ns: u64) {
        let conn = &mut self.conns[slot as usize];
        let seq = conn.seq;
        conn.seq += 1;
        self.data.clear();
        message::write_chat_data(&mut self.data, intended_ns, lag_ns, self.first + slot, seq, self.plan.payload);
    }

    /// Appends one chat message from `slot` to `recipient`, meant to go at `intended_ns`
    /// and going `lag_ns` later, to `self.wbuf`.
    fn push_chat(&mut self, slot: u32, recipient: u32, intended_ns: u64, lag_ns: u64) {
        let sender = self.first + slot;
        self.stamp_data(slot, intended_ns, lag_ns);
        self.json.clear();
        let prefix = &self.plan.name_prefix;
        match &self.plan.protocol {
            Protocol::Seed => message::write_chat(&mut self.json, prefix, sender, recipient, &self.data),
            Protocol::SocketIo(names) => {
                socketio::write_chat(&mut self.json, names, prefix, sender, recipient, &self.data);
            }
        }
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
    }
}
