//! A reactor's timers. Each kind of timeout has one fixed length, so its
//! deadlines are set in the order they expire: a FIFO queue per kind is a
//! complete timer, O(1) to set and to fire, and the reactor sleeps until the
//! earliest front. A connection that leaves the state a timer watches is not
//! looked for in the queue: the timer finds it gone (or changed) when it fires.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Token;

use super::conn::{flag, Conn};
use super::{Context, Outcome, Stop};
use crate::codec::close;

/// How long a closing connection may take to send its EOF after our close frame.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Longest sleep in poll with nothing scheduled: bounds how late timers fire.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

/// Deadlines of one length, in the order they were set (and expire).
#[derive(Default)]
pub(super) struct Deadlines {
    queue: VecDeque<(Instant, Token)>,
}

impl Deadlines {
    pub fn push(&mut self, at: Instant, token: Token) {
        self.queue.push_back((at, token));
    }

    /// The next connection whose deadline has passed by `now`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<Token> {
        let &(at, token) = self.queue.front()?;
        (at <= now).then(|| {
            self.queue.pop_front();
            token
        })
    }

    fn next(&self) -> Option<Instant> {
        self.queue.front().map(|d| d.0)
    }
}

pub(super) struct Timers {
    /// Connections that have not finished their upgrade request.
    pub handshakes: Deadlines,
    /// Connections holding an unfinished message, at most one entry each.
    pub stalled: Deadlines,
    /// Connections waiting for the peer's EOF after our close.
    pub closing: Deadlines,
    /// Accepting is paused until then (out of descriptors).
    pub accept_paused_until: Option<Instant>,
    /// The epoch of the reactor's millisecond clock (`Conn::stalled_since`).
    started: Instant,
}

impl Timers {
    pub fn new() -> Timers {
        Timers {
            handshakes: Deadlines::default(),
            stalled: Deadlines::default(),
            closing: Deadlines::default(),
            accept_paused_until: None,
            started: Instant::now(),
        }
    }

    /// How long the reactor may sleep: until the earliest deadline.
    pub fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        [self.handshakes.next(), self.stalled.next(), self.closing.next(), self.accept_paused_until]
            .into_iter()
            .flatten()
            .map(|at| at.saturating_duration_since(now))
            .fold(MAX_POLL_WAIT, Duration::min)
    }

    /// Milliseconds on the reactor's clock, wrapping (differences stay right
    /// for 49 days, far beyond any timeout).
    fn clock_at(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.started).as_millis() as u32
    }
}

/// Starts the clock on a connection that now holds an unfinished message
/// (a partial frame, or fragments without the final one), or stops it.
/// The clock is read only when a connection starts to stall, not per read.
pub(super) fn note_stalled(conn: &mut Conn, token: Token, cx: &mut Context) {
    let stalled = conn.is_open() && (!conn.input.is_empty() || conn.message.is_some());
    if !stalled {
        conn.flags &= !flag::STALLED;
        return;
    }
    if conn.has(flag::STALLED) {
        return;
    }
    let now = Instant::now();
    conn.flags |= flag::STALLED;
    conn.stalled_since = cx.timers.clock_at(now);
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
    let held = u64::from(cx.timers.clock_at(now).wrapping_sub(conn.stalled_since));
    if held >= timeout_ms {
        let reason = format!("message not completed within {} s", cx.config.message_timeout);
        return Err(Stop::Fail(close::POLICY, reason.into()));
    }
    conn.flags |= flag::STALL_TIMER;
    cx.timers.stalled.push(now + Duration::from_millis(timeout_ms - held), token);
    Ok(())
}
