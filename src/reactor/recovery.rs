//! Recovery on one reactor: what happens to a login's or a join's history.
//!
//! A recovery begins when a login is claimed (the user's inbox) or a room
//! joined; from then on, live messages of that channel for that connection
//! are held back here. When the bus's answer comes ([`replayed`]): the
//! replayed messages first, then the `recoverymsg`, then the held live ones
//! whose offset lies after the last replayed (the others were replayed):
//! no gap, no duplicate at the seam. The node subscribed the channel before
//! it read the history, so every message is in one or the other.
//!
//! Their state (and which channels keep history) is in `keep`.

use compact_str::CompactString;
use mio::Token;

use super::conn::Conn;
use super::context::{Context, Outcome, Stop};
use super::keep::{Live, Pending};
use super::reply::{reply_failure, reply_with};
use super::write::{queue_frame, queue_shared};
use crate::bus::Kept;
use crate::codec::{self, close, op};
use crate::inbox::Recovered;
use crate::protocol::{self, Failure, Resume, StreamId};

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
    if cx.config.history.keeps_room(key) {
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
        cx.recovering.pending.insert((token, room), Pending::settling(last));
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
