//! The subscriber's side of history: delivery that survives a dropped
//! subscriber link.
//!
//! For every channel with history that has members here, the subscriber
//! keeps the offset of the last message it delivered (learnt from the
//! messages themselves, or from the recovery that began the membership).
//! When the link comes back, each such channel is subscribed again; once
//! Redis confirms the subscription, the publisher reads the stream after
//! that offset, and the subscriber delivers what it missed, in order, then
//! the live messages it held back meanwhile, dropping any it already
//! delivered: nothing published while the link was down is lost, nothing
//! is delivered twice.
//!
//! State: one entry per such channel (its name, two offsets, a flag: about
//! 100 bytes with the map's share), dropped when the node stops listening
//! to the channel; held-back messages only while a read is in flight.

use std::collections::HashMap;

use super::{rooms, route, Subscriber};
use crate::bus::redis::channels;
use crate::bus::redis::history;
use crate::bus::redis::shared::Shared;
use crate::bus::redis::streams::ToSubscriber;
use crate::protocol::{self, StreamId};

/// One channel with history that has members here.
#[derive(Default)]
struct Tracked {
    /// The last message delivered (0-0: none yet).
    delivered: StreamId,
    /// Where the history stood when a recovery read it (a start for a
    /// catch-up when nothing was delivered since).
    noted: StreamId,
    /// Live messages held back while a catch-up read is due or in flight.
    holding: Option<Vec<Box<[u8]>>>,
    asked: bool,
}

impl Tracked {
    fn since(&self) -> StreamId {
        if self.delivered > StreamId::default() {
            self.delivered
        } else {
            self.noted
        }
    }
}

#[derive(Default)]
pub(crate) struct Kept {
    channels: HashMap<Box<[u8]>, Tracked>,
}

impl Kept {
    /// A live message: true to deliver it now, false when it is held back
    /// (a catch-up is under way) or was delivered already.
    pub fn admit(&mut self, channel: &[u8], payload: &[u8]) -> bool {
        let Some(at) = protocol::offset_of(payload) else {
            return true;
        };
        let tracked = match self.channels.get_mut(channel) {
            Some(tracked) => tracked,
            None => self.channels.entry(channel.into()).or_default(),
        };
        if let Some(held) = &mut tracked.holding {
            held.push(payload.into());
            return false;
        }
        if at <= tracked.delivered {
            return false;
        }
        tracked.delivered = at;
        true
    }

    /// The link is up again: every channel catches up once re-subscribed.
    pub fn on_link_up(&mut self, shared: &Shared) {
        // Channels whose members left while the link was down are not subscribed again.
        self.channels.retain(|channel, _| match channels::room_of_channel(channel) {
            Some(key) => shared.hub.rooms.has(key),
            None => channels::user_name_of_channel(channel).is_some_and(|n| shared.hub.directory.lookup(n).is_some()),
        });
        for tracked in self.channels.values_mut() {
            tracked.holding.get_or_insert_with(Vec::new);
            tracked.asked = false;
        }
    }

    /// Redis confirmed `channel`'s subscription: read what it missed.
    pub fn on_subscribed(&mut self, shared: &Shared, channel: &[u8]) {
        let Some(tracked) = self.channels.get_mut(channel) else {
            return;
        };
        if tracked.holding.is_some() && !tracked.asked {
            tracked.asked = true;
            history::catch_up(shared, channel, tracked.since());
        }
    }

    /// The node no longer listens to `channel`.
    pub fn forget(&mut self, channel: &[u8]) {
        self.channels.remove(channel);
    }
}

/// A live message: true to deliver it now (see [`Kept::admit`]).
pub(super) fn admit(kept: &mut Option<Kept>, channel: &[u8], payload: &[u8]) -> bool {
    kept.as_mut().is_none_or(|kept| kept.admit(channel, payload))
}

/// Redis confirmed `channel`'s subscription: a room's recoveries may go,
/// and a channel that was listened to before catches up.
pub(super) fn subscribed(kept: &mut Option<Kept>, shared: &Shared, channel: &[u8]) {
    if let Some(key) = channels::room_of_channel(channel) {
        history::room_listening(shared, key);
    }
    if let Some(kept) = kept.as_mut() {
        kept.on_subscribed(shared, channel);
    }
}

/// The link is up again (see [`Kept::on_link_up`]).
pub(super) fn link_up(kept: &mut Option<Kept>, shared: &Shared) {
    // Rooms' recoveries wait until Redis confirms their subscriptions again.
    history::room_deaf(shared, None);
    if let Some(kept) = kept.as_mut() {
        kept.on_link_up(shared);
    }
}

/// The node no longer listens to `channel`.
pub(super) fn forget(kept: &mut Option<Kept>, channel: &[u8]) {
    if let Some(kept) = kept.as_mut() {
        kept.forget(channel);
    }
}

/// Catch-ups to deliver: each channel's messages, in order.
type Due = Vec<(Box<[u8]>, Vec<Box<[u8]>>)>;

impl Subscriber {
    /// Takes what the publisher read for the subscriber: offsets noted by
    /// recoveries, and catch-ups to deliver.
    pub(super) fn take_kept(&mut self) {
        let shared = std::sync::Arc::clone(&self.shared);
        let (Some(history), Some(kept)) = (&shared.history, self.kept.as_mut()) else {
            return;
        };
        let mut due: Due = Vec::new();
        while let Some(message) = history.to_subscriber.pop() {
            match message {
                ToSubscriber::Note { channel, last } => {
                    let tracked = kept.channels.entry(channel).or_default();
                    tracked.noted = tracked.noted.max(last);
                }
                ToSubscriber::CaughtUp { channel, entries } => {
                    let Some(tracked) = kept.channels.get_mut(&channel) else {
                        continue;
                    };
                    let held = tracked.holding.take().unwrap_or_default();
                    let mut out = Vec::new();
                    for payload in entries.into_iter().chain(held) {
                        match protocol::offset_of(&payload) {
                            Some(at) if at > tracked.delivered => {
                                tracked.delivered = at;
                                out.push(payload);
                            }
                            _ => {}
                        }
                    }
                    due.push((channel, out));
                }
            }
        }
        for (channel, payloads) in due {
            for payload in payloads {
                self.deliver_kept(&channel, &payload);
            }
        }
    }

    fn deliver_kept(&mut self, channel: &[u8], payload: &[u8]) {
        let Subscriber { shared, inbound, reencoded, .. } = self;
        match channels::room_of_channel(channel) {
            Some(key) => rooms::deliver_room(shared, inbound, channel, key, payload),
            None => route::deliver(shared, inbound, true, reencoded, channel, payload),
        }
    }
}
