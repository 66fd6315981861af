//! A reactor's timers. Each kind of timeout has one fixed length, so its
//! deadlines are set in the order they expire: a FIFO queue per kind is a
//! complete timer, O(1) to set and to fire, and the reactor sleeps until the
//! earliest front. A connection that leaves the state a timer watches is not
//! looked for in the queue: the timer finds it gone (or changed) when it fires.
//!
//! Two timeouts run from a connection's accept: the upgrade
//! (`--handshake-timeout`) and the login (`--login-timeout`). A connection
//! has one entry for both: in `arrival` at the earlier of the two, moved to
//! `arrival_late` (the later one) only if it then still needs watching.
//! Liveness (pings) needs no entry per connection at all: see `liveness`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use mio::Token;

use super::expiry::ExpiryWheel;

/// How long a closing connection may take to send its EOF after our close frame.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Longest sleep in poll with nothing scheduled: bounds how late timers fire.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);
/// A queue that empties with room for more entries than this lets it go.
const SHRINK_ABOVE: usize = 4096;

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
    pub fn pop_expired(&mut self, now: Instant) -> Option<(Instant, Token)> {
        let &(at, token) = self.queue.front()?;
        (at <= now).then(|| {
            self.queue.pop_front();
            if self.queue.is_empty() && self.queue.capacity() > SHRINK_ABOVE {
                // After a burst of connections: give the memory back.
                self.queue = VecDeque::new();
            }
            (at, token)
        })
    }

    fn next(&self) -> Option<Instant> {
        self.queue.front().map(|d| d.0)
    }
}

pub(super) struct Timers {
    /// Every connection, at the earlier of its upgrade and login deadlines.
    pub arrival: Deadlines,
    /// Connections still to watch at the later of the two.
    pub arrival_late: Deadlines,
    /// Connections holding an unfinished message, at most one entry each.
    pub stalled: Deadlines,
    /// Connections waiting for the peer's EOF after our close.
    pub closing: Deadlines,
    /// Logged-in connections whose token expires (each at its own time).
    pub tokens: ExpiryWheel,
    /// Accepting is paused until then (out of descriptors).
    pub accept_paused_until: Option<Instant>,
    /// When the liveness sweep next runs.
    pub sweep_at: Instant,
    /// The epoch of the reactor's millisecond clock (`Conn::stalled_since`).
    started: Instant,
}

impl Timers {
    pub fn new() -> Timers {
        let started = Instant::now();
        Timers {
            arrival: Deadlines::default(),
            arrival_late: Deadlines::default(),
            stalled: Deadlines::default(),
            closing: Deadlines::default(),
            tokens: ExpiryWheel::new(),
            accept_paused_until: None,
            sweep_at: started,
            started,
        }
    }

    /// How long the reactor may sleep: until the earliest deadline.
    pub fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        [
            self.arrival.next(),
            self.arrival_late.next(),
            self.stalled.next(),
            self.closing.next(),
            self.accept_paused_until,
            Some(self.sweep_at),
        ]
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

    /// Microseconds on the reactor's clock, wrapping every 71 minutes (the
    /// message-rate buckets; `rate` says how they stay clear of the wrap).
    pub fn micros_at(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.started).as_micros() as u32
    }
}
