//! The `--message-timeout` rule: a client that starts a message (a frame
//! cut short, or fragments without the final one) must finish it in time,
//! since what it sent meanwhile is held in memory.

use std::time::{Duration, Instant};

use mio::Token;

use super::conn::{flag, Conn};
use super::context::{Context, Outcome, Stop};
use crate::codec::close;

/// Starts the clock on a connection that now holds an unfinished message
/// (a partial frame, or fragments without the final one), or stops it.
/// The clock is read only when a connection starts to stall, not per read.
pub(super) fn note_stalled(conn: &mut Conn, token: Token, cx: &mut Context) {
    let stalled = conn.is_open() && conn.partial.is_some();
    if !stalled {
        conn.flags &= !flag::STALLED;
        return;
    }
    if conn.has(flag::STALLED) {
        return;
    }
    let now = Instant::now();
    conn.flags |= flag::STALLED;
    conn.partial_mut().since = cx.timers.clock_at(now);
    if !conn.has(flag::STALL_TIMER) {
        conn.flags |= flag::STALL_TIMER;
        cx.timers.stalled.push(now + Duration::from_secs(cx.config.message_timeout), token);
    }
}

/// A stalled-message timer fired: close the connection if it has held the
/// same unfinished message for `--message-timeout`, else wait for its turn.
pub(super) fn check_stalled(conn: &mut Conn, token: Token, cx: &mut Context, now: Instant) -> Outcome {
    conn.flags &= !flag::STALL_TIMER;
    if !conn.has(flag::STALLED) {
        return Ok(());
    }
    let timeout_ms = cx.config.message_timeout * 1000;
    let since = conn.partial.as_ref().map_or(0, |p| p.since);
    let held = u64::from(cx.timers.clock_at(now).wrapping_sub(since));
    if held >= timeout_ms {
        let reason = format!("message not completed within {} s", cx.config.message_timeout);
        return Err(Stop::Fail(close::POLICY, reason.into()));
    }
    conn.flags |= flag::STALL_TIMER;
    cx.timers.stalled.push(now + Duration::from_millis(timeout_ms - held), token);
    Ok(())
}
