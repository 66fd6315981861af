//! Rooms on one reactor: who of its connections is in which room, and what
//! `joinmsg`, `leavemsg` and `roommsg` do.
//!
//! A room message is encoded once, as a whole WebSocket frame, into a
//! reference-counted buffer that every recipient's output shares: members on
//! this reactor get it when the handler returns (`local`), members on the
//! node's other reactors through their inboxes, members on other nodes
//! through the bus (the room's channel, which a node subscribes while it has
//! members). Joins and leaves are announced the same way unless the room is
//! quiet (`--join-notices`, `--quiet-room`); the joiner always gets its own
//! `joinmsg`, the leaver its `leavemsg`, as confirmations. A room is named
//! by its key (the name profile's form: `Lobby` and `lobby` are one room) in
//! everything the node sends about it, so every member reads the same name.

use std::sync::Arc;

use compact_str::CompactString;
use mio::Token;

use super::conn::Conn;
use super::context::{Context, Outcome};
use super::recovery;
use super::reply::{log_in_first, reply_failure};
use super::write::queue_shared;
use crate::bus::{Kept, Published};
use crate::codec::{self, op};
use crate::config::glob_matches;
use crate::inbox::{Command, RoomMessage};
use crate::names;
use crate::protocol::{self, Failure};

/// A `joinmsg`.
/// `text` is the whole request, whose `Offset` and `Epoch` a room with history reads.
pub(super) fn join(conn: &mut Conn, token: Token, cx: &mut Context, room: &str, text: &str) -> Outcome {
    let Some(me) = conn.speaker().map(CompactString::from) else {
        return log_in_first(conn, token, cx);
    };
    let key = match names::check(room, cx.config.max_name_len) {
        Ok(key) => CompactString::from(&*key),
        Err(why) => return reply_failure(conn, token, cx, Failure::BadRoom(why)),
    };
    if cx.rooms.is_in(token, &key) {
        return reply_failure(conn, token, cx, Failure::AlreadyInRoom(room));
    }
    let max_rooms = cx.config.max_rooms_per_conn;
    if cx.rooms.count(token) >= max_rooms {
        return reply_failure(conn, token, cx, Failure::TooManyRooms(max_rooms));
    }
    let max_members = cx.config.max_room_members;
    let Ok(first) = cx.hub.rooms.join(&key, &me, cx.id, max_members) else {
        return reply_failure(conn, token, cx, Failure::RoomFull(room, max_members));
    };
    cx.rooms.add(token, &key);
    cx.bus.join_room(&key, &me, first);
    let frame = room_frame(cx, protocol::JOIN, "", &key, &me);
    if notices(cx, &key) {
        // To every member, the joiner included: its confirmation.
        fan_out(cx, &key, &frame);
    } else {
        queue_shared(conn, token, cx, &frame)?;
    }
    recovery::room_joined(token, cx, &key, text);
    Ok(())
}

/// A `leavemsg`.
pub(super) fn leave(conn: &mut Conn, token: Token, cx: &mut Context, room: &str) -> Outcome {
    let Some(me) = conn.speaker().map(CompactString::from) else {
        return log_in_first(conn, token, cx);
    };
    let key = names::key(room);
    if !cx.rooms.is_in(token, &key) {
        return reply_failure(conn, token, cx, Failure::NotInRoom(room));
    }
    let key = CompactString::from(&*key);
    cx.recovering.end(token, &key);
    part(token, cx, &key, &me);
    let frame = room_frame(cx, protocol::LEAVE, "", &key, &me);
    if notices(cx, &key) {
        fan_out(cx, &key, &frame);
    }
    // The leaver's confirmation: it is no member any more.
    queue_shared(conn, token, cx, &frame)
}

/// A `roommsg`: to every member, the sender included.
pub(super) fn message(conn: &mut Conn, token: Token, cx: &mut Context, room: &str, data: &str) -> Outcome {
    let Some(me) = conn.speaker() else {
        return log_in_first(conn, token, cx);
    };
    let key = names::key(room);
    if !cx.rooms.is_in(token, &key) {
        return reply_failure(conn, token, cx, Failure::NotInRoom(room));
    }
    if cx.config.history.keeps_room(&key) {
        return message_kept(conn, token, cx, &key, data);
    }
    let frame = room_frame(cx, protocol::ROOM, data, &key, me);
    fan_out(cx, &key, &frame);
    Ok(())
}

/// A `roommsg` to a room with history: through the bus only, which keeps
/// it and delivers it to every member (here too) with its offset.
fn message_kept(conn: &mut Conn, token: Token, cx: &mut Context, key: &str, data: &str) -> Outcome {
    let Some(me) = conn.speaker() else {
        return log_in_first(conn, token, cx);
    };
    let mut json = std::mem::take(&mut cx.encode);
    json.clear();
    protocol::encode_room(&mut json, protocol::ROOM, data, key, me);
    let published =
        (json.len() <= cx.keep.entry_bytes).then(|| cx.bus.publish_kept(Kept::Room(key), &json, cx.conn_ref(token)));
    cx.encode = json;
    match published {
        None => reply_failure(conn, token, cx, Failure::TooLongForHistory(cx.keep.entry_bytes)),
        Some(Published::Dropped) => reply_failure(conn, token, cx, Failure::LinkDown),
        Some(_) => Ok(()),
    }
}

/// A connection that logs out (or goes) leaves every room it is in; the
/// others are told, unless the room is quiet.
pub(super) fn leave_all(token: Token, cx: &mut Context, me: &str) {
    let rooms = cx.rooms.rooms_of(token);
    if rooms.is_empty() {
        return;
    }
    for key in rooms {
        if notices(cx, &key) {
            let frame = room_frame(cx, protocol::LEAVE, "", &key, me);
            fan_out(cx, &key, &frame);
        }
        part(token, cx, &key, me);
    }
}

/// Takes `token` out of room `key` here, on the node, and in the cluster.
fn part(token: Token, cx: &mut Context, key: &str, me: &str) {
    cx.rooms.remove(token, key);
    let last = cx.hub.rooms.leave(key, me, cx.id);
    cx.bus.leave_room(key, me, last);
}

/// Whether joins and leaves of room `key` are announced to its members.
fn notices(cx: &Context, key: &str) -> bool {
    cx.config.join_notices && !cx.config.quiet_rooms.iter().any(|pattern| glob_matches(pattern, key))
}

/// One room message as a whole text frame, in a buffer to share.
fn room_frame(cx: &mut Context, kind: &str, data: &str, key: &str, from: &str) -> Arc<[u8]> {
    let mut json = std::mem::take(&mut cx.encode);
    json.clear();
    protocol::encode_room(&mut json, kind, data, key, from);
    let mut frame = Vec::with_capacity(json.len() + codec::MAX_HEADER_LEN);
    codec::write_frame(&mut frame, op::TEXT, &json);
    cx.encode = json;
    Arc::from(frame)
}

/// Sends `frame` to every member of room `key`: here once the handler
/// returns, to the node's other reactors holding members, and (its JSON,
/// without the frame's header) to the other nodes through the bus.
pub(super) fn fan_out(cx: &mut Context, key: &str, frame: &Arc<[u8]>) {
    cx.local.push_room(key, frame);
    let (hub, id) = (&cx.hub, cx.id);
    let mut message: Option<Arc<RoomMessage>> = None;
    hub.rooms.for_each_reactor(key, |reactor| {
        if reactor != id {
            let message = message.get_or_insert_with(|| {
                Arc::new(RoomMessage { room: CompactString::from(key), frame: Arc::clone(frame) })
            });
            hub.inboxes[reactor].push(Command::RoomDeliver(Arc::clone(message)));
        }
    });
    let header = codec::header_len(frame);
    cx.bus.publish_room(key, &frame[header..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_runs_of_anything() {
        for (pattern, text, matches) in [
            ("big-*", "big-room", true),
            ("big-*", "small", false),
            ("*", "anything", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxc", false),
            ("*-news", "world-news", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_matches(pattern, text), matches, "{pattern} ~ {text}");
        }
    }
}
