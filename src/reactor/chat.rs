//! The chat protocol on one connection: what each request does (login and
//! refresh in `login`; chat, whoami here), where a chat message goes (this
//! reactor, another reactor of this node, or the bus), and the replies.
//! Every text a client reads comes from [`protocol`].

use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use mio::Token;

use super::conn::Conn;
use super::context::{Context, Outcome};
use super::keep::Held;
use super::recovery;
use super::reply::{log_in_first, reply_error, reply_failure, reply_with};
use super::write::{queue_frame, queue_shared};
use super::{login, presence, rooms};
use crate::bus::{Kept, Published, Undelivered};
use crate::codec::op;
use crate::inbox::Stored;
use crate::names;
use crate::protocol::{self, Failure, Request, Resume};

/// One whole text message from a client of the chat endpoint.
pub(super) fn on_text(conn: &mut Conn, token: Token, cx: &mut Context, text: &str) -> Outcome {
    let request = match protocol::parse(text) {
        Ok(request) => request,
        Err(e) => return reply_error(conn, token, cx, &e.to_string()),
    };
    match request {
        Request::Login { name, token: jwt } => {
            let resume = if cx.keep.users { protocol::resume_of(text) } else { Resume::default() };
            login::login(conn, token, cx, &name, &jwt, &resume)
        }
        Request::Refresh { token: jwt } => login::refresh(conn, token, cx, &jwt),
        Request::Chat { to, data } => chat(conn, token, cx, &to, &data),
        Request::Join { room } => rooms::join(conn, token, cx, &room, text),
        Request::Leave { room } => rooms::leave(conn, token, cx, &room),
        Request::Room { room, data } => rooms::message(conn, token, cx, &room, &data),
        Request::Presence { names } => presence::presence(conn, token, cx, &names),
        Request::Members { room } => presence::members(conn, token, cx, &room),
        Request::WhoAmI => {
            let name = conn.speaker().map(compact_str::CompactString::from).unwrap_or_default();
            reply_with(conn, token, cx, |out| protocol::encode_whoami(out, &name))
        }
    }
}

/// Sends a chat message to `to` (as the sender wrote it; looked up by its
/// key): on this reactor once the sender's handler is done, on another
/// reactor through its inbox, elsewhere through the bus. It is encoded
/// once, with the sender's name taken from the connection.
fn chat(conn: &mut Conn, token: Token, cx: &mut Context, to: &str, data: &str) -> Outcome {
    // Never a pending login here: input waits until the bus decides.
    let Some(from) = conn.speaker() else {
        return log_in_first(conn, token, cx);
    };
    let key = names::key(to);
    if cx.keep.users {
        return chat_kept(conn, token, cx, &key, to, data);
    }
    let holder = cx.hub.directory.lookup(&key);
    if let Some(at) = holder.filter(|at| at.reactor == cx.id) {
        cx.local.push(at.token, |out| protocol::encode_chat(out, data, to, from));
        return Ok(());
    }
    let mut encoded = mem::take(&mut cx.encode);
    encoded.clear();
    protocol::encode_chat(&mut encoded, data, to, from);
    let published = match holder {
        Some(at) if !cx.hub.deliver(at, &encoded) => {
            cx.encode = encoded;
            return reply_failure(conn, token, cx, Failure::RecipientBusy(to));
        }
        Some(_) => Published::Sent,
        None => cx.bus.publish(&key, &encoded, cx.conn_ref(token)),
    };
    cx.encode = encoded;
    match published {
        Published::Sent => Ok(()),
        Published::NoRecipient => {
            cx.stats().undeliverable.fetch_add(1, Relaxed);
            reply_failure(conn, token, cx, Failure::NotOnline(to))
        }
        Published::Dropped => reply_failure(conn, token, cx, Failure::LinkDown),
    }
}

/// A chat message to a user with history: always through the bus, which
/// keeps it and delivers it (here too) with its offset.
fn chat_kept(conn: &mut Conn, token: Token, cx: &mut Context, key: &str, to: &str, data: &str) -> Outcome {
    let Some(from) = conn.speaker() else {
        return log_in_first(conn, token, cx);
    };
    let mut encoded = mem::take(&mut cx.encode);
    encoded.clear();
    protocol::encode_chat(&mut encoded, data, to, from);
    let published = if encoded.len() > cx.keep.entry_bytes {
        None
    } else {
        Some(cx.bus.publish_kept(Kept::User(key), &encoded, cx.conn_ref(token)))
    };
    cx.encode = encoded;
    match published {
        None => reply_failure(conn, token, cx, Failure::TooLongForHistory(cx.keep.entry_bytes)),
        Some(Published::Sent) => Ok(()),
        Some(Published::NoRecipient) => reply_failure(conn, token, cx, Failure::NotOnline(to)),
        Some(Published::Dropped) => reply_failure(conn, token, cx, Failure::LinkDown),
    }
}

/// Tells a sender its message to an offline user was kept for them.
pub(super) fn stored(conn: &mut Conn, token: Token, cx: &mut Context, stored: &Stored) -> Outcome {
    reply_with(conn, token, cx, |out| protocol::encode_stored(out, &stored.to, &stored.offset))
}

/// Writes a chat message to a connection of this reactor if it still holds
/// a granted login (a successor in its slot, or a login still being decided,
/// gets nothing: it is counted undeliverable).
pub(super) fn deliver(conn: &mut Conn, token: Token, cx: &mut Context, payload: &[u8]) -> Outcome {
    if !cx.recovering.is_empty() {
        return deliver_recovering(conn, token, cx, payload);
    }
    deliver_now(conn, token, cx, payload)
}

/// [`deliver`] while some recovery is in flight on this reactor: held back
/// if it is this connection's.
#[cold]
#[inline(never)]
fn deliver_recovering(conn: &mut Conn, token: Token, cx: &mut Context, payload: &[u8]) -> Outcome {
    match cx.recovering.hold_chat(token, payload, cx.config.max_output) {
        Held::No => deliver_now(conn, token, cx, payload),
        Held::Yes => Ok(()),
        Held::Over => Err(recovery::over()),
    }
}

#[inline]
fn deliver_now(conn: &mut Conn, token: Token, cx: &mut Context, payload: &[u8]) -> Outcome {
    if conn.speaker().is_some() {
        queue_frame(conn, token, cx, op::TEXT, payload)
    } else {
        cx.stats().undeliverable.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Writes a room message (its shared frame) to a member of this reactor if
/// it still holds a granted login.
pub(super) fn deliver_shared(conn: &mut Conn, token: Token, cx: &mut Context, key: &str, frame: &Arc<[u8]>) -> Outcome {
    if !cx.recovering.is_empty() {
        match hold_room(token, cx, key, frame) {
            Held::No => {}
            Held::Yes => return Ok(()),
            Held::Over => return Err(recovery::over()),
        }
    }
    if conn.speaker().is_some() {
        queue_shared(conn, token, cx, frame)
    } else {
        cx.stats().undeliverable.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Holds a room message back if `token` is recovering the room.
#[cold]
#[inline(never)]
fn hold_room(token: Token, cx: &mut Context, key: &str, frame: &Arc<[u8]>) -> Held {
    cx.recovering.hold_room(token, key, frame, cx.config.max_output)
}

/// Tells a sender what became of a message the bus took and could not deliver.
pub(super) fn undelivered(conn: &mut Conn, token: Token, cx: &mut Context, why: &Undelivered) -> Outcome {
    match why {
        Undelivered::NotOnline(name) => reply_failure(conn, token, cx, Failure::NotOnline(name)),
        Undelivered::Lost(name) => reply_failure(conn, token, cx, Failure::Lost(name)),
    }
}
