//! History in Redis Streams (the scripts, keys and commands; [`super::history`]
//! runs them): a channel with history (a user's inbox, a
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
//! In Redis Cluster a channel's keys share its `{KEY}` hash tag: every
//! script runs on the channel's master and publishes with SPUBLISH there.
//! Broadcast routing is refused at start (`config`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use compact_str::CompactString;
use crossbeam_queue::SegQueue;
use parking_lot::Mutex;
use sha1::{Digest, Sha1};

use super::resp;
use crate::bus::Kept;
use crate::config::Config;
use crate::directory::ConnRef;
use crate::protocol::{Resume, StreamId};

/// A kept publish's last argument, the retry flag, as encoded: first attempts end so.
const FIRST_ATTEMPT: &[u8] = b"$1\r\n0\r\n";

/// A history read ready to go: its command, and what its reply is for.
pub(crate) type ReadJob = (Vec<u8>, Box<Read>);

/// KEYS: stream, epoch[, missed-since marker]; ARGV: size, ttl (s, 0: none),
/// channel, the JSON (ending `}` and a newline), the envelope's head, the
/// publish command (`SPUBLISH` in Redis Cluster: the channel shares the keys'
/// hash tag, so their slot), the message's token (unique: node and
/// sequence), `1` when this is a retry.
/// Returns {id, receivers}, or {id, -1} for a retry whose first attempt was
/// written after all (its token is among the stream's last 100 entries: more
/// messages than that to one channel between a lost reply and its retry,
/// and the retry may repeat one).
pub const PUBLISH_SCRIPT: &[u8] = b"if ARGV[8] == '1' then \
  for _, e in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 100)) do \
    for i = 1, #e[2], 2 do \
      if e[2][i] == 'k' and e[2][i + 1] == ARGV[7] then return {e[1], -1} end \
    end \
  end \
end \
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'p', ARGV[4], 'k', ARGV[7]) \
redis.call('SET', KEYS[2], id, 'NX') \
local ttl = tonumber(ARGV[2]) \
if ttl > 0 then \
  local now = redis.call('TIME') \
  redis.call('XTRIM', KEYS[1], 'MINID', '~', (tonumber(now[1]) - ttl) * 1000) \
  redis.call('EXPIRE', KEYS[1], ttl) \
  redis.call('EXPIRE', KEYS[2], ttl) \
end \
local n = redis.call(ARGV[6], ARGV[3], ARGV[5] .. string.sub(ARGV[4], 1, -3) .. ',\"Offset\":\"' .. id .. '\"}\\n') \
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
    /// Redis Cluster: the script publishes with SPUBLISH.
    cluster: bool,
    /// This node's id, then `:`, for the tokens of its messages.
    token_prefix: String,
    /// The next token's number; it starts at the start time in ns, so a node
    /// that restarts under the same id never takes up a number it used.
    next_token: AtomicU64,
    size: Vec<u8>,
    ttl: Vec<u8>,
    /// Most entries one recovery replays: the size, plus what `MAXLEN ~` may hold beyond it.
    most: Vec<u8>,
    pub rooms: Mutex<RoomGate>,
    /// What the publisher read for the subscriber thread (`subscriber::kept`).
    pub to_subscriber: SegQueue<ToSubscriber>,
    /// Catch-up reads whose link went down, sent again when it is up.
    pub retry: Mutex<Vec<ReadJob>>,
}

/// From the publisher to the subscriber thread, about a channel (its pub/sub name).
pub(crate) enum ToSubscriber {
    /// A recovery found the channel's history up to `last`.
    Note { channel: Box<[u8]>, last: StreamId },
    /// What the channel kept after the offset a catch-up asked from, as published.
    CaughtUp { channel: Box<[u8]>, entries: Vec<Box<[u8]>> },
}

/// Who a history read is for.
pub(crate) enum Purpose {
    /// A client's recovery.
    Client(ConnRef),
    /// The subscriber's catch-up after its link came back.
    CatchUp,
}

#[derive(Default)]
pub(crate) struct RoomGate {
    pub listening: HashSet<CompactString>,
    pub waiting: HashMap<CompactString, Vec<ReadJob>>,
}

/// A recovery in flight: whose, of which channel, from where.
pub(crate) struct Read {
    pub purpose: Purpose,
    /// The channel's pub/sub name.
    pub channel: Box<[u8]>,
    pub room: Option<CompactString>,
    pub offset: Option<StreamId>,
    pub epoch: String,
}

impl History {
    /// The bus's history, when the configuration keeps any.
    pub fn from_config(config: &Config, node_id: &str, cluster: bool) -> Option<History> {
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
        let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Some(History {
            sha,
            cluster,
            token_prefix: format!("{node_id}:"),
            next_token: AtomicU64::new(u64::try_from(start.as_nanos()).unwrap_or(0)),
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
        let token = format!("{}{}", self.token_prefix, self.next_token.fetch_add(1, Ordering::Relaxed));
        let mut args: Vec<&[u8]> = vec![b"EVALSHA", &self.sha, numkeys.as_bytes()];
        args.extend(keys.iter().map(Vec::as_slice));
        let verb: &[u8] = if self.cluster { b"SPUBLISH" } else { b"PUBLISH" };
        args.extend([&self.size[..], &self.ttl, &pubsub, json, envelope, verb, token.as_bytes(), b"0"]);
        let mut command = Vec::with_capacity(json.len() + 200);
        resp::push_command(&mut command, &args);
        command.into_boxed_slice()
    }

    /// A kept publish sent once and unconfirmed (its link went down), as a
    /// retry: the script writes it unless the first attempt was written.
    /// `None` for anything else, and for a retry (it is not tried a third time).
    pub fn as_retry(&self, command: &[u8]) -> Option<Box<[u8]>> {
        // `*N`, `$7`, `EVALSHA`, `$40`, then the script's sha.
        let head = command.splitn(6, |&b| b == b'\n').nth(4)?;
        if head.strip_suffix(b"\r")? != self.sha || !command.ends_with(FIRST_ATTEMPT) {
            return None;
        }
        let mut retry = command.to_vec();
        let flag = retry.len() - 3;
        retry[flag] = b'1';
        Some(retry.into_boxed_slice())
    }

    /// The job that reads `channel`'s history after `resume` for `from`.
    pub fn read_job(&self, channel: Kept<'_>, resume: &Resume<'_>, purpose: Purpose) -> ReadJob {
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
        (command, Box::new(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        use clap::Parser as _;
        let config = Config::parse_from(["switchboard", "--history-size", "10", "--history-users", "true"]);
        History::from_config(&config, "node-a", false).expect("history on")
    }

    #[test]
    fn a_kept_publish_becomes_a_retry_once() {
        let h = history();
        let first = h.encode_publish(Kept::User("bob"), b"{\"Data\":\"hi\"}\n");
        let retry = h.as_retry(&first).expect("a first attempt can be retried");
        assert_eq!(retry.len(), first.len());
        assert!(retry.ends_with(b"$1\r\n1\r\n") && first.ends_with(b"$1\r\n0\r\n"));
        assert_eq!(retry[..retry.len() - 3], first[..first.len() - 3], "only the flag differs");
        assert!(h.as_retry(&retry).is_none(), "not a third time");
        let mut plain = Vec::new();
        resp::push_command(&mut plain, &[b"PUBLISH", b"sb:u:{bob}", b"$1\r\n0\r\n"]);
        assert!(h.as_retry(&plain).is_none(), "a plain publish is not retried");
    }

    #[test]
    fn every_message_gets_its_own_token() {
        let h = history();
        let token = |c: &[u8]| {
            let text = String::from_utf8_lossy(c).into_owned();
            let parts: Vec<&str> = text.split("\r\n").collect();
            parts[parts.len() - 4].to_string()
        };
        let (a, b) = (h.encode_publish(Kept::User("bob"), b"{}\n"), h.encode_publish(Kept::User("bob"), b"{}\n"));
        assert!(token(&a).starts_with("node-a:"), "{}", token(&a));
        assert_ne!(token(&a), token(&b));
    }
}
