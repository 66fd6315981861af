//! Rooms on a driver thread: joining every connection's rooms after login, sending the
//! room messages of this thread's senders on the run's one schedule, and taking in what
//! members receive (timed, checked against the plan's membership, counted per member in
//! `Fanouts`).

use hdrhistogram::Histogram;

use super::conn::{State, Wait};
use super::schedule::Schedule;
use super::Driver;
use crate::clock::monotonic_ns;
use crate::codec;
use crate::message::{self, Mark};
use crate::rooms::fanout::Fanouts;
use crate::stats::{self, Counter};

/// A thread's room figures while it runs.
pub(super) struct RoomState {
    /// Each join, from sending the connection's joins to its confirmation.
    pub(super) join_hist: Histogram<u64>,
    /// Each member delivery, from the message's intended send time.
    pub(super) member_hist: Histogram<u64>,
    /// Room message sends: how far behind the schedule.
    pub(super) lag_hist: Histogram<u64>,
    pub(super) fanouts: Fanouts,
}

impl RoomState {
    pub(super) fn new(size: u32) -> Self {
        let new = stats::new_histogram;
        RoomState { join_hist: new(), member_hist: new(), lag_hist: new(), fanouts: Fanouts::new(size) }
    }
}

impl Driver {
    /// Sends a logged-in connection's joins, all in one write, and waits for each one's
    /// confirmation (the joiner's own `joinmsg` back).
    pub(super) fn start_join(&mut self, slot: u32, now: u64) {
        let plan = self.plan.clone();
        let Some(rooms) = &plan.rooms else { return };
        let index = self.first + slot;
        self.wbuf.clear();
        let mut joins = 0u16;
        for room in rooms.rooms_of(index) {
            self.json.clear();
            message::write_join(&mut self.json, &rooms.prefix, room);
            let mask = self.next_mask();
            codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
            joins += 1;
        }
        if joins == 0 {
            return;
        }
        let conn = &mut self.conns[slot as usize];
        conn.joins = joins;
        conn.started_ns = now;
        let generation = conn.generation;
        self.set_state(slot, State::RoomJoining);
        self.deadlines.push_back((now + self.plan.connect_timeout_ns, slot, generation, Wait::Join));
        self.send_wbuf(slot);
    }

    /// A `joinmsg`: the confirmation of one of this connection's joins, or a notice that
    /// someone else joined (ignored).
    pub(super) fn on_joined(&mut self, slot: u32, room: &str, sender: &str) {
        let index = self.first + slot;
        let conn = &self.conns[slot as usize];
        if conn.state != State::RoomJoining || message::index_of_name(sender, &self.plan.name_prefix) != Some(index) {
            return;
        }
        let Some(rooms) = &self.plan.rooms else { return };
        let member = message::index_of_name(room, &rooms.prefix).and_then(|r| rooms.position(index, r));
        if member.is_none() {
            self.shared.counters.add(Counter::RoomMisrouted, 1);
            self.sample(format!("{} was confirmed a join to {room:?}, which it never asked for", self.describe(slot)));
            return;
        }
        stats::record_nanos(&mut self.rooms.join_hist, monotonic_ns().saturating_sub(conn.started_ns));
        self.shared.counters.add(Counter::RoomJoinOk, 1);
        let conn = &mut self.conns[slot as usize];
        conn.joins = conn.joins.saturating_sub(1);
        if conn.joins == 0 {
            self.set_state(slot, State::Ready);
        }
    }

    /// Sends what the room schedule has due by `now` from this thread's senders; true
    /// when the schedule is through.
    pub(super) fn send_rooms_due(&mut self, schedule: &mut Schedule, total: u64, now: u64) -> bool {
        let plan = self.plan.clone();
        let Some(rooms) = &plan.rooms else { return true };
        let due = schedule.due(now, total);
        let mine = self.first..self.first + self.count;
        // Nothing before its time, the first message included (the start lies ahead).
        while schedule.next() < due && schedule.intended_ns(schedule.next()) <= now {
            let k = schedule.next();
            let (room, sender) = rooms.message(k);
            if mine.contains(&sender) {
                self.send_room(sender - self.first, room, schedule.intended_ns(k));
            }
            schedule.advance(1);
        }
        schedule.next() >= total
    }

    /// One room message from `slot` to `room`, meant to go at `intended_ns`.
    fn send_room(&mut self, slot: u32, room: u32, intended_ns: u64) {
        let conn = &self.conns[slot as usize];
        if !(conn.state == State::Ready && conn.out.len() < super::chat::OUTPUT_LIMIT) {
            self.shared.counters.add(Counter::RoomUnsent, 1);
            let detail = format!("{} could not send room message: {:?}", self.describe(slot), conn.state);
            self.sample(detail);
            return;
        }
        let lag = monotonic_ns().saturating_sub(intended_ns);
        stats::record_nanos(&mut self.rooms.lag_hist, lag);
        self.stamp_data(slot, intended_ns, lag);
        self.json.clear();
        let prefix = self.plan.rooms.as_ref().map_or("", |r| r.prefix.as_str());
        message::write_room(&mut self.json, prefix, room, &self.data);
        self.wbuf.clear();
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
        if self.send_wbuf(slot) {
            self.shared.counters.add(Counter::RoomSent, 1);
        }
    }

    /// A room message delivered to member `slot`: checked (a member of that room, sent
    /// by the member its marker names), timed and counted once per member.
    pub(super) fn on_room_message(&mut self, slot: u32, data: &str, room: &str, sender: &str) {
        let index = self.first + slot;
        let Some(rooms) = &self.plan.rooms else {
            return self.on_unexpected(slot, "a room message, with no --rooms", data.as_bytes());
        };
        let Some(Mark::Chat { intended_ns, sender: from, seq, .. }) = message::parse_mark(data) else {
            return self.on_unexpected(slot, "a room message with unknown Data", data.as_bytes());
        };
        let r = message::index_of_name(room, &rooms.prefix);
        let position = r.and_then(|r| rooms.position(index, r));
        let from_member = r.is_some_and(|r| rooms.position(from, r).is_some());
        let from_sender = message::index_of_name(sender, &self.plan.name_prefix) == Some(from);
        let Some(position) = position.filter(|_| from_member && from_sender) else {
            self.shared.counters.add(Counter::RoomMisrouted, 1);
            let detail = format!(
                "{} got a room message to {room:?} from {sender:?} (sent by index {from})",
                self.describe(slot)
            );
            return self.sample(detail);
        };
        let latency = monotonic_ns().saturating_sub(intended_ns);
        stats::record_nanos(&mut self.rooms.member_hist, latency);
        self.rooms.fanouts.record(from, seq, position, latency);
        self.shared.counters.add(Counter::RoomReceived, 1);
    }
}
