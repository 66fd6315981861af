//! Which connection on this node holds which user name.
//!
//! Sharded maps under short locks: a lookup hashes the name, takes one shard's
//! lock for a map probe and copies out a [`ConnRef`]. No lock is held while
//! anything is written to a socket.

use std::collections::hash_map::{Entry, HashMap, RandomState};
use std::hash::BuildHasher;

use compact_str::CompactString;
use mio::Token;
use parking_lot::Mutex;

/// Shards: enough that reactors and the bus thread rarely meet on one lock.
const SHARDS: usize = 64;

/// Where a connection lives: its reactor and its token (slab key + generation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub reactor: usize,
    pub token: Token,
}

pub struct Directory {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<CompactString, ConnRef>>]>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new()
    }
}

impl Directory {
    pub fn new() -> Directory {
        Directory { hasher: RandomState::new(), shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }

    fn shard(&self, name: &str) -> &Mutex<HashMap<CompactString, ConnRef>> {
        &self.shards[self.hasher.hash_one(name) as usize % SHARDS]
    }

    /// Records `name` at `at` unless the name is already held; returns whether it was free.
    pub fn insert_if_absent(&self, name: &str, at: ConnRef) -> bool {
        match self.shard(name).lock().entry(CompactString::from(name)) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(at);
                true
            }
        }
    }

    /// Forgets `name` if it is still held by `at` (a successor may hold it already).
    pub fn remove(&self, name: &str, at: ConnRef) -> bool {
        let mut shard = self.shard(name).lock();
        if shard.get(name) == Some(&at) {
            shard.remove(name);
            true
        } else {
            false
        }
    }

    pub fn lookup(&self, name: &str) -> Option<ConnRef> {
        self.shard(name).lock().get(name).copied()
    }

    /// Every name held on this node, for re-subscribing after a bus reconnect.
    pub fn names(&self) -> Vec<CompactString> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            names.extend(shard.lock().keys().cloned());
        }
        names
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_held_once_and_released_only_by_its_holder() {
        let dir = Directory::new();
        let a = ConnRef { reactor: 0, token: Token(1) };
        let b = ConnRef { reactor: 1, token: Token(2) };
        assert!(dir.insert_if_absent("alice", a));
        assert!(!dir.insert_if_absent("alice", b));
        assert!(!dir.remove("alice", b));
        assert_eq!(dir.lookup("alice"), Some(a));
        assert!(dir.remove("alice", a));
        assert_eq!(dir.lookup("alice"), None);
        assert!(dir.insert_if_absent("alice", b));
        assert_eq!(dir.names(), vec![CompactString::from("alice")]);
    }
}
