//! The chat protocol on one connection: what each request does (login,
//! chat, whoami), where a chat message goes (this reactor, another reactor
//! of this node, or the bus), and the replies. Every text a client reads
//! comes from [`protocol`].

use std::mem;
use std::sync::atomic::Ordering::Relaxed;

use mio::Token;

use super::conn::{Conn, Login};
use super::context::{Context, Outcome};
use super::write::queue_frame;
use crate::bus::{Claim, Published, Undelivered};
use crate::codec::op;
use crate::inbox::Command;
use crate::protocol::{self, Failure, Request};

/// One whole text message from a client of the chat endpoint.
pub(super) fn on_text(conn: &mut Conn, token: Token, cx: &mut Context, text: &str) -> Outcome {
    let request = match protocol::parse(text, cx.config.max_name_len) {
        Ok(request) => request,
        Err(e) => return reply_error(conn, token, cx, &e.to_string()),
    };
    match request {
        Request::Login { name } => login(conn, token, cx, &name),
        Request::Chat { to, data } => chat(conn, token, cx, &to, &data),
        Request::WhoAmI => {
            let mut encoded = mem::take(&mut cx.encode);
            encoded.clear();
            protocol::encode_whoami(&mut encoded, conn.speaker().unwrap_or_default());
            let outcome = queue_frame(conn, token, cx, op::TEXT, &encoded);
            cx.encode = encoded;
            outcome
        }
    }
}

/// Claims `name` on this node (the directory), then for the cluster (the bus).
fn login(conn: &mut Conn, token: Token, cx: &mut Context, name: &str) -> Outcome {
    if let Login::Pending(current) | Login::Granted(current) = conn.login() {
        let why = Failure::AlreadyLoggedIn(current).to_string();
        return reply_error(conn, token, cx, &why);
    }
    let at = cx.conn_ref(token);
    if !cx.hub.directory.insert_if_absent(name, at) {
        return queue_frame(conn, token, cx, op::TEXT, protocol::USER_EXISTS);
    }
    match cx.bus.claim(name, at) {
        Claim::Granted => {
            conn.log_in(name, true);
            cx.stats().users.fetch_add(1, Relaxed);
            Ok(())
        }
        Claim::Pending => {
            conn.log_in(name, false);
            Ok(())
        }
    }
}

/// The bus decided a login that was pending (the caller then takes up the
/// input that waited for it), or (`accepted` false on a granted login) revoked one: after a Redis outage another node proved
/// to hold the name, and the user here gets the seed's refusal.
pub(super) fn login_decided(conn: &mut Conn, token: Token, cx: &mut Context, accepted: bool) -> Outcome {
    match (conn.login(), accepted) {
        (Login::Pending(_), true) => {
            conn.grant();
            cx.stats().users.fetch_add(1, Relaxed);
            Ok(())
        }
        (Login::Pending(_), false) => refuse(conn, token, cx),
        (Login::Granted(_), false) => {
            cx.stats().users.fetch_sub(1, Relaxed);
            refuse(conn, token, cx)
        }
        (Login::Granted(_), true) | (Login::Anonymous, _) => Ok(()),
    }
}

/// Takes a name the bus gave to someone else (the bus knows already).
fn refuse(conn: &mut Conn, token: Token, cx: &mut Context) -> Outcome {
    if let Some((name, _)) = conn.log_out() {
        cx.hub.directory.remove(&name, cx.conn_ref(token));
    }
    queue_frame(conn, token, cx, op::TEXT, protocol::USER_EXISTS)
}

/// Sends a chat message to `to`: on this reactor once the sender's handler
/// is done, on another reactor through its inbox, elsewhere through the bus.
/// It is encoded once, with the sender's name taken from the connection.
fn chat(conn: &mut Conn, token: Token, cx: &mut Context, to: &str, data: &str) -> Outcome {
    // Never a pending login here: input waits until the bus decides.
    let Some(from) = conn.speaker() else {
        return reply_failure(conn, token, cx, Failure::LogInFirst);
    };
    let holder = cx.hub.directory.lookup(to);
    if let Some(at) = holder.filter(|at| at.reactor == cx.id) {
        cx.local.push(at.token, |out| protocol::encode_chat(out, data, to, from));
        return Ok(());
    }
    let mut encoded = mem::take(&mut cx.encode);
    encoded.clear();
    protocol::encode_chat(&mut encoded, data, to, from);
    let published = match holder {
        Some(at) => {
            cx.hub.send(at, Command::Deliver { token: at.token, payload: encoded[..].into() });
            Published::Sent
        }
        None => cx.bus.publish(to, &encoded, cx.conn_ref(token)),
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

/// Writes a chat message to a connection of this reactor if it still holds
/// a granted login (a successor in its slot, or a login still being decided,
/// gets nothing: it is counted undeliverable).
pub(super) fn deliver(conn: &mut Conn, token: Token, cx: &mut Context, payload: &[u8]) -> Outcome {
    if conn.speaker().is_some() {
        queue_frame(conn, token, cx, op::TEXT, payload)
    } else {
        cx.stats().undeliverable.fetch_add(1, Relaxed);
        Ok(())
    }
}

/// Tells a sender what became of a message the bus took and could not deliver.
pub(super) fn undelivered(conn: &mut Conn, token: Token, cx: &mut Context, why: &Undelivered) -> Outcome {
    match why {
        Undelivered::NotOnline(name) => reply_failure(conn, token, cx, Failure::NotOnline(name)),
        Undelivered::Lost(name) => reply_failure(conn, token, cx, Failure::Lost(name)),
    }
}

fn reply_failure(conn: &mut Conn, token: Token, cx: &mut Context, failure: Failure<'_>) -> Outcome {
    reply_error(conn, token, cx, &failure.to_string())
}

fn reply_error(conn: &mut Conn, token: Token, cx: &mut Context, message: &str) -> Outcome {
    let mut encoded = mem::take(&mut cx.encode);
    encoded.clear();
    protocol::encode_error(&mut encoded, message);
    let outcome = queue_frame(conn, token, cx, op::TEXT, &encoded);
    cx.encode = encoded;
    outcome
}
