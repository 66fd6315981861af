//! The embedded bus: one node on its own. Every user is local, so the
//! directory already decided everything and there is nowhere else to send.

use crate::bus::{Bus, Claim, Published};
use crate::directory::ConnRef;

#[derive(Default)]
pub struct LocalBus;

impl Bus for LocalBus {
    fn claim(&self, _name: &str, _at: ConnRef) -> Claim {
        Claim::Granted
    }

    fn release(&self, _name: &str, _at: ConnRef) {}

    fn publish(&self, _recipient: &str, _payload: &[u8], _from: ConnRef) -> Published {
        Published::NoRecipient
    }
}
