//! How a connection ends: what a handler's [`Stop`] turns into. A close
//! takes the user off the node and the cluster at once, queues our close
//! frame after what is already queued, shuts our side once that is written,
//! and removes the connection at the peer's EOF or after a grace period.
//! A drop removes it at the end of the turn. A closing connection whose
//! peer has not hung up when the grace period ends is reset (SO_LINGER 0),
//! so the kernel does not go on holding (and resending) its unsent bytes.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::Token;

use super::conn::{split_token, Closing, Conn, Partial, Phase};
use super::context::{Context, Outcome, Stop};
use super::timers::CLOSE_GRACE;
use super::write::mark_dirty;
use crate::codec;
use crate::metrics::{CloseReason, Limit};

/// Acts on what a handler returned for `conn`.
pub(super) fn settle(conn: &mut Conn, token: Token, cx: &mut Context, outcome: Outcome) {
    match outcome {
        Ok(()) => {}
        Err(Stop::Fail(code, reason)) => {
            cx.stats().protocol_errors.fetch_add(1, Relaxed);
            begin(conn, token, cx, code, &reason, CloseReason::Error);
        }
        Err(Stop::Close(code, reason)) => begin(conn, token, cx, code, &reason, CloseReason::Limit),
        Err(Stop::Answer(code)) => begin(conn, token, cx, code, "", CloseReason::Peer),
        Err(Stop::Drop) => drop(conn, token, cx),
    }
}

/// Starts the close handshake (or, before the upgrade, just the close);
/// `why` is what `switchboard_closes_total` counts it as.
pub(super) fn begin(conn: &mut Conn, token: Token, cx: &mut Context, code: u16, reason: &str, why: CloseReason) {
    log_out(conn, token, cx);
    let was_open = match conn.phase {
        Phase::Closing(_) | Phase::Gone => return,
        Phase::Handshake => false,
        Phase::Chat | Phase::Echo => true,
    };
    conn.phase = Phase::Closing(Closing::Flushing);
    give_partial(conn, cx);
    if was_open {
        conn.output.append(&mut cx.pool, |out| codec::write_close(out, code, reason));
        cx.stats().closed(why, code);
    }
    mark_dirty(conn, token, &mut cx.dirty);
    cx.timers.closing.push(Instant::now() + CLOSE_GRACE, token);
    // Whatever the peer still sends is read and ignored until its EOF;
    // its edge may have passed while the handler ran.
    cx.still_readable.push((token, false));
}

/// Hands back what a connection held of unfinished input.
pub(super) fn give_partial(conn: &mut Conn, cx: &mut Context) {
    if let Some(partial) = conn.partial.take() {
        let Partial { input, message, held, .. } = *partial;
        super::stalled::release(cx, held);
        cx.pool.give(input);
        if let Some(m) = message {
            cx.pool.give(m.data);
        }
    }
}

/// The close grace has ended without the peer's EOF: the socket is to be
/// closed with a reset, which frees whatever the kernel still holds for it
/// (a slow reader's unsent output) instead of sending it on for minutes.
pub(super) fn reset(conn: &mut Conn, cx: &mut Context) {
    if socket2::SockRef::from(&conn.socket).set_linger(Some(Duration::ZERO)).is_ok() {
        cx.stats().limit_hit(Limit::CloseGraceReset);
    }
}

/// Removes a connection at the end of this turn (the peer is gone).
pub(super) fn drop(conn: &mut Conn, token: Token, cx: &mut Context) {
    log_out(conn, token, cx);
    if conn.is_open() {
        cx.stats().closed(CloseReason::Dropped, 0);
    }
    if conn.phase != Phase::Gone {
        conn.phase = Phase::Gone;
        cx.reap.push(split_token(token).0);
    }
}

/// Takes the user name off this node and the cluster.
fn log_out(conn: &mut Conn, token: Token, cx: &mut Context) {
    cx.recovering.forget(token);
    if let Some(me) = conn.speaker().map(compact_str::CompactString::from) {
        super::rooms::leave_all(token, cx, &me);
    }
    let Some((name, granted)) = conn.log_out() else {
        return;
    };
    let at = cx.conn_ref(token);
    // Held under its key (see `names`), not as the client wrote it.
    let key = crate::names::key(&name);
    cx.hub.directory.remove(&key, at);
    cx.bus.release(&key, at);
    if granted {
        cx.stats().users.fetch_sub(1, Relaxed);
    }
}
