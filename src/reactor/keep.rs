//! Which channels keep history ([`Keep`]), and the state of recoveries in
//! flight on one reactor ([`Recovering`]); what they do is in `recovery`.
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

use crate::codec;
use crate::config::Config;
use crate::protocol::{self, StreamId};

/// What the reactor reads of `--history-*` on every message, copied once
/// (whether rooms keep history is asked of the config: a room request is rarer).
pub(super) struct Keep {
    /// Users' inboxes keep history.
    pub users: bool,
    /// Longest JSON a kept message may have.
    pub entry_bytes: usize,
}

impl Keep {
    pub fn new(config: &Config) -> Keep {
        Keep { users: config.history.keeps_users(), entry_bytes: config.history.history_entry_bytes }
    }
}

/// A live message held back during a recovery.
pub(super) enum Live {
    /// A user's chat message: its JSON.
    Chat(Box<[u8]>),
    /// A room message: its whole frame.
    Room(Arc<[u8]>),
}

/// One recovery in flight.
pub(super) struct Pending {
    /// The login's offset and epoch, until the login is decided.
    pub resume: Option<(String, String)>,
    pub live: Vec<Live>,
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
    pub pending: HashMap<(Token, CompactString), Pending>,
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

impl Pending {
    /// Replayed up to `last`: live messages at or below it are dropped until one above comes.
    pub fn settling(last: StreamId) -> Pending {
        Pending { resume: None, live: Vec::new(), bytes: 0, replayed_to: Some(last) }
    }
}

impl Recovering {
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn begin(&mut self, token: Token, room: &str, resume: Option<(String, String)>) {
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
