//! Replies to the client of a connection: error messages, in the words of
//! [`protocol`], encoded in the reactor's scratch buffer and queued.

use std::mem;

use mio::Token;

use super::conn::Conn;
use super::context::{Context, Outcome};
use super::write::queue_frame;
use crate::codec::op;
use crate::protocol::{self, Failure};

/// "Log in first", with the login this node takes.
pub(super) fn log_in_first(conn: &mut Conn, token: Token, cx: &mut Context) -> Outcome {
    let failure = if cx.auth.tokens().is_some() { Failure::LogInWithTokenFirst } else { Failure::LogInFirst };
    reply_failure(conn, token, cx, failure)
}

pub(super) fn reply_failure(conn: &mut Conn, token: Token, cx: &mut Context, failure: Failure<'_>) -> Outcome {
    reply_error(conn, token, cx, &failure.to_string())
}

pub(super) fn reply_error(conn: &mut Conn, token: Token, cx: &mut Context, message: &str) -> Outcome {
    reply_with(conn, token, cx, |out| protocol::encode_error(out, message))
}

/// Queues one text message, encoded by `encode`.
pub(super) fn reply_with(
    conn: &mut Conn,
    token: Token,
    cx: &mut Context,
    encode: impl FnOnce(&mut Vec<u8>),
) -> Outcome {
    let mut encoded = mem::take(&mut cx.encode);
    encoded.clear();
    encode(&mut encoded);
    let outcome = queue_frame(conn, token, cx, op::TEXT, &encoded);
    cx.encode = encoded;
    outcome
}
