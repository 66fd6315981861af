//! A reactor's timers. Each kind of timeout has one fixed length, so its
//! deadlines are set in the order they expire: a FIFO queue per kind is a
//! complete timer, O(1) to set and to fire, and the reactor sleeps until the
//! earliest front. A connection that leaves the state a timer watches is not
//! looked for in the queue: the timer finds it gone (or changed) when it fires.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Token;

use super::expiry::ExpiryWheel;

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
    /// Logged-in connections whose token expires (each at its own time).
    pub tokens: ExpiryWheel,
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
            tokens: ExpiryWheel::new(),
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
    pub fn clock_at(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.started).as_millis() as u32
    }
}
