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

use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::inbox::Command;

struct Pending {
    at: ConnRef,
    granted: bool,
    subscribed: bool,
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
        let pending = Pending { at, granted: false, subscribed };
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
            super::trim_if_empty!(map);
        }
    }

    /// The registry decided. Returns false when this login is no longer
    /// waiting (its user left, or a later login of the name replaced it).
    pub fn decided(&self, hub: &Hub, name: &str, at: ConnRef, accepted: bool) -> bool {
        let mut map = self.map.lock();
        let Some(pending) = map.get_mut(name).filter(|p| p.at == at) else {
            return false;
        };
        pending.granted = accepted;
        if !accepted || pending.subscribed {
            map.remove(name);
            self.count.fetch_sub(1, Ordering::Relaxed);
            drop(map);
            send(hub, at, accepted);
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
        pending.subscribed = true;
        if pending.granted {
            let at = pending.at;
            map.remove(name);
            self.count.fetch_sub(1, Ordering::Relaxed);
            drop(map);
            send(hub, at, true);
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
        map.retain(|_, p| {
            p.subscribed = true;
            if p.granted {
                ready.push(p.at);
            }
            !p.granted
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
