//! The cluster-wide registry of user names: one name, one place.
//!
//! # Keys
//!
//! - `sb:node:{ID}`: this node's lease, `SET ... PX lease`, renewed every
//!   third of the lease. It vanishes at most one lease after the node dies.
//! - `sb:reg:{NAME}`: the ID of the node that holds NAME, without a TTL.
//!
//! A claim runs one single-key script on `sb:reg:{NAME}`: it takes the name
//! if nobody holds it (or we do) and otherwise returns the holder. If the
//! holder's lease key is gone (`EXISTS sb:node:{HOLDER}` is 0), the holder is
//! dead and a second script takes the name over, if it still names that
//! holder. Every script touches one key, so it runs unchanged on Redis
//! Cluster, where the user key and the lease key live in different slots.
//!
//! # Cost
//!
//! Steady state: one `SET` per node per lease/3 (O(nodes), not O(users): a
//! per-user TTL would cost 1M writes per renewal period at a million users).
//! Per login: one script; per logout: one script; a takeover from a dead node
//! two more round trips. After a reconnect: one script per held name,
//! pipelined in chunks. The price of no per-user TTL: keys of names that a
//! dead node held stay until somebody claims the name again (one small
//! string per name; a graceful shutdown deletes its lease so they free at once).
//!
//! # Ordering
//!
//! A release that overtakes its own claim (the user left while the claim was
//! in flight) waits for the claim to finish and then gives the name back; a
//! new claim of a name whose earlier claim is still in flight waits its turn.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::cluster;
use super::resp::{self, Frame};
use super::{Shared, SubJob};
use crate::directory::ConnRef;
use crate::inbox::Command;

/// Takes KEYS[1] for ARGV[1] when it is free, ours, or held by ARGV[2] (a dead
/// node); returns "" when the name is ours, the holder otherwise.
const CLAIM_SCRIPT: &[u8] = b"local o = redis.call('GET', KEYS[1]) \
if not o or o == ARGV[1] or o == ARGV[2] then redis.call('SET', KEYS[1], ARGV[1]) return '' end \
return o";
/// Deletes KEYS[1] only if ARGV[1] holds it.
const RELEASE_SCRIPT: &[u8] = b"if redis.call('GET', KEYS[1]) == ARGV[1] then \
return redis.call('DEL', KEYS[1]) end return 0";
/// Takeover attempts before a claim gives up (each races other claimers of a dead node's name).
const MAX_ATTEMPTS: u8 = 3;

/// What a registry command's reply is for.
pub(crate) enum Awaiting {
    Lease,
    Claim { name: CompactString, attempt: u8 },
    Alive { name: CompactString, holder: CompactString, attempt: u8 },
    Release { name: CompactString },
}

/// A registry command for the publisher to send on the link serving `slot`.
pub(crate) struct Outgoing {
    pub slot: u16,
    pub command: Box<[u8]>,
    pub awaiting: Awaiting,
}

struct Held {
    at: ConnRef,
    /// False while granted locally during an outage and not yet re-asserted.
    confirmed: bool,
}

struct Progress {
    at: ConnRef,
    /// A re-assertion after a reconnect, not a user's login.
    reassert: bool,
    /// The user left while the claim was in flight.
    released: bool,
    /// A later login of the same name, waiting for this claim to finish.
    next: Option<ConnRef>,
}

pub(crate) struct Registry {
    node_id: CompactString,
    lease: Duration,
    held: HashMap<CompactString, Held>,
    claims: HashMap<CompactString, Progress>,
    /// Names given up while Redis was unreachable: deleted after the reconnect.
    released_offline: HashSet<CompactString>,
    /// Names to re-assert after a reconnect, sent a window at a time.
    to_reassert: VecDeque<CompactString>,
    next_renewal: Instant,
    /// Commands for the publisher to send.
    pub out: Vec<Outgoing>,
}

impl Registry {
    pub fn new(node_id: CompactString, lease: Duration) -> Registry {
        Registry {
            node_id,
            lease,
            held: HashMap::new(),
            claims: HashMap::new(),
            released_offline: HashSet::new(),
            to_reassert: VecDeque::new(),
            next_renewal: Instant::now(),
            out: Vec::new(),
        }
    }

    fn user_key(name: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(name.len() + 9);
        key.extend_from_slice(b"sb:reg:{");
        key.extend_from_slice(name.as_bytes());
        key.push(b'}');
        key
    }

    fn node_key(id: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(id.len() + 10);
        key.extend_from_slice(b"sb:node:{");
        key.extend_from_slice(id.as_bytes());
        key.push(b'}');
        key
    }

    /// The slot of `name`'s registry key.
    pub fn slot_of_name(name: &str) -> u16 {
        cluster::slot(&Self::user_key(name))
    }

    fn push(&mut self, key: &[u8], args: &[&[u8]], awaiting: Awaiting) {
        let mut command = Vec::with_capacity(64 + args.iter().map(|a| a.len()).sum::<usize>());
        resp::push_command(&mut command, args);
        self.out.push(Outgoing { slot: cluster::slot(key), command: command.into_boxed_slice(), awaiting });
    }

    fn send_claim(&mut self, name: &CompactString, dead_holder: &[u8], attempt: u8) {
        let key = Self::user_key(name);
        let me = self.node_id.clone();
        self.push(
            &key,
            &[b"EVAL", CLAIM_SCRIPT, b"1", &key, me.as_bytes(), dead_holder],
            Awaiting::Claim { name: name.clone(), attempt },
        );
    }

    fn send_release(&mut self, name: &CompactString) {
        let key = Self::user_key(name);
        let me = self.node_id.clone();
        self.push(
            &key,
            &[b"EVAL", RELEASE_SCRIPT, b"1", &key, me.as_bytes()],
            Awaiting::Release { name: name.clone() },
        );
    }

    /// The lease key's slot.
    pub fn lease_slot(&self) -> u16 {
        cluster::slot(&Self::node_key(&self.node_id))
    }

    /// A user logs in: `up` says whether Redis serves the name's slot now.
    pub fn claim(&mut self, shared: &Shared, name: CompactString, at: ConnRef, up: bool) {
        if let Some(progress) = self.claims.get_mut(&name) {
            progress.next = Some(at);
            return;
        }
        self.start_claim(shared, name, at, false, up);
    }

    fn start_claim(&mut self, shared: &Shared, name: CompactString, at: ConnRef, reassert: bool, up: bool) {
        if !up {
            // Outage: grant locally; the name is re-asserted after the reconnect.
            if !reassert {
                self.held.insert(name.clone(), Held { at, confirmed: false });
                shared.logins.decided(&shared.hub, &name, at, true);
            }
            return;
        }
        self.send_claim(&name, b"", 0);
        self.claims.insert(name, Progress { at, reassert, released: false, next: None });
    }

    /// A user leaves: `up` says whether Redis serves the name's slot now.
    pub fn release(&mut self, name: CompactString, at: ConnRef, up: bool) {
        if let Some(progress) = self.claims.get_mut(&name) {
            if progress.at == at {
                progress.released = true;
                if self.held.get(&name).is_some_and(|h| h.at == at) {
                    self.held.remove(&name);
                }
            } else if progress.next == Some(at) {
                progress.next = None;
            }
            return;
        }
        if self.held.get(&name).is_some_and(|h| h.at == at) {
            self.held.remove(&name);
            if up {
                self.send_release(&name);
            } else {
                self.released_offline.insert(name);
            }
        }
    }

    /// A reply came for `awaiting`; `up` says whether a slot's link is up now.
    pub fn on_reply(&mut self, shared: &Shared, awaiting: Awaiting, reply: &Frame<'_>, up: &dyn Fn(u16) -> bool) {
        if let Frame::Error(e) = reply {
            log::warn!("registry command failed: {}", String::from_utf8_lossy(e));
            return self.on_lost(shared, awaiting, up);
        }
        match awaiting {
            Awaiting::Lease => {}
            Awaiting::Release { .. } => {}
            Awaiting::Claim { name, attempt } => match reply.bytes() {
                Some([]) => self.finish(shared, name, true, up),
                Some(holder) => {
                    let holder = CompactString::from_utf8_lossy(holder);
                    let key = Self::node_key(&holder);
                    if !up(cluster::slot(&key)) {
                        // Cannot tell whether the holder lives.
                        return self.undecidable(shared, name, up);
                    }
                    self.push(&key, &[b"EXISTS", &key], Awaiting::Alive { name, holder, attempt });
                }
                None => self.finish(shared, name, false, up),
            },
            Awaiting::Alive { name, holder, attempt } => {
                if reply.integer() == Some(0) && attempt < MAX_ATTEMPTS {
                    log::info!("taking over {name:?} from node {holder:?}, whose lease expired");
                    if up(Self::slot_of_name(&name)) {
                        self.send_claim(&name, holder.as_bytes(), attempt + 1);
                    } else {
                        self.undecidable(shared, name, up);
                    }
                } else {
                    self.finish(shared, name, false, up);
                }
            }
        }
    }

    /// `awaiting` will get no reply (the link went down, or Redis refused).
    pub fn on_lost(&mut self, shared: &Shared, awaiting: Awaiting, up: &dyn Fn(u16) -> bool) {
        match awaiting {
            Awaiting::Lease => {}
            Awaiting::Release { name } => {
                if !self.held.contains_key(&name) {
                    self.released_offline.insert(name);
                }
            }
            Awaiting::Claim { name, .. } | Awaiting::Alive { name, .. } => {
                let Some(progress) = self.claims.get(&name) else {
                    return;
                };
                if progress.reassert {
                    // Still held, still unconfirmed: re-asserted after the next reconnect.
                    let progress = self.claims.remove(&name).expect("checked above");
                    self.abandon(shared, name, progress, up);
                } else {
                    // Outage: grant locally, like a claim made while Redis was down.
                    self.finish_as(shared, name, true, false, up);
                }
            }
        }
    }

    /// Part of the cluster is unreachable mid-claim: a login is refused (the
    /// name has a holder that may be alive); a re-assertion keeps the name.
    fn undecidable(&mut self, shared: &Shared, name: CompactString, up: &dyn Fn(u16) -> bool) {
        let reassert = self.claims.get(&name).is_some_and(|p| p.reassert);
        if reassert {
            if let Some(progress) = self.claims.remove(&name) {
                self.abandon(shared, name, progress, up);
            }
        } else {
            self.finish(shared, name, false, up);
        }
    }

    fn finish(&mut self, shared: &Shared, name: CompactString, granted: bool, up: &dyn Fn(u16) -> bool) {
        self.finish_as(shared, name, granted, true, up);
    }

    fn finish_as(
        &mut self,
        shared: &Shared,
        name: CompactString,
        granted: bool,
        confirmed: bool,
        up: &dyn Fn(u16) -> bool,
    ) {
        let Some(progress) = self.claims.remove(&name) else {
            return;
        };
        let at = progress.at;
        if progress.released {
            if granted {
                if up(Self::slot_of_name(&name)) {
                    self.send_release(&name);
                } else {
                    self.released_offline.insert(name.clone());
                }
            }
        } else if granted {
            self.released_offline.remove(&name);
            self.held.insert(name.clone(), Held { at, confirmed });
            if !progress.reassert {
                shared.logins.decided(&shared.hub, &name, at, true);
            }
        } else {
            let still_waiting = !progress.reassert && shared.logins.decided(&shared.hub, &name, at, false);
            if progress.reassert && self.held.get(&name).is_some_and(|h| h.at == at) {
                self.held.remove(&name);
                log::warn!(
                    "{name:?} was claimed by another node while Redis was unreachable: logging the local user out"
                );
                shared.hub.send(at, Command::LoginDecided { token: at.token, accepted: false });
            }
            if still_waiting || progress.reassert {
                shared.sub_jobs.push(SubJob::Unsubscribe { name: name.clone(), at });
                shared.sub_bell.ring();
            }
        }
        self.after_claim(shared, name, progress, up);
    }

    /// A re-assertion that cannot finish now; it is retried after the next reconnect.
    fn abandon(&mut self, shared: &Shared, name: CompactString, progress: Progress, up: &dyn Fn(u16) -> bool) {
        if progress.released {
            self.released_offline.insert(name.clone());
        }
        self.after_claim(shared, name, progress, up);
    }

    /// Starts the claim that waited for this one, if any.
    fn after_claim(&mut self, shared: &Shared, name: CompactString, progress: Progress, up: &dyn Fn(u16) -> bool) {
        if let Some(next) = progress.next {
            let ok = up(Self::slot_of_name(&name));
            self.start_claim(shared, name, next, false, ok);
        }
    }

    /// A link came up: renew the lease if it lives there, then queue every
    /// held name and every offline release that it serves.
    pub fn on_link_up(&mut self, serves: &dyn Fn(u16) -> bool) {
        if serves(self.lease_slot()) {
            self.next_renewal = Instant::now();
        }
        let names: Vec<CompactString> = self.held.keys().filter(|n| serves(Self::slot_of_name(n))).cloned().collect();
        if !names.is_empty() {
            log::info!(
                "re-asserting {} of {} user names in the registry ({} granted while Redis was unreachable)",
                names.len(),
                self.held.len(),
                self.unconfirmed()
            );
        }
        self.to_reassert.extend(names);
        let released: Vec<CompactString> =
            self.released_offline.iter().filter(|n| serves(Self::slot_of_name(n))).cloned().collect();
        for name in released {
            self.released_offline.remove(&name);
            if !self.held.contains_key(&name) {
                self.send_release(&name);
            }
        }
    }

    /// Sends up to `budget` queued re-assertions whose link is up.
    pub fn pump_reassert(&mut self, shared: &Shared, budget: usize, up: &dyn Fn(u16) -> bool) {
        for _ in 0..budget {
            let Some(name) = self.to_reassert.pop_front() else {
                return;
            };
            if self.claims.contains_key(&name) {
                continue;
            }
            let Some(held) = self.held.get(&name) else {
                continue;
            };
            let at = held.at;
            if up(Self::slot_of_name(&name)) {
                self.start_claim(shared, name, at, true, true);
            }
        }
    }

    /// Hands back what a burst of logins grew (the claims in flight).
    pub fn trim_idle(&mut self) {
        super::trim_if_empty!(self.claims, self.out, self.to_reassert);
    }

    /// Names waiting to be re-asserted.
    pub fn reassert_pending(&self) -> bool {
        !self.to_reassert.is_empty()
    }

    /// Renews this node's lease when due; returns when it is due next.
    pub fn renew_lease(&mut self, now: Instant, up: bool) -> Instant {
        if now >= self.next_renewal && up {
            let key = Self::node_key(&self.node_id);
            let px = self.lease.as_millis().to_string();
            self.push(&key, &[b"SET", &key, b"1", b"PX", px.as_bytes()], Awaiting::Lease);
            self.next_renewal = now + self.lease / 3;
        }
        self.next_renewal
    }

    pub fn next_renewal(&self) -> Instant {
        self.next_renewal
    }

    /// On shutdown: delete the lease, so the names this node held are free at once.
    pub fn drop_lease(&mut self) {
        let key = Self::node_key(&self.node_id);
        self.push(&key, &[b"DEL", &key], Awaiting::Lease);
    }

    /// Names granted during an outage and not re-asserted yet.
    fn unconfirmed(&self) -> usize {
        self.held.values().filter(|h| !h.confirmed).count()
    }
}

#[cfg(test)]
mod tests;
