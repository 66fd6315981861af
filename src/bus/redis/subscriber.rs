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
//! moved, and every [`REFRESH_WHILE_DOWN`] while a master's link is down: its
//! replica takes over after `cluster-node-timeout`, and only a new map names it.
//!
//! [`Directory`]: crate::directory::Directory

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use mio::{Events, Poll, Token};

use super::cluster::{self, Topology};
use super::link::{Link, LinkError, Timer};
use super::resp::{self, Frame};
use super::{Shared, SubJob, BROADCAST_CHANNEL, WAKER};
use crate::config::Routing;
use crate::directory::ConnRef;
use crate::protocol;

/// Channels per SUBSCRIBE when re-subscribing (Redis Cluster: one per
/// SSUBSCRIBE, since a command's channels must share a slot). Small enough
/// that Redis answers each command quickly, large enough to amortise it.
const CHUNK: usize = 512;
/// Output queued on a link before re-subscription waits for it to drain.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// Shortest pause between two fetches of the cluster's slot map.
const REFRESH_PAUSE: Duration = Duration::from_millis(100);
/// Pause between fetches of the slot map while a master is unreachable: a
/// replica is promoted after `cluster-node-timeout` (15 s by default) plus an
/// election of about a second, so twice a second finds it promptly, and costs
/// one `CLUSTER SLOTS` per half second only while a master is down.
pub(crate) const REFRESH_WHILE_DOWN: Duration = Duration::from_millis(500);

struct Shard {
    link: Link,
    token: Token,
    hello_left: usize,
    /// Channels Redis says this connection holds (from its acks).
    subscribed: u64,
    /// Channels still to subscribe again after a (re)connect.
    resubscribe: VecDeque<CompactString>,
}

struct Subscriber {
    shared: Arc<Shared>,
    poll: Poll,
    topology: Topology,
    shards: Vec<Shard>,
    next_token: usize,
    /// Unsubscribe acks still to come, by name: any other unsubscribe is a
    /// shard telling us its slot moved.
    unsubscribing: HashMap<CompactString, u32>,
    reencoded: Vec<u8>,
    refresh_at: Option<Instant>,
    /// The scheduled refresh answers a shard's signal (MOVED, an unasked
    /// unsubscribe): subscribe every channel again where it lives.
    refresh_all: bool,
    last_refresh: Instant,
    ever_up: bool,
}

pub(crate) fn run(shared: Arc<Shared>, poll: Poll) {
    let topology = super::publisher::initial_topology(&shared);
    let mut subscriber = Subscriber {
        shared,
        poll,
        topology: topology.clone(),
        shards: Vec::new(),
        next_token: 0,
        unsubscribing: HashMap::new(),
        reencoded: Vec::with_capacity(1024),
        refresh_at: None,
        refresh_all: false,
        last_refresh: Instant::now(),
        ever_up: false,
    };
    subscriber.rebuild_shards(topology);
    subscriber.run();
}

impl Subscriber {
    fn targeted(&self) -> bool {
        self.shared.settings.routing == Routing::Targeted
    }

    fn cluster(&self) -> bool {
        self.shared.settings.cluster
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        while !self.shared.stop.load(Acquire) {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("bus subscriber: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let Some(i) = self.shards.iter().position(|s| s.token == event.token()) else {
                    continue;
                };
                if self.shards[i].link.is_connecting() {
                    match self.shards[i].link.finish_connect() {
                        Ok(true) => self.on_up(i),
                        Ok(false) => {}
                        Err(why) => self.on_down(i, &why),
                    }
                }
                if self.shards[i].link.is_up() && (event.is_readable() || event.is_read_closed()) {
                    self.read_messages(i);
                }
            }
            self.turn();
            if events.is_empty() && timeout >= super::IDLE_WAIT {
                self.trim_idle();
            }
        }
    }

    /// A turn without events: hand back what the last burst grew.
    fn trim_idle(&mut self) {
        for shard in &mut self.shards {
            shard.link.trim_idle();
            super::trim_if_empty!(shard.resubscribe);
        }
        super::trim_if_empty!(self.unsubscribing);
        self.shared.logins.trim_idle();
    }

    fn turn(&mut self) {
        self.shared.sub_bell.answer();
        while let Some(job) = self.shared.sub_jobs.pop() {
            match job {
                SubJob::Subscribe { name } => self.subscribe(name),
                SubJob::Unsubscribe { name, at } => self.unsubscribe(name, at),
            }
        }
        let now = Instant::now();
        for i in 0..self.shards.len() {
            self.pump_resubscribe(i);
            if let Err(why) = self.shards[i].link.try_connect(self.poll.registry(), now) {
                self.on_down(i, &why);
            }
            match self.shards[i].link.check_timers(now) {
                Timer::Quiet => {}
                Timer::Ping => resp::push_command(&mut self.shards[i].link.out, &[b"PING"]),
                // The whole on-down path: logins stop waiting for acks of the dead connection.
                Timer::TimedOut(why) => self.on_down(i, &why),
            }
            if let Err(why) = self.shards[i].link.flush() {
                self.on_down(i, &why);
            }
        }
        if self.cluster() && self.refresh_at.is_none() && self.shards.iter().any(|s| !s.link.is_up()) {
            self.refresh_at = Some(self.last_refresh + REFRESH_WHILE_DOWN);
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh();
        }
        let connected = self.shards.iter().all(|s| s.link.is_up());
        self.shared.set_up(true, connected);
        let bus = &self.shared.hub.metrics.bus;
        bus.subscriptions.store(self.shards.iter().map(|s| s.subscribed).sum(), Relaxed);
    }

    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        if !self.shared.sub_jobs.is_empty() {
            return Duration::ZERO;
        }
        let mut next = now + Duration::from_secs(1);
        for shard in &self.shards {
            next = next.min(shard.link.next_timer());
            if shard.link.unsent() > 0 || (!shard.resubscribe.is_empty() && shard.link.is_up()) {
                next = next.min(now + Duration::from_millis(5));
            }
        }
        if let Some(at) = self.refresh_at {
            next = next.min(at);
        }
        next.saturating_duration_since(now)
    }

    /// Broadcast routing: the shard that holds the `msg` subscription.
    fn broadcast_shard(&self) -> Option<usize> {
        if self.targeted() {
            return None;
        }
        self.topology.master_of(if self.cluster() { cluster::slot(BROADCAST_CHANNEL) } else { 0 })
    }

    fn shard_of(&self, name: &str) -> Option<usize> {
        let slot = if self.cluster() { cluster::slot(&super::user_channel(name.as_bytes())) } else { 0 };
        self.topology.master_of(slot)
    }

    fn subscribe(&mut self, name: CompactString) {
        let cluster = self.cluster();
        match self.shard_of(&name) {
            Some(i) if self.shards[i].link.is_up() => {
                let channel = super::user_channel(name.as_bytes());
                let verb: &[u8] = if cluster { b"SSUBSCRIBE" } else { b"SUBSCRIBE" };
                resp::push_command(&mut self.shards[i].link.out, &[verb, &channel]);
            }
            // Not connected: the channel is subscribed with all others once
            // the link is up; the login need not wait for that.
            _ => self.shared.logins.subscribed(&self.shared.hub, &name),
        }
    }

    fn unsubscribe(&mut self, name: CompactString, at: ConnRef) {
        // `at` left the directory before asking, or (refused login) leaves
        // it next; another holder is a later login that wants the channel.
        if self.shared.hub.directory.lookup(&name).is_some_and(|holder| holder != at) {
            return;
        }
        let cluster = self.cluster();
        if let Some(i) = self.shard_of(&name) {
            if self.shards[i].link.is_up() {
                let channel = super::user_channel(name.as_bytes());
                let verb: &[u8] = if cluster { b"SUNSUBSCRIBE" } else { b"UNSUBSCRIBE" };
                resp::push_command(&mut self.shards[i].link.out, &[verb, &channel]);
                *self.unsubscribing.entry(name).or_insert(0) += 1;
            }
        }
    }

    /// Subscribes the next chunks of channels wanted on shard `i` after a reconnect.
    fn pump_resubscribe(&mut self, i: usize) {
        let cluster = self.cluster();
        while self.shards[i].link.is_up()
            && self.shards[i].link.unsent() < OUT_HIGH_WATER
            && !self.shards[i].resubscribe.is_empty()
        {
            let mut channels: Vec<Vec<u8>> = Vec::with_capacity(CHUNK);
            while channels.len() < CHUNK {
                let Some(name) = self.shards[i].resubscribe.pop_front() else {
                    break;
                };
                // Skip names that left meanwhile or that another shard serves now.
                if self.wanted(&name) && self.shard_of(&name) == Some(i) {
                    channels.push(super::user_channel(name.as_bytes()));
                }
            }
            let out = &mut self.shards[i].link.out;
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

    fn on_up(&mut self, i: usize) {
        let bus = &self.shared.hub.metrics.bus;
        if self.ever_up {
            bus.reconnects.fetch_add(1, Relaxed);
        }
        self.ever_up = true;
        let settings = &self.shared.settings;
        let names: VecDeque<CompactString> = if self.targeted() {
            self.shared.hub.directory.names().into_iter().filter(|n| self.shard_of(n) == Some(i)).collect()
        } else {
            VecDeque::new()
        };
        let broadcast_here = self.broadcast_shard() == Some(i);
        let shard = &mut self.shards[i];
        if !names.is_empty() {
            log::info!("redis {}: subscribing {} channels again", shard.link.addr, names.len());
        }
        shard.link.out.extend_from_slice(&settings.hello);
        shard.hello_left = settings.hello_replies;
        shard.resubscribe = names;
        if broadcast_here {
            self.shared.logins.msg_subscribing();
            resp::push_command(&mut shard.link.out, &[b"SUBSCRIBE", BROADCAST_CHANNEL]);
        }
        self.pump_resubscribe(i);
    }

    fn on_down(&mut self, i: usize, why: &LinkError) {
        let shard = &mut self.shards[i];
        shard.link.fail(self.poll.registry(), why);
        shard.subscribed = 0;
        shard.resubscribe.clear();
        self.unsubscribing.clear();
        self.shared.logins.stop_waiting_for_subscriptions(&self.shared.hub);
        if self.broadcast_shard() == Some(i) {
            self.shared.logins.msg_settled(&self.shared.hub);
        }
        if self.cluster() {
            self.schedule_refresh();
        }
    }

    /// Reads everything waiting on shard `i` and routes it.
    fn read_messages(&mut self, i: usize) {
        let targeted = self.targeted();
        let mut moved = false;
        let Subscriber { shared, shards, unsubscribing, reencoded, .. } = self;
        let Shard { link, hello_left, subscribed, .. } = &mut shards[i];
        let addr = link.addr;
        let bus = &shared.hub.metrics.bus;
        let mut received = 0u64;
        let round = link.read_frames(|frame| {
            if *hello_left > 0 {
                *hello_left -= 1;
                if let Frame::Error(e) = frame {
                    return Err(LinkError::HelloRefused(String::from_utf8_lossy(e).into()));
                }
                return Ok(());
            }
            let items = match &frame {
                Frame::Array(Some(items)) => items.as_slice(),
                Frame::Error(e) => {
                    log::warn!("redis {addr}: subscription refused: {}", String::from_utf8_lossy(e));
                    moved |= e.starts_with(b"MOVED") || e.starts_with(b"ASK");
                    return Ok(());
                }
                _ => return Ok(()), // +PONG outside subscribed state.
            };
            let (Some(kind), Some(channel)) =
                (items.first().and_then(Frame::bytes), items.get(1).and_then(Frame::bytes))
            else {
                return Ok(());
            };
            match kind {
                b"message" | b"smessage" => {
                    let Some(payload) = items.get(2).and_then(Frame::bytes) else {
                        return Ok(());
                    };
                    received += 1;
                    if targeted {
                        if let Some(name) = super::user_of_channel(channel).and_then(|n| std::str::from_utf8(n).ok()) {
                            shared.hub.deliver_local(name, payload);
                        }
                    } else {
                        reencoded.clear();
                        if let Some(to) = protocol::reencode_chat(payload, reencoded) {
                            shared.hub.deliver_local(&to, reencoded);
                        }
                    }
                }
                b"subscribe" | b"ssubscribe" => {
                    *subscribed = items.get(2).and_then(Frame::integer).unwrap_or(0) as u64;
                    if let Some(name) = super::user_of_channel(channel).and_then(|n| std::str::from_utf8(n).ok()) {
                        shared.logins.subscribed(&shared.hub, name);
                    } else if !targeted && channel == BROADCAST_CHANNEL {
                        shared.logins.msg_settled(&shared.hub);
                    }
                }
                b"unsubscribe" | b"sunsubscribe" => {
                    *subscribed = items.get(2).and_then(Frame::integer).unwrap_or(0) as u64;
                    let Some(name) = super::user_of_channel(channel).and_then(|n| std::str::from_utf8(n).ok()) else {
                        return Ok(());
                    };
                    match unsubscribing.get_mut(name) {
                        Some(count) if *count > 1 => *count -= 1,
                        Some(_) => {
                            unsubscribing.remove(name);
                        }
                        None if shared.hub.directory.lookup(name).is_some() => {
                            // Unasked: the slot moved to another shard.
                            moved = true;
                        }
                        None => {}
                    }
                }
                _ => {} // pong
            }
            Ok(())
        });
        bus.received.fetch_add(received, Relaxed);
        bus.subscriber_lag_bytes.store(round.bytes, Relaxed);
        bus.subscriber_lag_max_bytes.fetch_max(round.bytes, Relaxed);
        if let Some(why) = round.failure {
            self.on_down(i, &why);
        }
        if moved {
            self.refresh_all = true;
            self.schedule_refresh();
        }
    }

    /// Whether `name`'s channel is wanted: the user is on this node.
    fn wanted(&self, name: &str) -> bool {
        self.shared.hub.directory.lookup(name).is_some()
    }

    fn schedule_refresh(&mut self) {
        if self.cluster() && self.refresh_at.is_none_or(|at| at > self.last_refresh + REFRESH_PAUSE) {
            let earliest = self.last_refresh + REFRESH_PAUSE;
            self.refresh_at = Some(earliest.max(Instant::now()));
        }
    }

    /// Fetches the slot map again and subscribes channels where they live
    /// now: every channel after a shard's signal (Redis ignores a subscription
    /// it already has), else those whose master changed. A master that is new
    /// gets its channels when its link comes up.
    fn refresh(&mut self) {
        self.refresh_at = None;
        self.last_refresh = Instant::now();
        let all = std::mem::take(&mut self.refresh_all);
        let ups: Vec<bool> = self.shards.iter().map(|s| s.link.is_up()).collect();
        let seeds = cluster::seeds_to_ask(&self.topology.masters, &ups, &self.shared.settings.seeds);
        match cluster::fetch(&seeds, &self.shared.settings.hello) {
            Ok(topology) => {
                if topology == self.topology && !all {
                    return;
                }
                if topology != self.topology {
                    log::info!("Redis Cluster slot map changed: masters {:?}", topology.masters);
                }
                let old = std::mem::replace(&mut self.topology, topology.clone());
                let master_before = |name: &str| {
                    let slot = cluster::slot(&super::user_channel(name.as_bytes()));
                    old.master_of(slot).map(|i| old.masters[i])
                };
                let mut moved: Vec<Vec<CompactString>> = vec![Vec::new(); topology.masters.len()];
                if self.targeted() {
                    for name in self.shared.hub.directory.names() {
                        let Some(i) = self.shard_of(&name) else { continue };
                        if all || master_before(&name) != Some(topology.masters[i]) {
                            moved[i].push(name);
                        }
                    }
                }
                self.rebuild_shards(topology);
                for (shard, names) in self.shards.iter_mut().zip(moved) {
                    if shard.link.is_up() && !names.is_empty() {
                        shard.resubscribe.extend(names);
                    }
                }
            }
            Err(e) => {
                log::warn!("cannot fetch the Redis Cluster slot map: {e}");
                self.refresh_all |= all;
                self.refresh_at = Some(Instant::now() + REFRESH_WHILE_DOWN);
            }
        }
    }

    fn rebuild_shards(&mut self, topology: Topology) {
        let mut old = std::mem::take(&mut self.shards);
        let mut shards = Vec::with_capacity(topology.masters.len());
        for &addr in &topology.masters {
            match old.iter().position(|s| s.link.addr == addr) {
                Some(j) => shards.push(old.swap_remove(j)),
                None => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    shards.push(Shard {
                        link: Link::new(addr, token, "subscriber", self.shared.settings.ping),
                        token,
                        hello_left: 0,
                        subscribed: 0,
                        resubscribe: VecDeque::new(),
                    });
                }
            }
        }
        for mut gone in old {
            gone.link.fail(self.poll.registry(), &LinkError::NoLongerMaster);
        }
        self.topology = topology;
        self.shards = shards;
    }
}
