//! Logins waiting for the cluster: a login is confirmed to its reactor only
//! when the registry has granted the name *and* (with targeted routing) Redis
//! has confirmed the subscription to the user's channel, so a message sent to
//! a user whose login was confirmed is never lost to a subscription still on
//! its way. Whichever of the two threads finishes second sends the decision.
//!
//! With broadcast routing the subscription waited for is the node's one
//! channel `msg`: a login waits while the subscriber's link is up and Redis
//! has not yet confirmed `msg` on it (at start and after each reconnect).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use compact_str::CompactString;
use parking_lot::Mutex;

use super::trim::trim_if_empty;
use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::inbox::Command;

/// What a pending login still waits for; it is decided once nothing is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Awaits {
    /// The registry's grant and Redis's subscription ack.
    Both,
    /// The registry's grant; the subscription is confirmed.
    Grant,
    /// The subscription ack; the registry granted the name.
    Ack,
}

impl Awaits {
    /// After the registry granted the name: `None` when nothing is left.
    fn granted(self) -> Option<Awaits> {
        match self {
            Awaits::Both | Awaits::Ack => Some(Awaits::Ack),
            Awaits::Grant => None,
        }
    }

    /// After Redis confirmed the subscription: `None` when nothing is left.
    fn acked(self) -> Option<Awaits> {
        match self {
            Awaits::Both | Awaits::Grant => Some(Awaits::Grant),
            Awaits::Ack => None,
        }
    }
}

struct Pending {
    at: ConnRef,
    awaits: Awaits,
}

pub struct PendingLogins {
    /// Entries in `map`: lets the subscriber skip the lock on every ack when none wait.
    count: AtomicUsize,
    map: Mutex<HashMap<CompactString, Pending>>,
    /// Broadcast routing: the `msg` subscription is on its way and not confirmed yet.
    msg_unconfirmed: AtomicBool,
}

impl PendingLogins {
    /// `broadcast`: logins wait for the `msg` subscription, from the start.
    pub fn new(broadcast: bool) -> PendingLogins {
        PendingLogins { count: AtomicUsize::new(0), map: Mutex::default(), msg_unconfirmed: AtomicBool::new(broadcast) }
    }

    /// A login of `name` at `at` starts; `targeted`: it waits for its own
    /// channel's subscription, else (broadcast) for `msg`'s if unconfirmed.
    pub fn begin(&self, name: &str, at: ConnRef, targeted: bool) {
        let mut map = self.map.lock();
        // Read under the lock: `msg_settled` clears the flag before taking it,
        // so a login either sees the flag clear or is found in the map.
        let subscribed = !targeted && !self.msg_unconfirmed.load(Ordering::Relaxed);
        let pending = Pending { at, awaits: if subscribed { Awaits::Grant } else { Awaits::Both } };
        if map.insert(name.into(), pending).is_none() {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The login of `name` at `at` ended before it was decided (the user left).
    pub fn cancel(&self, name: &str, at: ConnRef) {
        let mut map = self.map.lock();
        if map.get(name).is_some_and(|p| p.at == at) {
            map.remove(name);
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Hands back what a burst of logins grew, once none waits.
    pub fn trim_idle(&self) {
        if self.count.load(Ordering::Relaxed) == 0 {
            let mut map = self.map.lock();
            trim_if_empty!(map);
        }
    }

    /// The registry decided. Returns false when this login is no longer
    /// waiting (its user left, or a later login of the name replaced it).
    pub fn decided(&self, hub: &Hub, name: &str, at: ConnRef, accepted: bool) -> bool {
        let mut map = self.map.lock();
        let Some(pending) = map.get_mut(name).filter(|p| p.at == at) else {
            return false;
        };
        match pending.awaits.granted().filter(|_| accepted) {
            Some(left) => pending.awaits = left,
            None => {
                map.remove(name);
                self.count.fetch_sub(1, Ordering::Relaxed);
                drop(map);
                send(hub, at, accepted);
            }
        }
        true
    }

    /// Redis confirmed the subscription of `name`'s channel.
    pub fn subscribed(&self, hub: &Hub, name: &str) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.map.lock();
        let Some(pending) = map.get_mut(name) else {
            return;
        };
        match pending.awaits.acked() {
            Some(left) => pending.awaits = left,
            None => {
                let at = pending.at;
                map.remove(name);
                self.count.fetch_sub(1, Ordering::Relaxed);
                drop(map);
                send(hub, at, true);
            }
        }
    }

    /// Broadcast routing: the subscriber (re)sends SUBSCRIBE msg; logins
    /// from now on wait for its confirmation.
    pub fn msg_subscribing(&self) {
        self.msg_unconfirmed.store(true, Ordering::Relaxed);
    }

    /// Broadcast routing: Redis confirmed `msg`, or the subscriber lost
    /// Redis (logins do not wait through an outage): stop waiting for it.
    pub fn msg_settled(&self, hub: &Hub) {
        self.msg_unconfirmed.store(false, Ordering::Relaxed);
        // No fast path on `count`: a login may be inserting right now.
        self.release_subscribed(hub);
    }

    /// The subscriber lost Redis: stop waiting for confirmations that will
    /// come only after the reconnect (every channel is subscribed again then).
    pub fn stop_waiting_for_subscriptions(&self, hub: &Hub) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.release_subscribed(hub);
    }

    /// Marks every waiting login subscribed and sends those already granted.
    fn release_subscribed(&self, hub: &Hub) {
        let mut ready = Vec::new();
        let mut map = self.map.lock();
        map.retain(|_, p| match p.awaits.acked() {
            Some(left) => {
                p.awaits = left;
                true
            }
            None => {
                ready.push(p.at);
                false
            }
        });
        self.count.store(map.len(), Ordering::Relaxed);
        drop(map);
        for at in ready {
            send(hub, at, true);
        }
    }
}

fn send(hub: &Hub, at: ConnRef, accepted: bool) {
    hub.send(at, Command::LoginDecided { token: at.token, accepted });
}

#[cfg(test)]
mod tests {
    use mio::Token;

    use super::super::shared::Shared;
    use crate::config::Routing;
    use crate::directory::ConnRef;

    /// One event of a pending login of `alice`; numbers are connection tokens.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        /// `alice` logs in on a connection (targeted: waits for her channel).
        Begin(usize),
        /// The user on that connection left before the login was decided.
        Cancel(usize),
        /// The registry decided; `waiting` is what `decided` must return.
        Decided { at: usize, accepted: bool, waiting: bool },
        /// Redis acknowledged the subscription of `sb:u:{alice}`.
        Subscribed,
        /// Broadcast: the subscriber sends `SUBSCRIBE msg` (start, reconnect).
        MsgSubscribing,
        /// Broadcast: Redis acknowledged `msg`, or the subscriber lost it.
        MsgSettled,
        /// The subscriber's link went down.
        LinkDown,
    }
    use Step::*;

    struct Row {
        what: &'static str,
        routing: Routing,
        steps: &'static [Step],
        /// LoginDecided sent, as (token, accepted), in order.
        decided: &'static [(usize, bool)],
    }

    const fn row(
        what: &'static str,
        routing: Routing,
        steps: &'static [Step],
        decided: &'static [(usize, bool)],
    ) -> Row {
        Row { what, routing, steps, decided }
    }

    const T: Routing = Routing::Targeted;
    const B: Routing = Routing::Broadcast;

    const ROWS: &[Row] = &[
        row(
            "granted, then subscribed",
            T,
            &[Begin(1), Decided { at: 1, accepted: true, waiting: true }, Subscribed],
            &[(1, true)],
        ),
        row(
            "subscribed, then granted",
            T,
            &[Begin(1), Subscribed, Decided { at: 1, accepted: true, waiting: true }],
            &[(1, true)],
        ),
        row("granted, not yet subscribed", T, &[Begin(1), Decided { at: 1, accepted: true, waiting: true }], &[]),
        row(
            "refused at once, subscribed or not",
            T,
            &[Begin(1), Decided { at: 1, accepted: false, waiting: true }],
            &[(1, false)],
        ),
        row(
            "refusal after the ack",
            T,
            &[Begin(1), Subscribed, Decided { at: 1, accepted: false, waiting: true }],
            &[(1, false)],
        ),
        row("an ack is not a grant", T, &[Begin(1), Subscribed], &[]),
        row(
            "the user left",
            T,
            &[Begin(1), Cancel(1), Decided { at: 1, accepted: true, waiting: false }, Subscribed],
            &[],
        ),
        row(
            "another connection's cancel",
            T,
            &[Begin(1), Cancel(2), Subscribed, Decided { at: 1, accepted: true, waiting: true }],
            &[(1, true)],
        ),
        row(
            "a later login replaces an earlier one",
            T,
            &[
                Begin(1),
                Begin(2),
                Decided { at: 1, accepted: true, waiting: false },
                Decided { at: 2, accepted: true, waiting: true },
                Subscribed,
            ],
            &[(2, true)],
        ),
        row(
            "an outage ends the wait for the ack",
            T,
            &[Begin(1), Decided { at: 1, accepted: true, waiting: true }, LinkDown],
            &[(1, true)],
        ),
        row(
            "an outage does not grant",
            T,
            &[Begin(1), LinkDown, Decided { at: 1, accepted: true, waiting: true }],
            &[(1, true)],
        ),
        row(
            "an outage before the grant, refused",
            T,
            &[Begin(1), LinkDown, Decided { at: 1, accepted: false, waiting: true }],
            &[(1, false)],
        ),
        row(
            "decided twice",
            T,
            &[
                Begin(1),
                Subscribed,
                Decided { at: 1, accepted: true, waiting: true },
                Decided { at: 1, accepted: true, waiting: false },
            ],
            &[(1, true)],
        ),
        row(
            "broadcast waits for msg from the start",
            B,
            &[Begin(1), Decided { at: 1, accepted: true, waiting: true }],
            &[],
        ),
        row(
            "broadcast: msg confirmed later",
            B,
            &[Begin(1), Decided { at: 1, accepted: true, waiting: true }, MsgSettled],
            &[(1, true)],
        ),
        row(
            "broadcast: msg confirmed before",
            B,
            &[MsgSettled, Begin(1), Decided { at: 1, accepted: true, waiting: true }],
            &[(1, true)],
        ),
        row(
            "broadcast: a reconnect waits for msg again",
            B,
            &[MsgSettled, MsgSubscribing, Begin(1), Decided { at: 1, accepted: true, waiting: true }, MsgSettled],
            &[(1, true)],
        ),
        row(
            "broadcast: refused without msg",
            B,
            &[Begin(1), Decided { at: 1, accepted: false, waiting: true }],
            &[(1, false)],
        ),
        row(
            "broadcast: an outage ends the wait",
            B,
            &[Begin(1), Decided { at: 1, accepted: true, waiting: true }, LinkDown],
            &[(1, true)],
        ),
    ];

    fn at(token: usize) -> ConnRef {
        ConnRef { reactor: 0, token: Token(token) }
    }

    #[test]
    fn pending_logins_follow_their_table() {
        for row in ROWS {
            let (shared, _poll) = Shared::for_tests(row.routing);
            let (logins, hub) = (&shared.logins, &shared.hub);
            let targeted = row.routing == Routing::Targeted;
            for (i, &step) in row.steps.iter().enumerate() {
                match step {
                    Begin(n) => logins.begin("alice", at(n), targeted),
                    Cancel(n) => logins.cancel("alice", at(n)),
                    Decided { at: n, accepted, waiting } => {
                        let was = logins.decided(hub, "alice", at(n), accepted);
                        assert_eq!(was, waiting, "{}: step {i} {step:?}", row.what);
                    }
                    Subscribed => logins.subscribed(hub, "alice"),
                    MsgSubscribing => logins.msg_subscribing(),
                    MsgSettled => logins.msg_settled(hub),
                    LinkDown => logins.stop_waiting_for_subscriptions(hub),
                }
            }
            assert_eq!(shared.decisions(), row.decided, "{}", row.what);
        }
    }

    #[test]
    fn logins_of_other_names_do_not_mix() {
        let (shared, _poll) = Shared::for_tests(Routing::Targeted);
        let (logins, hub) = (&shared.logins, &shared.hub);
        logins.begin("alice", at(1), true);
        logins.begin("bob", at(2), true);
        logins.subscribed(hub, "bob");
        assert!(logins.decided(hub, "alice", at(1), true));
        assert!(logins.decided(hub, "bob", at(2), true));
        logins.subscribed(hub, "carol");
        assert_eq!(shared.decisions(), [(2, true)]);
        logins.subscribed(hub, "alice");
        assert_eq!(shared.decisions(), [(1, true)]);
    }
}
