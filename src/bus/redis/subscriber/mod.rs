//! The subscriber thread: holds this node's subscriptions and routes every
//! message it receives into the inbox of the reactor that holds the recipient.
//!
//! It does nothing else, so it reads as fast as Redis writes: a subscriber
//! that falls behind is disconnected by Redis at `client-output-buffer-limit
//! pubsub` (32 MB by default) and the node goes deaf. Each read round takes
//! what the socket holds, 256 KiB at a time, parses in place and pushes to
//! inboxes (lock-free, one wake per burst); the bytes found waiting per round
//! are the lag gauge (`switchboard_bus_subscriber_lag_bytes`).
//!
//! With targeted routing it mirrors the node's [`Directory`] in Redis: the
//! channel `sb:u:{NAME}` is wanted while NAME is in it (logged in or logging
//! in). One (S)SUBSCRIBE per login, one (S)UNSUBSCRIBE per logout, and after
//! every reconnect the whole directory again, in chunks of [`CHUNK`] channels.
//! The directory is the only per-user set: a copy here would cost about 70
//! bytes per user for nothing (both change together, under the reactors).
//!
//! In Redis Cluster the slot map is fetched again when a shard says a slot
//! moved, and at a steady pace while a master's link is down (see
//! [`cluster::RefreshSchedule`]): its replica takes over after
//! `cluster-node-timeout`, and only a new map names it.
//!
//! Rooms have channels too (`rooms`): subscribed while the room has members
//! here, routed as one shared frame to every reactor holding members.
//!
//! [`Directory`]: crate::directory::Directory

mod rooms;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use mio::Poll;

use super::channels::{self, BROADCAST_CHANNEL};
use super::cluster::{self, Topology};
use super::control;
use super::inbound::{self, Inbound};
use super::link::LinkError;
use super::links::{self, BusThread, LinkSet, Master};
use super::resp::{self, Frame};
use super::shared::{Role, Shared, SubJob};
use super::trim::trim_if_empty;
use crate::config::Routing;
use crate::directory::ConnRef;
use crate::protocol;

/// Channels per SUBSCRIBE when re-subscribing (Redis Cluster: one per
/// SSUBSCRIBE, since a command's channels must share a slot). Small enough
/// that Redis answers each command quickly, large enough to amortise it.
const CHUNK: usize = 512;
/// Output queued on a link before re-subscription waits for it to drain.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// How soon re-subscription waiting for a link's output to drain goes on.
const RESUBSCRIBE_RECHECK: Duration = Duration::from_millis(5);

/// What the subscriber keeps per shard (master).
#[derive(Default)]
pub(crate) struct Shard {
    /// Acks (of SUBSCRIBE, UNSUBSCRIBE, one per channel) and PONGs still to
    /// come on this connection: the reply deadline runs while any is due.
    /// Never more than the truth: an ack nobody asked for (a slot moved)
    /// counts down, and a refusal clears it, so a live server never times out.
    replies_due: u64,
    /// Channels Redis says this connection holds (from its acks).
    subscribed: u64,
    /// Channels still to subscribe again after a (re)connect.
    resubscribe: VecDeque<CompactString>,
    /// Room channels (by key) still to subscribe again.
    resubscribe_rooms: VecDeque<CompactString>,
}

struct Subscriber {
    shared: Arc<Shared>,
    /// Unsubscribe acks still to come, by name: any other unsubscribe is a
    /// shard telling us its slot moved.
    unsubscribing: HashMap<CompactString, u32>,
    /// The same for room channels, by room key.
    unsubscribing_rooms: HashMap<CompactString, u32>,
    /// Broadcast routing: a message from `msg` in the recipient's format.
    reencoded: Vec<u8>,
    /// The next slot map fetch answers a shard's signal (MOVED, an unasked
    /// unsubscribe): subscribe every channel again where it lives.
    refresh_all: bool,
    ever_up: bool,
    /// Messages from Redis that no node published, counted and logged.
    inbound: Inbound,
}

/// A frame from a subscribed connection, by what it means.
enum Push<'a> {
    Message {
        channel: &'a [u8],
        payload: &'a [u8],
    },
    Subscribed {
        channel: &'a [u8],
        count: u64,
    },
    Unsubscribed {
        channel: &'a [u8],
        count: u64,
    },
    Refused(&'a [u8]),
    /// The answer to PING.
    Pong,
    /// Anything else, which asks nothing of us.
    Other,
}

impl<'a> Push<'a> {
    fn of(frame: &Frame<'a>) -> Push<'a> {
        let items = match frame {
            Frame::Array(Some(items)) => items.as_slice(),
            Frame::Error(e) => return Push::Refused(e),
            Frame::Simple(b"PONG") => return Push::Pong,
            _ => return Push::Other,
        };
        if items.first().and_then(Frame::bytes) == Some(b"pong") {
            return Push::Pong;
        }
        let (Some(kind), Some(channel)) = (items.first().and_then(Frame::bytes), items.get(1).and_then(Frame::bytes))
        else {
            return Push::Other;
        };
        let count = || items.get(2).and_then(Frame::integer).unwrap_or(0) as u64;
        match kind {
            b"message" | b"smessage" => match items.get(2).and_then(Frame::bytes) {
                Some(payload) => Push::Message { channel, payload },
                None => Push::Other,
            },
            b"subscribe" | b"ssubscribe" => Push::Subscribed { channel, count: count() },
            b"unsubscribe" | b"sunsubscribe" => Push::Unsubscribed { channel, count: count() },
            _ => Push::Other,
        }
    }
}

pub(crate) fn run(shared: Arc<Shared>, poll: Poll) {
    let links = LinkSet::new(Arc::clone(&shared), poll, Role::Subscriber);
    let subscriber = Subscriber {
        shared,
        unsubscribing: HashMap::new(),
        unsubscribing_rooms: HashMap::new(),
        reencoded: Vec::with_capacity(1024),
        refresh_all: false,
        ever_up: false,
        inbound: Inbound::new(),
    };
    links::run(subscriber, links);
}

impl BusThread for Subscriber {
    type State = Shard;
    const ROLE: Role = Role::Subscriber;

    fn work(&mut self, links: &mut LinkSet<Shard>, _now: Instant) {
        self.shared.sub_bell.answer();
        while let Some(job) = self.shared.sub_jobs.pop() {
            match job {
                SubJob::Subscribe { name } => self.subscribe(links, name),
                SubJob::Unsubscribe { name, at } => self.unsubscribe(links, name, at),
                SubJob::SubscribeRoom { key } => self.subscribe_room(links, &key),
                SubJob::UnsubscribeRoom { key } => self.unsubscribe_room(links, key),
            }
        }
        for i in 0..links.len() {
            self.pump_resubscribe(links, i);
        }
        let subscriptions = links.iter().map(|m| m.state.subscribed).sum();
        self.shared.hub.metrics.bus.subscriptions.store(subscriptions, Relaxed);
    }

    /// Subscribes again every channel shard `i` serves.
    fn on_up(&mut self, links: &mut LinkSet<Shard>, i: usize) {
        if self.ever_up {
            self.shared.hub.metrics.bus.reconnects.fetch_add(1, Relaxed);
        }
        self.ever_up = true;
        let names: VecDeque<CompactString> = if self.targeted() {
            let topology = links.topology();
            self.shared.hub.directory.names().into_iter().filter(|n| self.shard_of(topology, n) == Some(i)).collect()
        } else {
            VecDeque::new()
        };
        let rooms: VecDeque<CompactString> = {
            let topology = links.topology();
            self.shared.hub.rooms.keys().into_iter().filter(|k| self.room_shard(topology, k) == Some(i)).collect()
        };
        let broadcast_here = self.broadcast_shard(links.topology()) == Some(i);
        let Master { link, state, .. } = links.get_mut(i);
        if !names.is_empty() || !rooms.is_empty() {
            log::info!("redis {}: subscribing {} channels again", link.endpoint, names.len() + rooms.len());
        }
        state.replies_due = 0;
        state.resubscribe = names;
        state.resubscribe_rooms = rooms;
        if broadcast_here {
            self.shared.logins.msg_subscribing();
            resp::push_command(&mut link.out, &[b"SUBSCRIBE", BROADCAST_CHANNEL]);
            state.replies_due += 1;
        }
        self.pump_resubscribe(links, i);
    }

    /// Logins stop waiting for acks of the dead connection.
    fn on_down(&mut self, links: &mut LinkSet<Shard>, i: usize) {
        let state = &mut links.get_mut(i).state;
        state.subscribed = 0;
        state.replies_due = 0;
        state.resubscribe.clear();
        state.resubscribe_rooms.clear();
        self.unsubscribing.clear();
        self.unsubscribing_rooms.clear();
        self.shared.logins.stop_waiting_for_subscriptions(&self.shared.hub);
        if self.broadcast_shard(links.topology()) == Some(i) {
            self.shared.logins.msg_settled(&self.shared.hub);
        }
    }

    /// Reads everything waiting on shard `i` and routes it.
    fn read(&mut self, links: &mut LinkSet<Shard>, i: usize) -> Result<(), LinkError> {
        let targeted = self.targeted();
        let mut moved = false;
        let mut received = 0u64;
        let Subscriber { shared, unsubscribing, unsubscribing_rooms, reencoded, inbound, .. } = self;
        let Master { link, state, .. } = links.get_mut(i);
        let mut refusal: Option<String> = None;
        let round = link.read_frames(|frame| {
            match Push::of(&frame) {
                Push::Message { channel, payload } => {
                    received += 1;
                    match channels::room_of_channel(channel) {
                        Some(key) => rooms::deliver_room(shared, inbound, channel, key, payload),
                        None => deliver(shared, inbound, targeted, reencoded, channel, payload),
                    }
                }
                Push::Subscribed { channel, count } => {
                    state.replies_due = state.replies_due.saturating_sub(1);
                    state.subscribed = count;
                    if let Some(name) = channels::user_name_of_channel(channel) {
                        shared.logins.subscribed(&shared.hub, name);
                    } else if !targeted && channel == BROADCAST_CHANNEL {
                        shared.logins.msg_settled(&shared.hub);
                    }
                }
                Push::Unsubscribed { channel, count } => {
                    state.replies_due = state.replies_due.saturating_sub(1);
                    state.subscribed = count;
                    moved |= match channels::room_of_channel(channel) {
                        Some(key) => rooms::room_moved_away(shared, unsubscribing_rooms, key),
                        None => slot_moved_away(shared, unsubscribing, channel),
                    };
                }
                Push::Refused(e) => {
                    // One error may answer a SUBSCRIBE of many channels.
                    state.replies_due = 0;
                    refusal.get_or_insert_with(|| String::from_utf8_lossy(e).into_owned());
                    moved |= e.starts_with(b"MOVED") || e.starts_with(b"ASK");
                }
                Push::Pong => state.replies_due = state.replies_due.saturating_sub(1),
                Push::Other => {}
            }
            Ok(())
        });
        if let Some(why) = refusal {
            log::warn!("redis {}: subscription refused: {why}", link.endpoint);
        }
        let bus = &self.shared.hub.metrics.bus;
        bus.received.fetch_add(received, Relaxed);
        bus.subscriber_lag_bytes.store(round.bytes, Relaxed);
        bus.subscriber_lag_max_bytes.fetch_max(round.bytes, Relaxed);
        if moved {
            self.refresh_all = true;
            links.schedule_refresh();
        }
        round.failure.map_or(Ok(()), Err)
    }

    /// Subscribes channels where they live now: every channel after a
    /// shard's signal (Redis ignores a subscription it already has), else
    /// those whose master changed. A master that is new gets its channels
    /// when its link comes up.
    fn on_topology(&mut self, links: &mut LinkSet<Shard>, topology: Topology) {
        let all = std::mem::take(&mut self.refresh_all);
        if topology == *links.topology() && !all {
            return;
        }
        if topology != *links.topology() {
            log::info!("Redis Cluster slot map changed: masters {:?}", topology.masters);
        }
        let mut moved: Vec<Vec<CompactString>> = vec![Vec::new(); topology.masters.len()];
        if self.targeted() {
            let old = links.topology();
            for name in self.shared.hub.directory.names() {
                let Some(i) = self.shard_of(&topology, &name) else { continue };
                let before = self.shard_of(old, &name).map(|j| &old.masters[j]);
                if all || before != Some(&topology.masters[i]) {
                    moved[i].push(name);
                }
            }
        }
        let mut moved_rooms: Vec<Vec<CompactString>> = vec![Vec::new(); topology.masters.len()];
        let old = links.topology();
        for key in self.shared.hub.rooms.keys() {
            let Some(i) = self.room_shard(&topology, &key) else { continue };
            let before = self.room_shard(old, &key).map(|j| &old.masters[j]);
            if all || before != Some(&topology.masters[i]) {
                moved_rooms[i].push(key);
            }
        }
        links.rebuild(topology);
        for ((master, names), rooms) in links.iter_mut().zip(moved).zip(moved_rooms) {
            if master.link.is_up() {
                master.state.resubscribe.extend(names);
                master.state.resubscribe_rooms.extend(rooms);
            }
        }
    }

    fn next_wake(&self, links: &LinkSet<Shard>, now: Instant) -> Option<Instant> {
        if !self.shared.sub_jobs.is_empty() {
            return Some(now);
        }
        let resubscribing = links
            .iter()
            .any(|m| m.link.is_up() && !(m.state.resubscribe.is_empty() && m.state.resubscribe_rooms.is_empty()));
        resubscribing.then_some(now + RESUBSCRIBE_RECHECK)
    }

    fn pinged(state: &mut Shard) {
        state.replies_due += 1;
    }

    fn awaits_reply(state: &Shard) -> bool {
        state.replies_due > 0
    }

    fn trim_idle(&mut self, links: &mut LinkSet<Shard>) {
        for master in links.iter_mut() {
            trim_if_empty!(master.state.resubscribe, master.state.resubscribe_rooms);
        }
        trim_if_empty!(self.unsubscribing, self.unsubscribing_rooms);
        self.shared.logins.trim_idle();
    }
}

impl Subscriber {
    fn targeted(&self) -> bool {
        self.shared.settings.routing == Routing::Targeted
    }

    fn cluster(&self) -> bool {
        self.shared.settings.cluster
    }

    /// Broadcast routing: the shard that holds the `msg` subscription.
    fn broadcast_shard(&self, topology: &Topology) -> Option<usize> {
        if self.targeted() {
            return None;
        }
        topology.master_of(if self.cluster() { cluster::slot(BROADCAST_CHANNEL) } else { 0 })
    }

    /// The shard of `topology` that serves `name`'s channel.
    fn shard_of(&self, topology: &Topology, name: &str) -> Option<usize> {
        let slot = if self.cluster() { cluster::slot(&channels::user_channel(name.as_bytes())) } else { 0 };
        topology.master_of(slot)
    }

    fn subscribe(&mut self, links: &mut LinkSet<Shard>, name: CompactString) {
        match self.shard_of(links.topology(), &name) {
            Some(i) if links.get(i).link.is_up() => {
                let channel = channels::user_channel(name.as_bytes());
                let verb: &[u8] = if self.cluster() { b"SSUBSCRIBE" } else { b"SUBSCRIBE" };
                let Master { link, state, .. } = links.get_mut(i);
                resp::push_command(&mut link.out, &[verb, &channel]);
                state.replies_due += 1;
            }
            // Not connected: the channel is subscribed with all others once
            // the link is up; the login need not wait for that.
            _ => self.shared.logins.subscribed(&self.shared.hub, &name),
        }
    }

    fn unsubscribe(&mut self, links: &mut LinkSet<Shard>, name: CompactString, at: ConnRef) {
        // `at` left the directory before asking, or (refused login) leaves
        // it next; another holder is a later login that wants the channel.
        if self.shared.hub.directory.lookup(&name).is_some_and(|holder| holder != at) {
            return;
        }
        if let Some(i) = self.shard_of(links.topology(), &name) {
            if links.get(i).link.is_up() {
                let channel = channels::user_channel(name.as_bytes());
                let verb: &[u8] = if self.cluster() { b"SUNSUBSCRIBE" } else { b"UNSUBSCRIBE" };
                let Master { link, state, .. } = links.get_mut(i);
                resp::push_command(&mut link.out, &[verb, &channel]);
                state.replies_due += 1;
                *self.unsubscribing.entry(name).or_insert(0) += 1;
            }
        }
    }

    /// Subscribes the next chunks of channels wanted on shard `i` after a
    /// reconnect: users' first, then rooms'.
    fn pump_resubscribe(&mut self, links: &mut LinkSet<Shard>, i: usize) {
        let cluster = self.cluster();
        loop {
            let master = links.get(i);
            if !master.link.is_up() || master.link.unsent() >= OUT_HIGH_WATER {
                return;
            }
            if master.state.resubscribe.is_empty() {
                return self.pump_resubscribe_rooms(links, i);
            }
            let mut channels: Vec<Vec<u8>> = Vec::with_capacity(CHUNK);
            while channels.len() < CHUNK {
                let Some(name) = links.get_mut(i).state.resubscribe.pop_front() else {
                    break;
                };
                // Skip names that left meanwhile or that another shard serves now.
                if self.wanted(&name) && self.shard_of(links.topology(), &name) == Some(i) {
                    channels.push(channels::user_channel(name.as_bytes()));
                }
            }
            let Master { link, state, .. } = links.get_mut(i);
            state.replies_due += channels.len() as u64;
            let out = &mut link.out;
            if cluster {
                for channel in &channels {
                    resp::push_command(out, &[b"SSUBSCRIBE", channel]);
                }
            } else if !channels.is_empty() {
                let mut args: Vec<&[u8]> = Vec::with_capacity(channels.len() + 1);
                args.push(b"SUBSCRIBE");
                args.extend(channels.iter().map(Vec::as_slice));
                resp::push_command(out, &args);
            }
        }
    }

    /// Whether `name`'s channel is wanted: the user is on this node.
    fn wanted(&self, name: &str) -> bool {
        self.shared.hub.directory.lookup(name).is_some()
    }
}

/// Hands a message to the reactor that holds its recipient, if it is a
/// chat message in the shape this bus publishes (anything else was not
/// published by a node: it is dropped, counted and logged).
fn deliver(
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

/// An unsubscribe ack for `channel`: true when nobody asked for it (the
/// user is still here), so the shard says its slot moved away.
fn slot_moved_away(shared: &Shared, unsubscribing: &mut HashMap<CompactString, u32>, channel: &[u8]) -> bool {
    let Some(name) = channels::user_name_of_channel(channel) else {
        return false;
    };
    match unsubscribing.get_mut(name) {
        Some(count) if *count > 1 => *count -= 1,
        Some(_) => {
            unsubscribing.remove(name);
        }
        None => return shared.hub.directory.lookup(name).is_some(),
    }
    false
}
