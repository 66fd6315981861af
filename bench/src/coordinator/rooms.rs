//! The rooms phases in the coordinator: every connection joins its rooms (after login),
//! and later the room messages go out on their one schedule and are waited for.

use std::time::{Duration, Instant};

use super::{Run, RunError};
use crate::ipc::{Command, RoomsFinal};
use crate::outcome::{CpuSpan, Outcome};
use crate::signals;
use crate::stats::{self, Counter};

impl Run<'_> {
    /// The join phase, timed, with the CPU it took.
    pub(super) fn join(&mut self, outcome: &mut Outcome) -> Result<(), RunError> {
        self.phase = "join";
        let (t, cpu) = (Instant::now(), self.cpu());
        self.fleet.order(Command::Join);
        let waited = self.wait_phase(Command::Join, false);
        outcome.rooms.join_secs = t.elapsed().as_secs_f64();
        outcome.rooms.join_cpu = CpuSpan::between(&cpu, &self.cpu());
        waited
    }

    /// The room messages and their grace period, or why they are skipped: a member that
    /// never joined would count as a lost delivery and hide the server's own losses.
    pub(super) fn room_messages(&mut self, outcome: &mut Outcome) -> Result<(), RunError> {
        let Some(rooms) = self.plan.rooms.clone() else { return Ok(()) };
        let joins = rooms.rooms as u64 * rooms.size as u64;
        if self.total(Counter::RoomJoinOk) < joins {
            outcome.rooms.skipped = Some(format!(
                "room messages skipped: only {} of {joins} room joins confirmed; deliveries to members \
                 who are not there would count as lost",
                self.total(Counter::RoomJoinOk)
            ));
            return Ok(());
        }
        self.phase = "rooms";
        let before = self.cpu();
        let by_pid = self.servers_cpu_by_pid();
        let t = Instant::now();
        self.fleet.order(Command::Rooms);
        let waited = self.wait_phase(Command::Rooms, false);
        outcome.rooms.send_secs = t.elapsed().as_secs_f64();
        waited?;
        self.phase = "grace";
        let t = Instant::now();
        let waited = self.wait_room_deliveries(rooms.size as u64, Duration::from_secs_f64(self.args.grace));
        outcome.rooms.grace_secs = t.elapsed().as_secs_f64();
        outcome.rooms.cpu = CpuSpan::between(&before, &self.cpu());
        let after = self.servers_cpu_by_pid();
        outcome.rooms.cpu_by_pid = by_pid.iter().zip(after).map(|(&(pid, was), (_, is))| (pid, is - was)).collect();
        waited
    }

    /// Waits until every member has every room message sent (as far as counts tell), or
    /// the grace period is over.
    fn wait_room_deliveries(&mut self, size: u64, grace: Duration) -> Result<(), RunError> {
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if self.total(Counter::RoomReceived) >= self.total(Counter::RoomSent) * size {
                return Ok(());
            }
            if let Some(signal) = signals::stop_requested() {
                return Err(RunError::Interrupted(signal));
            }
            self.pump(Duration::from_millis(20))?;
        }
        Ok(())
    }
}

/// Adds one worker's room figures into `outcome`: histograms merged, records kept for
/// the merge by message id.
pub(super) fn add_rooms(outcome: &mut Outcome, rooms: RoomsFinal) -> Result<(), RunError> {
    let r = &mut outcome.rooms;
    for (into, text) in [(&mut r.join, rooms.join), (&mut r.member, rooms.member), (&mut r.lag, rooms.lag)] {
        if !text.is_empty() {
            stats::merge(into, &stats::decode_histogram(&text).map_err(RunError::Invalid)?);
        }
    }
    outcome.rooms_records.extend(rooms.records);
    Ok(())
}
