//! Which rooms have members on this node: for each room (by its key, the
//! name profile's), how many members each reactor holds and who they are.
//!
//! Reactors keep their own members' connections (`reactor::rooms`); this is
//! what crosses threads: a room message from a reactor or from the bus goes
//! to the reactors counted here; the first member on the node makes the bus
//! subscribe the room's channel and the last one makes it let go; and the
//! embedded node answers `membersmsg` from it. Sharded under short locks,
//! taken per join, leave and room message, never per recipient.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use compact_str::CompactString;
use indexmap::IndexSet;
use parking_lot::Mutex;

/// Shards: enough that reactors and the bus thread rarely meet on one lock.
const SHARDS: usize = 64;

/// One room as this node knows it.
struct NodeRoom {
    /// Members on each reactor.
    per_reactor: Box<[u32]>,
    /// The members on this node, as they chose their names.
    members: IndexSet<CompactString>,
}

/// A join the node would not take: the room has `--max-room-members` here.
#[derive(Debug, PartialEq, Eq)]
pub struct RoomFull;

pub struct Rooms {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<CompactString, NodeRoom>>]>,
    reactors: usize,
}

impl Rooms {
    pub fn new(reactors: usize) -> Rooms {
        Rooms {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            reactors,
        }
    }

    fn shard(&self, key: &str) -> &Mutex<HashMap<CompactString, NodeRoom>> {
        &self.shards[(self.hasher.hash_one(key) >> 32) as usize % SHARDS]
    }

    /// `member` (on `reactor`) joins room `key`; true when it is the room's
    /// first member on this node.
    ///
    /// # Errors
    /// [`RoomFull`] when the room has `max` members here already.
    pub fn join(&self, key: &str, member: &str, reactor: usize, max: usize) -> Result<bool, RoomFull> {
        let mut shard = self.shard(key).lock();
        let room = shard.entry(CompactString::from(key)).or_insert_with(|| NodeRoom {
            per_reactor: vec![0; self.reactors].into_boxed_slice(),
            members: IndexSet::new(),
        });
        if room.members.len() >= max {
            if room.members.is_empty() {
                shard.remove(key);
            }
            return Err(RoomFull);
        }
        room.members.insert(CompactString::from(member));
        room.per_reactor[reactor] += 1;
        Ok(room.members.len() == 1)
    }

    /// `member` (on `reactor`) leaves room `key`; true when it was the
    /// room's last member on this node.
    pub fn leave(&self, key: &str, member: &str, reactor: usize) -> bool {
        let mut shard = self.shard(key).lock();
        let Some(room) = shard.get_mut(key) else {
            return false;
        };
        if room.members.swap_remove(member) {
            room.per_reactor[reactor] = room.per_reactor[reactor].saturating_sub(1);
        }
        let last = room.members.is_empty();
        if last {
            shard.remove(key);
        }
        last
    }

    /// Calls `each` with every reactor that holds members of room `key`.
    pub fn for_each_reactor(&self, key: &str, mut each: impl FnMut(usize)) {
        let shard = self.shard(key).lock();
        if let Some(room) = shard.get(key) {
            for (reactor, &count) in room.per_reactor.iter().enumerate() {
                if count > 0 {
                    each(reactor);
                }
            }
        }
    }

    /// Up to `limit` members of room `key` on this node, and how many there are.
    pub fn members(&self, key: &str, limit: usize) -> (Vec<CompactString>, usize) {
        let shard = self.shard(key).lock();
        shard
            .get(key)
            .map_or((Vec::new(), 0), |room| (room.members.iter().take(limit).cloned().collect(), room.members.len()))
    }

    /// Whether room `key` has members here.
    pub fn has(&self, key: &str) -> bool {
        self.shard(key).lock().contains_key(key)
    }

    /// Every room with members here (by key).
    pub fn keys(&self) -> Vec<CompactString> {
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            keys.extend(shard.lock().keys().cloned());
        }
        keys
    }

    /// Every room with members here, with its members (to tell Redis again
    /// after it comes back).
    pub fn all(&self) -> Vec<(CompactString, Vec<CompactString>)> {
        let mut rooms = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            rooms.extend(shard.iter().map(|(key, room)| (key.clone(), room.members.iter().cloned().collect())));
        }
        rooms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_and_last_member_on_the_node_are_told() {
        let rooms = Rooms::new(2);
        assert_eq!(rooms.join("lobby", "alice", 0, 10), Ok(true));
        assert_eq!(rooms.join("lobby", "bob", 1, 10), Ok(false));
        let mut reactors = Vec::new();
        rooms.for_each_reactor("lobby", |r| reactors.push(r));
        assert_eq!(reactors, [0, 1]);
        assert_eq!(rooms.members("lobby", 1).1, 2);
        assert!(!rooms.leave("lobby", "alice", 0));
        reactors.clear();
        rooms.for_each_reactor("lobby", |r| reactors.push(r));
        assert_eq!(reactors, [1]);
        assert!(rooms.leave("lobby", "bob", 1));
        assert_eq!(rooms.members("lobby", 10), (vec![], 0));
        assert!(rooms.all().is_empty());
    }

    #[test]
    fn a_full_room_takes_no_one_more() {
        let rooms = Rooms::new(1);
        assert_eq!(rooms.join("r", "a", 0, 1), Ok(true));
        assert_eq!(rooms.join("r", "b", 0, 1), Err(RoomFull));
        assert_eq!(rooms.join("empty", "a", 0, 0), Err(RoomFull));
        assert!(rooms.all().iter().all(|(key, _)| key == "r"));
    }
}
