//! The subscriber's rooms: a node listens to a room's channel `sb:r:{KEY}`
//! while it has members of the room, and fans what arrives there out to the
//! reactors holding them: the frame is built once, shared by every member.

use std::collections::HashMap;
use std::sync::Arc;

use compact_str::CompactString;

use super::{Shard, Subscriber, CHUNK, OUT_HIGH_WATER};
use crate::bus::redis::channels;
use crate::bus::redis::cluster::{self, Topology};
use crate::bus::redis::history;
use crate::bus::redis::inbound::{self, Inbound};
use crate::bus::redis::links::{LinkSet, Master};
use crate::bus::redis::shared::Shared;
use crate::bus::redis::subscriptions::{self, Channel, Verb};
use crate::codec::{self, op};
use crate::inbox::{Command, RoomMessage};

impl Subscriber {
    /// The shard of `topology` that serves room `key`'s channel.
    pub(super) fn room_shard(&self, topology: &Topology, key: &str) -> Option<usize> {
        let slot = if self.cluster() { cluster::slot(&channels::room_channel(key)) } else { 0 };
        topology.master_of(slot)
    }

    /// The room's first member here joined: its channel goes out with the
    /// turn's other subscriptions. A link that is down subscribes it with
    /// all the others when it comes up.
    pub(super) fn subscribe_room(&mut self, links: &mut LinkSet<Shard>, key: CompactString) {
        let cluster = self.cluster();
        if let Some(i) = self.room_shard(links.topology(), &key).filter(|&i| links.get(i).link.is_up()) {
            let Master { link, state, .. } = links.get_mut(i);
            state.gathered.add(&mut link.out, Verb::Subscribe, Channel::Room(key), cluster);
            state.replies_due += 1;
        }
    }

    /// The room's last member here left (unless someone joined meanwhile).
    pub(super) fn unsubscribe_room(&mut self, links: &mut LinkSet<Shard>, key: CompactString) {
        if self.shared.hub.rooms.has(&key) {
            return;
        }
        let cluster = self.cluster();
        if let Some(i) = self.room_shard(links.topology(), &key).filter(|&i| links.get(i).link.is_up()) {
            *self.unsubscribing_rooms.entry(key.clone()).or_insert(0) += 1;
            history::room_deaf(&self.shared, Some(&key));
            if let Some(kept) = &mut self.kept {
                kept.forget(&channels::room_channel(&key));
            }
            let Master { link, state, .. } = links.get_mut(i);
            state.gathered.add(&mut link.out, Verb::Unsubscribe, Channel::Room(key), cluster);
            state.replies_due += 1;
        }
    }

    /// Subscribes the next chunks of room channels wanted on shard `i`
    /// (`chunk` is the users' buffer, reused).
    pub(super) fn pump_resubscribe_rooms(&mut self, links: &mut LinkSet<Shard>, i: usize, mut chunk: Vec<Channel>) {
        let cluster = self.cluster();
        loop {
            let master = links.get(i);
            if !master.link.is_up()
                || master.link.unsent() >= OUT_HIGH_WATER
                || master.state.resubscribe_rooms.is_empty()
            {
                return;
            }
            chunk.clear();
            while chunk.len() < CHUNK {
                let Some(key) = links.get_mut(i).state.resubscribe_rooms.pop_front() else {
                    break;
                };
                if self.shared.hub.rooms.has(&key) && self.room_shard(links.topology(), &key) == Some(i) {
                    chunk.push(Channel::Room(key));
                }
            }
            let Master { link, state, .. } = links.get_mut(i);
            state.replies_due += chunk.len() as u64;
            subscriptions::write_commands(&mut link.out, Verb::Subscribe, &chunk, cluster);
        }
    }
}

/// A message on room `key`'s channel: unless this node published it, a room
/// message in the shape nodes publish goes, as one shared frame, to every
/// reactor of this node holding members of the room.
pub(super) fn deliver_room(shared: &Shared, inbound: &mut Inbound, channel: &[u8], key: &str, payload: &[u8]) {
    let Some((node, json)) = channels::open_envelope(payload) else {
        return inbound.reject(&shared.hub, channel, payload);
    };
    if node == shared.settings.node_id.as_bytes() {
        return;
    }
    if !inbound::is_room_message_for(json, key) {
        return inbound.reject(&shared.hub, channel, payload);
    }
    let mut frame = Vec::with_capacity(json.len() + codec::MAX_HEADER_LEN);
    codec::write_frame(&mut frame, op::TEXT, json);
    let message = Arc::new(RoomMessage { room: CompactString::from(key), frame: Arc::from(frame) });
    let hub = &shared.hub;
    hub.rooms.for_each_reactor(key, |reactor| {
        hub.inboxes[reactor].push(Command::RoomDeliver(Arc::clone(&message)));
    });
}

/// An unsubscribe ack for room `key`: true when nobody asked for it (the
/// room still has members here), so the shard says its slot moved away.
pub(super) fn room_moved_away(shared: &Shared, unsubscribing: &mut HashMap<CompactString, u32>, key: &str) -> bool {
    match unsubscribing.get_mut(key) {
        Some(count) if *count > 1 => *count -= 1,
        Some(_) => {
            unsubscribing.remove(key);
        }
        None => return shared.hub.rooms.has(key),
    }
    false
}
