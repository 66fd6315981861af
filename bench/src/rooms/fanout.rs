//! Exact per-member accounting of room messages, and the fan-out latency.
//!
//! A room message has a global id (sender index, sender's sequence number, as chat's)
//! and is meant for every member of its room. A driver thread keeps, per room message
//! that reached any of its connections, one bit per member position (the room's size in
//! bits, allocated at the message's first delivery to the thread, never per delivery):
//! a member whose bit is already set got it twice. With the bits it keeps how many
//! members got it and the latest first delivery (from the intended send time). At the end the
//! coordinator merges the threads' records by id: a message reached its whole room when
//! the distinct members add up to the room's size, and its fan-out latency is the
//! latest of its deliveries: the time until the last member had it (and the earliest,
//! until the first: the difference is the spread of the fan-out itself).

use std::collections::HashMap;

use hdrhistogram::Histogram;

use crate::accounting::message_id;
use crate::stats;

/// One room message as one thread saw it: id, distinct members, repeat deliveries, and
/// the earliest and the latest first delivery's latency from the intended send time (ns).
pub type Record = (u64, u32, u32, u64, u64);

#[derive(Debug)]
struct Seen {
    bits: Box<[u64]>,
    distinct: u32,
    duplicates: u32,
    first_ns: u64,
    last_ns: u64,
}

/// What one driver thread received of room messages.
#[derive(Debug, Default)]
pub struct Fanouts {
    size: u32,
    by_id: HashMap<u64, Seen>,
}

impl Fanouts {
    /// Room messages to rooms of `size` members.
    pub fn new(size: u32) -> Self {
        Fanouts { size, by_id: HashMap::new() }
    }

    /// The member at `position` got message `(sender, seq)` `latency_ns` after its
    /// intended send time; false when it already had it (a duplicate).
    pub fn record(&mut self, sender: u32, seq: u32, position: u32, latency_ns: u64) -> bool {
        let words = (self.size as usize).div_ceil(64);
        let seen = self.by_id.entry(message_id(sender, seq)).or_insert_with(|| Seen {
            bits: vec![0; words].into_boxed_slice(),
            distinct: 0,
            duplicates: 0,
            first_ns: u64::MAX,
            last_ns: 0,
        });
        let (word, bit) = ((position / 64) as usize, 1u64 << (position % 64));
        if seen.bits[word] & bit != 0 {
            seen.duplicates += 1;
            return false;
        }
        seen.bits[word] |= bit;
        seen.distinct += 1;
        seen.first_ns = seen.first_ns.min(latency_ns);
        seen.last_ns = seen.last_ns.max(latency_ns);
        true
    }

    /// The thread's records, sorted by id.
    pub fn records(self) -> Vec<Record> {
        let mut records: Vec<Record> =
            self.by_id.into_iter().map(|(id, s)| (id, s.distinct, s.duplicates, s.first_ns, s.last_ns)).collect();
        records.sort_unstable();
        records
    }
}

/// The room messages of the whole run, merged from every thread's records.
#[derive(Debug)]
pub struct Totals {
    /// Member deliveries, each member counted once per message.
    pub delivered: u64,
    pub duplicates: u64,
    /// Messages that reached every member of their room.
    pub complete: u64,
    /// Messages seen by at least one member.
    pub seen: u64,
    /// Per complete message: the time until its last member had it (us).
    pub fanout: Histogram<u64>,
    /// Per complete message: the time until its first member had it (us).
    pub first: Histogram<u64>,
}

impl Totals {
    /// Merges the threads' records of messages to rooms of `size` members.
    pub fn merge(size: u32, records: impl IntoIterator<Item = Record>) -> Self {
        let mut by_id: HashMap<u64, (u64, u64, u64, u64)> = HashMap::new();
        for (id, distinct, duplicates, first_ns, last_ns) in records {
            let entry = by_id.entry(id).or_insert((0, 0, u64::MAX, 0));
            entry.0 += distinct as u64;
            entry.1 += duplicates as u64;
            entry.2 = entry.2.min(first_ns);
            entry.3 = entry.3.max(last_ns);
        }
        let (fanout, first) = (stats::new_histogram(), stats::new_histogram());
        let mut totals = Totals { delivered: 0, duplicates: 0, complete: 0, seen: by_id.len() as u64, fanout, first };
        for (distinct, duplicates, first_ns, last_ns) in by_id.into_values() {
            totals.delivered += distinct;
            totals.duplicates += duplicates;
            if distinct >= size as u64 {
                totals.complete += 1;
                stats::record_nanos(&mut totals.fanout, last_ns);
                stats::record_nanos(&mut totals.first, first_ns);
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_counts_once_and_the_last_delivery_is_the_fan_out() {
        // Room of 100 members, split over two threads (positions 0-59 and 60-99).
        let (mut a, mut b) = (Fanouts::new(100), Fanouts::new(100));
        for p in 0..60 {
            assert!(a.record(7, 0, p, 1_000_000 + p as u64 * 1_000));
        }
        for p in 60..100 {
            assert!(b.record(7, 0, p, 2_000_000));
        }
        assert!(!b.record(7, 0, 99, 9_000_000), "a second delivery to one member is a duplicate");
        // A second message that one member of the second thread never gets.
        for p in 0..60 {
            a.record(8, 0, p, 500_000);
        }
        for p in 60..99 {
            b.record(8, 0, p, 500_000);
        }
        let t = Totals::merge(100, a.records().into_iter().chain(b.records()));
        assert_eq!((t.delivered, t.duplicates, t.complete, t.seen), (199, 1, 1, 2));
        assert_eq!(t.fanout.len(), 1);
        // Until the last member had it (2 ms); the duplicate after that does not count.
        assert!((1_995..=2_005).contains(&t.fanout.max()), "{}", t.fanout.max());
        // The first member (position 0) had it after 1 ms.
        assert!((995..=1_005).contains(&t.first.max()), "{}", t.first.max());
    }
}
