//! The registry's clock: this node's lease, renewed every third of it, and
//! the keys of the names it holds, renewed a slice at each lease renewal
//! (the costs are in the registry's Cost notes).

use std::time::Instant;

use super::{Awaiting, Name, Registry, RENEW_TICKS};
use crate::bus::redis::cluster;

impl Registry {
    /// The lease key's slot.
    pub fn lease_slot(&self) -> u16 {
        cluster::slot(&Self::node_key(&self.node_id))
    }

    /// Renews this node's lease when due, and the keys of the next slice of
    /// held names; returns when it is due next.
    pub fn renew_lease(&mut self, now: Instant, up: bool) -> Instant {
        if now >= self.next_renewal && up {
            let key = Self::node_key(&self.node_id);
            let px = self.lease.as_millis().to_string();
            self.push(&key, &[b"SET", &key, b"1", b"PX", px.as_bytes()], Awaiting::Lease);
            self.next_renewal = now + self.lease / 3;
            self.renew_names();
        }
        self.next_renewal
    }

    /// One tick of the names' renewal cycle: at its start every held name
    /// is queued, and each tick renews its share of them.
    fn renew_names(&mut self) {
        if self.tick.is_multiple_of(RENEW_TICKS) {
            self.to_renew.clear();
            self.to_renew.extend(
                self.names.iter().filter(|(_, state)| matches!(state, Name::Held { .. })).map(|(n, _)| n.clone()),
            );
            self.renew_per_tick = self.to_renew.len().div_ceil(RENEW_TICKS as usize);
        }
        self.tick = self.tick.wrapping_add(1);
        let ttl = std::mem::take(&mut self.ttl_ms);
        for _ in 0..self.renew_per_tick {
            let Some(name) = self.to_renew.pop_front() else { break };
            if matches!(self.names.get(&name), Some(Name::Held { .. })) {
                let key = Self::user_key(&name);
                self.push(&key, &[b"PEXPIRE", &key, ttl.as_bytes()], Awaiting::Renew { name });
            }
        }
        self.ttl_ms = ttl;
    }

    pub fn next_renewal(&self) -> Instant {
        self.next_renewal
    }

    /// On shutdown: delete the lease, so the names this node held are free at once.
    pub fn drop_lease(&mut self) {
        let key = Self::node_key(&self.node_id);
        self.push(&key, &[b"DEL", &key], Awaiting::Lease);
    }
}
