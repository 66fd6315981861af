//! History in Redis Streams: a channel with history (a user's inbox, a
//! room) keeps its last messages in a stream, `sb:h:{KEY}` (user) or
//! `sb:hr:{KEY}` (room), beside an epoch key (`sb:he:{KEY}`/`sb:hre:{KEY}`).
//!
//! - **Publish.** One script call ([`PUBLISH_SCRIPT`], by EVALSHA: every link
//!   loads it in its greeting, so a restarted Redis has it again before any
//!   publish) adds the message to the stream (`MAXLEN ~ size`, then `MINID ~
//!   now - ttl`), publishes it with its stream id as `Offset` and refreshes
//!   the keys' expiry. One script, so stream order is delivery order. The
//!   epoch is the id of the first entry of a stream's life (`SET NX`): a
//!   stream that expired and came back has another. When PUBLISH reaches
//!   nobody on a user's channel, the script sets `sb:hm:{KEY}` ("missed
//!   since", `SET NX`) and the sender is told the message was kept.
//! - **Recovery** ([`READ_SCRIPT`]): the epoch, the missed-since marker
//!   (taken: GETDEL), the stream's bounds and the entries after the
//!   client's offset (or from the marker) in one call, issued only once the
//!   node listens to the channel, so nothing falls between what is read and
//!   what arrives live; the reactor drops live messages it replayed.
//!
//! History runs on one Redis (a primary, with replicas if wanted): Redis
//! Cluster and broadcast routing are refused at start (`config`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;

use compact_str::CompactString;
use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use sha1::{Digest, Sha1};

use super::resp::{self, Frame};
use super::shared::{Job, RoomJob, Shared, MAX_QUEUED_BYTES};
use crate::bus::{Kept, Published};
use crate::config::Config;
use crate::directory::ConnRef;
use crate::inbox::{Command, Recovered, Stored};
use crate::protocol::{Outcome, Resume, StreamId};

/// KEYS: stream, epoch[, missed-since marker]; ARGV: size, ttl (s, 0: none),
/// channel, the JSON (ending `}` and a newline), the envelope's head.
/// Returns {id, receivers}.
pub const PUBLISH_SCRIPT: &[u8] = b"local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'p', ARGV[4]) \
redis.call('SET', KEYS[2], id, 'NX') \
local ttl = tonumber(ARGV[2]) \
if ttl > 0 then \
  local now = redis.call('TIME') \
  redis.call('XTRIM', KEYS[1], 'MINID', '~', (tonumber(now[1]) - ttl) * 1000) \
  redis.call('EXPIRE', KEYS[1], ttl) \
  redis.call('EXPIRE', KEYS[2], ttl) \
end \
local n = redis.call('PUBLISH', ARGV[3], ARGV[5] .. string.sub(ARGV[4], 1, -3) .. ',\"Offset\":\"' .. id .. '\"}\\n') \
if n == 0 and #KEYS > 2 then \
  redis.call('SET', KEYS[3], id, 'NX') \
  if ttl > 0 then redis.call('EXPIRE', KEYS[3], ttl) end \
end \
return {id, n}";

/// KEYS: stream, epoch[, marker]; ARGV: the client's offset (or ''), its
/// epoch (or ''), most entries. Returns {epoch, marker, last id, first id,
/// trimmed (1: entries were ever trimmed), entries}.
const READ_SCRIPT: &[u8] = b"local epoch = redis.call('GET', KEYS[2]) or '' \
local marker = '' \
if #KEYS > 2 then marker = redis.call('GETDEL', KEYS[3]) or '' end \
local last, first, trimmed = '0-0', '', 0 \
if redis.call('EXISTS', KEYS[1]) == 1 then \
  local info = redis.call('XINFO', 'STREAM', KEYS[1]) \
  local f = {} \
  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end \
  last = f['last-generated-id'] \
  if f['first-entry'] then first = f['first-entry'][1] end \
  if f['entries-added'] > f['length'] then trimmed = 1 end \
end \
local from = nil \
if ARGV[2] ~= '' and ARGV[2] ~= epoch then from = nil \
elseif ARGV[1] ~= '' then from = '(' .. ARGV[1] \
elseif marker ~= '' then from = marker end \
local entries = {} \
if from and epoch ~= '' then entries = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', ARGV[3]) end \
return {epoch, marker, last, first, trimmed, entries}";

/// What the bus knows of history: its bounds, and which room channels
/// Redis confirmed this node listens to (a room's recovery waits for that).
pub(crate) struct History {
    sha: [u8; 40],
    size: Vec<u8>,
    ttl: Vec<u8>,
    /// Most entries one recovery replays: the size, plus what `MAXLEN ~` may hold beyond it.
    most: Vec<u8>,
    rooms: Mutex<RoomGate>,
    /// What the publisher read for the subscriber thread (`subscriber::kept`).
    pub to_subscriber: SegQueue<ToSubscriber>,
    /// Catch-up reads whose link went down, sent again when it is up.
    retry: Mutex<Vec<RoomJob>>,
}

/// From the publisher to the subscriber thread, about a channel (its pub/sub name).
pub(crate) enum ToSubscriber {
    /// A recovery found the channel's history up to `last`.
    Note { channel: Box<[u8]>, last: StreamId },
    /// What the channel kept after the offset a catch-up asked from, as published.
    CaughtUp { channel: Box<[u8]>, entries: Vec<Box<[u8]>> },
}

/// Who a history read is for.
enum Purpose {
    /// A client's recovery.
    Client(ConnRef),
    /// The subscriber's catch-up after its link came back.
    CatchUp,
}

#[derive(Default)]
struct RoomGate {
    listening: HashSet<CompactString>,
    waiting: HashMap<CompactString, Vec<RoomJob>>,
}

/// A recovery in flight: whose, of which channel, from where.
pub(crate) struct Read {
    purpose: Purpose,
    /// The channel's pub/sub name.
    channel: Box<[u8]>,
    room: Option<CompactString>,
    offset: Option<StreamId>,
    epoch: String,
}

impl History {
    /// The bus's history, when the configuration keeps any.
    pub fn from_config(config: &Config) -> Option<History> {
        let h = &config.history;
        if !h.enabled() {
            return None;
        }
        let digest = Sha1::digest(PUBLISH_SCRIPT);
        let mut sha = [0u8; 40];
        for (i, byte) in digest.iter().enumerate() {
            let hex = b"0123456789abcdef";
            sha[2 * i] = hex[usize::from(byte >> 4)];
            sha[2 * i + 1] = hex[usize::from(byte & 15)];
        }
        Some(History {
            sha,
            size: h.history_size.to_string().into_bytes(),
            ttl: h.history_ttl.to_string().into_bytes(),
            most: (h.history_size + 200).to_string().into_bytes(),
            rooms: Mutex::new(RoomGate::default()),
            to_subscriber: SegQueue::new(),
            retry: Mutex::new(Vec::new()),
        })
    }

    /// The stream, epoch and (users) marker keys of `channel`, and its pub/sub channel.
    fn keys(channel: Kept<'_>) -> (Vec<Vec<u8>>, Vec<u8>) {
        match channel {
            Kept::User(key) => {
                let tagged = |prefix: &[u8]| [prefix, key.as_bytes(), b"}"].concat();
                (vec![tagged(b"sb:h:{"), tagged(b"sb:he:{"), tagged(b"sb:hm:{")], tagged(b"sb:u:{"))
            }
            Kept::Room(key) => {
                let tagged = |prefix: &[u8]| [prefix, key.as_bytes(), b"}"].concat();
                (vec![tagged(b"sb:hr:{"), tagged(b"sb:hre:{")], tagged(b"sb:r:{"))
            }
        }
    }

    /// The EVALSHA that keeps and publishes `json` on `channel`.
    pub fn encode_publish(&self, channel: Kept<'_>, json: &[u8]) -> Box<[u8]> {
        let (keys, pubsub) = Self::keys(channel);
        // A room message's envelope names no node: every node delivers it, this one too.
        let envelope: &[u8] = if matches!(channel, Kept::Room(_)) { b"\n" } else { b"" };
        let numkeys = keys.len().to_string();
        let mut args: Vec<&[u8]> = vec![b"EVALSHA", &self.sha, numkeys.as_bytes()];
        args.extend(keys.iter().map(Vec::as_slice));
        args.extend([&self.size[..], &self.ttl, &pubsub, json, envelope]);
        let mut command = Vec::with_capacity(json.len() + 160);
        resp::push_command(&mut command, &args);
        command.into_boxed_slice()
    }

    /// The job that reads `channel`'s history after `resume` for `from`.
    fn read_job(&self, channel: Kept<'_>, resume: &Resume<'_>, purpose: Purpose) -> RoomJob {
        let (mut keys, pubsub) = Self::keys(channel);
        if matches!(purpose, Purpose::CatchUp) {
            // The missed-since marker is the user's, for the next login.
            keys.truncate(2);
        }
        let offset = StreamId::parse(resume.offset.as_bytes());
        let shown = offset.map(|o| o.to_string()).unwrap_or_default();
        let numkeys = keys.len().to_string();
        let mut args: Vec<&[u8]> = vec![b"EVAL", READ_SCRIPT, numkeys.as_bytes()];
        args.extend(keys.iter().map(Vec::as_slice));
        args.extend([shown.as_bytes(), resume.epoch.as_bytes(), &self.most]);
        let mut command = Vec::new();
        resp::push_command(&mut command, &args);
        let room = match channel {
            Kept::Room(key) => Some(CompactString::from(key)),
            Kept::User(_) => None,
        };
        let channel = pubsub.into_boxed_slice();
        let read = Read { purpose, channel, room, offset, epoch: resume.epoch.to_string() };
        RoomJob::Recover { command, read: Box::new(read) }
    }
}

/// Queues a kept message's script for the publisher, within the bound on
/// what may wait for Redis (as a plain publish is).
pub(crate) fn publish(shared: &Shared, channel: Kept<'_>, json: &[u8], from: ConnRef) -> Published {
    let Some(history) = &shared.history else {
        return Published::NoRecipient;
    };
    let command = history.encode_publish(channel, json);
    let size = command.len();
    if shared.queued_bytes.fetch_add(size, Relaxed) + size > MAX_QUEUED_BYTES {
        shared.queued_bytes.fetch_sub(size, Relaxed);
        shared.hub.metrics.bus.publish_dropped.fetch_add(1, Relaxed);
        return Published::Dropped;
    }
    shared.push_pub(Job::Publish { slot: 0, command, from });
    Published::Sent
}

/// Asks for a recovery: a user's channel is subscribed before its login is
/// decided, so it goes now; a room's waits until Redis confirmed the room's
/// subscription.
pub(crate) fn recover(shared: &Shared, channel: Kept<'_>, resume: &Resume<'_>, from: ConnRef) {
    let Some(history) = &shared.history else {
        return;
    };
    let job = history.read_job(channel, resume, Purpose::Client(from));
    if let Kept::Room(key) = channel {
        let mut gate = history.rooms.lock();
        if !gate.listening.contains(key) {
            gate.waiting.entry(CompactString::from(key)).or_default().push(job);
            return;
        }
    }
    shared.push_pub(Job::Room(job));
}

/// The subscriber is listening to `channel` again after its link dropped:
/// read what it kept after `since`.
pub(crate) fn catch_up(shared: &Shared, channel: &[u8], since: StreamId) {
    if let Some(job) = catch_up_job(shared, channel, since) {
        shared.push_pub(Job::Room(job));
    }
}

fn catch_up_job(shared: &Shared, channel: &[u8], since: StreamId) -> Option<RoomJob> {
    let history = shared.history.as_ref()?;
    let kept = match (super::channels::room_of_channel(channel), super::channels::user_name_of_channel(channel)) {
        (Some(room), _) => Kept::Room(room),
        (None, Some(user)) => Kept::User(user),
        (None, None) => return None,
    };
    let offset = since.to_string();
    let resume = Resume { offset: offset.as_str().into(), epoch: "".into() };
    Some(history.read_job(kept, &resume, Purpose::CatchUp))
}

/// The publisher's link is up: catch-up reads lost with it go again.
pub(crate) fn on_publisher_up(shared: &Shared) {
    if let Some(history) = &shared.history {
        for job in std::mem::take(&mut *history.retry.lock()) {
            shared.push_pub(Job::Room(job));
        }
    }
}

/// Redis confirmed the subscription of room `key`: its recoveries may go.
pub(crate) fn room_listening(shared: &Shared, key: &str) {
    let Some(history) = &shared.history else {
        return;
    };
    let waiting = {
        let mut gate = history.rooms.lock();
        gate.listening.insert(CompactString::from(key));
        gate.waiting.remove(key)
    };
    for job in waiting.into_iter().flatten() {
        shared.push_pub(Job::Room(job));
    }
}

/// The node stops listening to room `key` (or, `None`, to every room: the link dropped).
pub(crate) fn room_deaf(shared: &Shared, key: Option<&str>) {
    if let Some(history) = &shared.history {
        let mut gate = history.rooms.lock();
        match key {
            Some(key) => gate.listening.remove(key),
            None => {
                gate.listening.clear();
                true
            }
        };
    }
}

/// The reply to a kept message's script: `{id, receivers}`. A user's
/// message that reached nobody was kept for them: its sender is told.
pub(crate) fn on_published(shared: &Shared, command: &[u8], from: ConnRef, items: &[Frame<'_>]) {
    shared.hub.metrics.bus.published.fetch_add(1, Relaxed);
    let (Some(id), Some(0)) = (items.first().and_then(Frame::bytes), items.get(1).and_then(Frame::integer)) else {
        return;
    };
    let Some(name) = super::channels::recipient_of_command(command) else {
        return;
    };
    let stored = Stored {
        token: from.token,
        to: CompactString::from_utf8_lossy(name),
        offset: String::from_utf8_lossy(id).into_owned(),
    };
    shared.hub.send(from, Command::Stored(Box::new(stored)));
}

/// The reply to a recovery's script, judged and handed to the reactor.
pub(crate) fn on_read(shared: &Shared, read: Box<Read>, frame: &Frame<'_>) {
    let Some(items) = frame.items().filter(|items| items.len() == 6) else {
        if let Frame::Error(e) = frame {
            log::warn!("a history read was refused: {}", String::from_utf8_lossy(e));
        }
        return on_read_lost(shared, read);
    };
    let text = |i: usize| items[i].bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let (epoch, marker, last) = (text(0), text(1), text(2));
    let first = items[3].bytes().and_then(StreamId::parse);
    let trimmed = items[4].integer() == Some(1);
    let entries: Vec<Box<[u8]>> = items[5].items().unwrap_or_default().iter().filter_map(entry_json).collect();
    let lost_before = |since: StreamId| trimmed && first.is_some_and(|first| first > since);
    let outcome = if !read.epoch.is_empty() && read.epoch != epoch {
        Outcome::Reset
    } else if let Some(offset) = read.offset {
        if epoch.is_empty() || lost_before(offset) {
            Outcome::Gap
        } else {
            Outcome::Recovered
        }
    } else {
        match StreamId::parse(marker.as_bytes()) {
            Some(marker) if lost_before(marker) => Outcome::Gap,
            _ => Outcome::Fresh,
        }
    };
    let Read { purpose, channel, room, .. } = *read;
    let Some(history) = &shared.history else {
        return;
    };
    match purpose {
        Purpose::Client(from) => {
            if let Some(last) = StreamId::parse(last.as_bytes()) {
                history.to_subscriber.push(ToSubscriber::Note { channel, last });
            }
            let recovered = Recovered { token: from.token, room, outcome: Some(outcome), epoch, last, entries };
            shared.hub.send(from, Command::Recovered(Box::new(recovered)));
        }
        Purpose::CatchUp => {
            // As published: a room's message in its envelope (no node: every node delivers it).
            let entries = if room.is_some() {
                entries.into_iter().map(|json| [&b"\n"[..], &json].concat().into_boxed_slice()).collect()
            } else {
                entries
            };
            history.to_subscriber.push(ToSubscriber::CaughtUp { channel, entries });
        }
    }
    shared.sub_bell.ring();
}

/// A recovery whose command or reply was lost: the reactor says so and goes on live.
#[allow(clippy::boxed_local)] // it travels boxed; taken apart here
pub(crate) fn on_read_lost(shared: &Shared, read: Box<Read>) {
    let Read { purpose, channel, room, offset, .. } = *read;
    let from = match purpose {
        Purpose::Client(from) => from,
        Purpose::CatchUp => {
            let job = catch_up_job(shared, &channel, offset.unwrap_or_default());
            if let (Some(history), Some(job)) = (&shared.history, job) {
                history.retry.lock().push(job);
            }
            return;
        }
    };
    let recovered = Recovered {
        token: from.token,
        room,
        outcome: None,
        epoch: String::new(),
        last: String::new(),
        entries: vec![],
    };
    shared.hub.send(from, Command::Recovered(Box::new(recovered)));
}

/// A stream entry `[id, [field, value, ...]]` as the JSON a live message
/// carries: its `p` with the `Offset` field added.
fn entry_json(entry: &Frame<'_>) -> Option<Box<[u8]>> {
    let [id, fields] = entry.items()? else {
        return None;
    };
    let id = id.bytes()?;
    let fields = fields.items()?;
    let p = fields.chunks(2).find(|pair| pair[0].bytes() == Some(b"p")).and_then(|pair| pair.get(1)?.bytes())?;
    let body = p.strip_suffix(b"}\n")?;
    let mut json = Vec::with_capacity(p.len() + id.len() + 14);
    json.extend_from_slice(body);
    json.extend_from_slice(b",\"Offset\":\"");
    json.extend_from_slice(id);
    json.extend_from_slice(b"\"}\n");
    Some(json.into_boxed_slice())
}
