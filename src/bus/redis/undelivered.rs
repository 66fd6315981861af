//! Telling a sender that its message did not, or may not, reach its
//! recipient: the publisher's answers to what Redis said (or did not say).

use std::sync::atomic::Ordering::Relaxed;

use super::channels;
use super::shared::Shared;
use crate::bus::Undelivered;
use crate::directory::ConnRef;
use crate::inbox::Command;

/// Tells the sender that a message may not have reached its recipient.
pub(super) fn reply_lost(shared: &Shared, command: &[u8], from: ConnRef) {
    let name = channels::recipient_of_any_command(command).unwrap_or_default();
    shared.hub.send(from, Command::Undelivered { token: from.token, why: Undelivered::Lost(name) });
}

/// Tells the sender that nobody subscribes the recipient's channel.
pub(super) fn reply_offline(shared: &Shared, command: &[u8], from: ConnRef) {
    let Some(name) = channels::recipient_of_command(command) else {
        return;
    };
    if let Some(reactor) = shared.hub.metrics.reactors.get(from.reactor) {
        reactor.undeliverable.fetch_add(1, Relaxed);
    }
    let why = Undelivered::NotOnline(String::from_utf8_lossy(name).as_ref().into());
    shared.hub.send(from, Command::Undelivered { token: from.token, why });
}
