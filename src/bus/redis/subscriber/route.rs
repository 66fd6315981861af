//! Where a message from a user's channel goes: the reactor that holds its
//! recipient, once it passed the check of what nodes publish.

use super::super::channels;
use super::super::control;
use super::super::inbound::{self, Inbound};
use super::super::shared::Shared;
use crate::protocol;

/// Hands a message to the reactor that holds its recipient, if it is a
/// chat message in the shape this bus publishes (anything else was not
/// published by a node: it is dropped, counted and logged).
pub(super) fn deliver(
    shared: &Shared,
    inbound: &mut Inbound,
    targeted: bool,
    reencoded: &mut Vec<u8>,
    channel: &[u8],
    payload: &[u8],
) {
    if targeted {
        let Some(name) = channels::user_name_of_channel(channel) else {
            return inbound.reject(&shared.hub, channel, payload);
        };
        if !inbound::is_chat_for(payload, name) {
            if control::is_disconnect_for(payload, name) {
                shared.hub.disconnect_local(name);
                return;
            }
            return inbound.reject(&shared.hub, channel, payload);
        }
        shared.hub.deliver_local(name, payload);
    } else {
        reencoded.clear();
        match protocol::reencode_chat(payload, reencoded) {
            Some(to) if inbound::is_chat_for(reencoded, &to) => {
                shared.hub.deliver_local(&to, reencoded);
            }
            _ => inbound.reject(&shared.hub, channel, payload),
        }
    }
}
