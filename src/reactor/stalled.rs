//! The `--message-timeout` rule: a client that starts a message (a frame
//! cut short, or fragments without the final one) must finish it in time,
//! since what it sent meanwhile is held in memory. And the node's budget for
//! that memory (`--max-partial-bytes`): what every connection holds of
//! unfinished messages is counted node-wide, and a client whose message
//! would pass the budget is closed with 1008. A connection that holds nothing
//! partial (nearly all, nearly always) costs one branch here.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::Token;

use super::conn::{flag, Conn};
use super::context::{Context, Outcome, Stop};
use crate::codec::close;
use crate::metrics::Limit;

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

/// Brings the node's count of bytes held in unfinished messages up to date
/// with what `conn` holds now (the capacity of its buffers: what is
/// allocated, not what has arrived). Past `--max-partial-bytes` the client is
/// closed with 1008 and its buffers are handed back at the close.
pub(super) fn account(conn: &mut Conn, cx: &mut Context) -> Outcome {
    let Some(partial) = conn.partial.as_mut() else {
        return Ok(());
    };
    let holds = partial.input.capacity() + partial.message.as_ref().map_or(0, |m| m.data.capacity());
    if holds <= partial.held {
        release(cx, partial.held - holds);
        partial.held = holds;
        return Ok(());
    }
    let more = holds - partial.held;
    let gauge = &cx.hub.metrics.partial_bytes;
    let total = gauge.fetch_add(more as u64, Relaxed) + more as u64;
    let max = cx.config.max_partial_bytes;
    if total > max as u64 {
        gauge.fetch_sub(more as u64, Relaxed);
        cx.stats().limit_hit(Limit::PartialBytes);
        let reason = format!("the node holds {max} bytes of unfinished messages: finish yours later");
        return Err(Stop::Close(close::POLICY, reason.into()));
    }
    partial.held = holds;
    Ok(())
}

/// `bytes` counted against the node's budget were given back.
pub(super) fn release(cx: &Context, bytes: usize) {
    if bytes > 0 {
        cx.hub.metrics.partial_bytes.fetch_sub(bytes as u64, Relaxed);
    }
}
