//! Rooms: which connections are members of which room, who sends each room message, and
//! the flags that ask for it. Like everything in the plan the assignment is arithmetic,
//! so every thread knows every room's members without asking anyone.
//!
//! Room `r` (`<room-prefix><r>`, `0 <= r < rooms`) has the members at positions
//! `r * size .. r * size + size` of the line of connections, taken modulo the number of
//! connections: with `rooms * size <= connections` every connection is in at most one
//! room, beyond that the line wraps and a connection is in up to
//! `ceil(rooms * size / connections)` rooms, each once (a room is never bigger than the
//! connections).
//!
//! Room message `k` (`0 <= k < messages`, one schedule for the whole run, meant to go at
//! `start + k / room-rate`) goes to room `k % rooms` from its member at position
//! `(k / rooms) % size`: consecutive messages to one room come from consecutive
//! members, so from every node in turn.
//!
//! `fanout` counts what each member received; `summary` reports it.

pub mod fanout;
pub mod summary;

/// Rooms a connection may be in: switchboard's default `--max-rooms-per-conn`, past
/// which its joins are refused.
pub const MAX_ROOMS_PER_CONNECTION: u64 = 100;

/// The room flags (part of the command line).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RoomArgs {
    /// Rooms to join after login (0 = no rooms): room r gets the connections r*M ..
    /// r*M+M-1 (M = --room-size), wrapping around the connections.
    #[arg(long, default_value_t = 0)]
    pub rooms: u32,
    /// Members of each room (at most --connections).
    #[arg(long, default_value_t = 0)]
    pub room_size: u32,
    /// Room r is named <prefix><r>.
    #[arg(long, default_value = "room")]
    pub room_prefix: String,
    /// Room messages per second over all rooms, open loop from the intended send time
    /// (0 = no room messages). Low enough, it sends one message at a time: 10/s gives
    /// each message 100 ms to reach every member before the next.
    #[arg(long, default_value_t = 0.0)]
    pub room_rate: f64,
    /// Room messages in all [default: --room-rate x --duration].
    #[arg(long)]
    pub room_messages: Option<u64>,
}

/// The rooms of a run, as every worker receives them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoomPlan {
    pub rooms: u32,
    pub size: u32,
    pub prefix: String,
    /// Room messages per second (0: none).
    pub rate: f64,
    /// Room messages in all.
    pub messages: u64,
    /// The run's connections (the line the rooms are laid on).
    pub connections: u32,
}

impl RoomPlan {
    /// The rooms asked for, checked; `None` without `--rooms`.
    ///
    /// # Errors
    /// A setting that cannot work, named with what it accepts.
    pub fn from_args(a: &RoomArgs, connections: u32, duration_s: f64) -> Result<Option<Self>, String> {
        if a.rooms == 0 {
            if a.room_size > 0 || a.room_rate > 0.0 || a.room_messages.is_some() {
                return Err("--room-size, --room-rate and --room-messages need --rooms N (N > 0)".into());
            }
            return Ok(None);
        }
        if a.room_size == 0 || a.room_size > connections {
            return Err(format!(
                "--room-size must be 1 to --connections ({connections}): a room has each member once, got {}",
                a.room_size
            ));
        }
        let per_connection = (a.rooms as u64 * a.room_size as u64).div_ceil(connections as u64);
        if per_connection > MAX_ROOMS_PER_CONNECTION {
            return Err(format!(
                "--rooms {} --room-size {} over {connections} connections puts a connection in {per_connection} \
                 rooms; at most {MAX_ROOMS_PER_CONNECTION} (switchboard's --max-rooms-per-conn)",
                a.rooms, a.room_size
            ));
        }
        let name_ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if a.room_prefix.is_empty() || !a.room_prefix.chars().all(name_ok) {
            return Err(format!(
                "--room-prefix must be a-z, 0-9, - or _ (a room name's own key), got {:?}",
                a.room_prefix
            ));
        }
        if !(a.room_rate.is_finite() && a.room_rate >= 0.0) {
            return Err("--room-rate must be a number of messages per second >= 0".into());
        }
        let messages = a.room_messages.unwrap_or((a.room_rate * duration_s) as u64);
        if messages > 0 && a.room_rate <= 0.0 {
            return Err("--room-messages needs --room-rate R (R > 0): the messages' schedule".into());
        }
        Ok(Some(RoomPlan {
            rooms: a.rooms,
            size: a.room_size,
            prefix: a.room_prefix.clone(),
            rate: a.room_rate,
            messages,
            connections,
        }))
    }

    /// The rooms connection `index` is a member of, in order.
    pub fn rooms_of(&self, index: u32) -> impl Iterator<Item = u32> {
        let (line, size, step) = (self.rooms as u64 * self.size as u64, self.size as u64, self.connections as u64);
        (index as u64..line).step_by(step.max(1) as usize).map(move |g| (g / size) as u32)
    }

    /// The position of connection `index` among room `room`'s members, if it is one.
    pub fn position(&self, index: u32, room: u32) -> Option<u32> {
        if room >= self.rooms || index >= self.connections {
            return None;
        }
        let c = self.connections as u64;
        let first = room as u64 * self.size as u64 % c;
        let p = (index as u64 + c - first) % c;
        (p < self.size as u64).then_some(p as u32)
    }

    /// Room message `k`: its room and its sender's connection index.
    pub fn message(&self, k: u64) -> (u32, u32) {
        let room = (k % self.rooms as u64) as u32;
        let p = (k / self.rooms as u64) % self.size as u64;
        let sender = (room as u64 * self.size as u64 + p) % self.connections as u64;
        (room, sender as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rooms: u32, size: u32, connections: u32) -> RoomPlan {
        let args =
            RoomArgs { rooms, room_size: size, room_prefix: "room".into(), room_rate: 1.0, room_messages: Some(10) };
        RoomPlan::from_args(&args, connections, 1.0).unwrap().unwrap()
    }

    #[test]
    fn every_room_has_its_size_and_positions_match_membership() {
        for (rooms, size, connections) in [(3, 4, 20), (5, 7, 10), (1, 10, 10), (7, 3, 5)] {
            let p = plan(rooms, size, connections);
            let mut members = vec![0u32; rooms as usize];
            for i in 0..connections {
                let mine: Vec<u32> = p.rooms_of(i).collect();
                assert!(mine.len() <= (rooms * size).div_ceil(connections) as usize);
                for r in 0..rooms {
                    assert_eq!(p.position(i, r).is_some(), mine.contains(&r), "{i} in {r}? {mine:?}");
                }
                for &r in &mine {
                    members[r as usize] += 1;
                }
            }
            assert!(members.iter().all(|&m| m == size), "{members:?}");
        }
    }

    #[test]
    fn senders_are_members_and_take_turns() {
        let p = plan(3, 4, 10);
        let senders: Vec<(u32, u32)> = (0..6).map(|k| p.message(k)).collect();
        assert_eq!(senders, [(0, 0), (1, 4), (2, 8), (0, 1), (1, 5), (2, 9)]);
        for k in 0..100 {
            let (room, sender) = p.message(k);
            assert!(p.position(sender, room).is_some());
        }
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let refused = |rooms, size, rate: f64, messages| {
            let args = RoomArgs {
                rooms,
                room_size: size,
                room_prefix: "room".into(),
                room_rate: rate,
                room_messages: messages,
            };
            RoomPlan::from_args(&args, 1000, 10.0).unwrap_err()
        };
        assert!(refused(1, 2000, 1.0, None).starts_with("--room-size must be 1 to --connections (1000)"));
        assert!(refused(500, 1000, 1.0, None).contains("puts a connection in 500 rooms; at most 100"));
        assert!(refused(0, 10, 0.0, None).contains("need --rooms"));
        assert!(refused(2, 10, 0.0, Some(5)).contains("needs --room-rate"));
        let upper = RoomArgs { rooms: 1, room_size: 1, room_prefix: "Room".into(), ..RoomArgs::default() };
        assert!(RoomPlan::from_args(&upper, 10, 1.0).unwrap_err().contains("--room-prefix"));
    }
}
