//! Logins waiting for the cluster: a login is confirmed to its reactor only
//! when the registry has granted the name *and* (with targeted routing) Redis
//! has confirmed the subscription to the user's channel, so a message sent to
//! a user whose login was confirmed is never lost to a subscription still on
//! its way. Whichever of the two threads finishes second sends the decision.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use compact_str::CompactString;
use parking_lot::Mutex;

use crate::bus::Hub;
use crate::directory::ConnRef;
use crate::inbox::Command;

struct Pending {
    at: ConnRef,
    granted: bool,
    subscribed: bool,
}

#[derive(Default)]
pub struct PendingLogins {
    /// Entries in `map`: lets the subscriber skip the lock on every ack when none wait.
    count: AtomicUsize,
    map: Mutex<HashMap<CompactString, Pending>>,
}

impl PendingLogins {
    /// A login of `name` at `at` starts; `subscribed` is true when no
    /// subscription has to be waited for (broadcast routing).
    pub fn begin(&self, name: &str, at: ConnRef, subscribed: bool) {
        let mut map = self.map.lock();
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

    /// The subscriber lost Redis: stop waiting for confirmations that will
    /// come only after the reconnect (every channel is subscribed again then).
    pub fn stop_waiting_for_subscriptions(&self, hub: &Hub) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
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
