//! Rooms and presence in Redis, the publisher thread's side.
//!
//! - **Members.** Each node keeps the names of its members of room KEY in a
//!   set `sb:rm:{KEY}:NODE`, expiring one lease after its last renewal, and
//!   its id in the room's node index `sb:rn:{KEY}`. The node renews its sets
//!   every third of the lease (one PEXPIRE per room it has members in), and
//!   writes them all again when a link comes back (Redis may have restarted
//!   empty). So a node that dies takes its members out within the lease, and
//!   a restarted Redis learns every member again.
//! - **`membersmsg`** runs one script on the room's keys (one slot, thanks
//!   to the `{KEY}` hash tag): the node index, then per live node a SCARD
//!   (the count) and an SRANDMEMBER up to the limit (the list). It costs
//!   O(nodes + listed), never a scan of members or of the keyspace, so a
//!   100,000-member room answers as fast as a small one; stale nodes (their
//!   set expired) are taken out of the index on the way.
//! - **`presencemsg`** asks, per name, whether anyone subscribes the user's
//!   channel (`PUBSUB NUMSUB`, or `SHARDNUMSUB` in Redis Cluster, routed to
//!   the channel's master): a node subscribes exactly while the user is
//!   logged in there, and Redis forgets a dead node's subscriptions with its
//!   connection. With broadcast routing (no user channels) it asks whether
//!   the registry holds the name.
//!
//! Room messages themselves are PUBLISHed to the room's channel; a command
//! that cannot be sent (its master is down) is dropped: membership is
//! written again when the link is up, and a query is answered with what is
//! known (nobody).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use compact_str::CompactString;

use super::cluster;
use super::history;
use super::resp::{self, Frame};
use super::shared::{RoomJob, Shared};
use super::streams::Read;
use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::inbox::{Command, MembersAnswer, PresenceAnswer};

/// Members written per SADD when a node tells Redis its rooms again.
const REASSERT_CHUNK: usize = 1000;
/// How long a history read waits for a link that is down (a node just started, a link
/// reconnecting) before its client is told the history is unavailable: links come up
/// in milliseconds; a Redis that is away for longer is an outage, and the client goes
/// on live.
const READ_PATIENCE: Duration = Duration::from_secs(5);

/// The script behind `membersmsg`: KEYS[1] the room's node index, ARGV[1]
/// the prefix of its member sets, ARGV[2] how many names to list.
const MEMBERS_SCRIPT: &[u8] = b"local nodes = redis.call('SMEMBERS', KEYS[1]) \
local count, listed, limit = 0, {}, tonumber(ARGV[2]) \
for _, node in ipairs(nodes) do \
  local set = ARGV[1] .. node \
  local n = redis.call('SCARD', set) \
  if n == 0 then redis.call('SREM', KEYS[1], node) else \
    count = count + n \
    if #listed < limit then \
      for _, m in ipairs(redis.call('SRANDMEMBER', set, limit - #listed)) do listed[#listed + 1] = m end \
    end \
  end \
end \
return {count, listed}";

/// What a room command's reply is for.
pub(crate) enum RoomReply {
    /// A write or a publish: only a failure matters, and it is counted.
    Write,
    /// The answer about the `index`-th name of presence query `query`.
    Presence { query: u64, index: usize },
    /// The answer to a `membersmsg` about room `key`.
    Members { key: CompactString, from: ConnRef },
    /// A channel's history, for a recovery (`history`).
    History(Box<Read>),
}

/// A presence question waiting for its answers, one per name.
struct PresenceQuery {
    from: ConnRef,
    asked: Box<str>,
    online: Vec<bool>,
    left: usize,
}

pub(crate) struct Rooms {
    node: CompactString,
    cluster: bool,
    /// With targeted routing presence is a user channel's subscribers;
    /// with broadcast routing, the registry's key.
    targeted: bool,
    ttl_ms: Vec<u8>,
    renew_every: Duration,
    next_renewal: Instant,
    queries: HashMap<u64, PresenceQuery>,
    next_query: u64,
    /// Commands for Redis: the slot each lives in, the command, what its reply is for.
    pub out: Vec<(u16, Vec<u8>, RoomReply)>,
    /// History reads whose link was down when they were to go, oldest first, with
    /// when they were parked: sent once it is up, given up after [`READ_PATIENCE`].
    parked: VecDeque<(Instant, u16, Vec<u8>, Box<Read>)>,
}

impl Rooms {
    pub fn new(shared: &Shared) -> Rooms {
        let settings = &shared.settings;
        let lease = settings.lease;
        Rooms {
            node: settings.node_id.clone(),
            cluster: settings.cluster,
            targeted: settings.routing == crate::config::Routing::Targeted,
            ttl_ms: lease.as_millis().to_string().into_bytes(),
            renew_every: lease / 3,
            next_renewal: Instant::now() + lease / 3,
            queries: HashMap::new(),
            next_query: 0,
            out: Vec::new(),
            parked: VecDeque::new(),
        }
    }

    fn slot(&self, key: &[u8]) -> u16 {
        if self.cluster {
            cluster::slot(key)
        } else {
            0
        }
    }

    /// `sb:rm:{KEY}:NODE`: this node's members of room `key`.
    fn members_key(&self, key: &str) -> Vec<u8> {
        [b"sb:rm:{", key.as_bytes(), b"}:", self.node.as_bytes()].concat()
    }

    /// `sb:rn:{KEY}`: the nodes with members of room `key`.
    fn index_key(key: &str) -> Vec<u8> {
        [b"sb:rn:{", key.as_bytes(), b"}"].concat()
    }

    fn push(&mut self, slot_of: &[u8], args: &[&[u8]], reply: RoomReply) {
        let mut command = Vec::new();
        resp::push_command(&mut command, args);
        let slot = self.slot(slot_of);
        self.out.push((slot, command, reply));
    }

    /// Turns a reactor's job into commands for Redis.
    pub fn job(&mut self, hub: &Hub, job: RoomJob) {
        match job {
            RoomJob::Publish { slot, command } => self.out.push((slot, command.into_vec(), RoomReply::Write)),
            RoomJob::Join { key, member, first } => {
                let set = self.members_key(&key);
                self.push(&set, &[b"SADD", &set, member.as_bytes()], RoomReply::Write);
                self.push(&set, &[b"PEXPIRE", &set, &self.ttl_ms.clone()], RoomReply::Write);
                if first {
                    let index = Self::index_key(&key);
                    self.push(&index, &[b"SADD", &index, self.node.clone().as_bytes()], RoomReply::Write);
                }
            }
            RoomJob::Leave { key, member, last } => {
                let set = self.members_key(&key);
                if last {
                    self.push(&set, &[b"DEL", &set], RoomReply::Write);
                    let index = Self::index_key(&key);
                    self.push(&index, &[b"SREM", &index, self.node.clone().as_bytes()], RoomReply::Write);
                } else {
                    self.push(&set, &[b"SREM", &set, member.as_bytes()], RoomReply::Write);
                }
            }
            RoomJob::Presence { asked, keys, from } => self.ask_presence(hub, asked, &keys, from),
            RoomJob::Recover { command, read } => {
                let slot = self.slot(&read.channel);
                self.out.push((slot, command, RoomReply::History(read)));
            }
            RoomJob::Members { key, limit, from } => {
                let index = Self::index_key(&key);
                let prefix = [b"sb:rm:{", key.as_bytes(), b"}:"].concat();
                let limit = limit.to_string();
                let args: [&[u8]; 6] = [b"EVAL", MEMBERS_SCRIPT, b"1", &index, &prefix, limit.as_bytes()];
                self.push(&index, &args, RoomReply::Members { key, from });
            }
        }
    }

    fn ask_presence(&mut self, hub: &Hub, asked: Box<str>, keys: &[CompactString], from: ConnRef) {
        if keys.is_empty() {
            let answer = Box::new(PresenceAnswer { asked, online: Box::new([]) });
            hub.send(from, Command::Presence { token: from.token, answer });
            return;
        }
        let query = self.next_query;
        self.next_query += 1;
        self.queries.insert(query, PresenceQuery { from, asked, online: vec![false; keys.len()], left: keys.len() });
        for (index, key) in keys.iter().enumerate() {
            let reply = RoomReply::Presence { query, index };
            if self.targeted {
                let channel = super::channels::user_channel(key.as_bytes());
                let verb: &[u8] = if self.cluster { b"SHARDNUMSUB" } else { b"NUMSUB" };
                self.push(&channel, &[b"PUBSUB", verb, &channel], reply);
            } else {
                let registry = [b"sb:reg:{", key.as_bytes(), b"}"].concat();
                self.push(&registry, &[b"EXISTS", &registry], reply);
            }
        }
    }

    /// Renews this node's member sets every third of the lease (and its
    /// place in each room's node index, should Redis have lost it).
    pub fn renew(&mut self, hub: &Hub, now: Instant) {
        if now < self.next_renewal {
            return;
        }
        self.next_renewal = now + self.renew_every;
        for key in hub.rooms.keys() {
            let set = self.members_key(&key);
            self.push(&set, &[b"PEXPIRE", &set, &self.ttl_ms.clone()], RoomReply::Write);
            let index = Self::index_key(&key);
            self.push(&index, &[b"SADD", &index, self.node.clone().as_bytes()], RoomReply::Write);
        }
    }

    pub fn next_renewal(&self) -> Instant {
        self.next_renewal
    }

    /// A link came up: every room this node has members in, whose slot
    /// `serves` says the link holds, is written to Redis again.
    pub fn reassert(&mut self, hub: &Hub, serves: &dyn Fn(u16) -> bool) {
        for (key, members) in hub.rooms.all() {
            let set = self.members_key(&key);
            if !serves(self.slot(&set)) {
                continue;
            }
            for chunk in members.chunks(REASSERT_CHUNK) {
                let mut args: Vec<&[u8]> = vec![b"SADD", &set];
                args.extend(chunk.iter().map(|m| m.as_bytes()));
                self.push(&set, &args, RoomReply::Write);
            }
            self.push(&set, &[b"PEXPIRE", &set, &self.ttl_ms.clone()], RoomReply::Write);
            let index = Self::index_key(&key);
            self.push(&index, &[b"SADD", &index, self.node.clone().as_bytes()], RoomReply::Write);
        }
    }

    /// What Redis answered to a room command.
    pub fn on_reply(&mut self, shared: &Shared, reply: RoomReply, frame: &Frame<'_>) {
        match reply {
            RoomReply::Write => {
                if let Frame::Error(e) = frame {
                    shared.hub.metrics.bus.publish_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log::debug!("a room command was refused: {}", String::from_utf8_lossy(e));
                }
            }
            RoomReply::Presence { query, index } => {
                let online = match frame {
                    // PUBSUB NUMSUB: [channel, subscribers].
                    Frame::Array(Some(items)) => items.get(1).and_then(Frame::integer).unwrap_or(0) > 0,
                    // EXISTS.
                    Frame::Integer(n) => *n > 0,
                    _ => false,
                };
                self.answered(&shared.hub, query, index, online);
            }
            RoomReply::Members { key, from } => {
                let (count, listed) = members_of(frame);
                let answer = Box::new(MembersAnswer { room: key, listed, count });
                shared.hub.send(from, Command::Members { token: from.token, answer });
            }
            RoomReply::History(read) => history::on_read(shared, read, frame),
        }
    }

    /// A command whose link is down: a history read (never sent, so it can go later
    /// without running twice) waits for it; anything else is lost.
    pub fn on_unsent(&mut self, shared: &Shared, slot: u16, command: Vec<u8>, reply: RoomReply) {
        match reply {
            RoomReply::History(read) => self.parked.push_back((Instant::now(), slot, command, read)),
            reply => self.on_lost(shared, reply),
        }
    }

    /// Parked reads whose link is `up` again go out (into `out`); those that waited
    /// past their patience are answered as unavailable.
    pub fn unpark(&mut self, shared: &Shared, now: Instant, up: &dyn Fn(u16) -> bool) {
        for _ in 0..self.parked.len() {
            let Some((at, slot, command, read)) = self.parked.pop_front() else {
                break;
            };
            if up(slot) {
                self.out.push((slot, command, RoomReply::History(read)));
            } else if now.duration_since(at) >= READ_PATIENCE {
                history::on_read_lost(shared, read);
            } else {
                self.parked.push_back((at, slot, command, read));
            }
        }
    }

    /// When the oldest parked read runs out of patience.
    pub fn parked_until(&self) -> Option<Instant> {
        self.parked.front().map(|(at, ..)| *at + READ_PATIENCE)
    }

    /// A room command whose link dropped before its reply came.
    pub fn on_lost(&mut self, shared: &Shared, reply: RoomReply) {
        match reply {
            RoomReply::Write => {}
            RoomReply::Presence { query, index } => self.answered(&shared.hub, query, index, false),
            RoomReply::Members { key, from } => {
                let answer = Box::new(MembersAnswer { room: key, listed: Vec::new(), count: 0 });
                shared.hub.send(from, Command::Members { token: from.token, answer });
            }
            RoomReply::History(read) => history::on_read_lost(shared, read),
        }
    }

    fn answered(&mut self, hub: &Hub, query: u64, index: usize, online: bool) {
        let Some(q) = self.queries.get_mut(&query) else {
            return;
        };
        if let Some(slot) = q.online.get_mut(index) {
            *slot = online;
        }
        q.left -= 1;
        if q.left == 0 {
            if let Some(q) = self.queries.remove(&query) {
                let online = q.online.into_boxed_slice();
                let answer = Box::new(PresenceAnswer { asked: q.asked, online });
                hub.send(q.from, Command::Presence { token: q.from.token, answer });
            }
        }
    }
}

/// The members script's answer: `[count, [names...]]`.
fn members_of(frame: &Frame<'_>) -> (u64, Vec<CompactString>) {
    let Frame::Array(Some(items)) = frame else {
        return (0, Vec::new());
    };
    let count = items.first().and_then(Frame::integer).unwrap_or(0).max(0) as u64;
    let listed = items
        .get(1)
        .and_then(Frame::items)
        .map(|names| names.iter().filter_map(Frame::bytes).map(CompactString::from_utf8_lossy).collect())
        .unwrap_or_default();
    (count, listed)
}
