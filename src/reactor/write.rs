//! The write path: frames are queued into a connection's `Output` during a
//! turn and written at its end, one `write` per connection however many
//! messages it got. Sockets are registered for READABLE | WRITABLE once, so no
//! `epoll_ctl` is needed when output backs up: the WRITABLE edge resumes it.
//! Buffers come from and go back to a small per-reactor pool.

use std::io;
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use mio::Token;

use super::conn::{flag, Closing, Conn, Phase};
use super::context::{Context, Outcome, Stop};
use crate::codec::{self, close, op};
use crate::protocol;

/// Bytes one connection may write per turn before others get their go.
const WRITE_BUDGET: usize = 1024 * 1024;

/// What one [`flush`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Everything queued was written.
    Drained,
    /// The socket is full; the WRITABLE edge resumes the write.
    Blocked,
    /// The per-turn budget ran out; the connection is listed for the next turn.
    Budget,
    /// The socket failed: the peer is gone.
    Gone,
}

/// Lists `conn` for flushing at the end of this turn (once).
pub(super) fn mark_dirty(conn: &mut Conn, token: Token, dirty: &mut Vec<Token>) {
    if !conn.has(flag::DIRTY) {
        conn.flags |= flag::DIRTY;
        dirty.push(token);
    }
}

/// Queues one unfragmented frame to a connection and lists it for flushing.
///
/// A client is slow when its socket is full and what it has not taken yet
/// is over `--max-output`: it is closed with 1008, after what was already
/// queued for it (so the close frame never lands inside a half-written
/// frame), and dropped at its EOF or after the close grace period. One
/// message may be larger than the limit on its own (an echo of a big
/// message), so pending output is bounded by `--max-output` plus one message.
pub(super) fn queue_frame(conn: &mut Conn, token: Token, cx: &mut Context, opcode: u8, payload: &[u8]) -> Outcome {
    if !make_room(conn, token, cx)? {
        return Ok(());
    }
    conn.output.append(&mut cx.pool, |out| codec::write_frame(out, opcode, payload));
    if opcode == op::TEXT || opcode == op::BINARY {
        cx.stats().messages_out.fetch_add(1, Relaxed);
    }
    mark_dirty(conn, token, &mut cx.dirty);
    Ok(())
}

/// Queues a text frame shared with other connections (a room message):
/// what [`queue_frame`] does, without a copy.
pub(super) fn queue_shared(conn: &mut Conn, token: Token, cx: &mut Context, frame: &Arc<[u8]>) -> Outcome {
    if !make_room(conn, token, cx)? {
        return Ok(());
    }
    conn.output.push_shared(&mut cx.pool, frame);
    cx.stats().messages_out.fetch_add(1, Relaxed);
    mark_dirty(conn, token, &mut cx.dirty);
    Ok(())
}

/// Whether more may be queued to `conn`: not once it is closing (false),
/// and not past `--max-output` for a client whose socket is full (a slow
/// consumer, closed with 1008).
// Inlined: it runs on every message queued, and as a call it cost 1%
// of the instructions per message (scripts/callgrind.sh).
#[inline(always)]
fn make_room(conn: &mut Conn, token: Token, cx: &mut Context) -> Result<bool, Stop> {
    if matches!(conn.phase, Phase::Closing(_) | Phase::Gone) {
        return Ok(false);
    }
    let max_output = cx.config.max_output;
    // Output is written at the end of a turn, so a burst within one turn
    // can pass the limit for a client that reads at once: write now, and
    // call the client slow only if that leaves it over the limit.
    if conn.output.unsent() > max_output && write_until_blocked(conn, token, cx)? && conn.output.unsent() > max_output {
        cx.stats().slow_closed.fetch_add(1, Relaxed);
        return Err(Stop::Close(
            close::POLICY,
            format!("slow consumer: over {max_output} bytes of unsent output").into(),
        ));
    }
    Ok(true)
}

/// Queues an errormsg carrying `message` (a text from `protocol`).
pub(super) fn queue_error(conn: &mut Conn, token: Token, cx: &mut Context, message: &str) -> Outcome {
    let mut encoded = std::mem::take(&mut cx.encode);
    encoded.clear();
    protocol::encode_error(&mut encoded, message);
    let outcome = queue_frame(conn, token, cx, op::TEXT, &encoded);
    cx.encode = encoded;
    outcome
}

/// Writes until the socket is full: true when it is, false when the output
/// drained first.
fn write_until_blocked(conn: &mut Conn, token: Token, cx: &mut Context) -> Result<bool, Stop> {
    loop {
        match flush(conn, token, cx) {
            Flushed::Budget => {}
            Flushed::Blocked => return Ok(true),
            Flushed::Drained => return Ok(false),
            Flushed::Gone => return Err(Stop::Drop),
        }
    }
}

/// Writes what a connection has queued, up to the per-turn budget. Drained
/// output goes back to the pool, and a closing connection shuts its sending
/// side once its last bytes are out. The caller drops a connection that is
/// [`Flushed::Gone`].
pub(super) fn flush(conn: &mut Conn, token: Token, cx: &mut Context) -> Flushed {
    let mut written = 0;
    let result = loop {
        if conn.output.unsent() == 0 {
            break Flushed::Drained;
        }
        if written >= WRITE_BUDGET {
            break Flushed::Budget;
        }
        match conn.output.write_to(&conn.socket) {
            Ok(0) => break Flushed::Gone,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Flushed::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break Flushed::Gone,
        }
    };
    cx.stats().bytes_out.fetch_add(written as u64, Relaxed);
    match result {
        Flushed::Drained => {
            cx.pool.give(conn.output.take());
            if conn.phase == Phase::Closing(Closing::Flushing) {
                let _ = conn.socket.shutdown(Shutdown::Write);
                conn.phase = Phase::Closing(Closing::Shut);
            }
        }
        Flushed::Budget => mark_dirty(conn, token, &mut cx.dirty),
        // Socket full: the WRITABLE edge brings us back. Gone: the caller drops it.
        Flushed::Blocked | Flushed::Gone => {}
    }
    result
}
