//! The cluster-wide registry of user names: one name, one place.
//!
//! # Keys
//!
//! - `sb:node:{ID}`: this node's lease, `SET ... PX lease`, renewed every
//!   third of the lease. It vanishes at most one lease after the node dies.
//! - `sb:reg:{NAME}`: the ID of the node that holds NAME, expiring
//!   [`NAME_TTL_LEASES`] leases after it was last renewed, so the names of
//!   a node that died free themselves even if no other node claims them.
//!
//! A claim runs a script on `sb:reg:{NAME}`: it takes the name if nobody
//! holds it (or we do) and otherwise returns the holder. If the holder's
//! lease key is gone (`EXISTS sb:node:{HOLDER}` is 0), the holder is dead
//! and a second call takes the name over, if it still names that holder.
//! The script never reads the lease key, so it runs unchanged on Redis
//! Cluster, where the user key and the lease key live in different slots.
//! Claims and releases made in one turn of the publisher go many names to
//! a call ([`batch`]).
//!
//! # Cost
//!
//! Steady state: one `SET` per node per lease/3, plus one `PEXPIRE` per held
//! name per [`RENEW_TICKS`] of them (5 leases, a quarter of the key's TTL),
//! spread evenly over the ticks: at a million names cluster-wide and the
//! default 15 s lease, about 13,000 small writes a second, against about
//! 200,000 if each name lived only one lease. A name is free for another
//! node one lease after its node died (the lease check); the key's TTL only
//! collects what nobody claims. Per login: one name in a script call (up
//! to [`batch::BATCH`] names a call); per logout the same; a takeover from
//! a dead node two more round trips. After a reconnect: every held name
//! again, in the same calls, a window at a time. A graceful shutdown
//! deletes its lease, so its names are free at once.
//!
//! # Ordering
//!
//! A release that overtakes its own claim (the user left while the claim was
//! in flight) waits for the claim to finish and then gives the name back; a
//! new claim of a name whose earlier claim is still in flight waits its turn.
//!
//! # States
//!
//! Each name this node knows is in one [`Name`] state: held, being claimed
//! (for a login, or to re-assert a held name after a reconnect), or released
//! while Redis was unreachable and still to be deleted there.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::cluster;
use super::resp::{self, Frame};
use super::shared::{Shared, SubJob};
use super::trim::trim_if_empty;
use crate::directory::ConnRef;
use crate::inbox::Command;

/// Takeover attempts before a claim gives up (each races other claimers of a dead node's name).
const MAX_ATTEMPTS: u8 = 3;
/// A name's key lives this many leases after its last renewal (5 min at the
/// default 15 s): long enough that renewing every name costs little (see
/// Cost), short enough that a dead node's names do not linger for good.
pub const NAME_TTL_LEASES: u32 = 20;
/// Lease renewals (a third of a lease apart) over which every held name's
/// key is renewed once, a slice at each: 5 leases, a quarter of the TTL, so
/// three renewals in a row may fail before a live node's key expires.
const RENEW_TICKS: u32 = 15;

/// What a registry command's reply is for.
pub(crate) enum Awaiting {
    Lease,
    /// A claim script over `names`, answered name by name in that order;
    /// `attempt` counts takeovers (a takeover claims one name).
    Claims {
        names: Vec<CompactString>,
        attempt: u8,
    },
    Alive {
        name: CompactString,
        holder: CompactString,
        attempt: u8,
    },
    Releases {
        names: Vec<CompactString>,
    },
    /// PEXPIRE of a held name's key: 0 means the key is gone.
    Renew {
        name: CompactString,
    },
}

/// A registry command for the publisher to send on the link serving `slot`.
pub(crate) struct Outgoing {
    pub slot: u16,
    pub command: Box<[u8]>,
    pub awaiting: Awaiting,
}

/// Where one name stands on this node.
enum Name {
    /// Held by `at`: granted by Redis, or (`confirmed: false`) granted locally
    /// while Redis was unreachable and not re-asserted since.
    Held { at: ConnRef, confirmed: bool },
    /// A claim is in flight. Boxed, so that a held name, the common state,
    /// costs no more than its connection and a flag.
    Claiming(Box<Claim>),
    /// Given up while Redis was unreachable, or its release failed: deleted
    /// there after the next reconnect.
    ReleasedOffline,
}

struct Claim {
    at: ConnRef,
    purpose: Purpose,
    /// The user left while the claim was in flight.
    released: bool,
    /// A later login of the same name, waiting for this claim to finish.
    next: Option<ConnRef>,
}

#[derive(Clone, Copy)]
enum Purpose {
    /// A user's login, decided when the claim finishes.
    Login,
    /// A name this node holds, claimed again after a reconnect; `confirmed`
    /// is its state before, kept should the claim be abandoned.
    Reassert { confirmed: bool },
}

pub(crate) struct Registry {
    node_id: CompactString,
    lease: Duration,
    names: HashMap<CompactString, Name>,
    /// Names to re-assert after a reconnect, sent a window at a time.
    to_reassert: VecDeque<CompactString>,
    next_renewal: Instant,
    /// Held names whose keys are still to be renewed in this cycle.
    to_renew: VecDeque<CompactString>,
    /// How many of `to_renew` each tick renews, and the ticks of this cycle.
    renew_per_tick: usize,
    tick: u32,
    /// Claims or releases being gathered into one script call, and the most
    /// names a call takes (one in Redis Cluster).
    open: Option<batch::Batch>,
    batch_max: usize,
    /// Milliseconds a name's key lives after a claim or renewal, as sent.
    ttl_ms: String,
    /// Commands for the publisher to send.
    pub out: Vec<Outgoing>,
}

impl Registry {
    /// `cluster`: Redis Cluster, where a script call takes one name.
    pub fn new(node_id: CompactString, lease: Duration, cluster: bool) -> Registry {
        Registry {
            node_id,
            lease,
            open: None,
            batch_max: if cluster { 1 } else { batch::BATCH },
            ttl_ms: (lease.as_millis() * u128::from(NAME_TTL_LEASES)).to_string(),
            names: HashMap::new(),
            to_reassert: VecDeque::new(),
            next_renewal: Instant::now(),
            to_renew: VecDeque::new(),
            renew_per_tick: 0,
            tick: 0,
            out: Vec::new(),
        }
    }

    pub(super) fn user_key(name: &str) -> Vec<u8> {
        let mut key = Vec::with_capacity(name.len() + 9);
        key.extend_from_slice(b"sb:reg:{");
        key.extend_from_slice(name.as_bytes());
        key.push(b'}');
        key
    }

    pub(super) fn node_key(id: &str) -> Vec<u8> {
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

    /// Claims `name`, in the open batch.
    fn send_claim(&mut self, name: &CompactString) {
        self.batch(batch::Kind::Claim, name);
    }

    /// Releases `name`, in the open batch.
    fn send_release(&mut self, name: &CompactString) {
        self.batch(batch::Kind::Release, name);
    }

    /// A user logs in: `up` says whether Redis serves the name's slot now.
    pub fn claim(&mut self, shared: &Shared, name: CompactString, at: ConnRef, up: bool) {
        if let Some(Name::Claiming(claim)) = self.names.get_mut(&name) {
            claim.next = Some(at);
            return;
        }
        self.start_login(shared, name, at, up);
    }

    fn start_login(&mut self, shared: &Shared, name: CompactString, at: ConnRef, up: bool) {
        if up {
            self.send_claim(&name);
            let claim = Claim { at, purpose: Purpose::Login, released: false, next: None };
            self.names.insert(name, Name::Claiming(Box::new(claim)));
        } else {
            // Outage: grant locally; the name is re-asserted after the reconnect.
            self.names.insert(name.clone(), Name::Held { at, confirmed: false });
            shared.logins.decided(&shared.hub, &name, at, true);
        }
    }

    /// A user leaves: `up` says whether Redis serves the name's slot now.
    pub fn release(&mut self, name: CompactString, at: ConnRef, up: bool) {
        match self.names.get_mut(&name) {
            Some(Name::Claiming(claim)) => {
                if claim.at == at {
                    claim.released = true;
                } else if claim.next == Some(at) {
                    claim.next = None;
                }
            }
            Some(state) if matches!(*state, Name::Held { at: holder, .. } if holder == at) => {
                if up {
                    self.names.remove(&name);
                    self.send_release(&name);
                } else {
                    *state = Name::ReleasedOffline;
                }
            }
            _ => {}
        }
    }

    /// A reply came for `awaiting`; `up` says whether a slot's link is up now.
    pub fn on_reply(&mut self, shared: &Shared, awaiting: Awaiting, reply: &Frame<'_>, up: &dyn Fn(u16) -> bool) {
        if let Frame::Error(e) = reply {
            log::warn!("registry command failed: {}", String::from_utf8_lossy(e));
            return self.on_lost(shared, awaiting, up);
        }
        match awaiting {
            Awaiting::Lease | Awaiting::Releases { .. } => {}
            Awaiting::Renew { name } => {
                if reply.integer() == Some(0) && matches!(self.names.get(&name), Some(Name::Held { .. })) {
                    // The key is gone (expired during a long outage, or deleted): claim it again.
                    self.to_reassert.push_back(name);
                }
            }
            Awaiting::Claims { names, attempt } => match reply.items() {
                Some(answers) if answers.len() == names.len() => {
                    for (name, answer) in names.into_iter().zip(answers) {
                        self.on_claim_answer(shared, name, attempt, answer, up);
                    }
                }
                _ => {
                    log::warn!("a claim got a reply of the wrong shape: {reply:?}");
                    self.on_lost(shared, Awaiting::Claims { names, attempt }, up);
                }
            },
            Awaiting::Alive { name, holder, attempt } => {
                if reply.integer() == Some(0) && attempt < MAX_ATTEMPTS {
                    log::info!("taking over {name:?} from node {holder:?}, whose lease expired");
                    if up(Self::slot_of_name(&name)) {
                        self.send_takeover(&name, holder.as_bytes(), attempt + 1);
                    } else {
                        self.undecidable(shared, name, up);
                    }
                } else {
                    self.finish(shared, name, false, true, up);
                }
            }
        }
    }

    /// The claim script's answer for one name: "" ours, else its holder.
    fn on_claim_answer(
        &mut self,
        shared: &Shared,
        name: CompactString,
        attempt: u8,
        answer: &Frame<'_>,
        up: &dyn Fn(u16) -> bool,
    ) {
        match answer.bytes() {
            Some([]) => self.finish(shared, name, true, true, up),
            Some(holder) => {
                let holder = CompactString::from_utf8_lossy(holder);
                let key = Self::node_key(&holder);
                if !up(cluster::slot(&key)) {
                    // Cannot tell whether the holder lives.
                    return self.undecidable(shared, name, up);
                }
                self.push(&key, &[b"EXISTS", &key], Awaiting::Alive { name, holder, attempt });
            }
            None => self.finish(shared, name, false, true, up),
        }
    }

    /// `awaiting` will get no reply (the link went down, or Redis refused).
    pub fn on_lost(&mut self, shared: &Shared, awaiting: Awaiting, up: &dyn Fn(u16) -> bool) {
        match awaiting {
            // Renewed in the next cycle, or claimed again after the reconnect.
            Awaiting::Lease | Awaiting::Renew { .. } => {}
            Awaiting::Releases { names } => {
                for name in names {
                    // Deleted after the reconnect, unless the name is in use again.
                    self.names.entry(name).or_insert(Name::ReleasedOffline);
                }
            }
            Awaiting::Claims { names, .. } => {
                for name in names {
                    self.claim_lost(shared, name, up);
                }
            }
            Awaiting::Alive { name, .. } => self.claim_lost(shared, name, up),
        }
    }

    /// The claim of `name` will not be answered.
    fn claim_lost(&mut self, shared: &Shared, name: CompactString, up: &dyn Fn(u16) -> bool) {
        match self.purpose_of(&name) {
            // Still held, still unconfirmed: re-asserted after the next reconnect.
            Some(Purpose::Reassert { .. }) => self.abandon(shared, name, up),
            // Outage: grant locally, like a claim made while Redis was down.
            Some(Purpose::Login) => self.finish(shared, name, true, false, up),
            None => {}
        }
    }

    /// What the claim in flight for `name` is for, if one is.
    fn purpose_of(&self, name: &str) -> Option<Purpose> {
        match self.names.get(name) {
            Some(Name::Claiming(claim)) => Some(claim.purpose),
            _ => None,
        }
    }

    /// Takes the claim in flight for `name` out of the map.
    fn take_claim(&mut self, name: &str) -> Option<Claim> {
        match self.names.remove(name)? {
            Name::Claiming(claim) => Some(*claim),
            other => {
                self.names.insert(name.into(), other);
                None
            }
        }
    }

    /// Part of the cluster is unreachable mid-claim: a login is refused (the
    /// name has a holder that may be alive); a re-assertion keeps the name.
    fn undecidable(&mut self, shared: &Shared, name: CompactString, up: &dyn Fn(u16) -> bool) {
        match self.purpose_of(&name) {
            Some(Purpose::Reassert { .. }) => self.abandon(shared, name, up),
            _ => self.finish(shared, name, false, true, up),
        }
    }

    /// The claim of `name` is over: `granted` (by Redis if `confirmed`, else
    /// locally), or refused.
    fn finish(
        &mut self,
        shared: &Shared,
        name: CompactString,
        granted: bool,
        confirmed: bool,
        up: &dyn Fn(u16) -> bool,
    ) {
        let Some(Claim { at, purpose, released, next }) = self.take_claim(&name) else {
            return;
        };
        if released {
            if granted {
                if up(Self::slot_of_name(&name)) {
                    self.send_release(&name);
                } else {
                    self.names.insert(name.clone(), Name::ReleasedOffline);
                }
            }
        } else if granted {
            self.names.insert(name.clone(), Name::Held { at, confirmed });
            if let Purpose::Login = purpose {
                shared.logins.decided(&shared.hub, &name, at, true);
            }
        } else {
            let give_up_channel = match purpose {
                Purpose::Login => shared.logins.decided(&shared.hub, &name, at, false),
                Purpose::Reassert { .. } => {
                    log::warn!(
                        "{name:?} was claimed by another node while Redis was unreachable: logging the local user out"
                    );
                    shared.hub.send(at, Command::LoginDecided { token: at.token, accepted: false });
                    true
                }
            };
            if give_up_channel {
                shared.push_sub(SubJob::Unsubscribe { name: name.clone(), at });
            }
        }
        self.start_next(shared, name, next, up);
    }

    /// A re-assertion that cannot finish now; it is retried after the next reconnect.
    fn abandon(&mut self, shared: &Shared, name: CompactString, up: &dyn Fn(u16) -> bool) {
        let Some(Claim { at, purpose, released, next }) = self.take_claim(&name) else {
            return;
        };
        let state = match purpose {
            _ if released => Name::ReleasedOffline,
            Purpose::Reassert { confirmed } => Name::Held { at, confirmed },
            Purpose::Login => Name::Held { at, confirmed: false },
        };
        self.names.insert(name.clone(), state);
        self.start_next(shared, name, next, up);
    }

    /// Starts the login that waited for the claim just finished, if any.
    fn start_next(&mut self, shared: &Shared, name: CompactString, next: Option<ConnRef>, up: &dyn Fn(u16) -> bool) {
        if let Some(next) = next {
            let ok = up(Self::slot_of_name(&name));
            self.start_login(shared, name, next, ok);
        }
    }

    /// Hands back what a burst of logins grew.
    pub fn trim_idle(&mut self) {
        trim_if_empty!(self.out, self.to_reassert, self.to_renew);
    }
}

mod batch;
mod reconnect;
mod renewal;
#[cfg(test)]
mod tests;
