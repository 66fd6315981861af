//! History on one reactor: which channels keep it ([`Keep`]), and the
//! recoveries in flight ([`Recovering`]).
//!
//! A recovery begins when a login is claimed (the user's inbox) or a room
//! joined; from then on, live messages of that channel for that connection
//! are held back here. When the bus's answer comes ([`replayed`]): the
//! replayed messages first, then the `recoverymsg`, then the held live ones
//! whose offset lies after the last replayed (the others were replayed):
//! no gap, no duplicate at the seam. The node subscribed the channel before
//! it read the history, so every message is in one or the other.
//!
//! The state lives beside the connections (a map keyed by connection and
//! channel, empty unless a recovery is in flight), not in `Conn`: a
//! connection without history pays nothing, and one recovering pays an
//! entry (about 80 bytes) plus what it holds back, bounded by
//! `--max-output` (past it the connection is closed as a slow consumer).

use std::collections::HashMap;
use std::sync::Arc;

use compact_str::CompactString;
use mio::Token;

use super::conn::Conn;
use super::context::{Context, Outcome, Stop};
use super::reply::{reply_failure, reply_with};
use super::rooms::glob_matches;
use super::write::{queue_frame, queue_shared};
use crate::bus::Kept;
use crate::codec::{self, close, op};
use crate::config::Config;
use crate::inbox::Recovered;
use crate::protocol::{self, Failure, Resume, StreamId};

/// Which channels keep history (`--history-*`).
pub(super) struct Keep {
    pub users: bool,
    pub rooms: Vec<String>,
    /// Longest JSON a kept message may have.
    pub entry_bytes: usize,
}

impl Keep {
    pub fn new(config: &Config) -> Keep {
        let h = &config.history;
        let on = h.enabled();
        Keep {
            users: on && h.history_users,
            rooms: if on { h.history_rooms.clone() } else { Vec::new() },
            entry_bytes: h.history_entry_bytes,
        }
    }

    /// Whether room `key` keeps history.
    pub fn room(&self, key: &str) -> bool {
        !self.rooms.is_empty() && self.rooms.iter().any(|pattern| glob_matches(pattern, key))
    }
}

/// A live message held back during a recovery.
enum Live {
    /// A user's chat message: its JSON.
    Chat(Box<[u8]>),
    /// A room message: its whole frame.
    Room(Arc<[u8]>),
}

/// One recovery in flight.
struct Pending {
    /// The login's offset and epoch, until the login is decided.
    resume: Option<(String, String)>,
    live: Vec<Live>,
    bytes: usize,
    /// Replayed up to here: the history was read, but live messages it
    /// held may still be on their way (the subscriber thread hands them on
    /// apart from the reply): those at or below are dropped, and the first
    /// one above ends the recovery (pub/sub keeps their order).
    replayed_to: Option<StreamId>,
}

/// Recoveries in flight on this reactor, by connection and channel (the
/// room's key; empty for the user's own inbox).
#[derive(Default)]
pub(super) struct Recovering {
    pending: HashMap<(Token, CompactString), Pending>,
}

/// What a held-back message did.
#[derive(PartialEq, Eq)]
pub(super) enum Held {
    /// Not recovering: deliver it now.
    No,
    Yes,
    /// Held back past the bound: close the connection.
    Over,
}

impl Recovering {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    fn begin(&mut self, token: Token, room: &str, resume: Option<(String, String)>) {
        let pending = Pending { resume, live: Vec::new(), bytes: 0, replayed_to: None };
        self.pending.insert((token, CompactString::from(room)), pending);
    }

    fn hold(&mut self, token: Token, room: &str, live: Live, len: usize, max: usize) -> Held {
        let key = (token, CompactString::from(room));
        let Some(pending) = self.pending.get_mut(&key) else {
            return Held::No;
        };
        if let Some(floor) = pending.replayed_to {
            let json = match &live {
                Live::Chat(json) => &json[..],
                Live::Room(frame) => &frame[codec::header_len(frame)..],
            };
            return match protocol::offset_of(json) {
                Some(at) if at <= floor => Held::Yes,
                Some(_) => {
                    self.pending.remove(&key);
                    Held::No
                }
                None => Held::No,
            };
        }
        pending.bytes += len;
        pending.live.push(live);
        if pending.bytes > max {
            Held::Over
        } else {
            Held::Yes
        }
    }

    /// Holds a chat message for `token` if its inbox is recovering.
    pub fn hold_chat(&mut self, token: Token, payload: &[u8], max: usize) -> Held {
        self.hold(token, "", Live::Chat(payload.into()), payload.len(), max)
    }

    /// Holds a room message for `token` if room `key` is recovering for it.
    pub fn hold_room(&mut self, token: Token, key: &str, frame: &Arc<[u8]>, max: usize) -> Held {
        self.hold(token, key, Live::Room(Arc::clone(frame)), frame.len(), max)
    }

    /// Ends the recovery of `room` ("" for the inbox) for `token`, if any.
    pub fn end(&mut self, token: Token, room: &str) {
        if !self.pending.is_empty() {
            self.pending.remove(&(token, CompactString::from(room)));
        }
    }

    /// Forgets every recovery of a connection that is gone.
    pub fn forget(&mut self, token: Token) {
        if !self.pending.is_empty() {
            self.pending.retain(|(t, _), _| *t != token);
        }
    }
}

/// A login of a user with history was claimed: hold live messages until
/// the history is read (which waits until the login is decided).
pub(super) fn login_claimed(token: Token, cx: &mut Context, resume: &Resume<'_>) {
    if cx.keep.users {
        cx.recovering.begin(token, "", Some((resume.offset.to_string(), resume.epoch.to_string())));
    }
}

/// The login is granted: the user's channel is subscribed, read its history.
pub(super) fn login_granted(token: Token, cx: &mut Context, key: &str) {
    let Some(pending) = cx.recovering.pending.get_mut(&(token, CompactString::default())) else {
        return;
    };
    let Some((offset, epoch)) = pending.resume.take() else {
        return;
    };
    let resume = Resume { offset: offset.into(), epoch: epoch.into() };
    cx.bus.recover(Kept::User(key), &resume, cx.conn_ref(token));
}

/// A room with history was joined: hold its live messages, read its history.
pub(super) fn room_joined(token: Token, cx: &mut Context, key: &str, request: &str) {
    if cx.keep.room(key) {
        cx.recovering.begin(token, key, None);
        cx.bus.recover(Kept::Room(key), &protocol::resume_of(request), cx.conn_ref(token));
    }
}

/// The bus's answer to a recovery: the replayed messages, the
/// `recoverymsg`, then the live messages held back that came after them.
pub(super) fn replayed(conn: &mut Conn, token: Token, cx: &mut Context, answer: &Recovered) -> Outcome {
    let room = CompactString::from(answer.room.as_deref().unwrap_or_default());
    let Some(pending) = cx.recovering.pending.remove(&(token, room.clone())) else {
        // Left the room, or logged out, meanwhile.
        return Ok(());
    };
    let channel = match &answer.room {
        Some(key) => CompactString::from(key.as_str()),
        None => CompactString::from(conn.speaker().unwrap_or_default()),
    };
    let mut last = StreamId::default();
    match answer.outcome {
        Some(outcome) => {
            for json in &answer.entries {
                queue_frame(conn, token, cx, op::TEXT, json)?;
                last = protocol::offset_of(json).unwrap_or(last);
            }
            let count = answer.entries.len();
            reply_with(conn, token, cx, |out| {
                protocol::encode_recovery(out, &channel, outcome, &answer.epoch, &answer.last, count);
            })?;
        }
        None => reply_failure(conn, token, cx, Failure::HistoryUnavailable(&channel))?,
    }
    if last > StreamId::default() {
        let settling = Pending { resume: None, live: Vec::new(), bytes: 0, replayed_to: Some(last) };
        cx.recovering.pending.insert((token, room), settling);
    }
    for live in pending.live {
        match live {
            Live::Chat(json) => {
                if protocol::offset_of(&json).is_none_or(|at| at > last) {
                    queue_frame(conn, token, cx, op::TEXT, &json)?;
                }
            }
            Live::Room(frame) => {
                let json = &frame[codec::header_len(&frame)..];
                if protocol::offset_of(json).is_none_or(|at| at > last) {
                    queue_shared(conn, token, cx, &frame)?;
                }
            }
        }
    }
    Ok(())
}

/// What a connection whose held-back messages passed the bound gets.
pub(super) fn over() -> Stop {
    Stop::Close(close::POLICY, "slow consumer: too much arrived during its recovery".into())
}
