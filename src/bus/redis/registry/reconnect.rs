//! What the registry does when a link comes back: every name it holds is
//! claimed again (re-asserted), a window at a time, and names given up
//! while Redis was unreachable are deleted there.

use std::time::Instant;

use super::{Claim, Name, Purpose, Registry};

impl Registry {
    /// A link came up: renew the lease if it lives there, then queue every
    /// held name and every offline release that it serves.
    pub fn on_link_up(&mut self, serves: &dyn Fn(u16) -> bool) {
        if serves(self.lease_slot()) {
            self.next_renewal = Instant::now();
        }
        let (mut held, mut unconfirmed) = (0, 0);
        let mut names = Vec::new();
        let mut released = Vec::new();
        for (name, state) in &self.names {
            match state {
                Name::Held { confirmed, .. } => {
                    held += 1;
                    unconfirmed += usize::from(!confirmed);
                    if serves(Self::slot_of_name(name)) {
                        names.push(name.clone());
                    }
                }
                Name::ReleasedOffline if serves(Self::slot_of_name(name)) => released.push(name.clone()),
                _ => {}
            }
        }
        if !names.is_empty() {
            log::info!(
                "re-asserting {} of {held} user names in the registry ({unconfirmed} granted while Redis was unreachable)",
                names.len(),
            );
        }
        self.to_reassert.extend(names);
        for name in released {
            self.names.remove(&name);
            self.send_release(&name);
        }
    }

    /// Sends up to `budget` queued re-assertions whose link is up.
    pub fn pump_reassert(&mut self, budget: usize, up: &dyn Fn(u16) -> bool) {
        for _ in 0..budget {
            let Some(name) = self.to_reassert.pop_front() else {
                return;
            };
            let Some(&Name::Held { at, confirmed }) = self.names.get(&name) else {
                continue;
            };
            if up(Self::slot_of_name(&name)) {
                self.send_claim(&name);
                let claim = Claim { at, purpose: Purpose::Reassert { confirmed }, released: false, next: None };
                self.names.insert(name, Name::Claiming(Box::new(claim)));
            }
        }
    }

    /// Names waiting to be re-asserted.
    pub fn reassert_pending(&self) -> bool {
        !self.to_reassert.is_empty()
    }
}
