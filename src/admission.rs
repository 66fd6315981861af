//! What a node admits, node-wide: connections per source address (shared
//! by every reactor) and new connections per second.
//!
//! Both are touched once or twice per connection (at accept, at the upgrade,
//! at the close), never per message. The per-address counts sit in sharded
//! tables under short `parking_lot` locks: one probe per lock, nothing else
//! done while it is held. The connection rate is one atomic word (a GCRA
//! bucket: its "theoretical arrival time"), advanced by compare-and-swap.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Shards of the per-address table: enough that reactors rarely meet on one lock.
const SHARDS: usize = 16;

/// A source address as the per-address limit counts it: an IPv4 address
/// itself, an IPv6 address by its /64 prefix (what one subscriber is given),
/// folded to 32 bits. Two prefixes that fold alike share one count, which
/// can only make the limit stricter for them.
pub fn source_key(ip: IpAddr) -> u32 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let prefix = (u128::from(v6) >> 64) as u64;
            let mixed = prefix.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (mixed >> 32) as u32 ^ mixed as u32
        }
    }
}

pub struct Admission {
    sources: Box<[Mutex<HashMap<u32, u32>>]>,
    /// The connection bucket's theoretical arrival time, in microseconds since `epoch`.
    connect_tat: AtomicU64,
    epoch: Instant,
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new()
    }
}

impl Admission {
    pub fn new() -> Admission {
        Admission {
            sources: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            connect_tat: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    fn shard(&self, key: u32) -> &Mutex<HashMap<u32, u32>> {
        // Keys are addresses: their low bits vary most within a network.
        &self.sources[(key.wrapping_mul(0x9E37_79B9) >> 28) as usize % SHARDS]
    }

    /// Counts one more connection from `key`; returns how many it holds now.
    pub fn add_source(&self, key: u32) -> u32 {
        let mut shard = self.shard(key).lock();
        let count = shard.entry(key).or_insert(0);
        *count += 1;
        *count
    }

    /// Connections `key` holds now.
    pub fn source_count(&self, key: u32) -> u32 {
        self.shard(key).lock().get(&key).copied().unwrap_or(0)
    }

    /// One connection from `key` is gone; its entry goes when the last one does.
    pub fn remove_source(&self, key: u32) {
        let mut shard = self.shard(key).lock();
        if let Some(count) = shard.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                shard.remove(&key);
            }
        }
    }

    /// Takes one token from the node's connection bucket (`rate` per second,
    /// bursts of as many): `Err` with how long until one is free.
    pub fn take_connect_token(&self, rate: u32, now: Instant) -> Result<(), Duration> {
        if rate == 0 {
            return Ok(());
        }
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let interval = 1_000_000 / u64::from(rate);
        let tolerance = interval * u64::from(rate);
        let mut tat = self.connect_tat.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_us) + interval;
            if next - now_us > tolerance {
                return Err(Duration::from_micros(next - now_us - tolerance));
            }
            match self.connect_tat.compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_counted_and_forgotten() {
        let a = Admission::new();
        let k = source_key("10.0.0.1".parse().unwrap());
        assert_eq!((a.add_source(k), a.add_source(k)), (1, 2));
        a.remove_source(k);
        assert_eq!(a.source_count(k), 1);
        a.remove_source(k);
        assert_eq!(a.source_count(k), 0);
        assert!(a.sources.iter().all(|s| s.lock().is_empty()));
    }

    #[test]
    fn ipv6_counts_by_prefix_and_mapped_ipv4_as_ipv4() {
        let one = source_key("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(one, source_key("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_ne!(one, source_key("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(source_key("::ffff:10.0.0.1".parse().unwrap()), source_key("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_connection_bucket_allows_a_burst_then_the_rate() {
        let a = Admission::new();
        let t0 = a.epoch + Duration::from_secs(5);
        let granted = (0..20).filter(|_| a.take_connect_token(10, t0).is_ok()).count();
        assert_eq!(granted, 10);
        let wait = a.take_connect_token(10, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(a.take_connect_token(10, t0 + Duration::from_millis(100)).is_ok());
        assert!(a.take_connect_token(0, t0).is_ok());
    }
}
