//! Which connection on this node holds which user name.
//!
//! Sharded tables under short locks: a lookup hashes the name once, picks a
//! shard from that hash, takes its lock for one table probe with the same hash,
//! and copies out a [`ConnRef`]. No lock is held while anything is written to
//! a socket.
//!
//! The hash is std's keyed SipHash (`RandomState`, a random key per process):
//! names are chosen by clients, so a keyed hash keeps collision floods out.
//! Hashing once instead of twice (shard pick + map probe) halves its cost;
//! `hashbrown::HashTable` takes the precomputed hash, which std's map cannot.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use compact_str::CompactString;
use hashbrown::hash_table::{Entry, HashTable};
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

struct Holder {
    name: CompactString,
    at: ConnRef,
}

pub struct Directory {
    hasher: RandomState,
    shards: Box<[Mutex<HashTable<Holder>>]>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new()
    }
}

impl Directory {
    pub fn new() -> Directory {
        Directory::with_capacity(0)
    }

    /// A directory with room for `names` without growing: tables that double
    /// as they fill leave up to half their memory unused at any size.
    pub fn with_capacity(names: usize) -> Directory {
        let per_shard = names.div_ceil(SHARDS);
        Directory {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashTable::with_capacity(per_shard))).collect(),
        }
    }

    /// The name's hash and its shard. The shard takes bits 32 and up, which the
    /// table uses for neither its bucket (low bits) nor its tag (top 7 bits).
    fn locate(&self, name: &str) -> (u64, &Mutex<HashTable<Holder>>) {
        let hash = self.hasher.hash_one(name);
        (hash, &self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// Records `name` at `at` unless the name is already held; returns whether it was free.
    pub fn insert_if_absent(&self, name: &str, at: ConnRef) -> bool {
        let (hash, shard) = self.locate(name);
        let mut table = shard.lock();
        match table.entry(hash, |h| h.name == name, |h| self.hasher.hash_one(h.name.as_str())) {
            Entry::Occupied(_) => false,
            Entry::Vacant(slot) => {
                slot.insert(Holder { name: CompactString::from(name), at });
                true
            }
        }
    }

    /// Forgets `name` if it is still held by `at` (a successor may hold it already).
    pub fn remove(&self, name: &str, at: ConnRef) -> bool {
        let (hash, shard) = self.locate(name);
        let mut table = shard.lock();
        match table.find_entry(hash, |h| h.name == name) {
            Ok(entry) if entry.get().at == at => {
                entry.remove();
                true
            }
            _ => false,
        }
    }

    pub fn lookup(&self, name: &str) -> Option<ConnRef> {
        let (hash, shard) = self.locate(name);
        shard.lock().find(hash, |h| h.name == name).map(|h| h.at)
    }

    /// Every name held on this node, for re-subscribing after a bus reconnect.
    pub fn names(&self) -> Vec<CompactString> {
        let mut names = Vec::new();
        for shard in self.shards.iter() {
            names.extend(shard.lock().iter().map(|h| h.name.clone()));
        }
        names
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
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

    #[test]
    fn many_names_survive_growth() {
        let dir = Directory::new();
        for i in 0..10_000 {
            assert!(dir.insert_if_absent(&format!("user{i}"), ConnRef { reactor: 0, token: Token(i) }));
        }
        assert_eq!(dir.len(), 10_000);
        for i in 0..10_000 {
            assert_eq!(dir.lookup(&format!("user{i}")), Some(ConnRef { reactor: 0, token: Token(i) }));
        }
        assert!(dir.remove("user7", ConnRef { reactor: 0, token: Token(7) }));
        assert_eq!(dir.lookup("user7"), None);
        assert_eq!(dir.len(), 9_999);
    }
}
