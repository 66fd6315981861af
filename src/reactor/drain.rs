//! A reactor's drain, when the node stops: no more accepts, then every
//! connection it held is closed with 1001, spread evenly over the drain
//! period so that the clients do not all reconnect (somewhere else) at once.
//! What was queued to a client is written before its close frame.

use std::time::{Duration, Instant};

use mio::Token;

/// Which connections are due for their close, and when.
pub(super) struct Drain {
    started: Instant,
    over: Duration,
    /// The connections open when the drain began, in the order they close.
    order: Vec<Token>,
    /// How many of `order` have been closed so far.
    told: usize,
}

impl Drain {
    pub fn new(order: Vec<Token>, over: Duration, now: Instant) -> Drain {
        Drain { started: now, over, order, told: 0 }
    }

    /// The next connection whose turn has come by `now`: the i-th of n
    /// closes at `i / n` of the period, the first at once.
    pub fn next_due(&mut self, now: Instant) -> Option<Token> {
        let token = *self.order.get(self.told)?;
        (self.due_at(self.told) <= now).then(|| {
            self.told += 1;
            token
        })
    }

    /// When the next close is due (`None` once every connection was closed).
    pub fn next_at(&self) -> Option<Instant> {
        (self.told < self.order.len()).then(|| self.due_at(self.told))
    }

    pub fn all_told(&self) -> bool {
        self.told >= self.order.len()
    }

    fn due_at(&self, i: usize) -> Instant {
        let n = self.order.len().max(1) as u128;
        // In nanoseconds: the period is at most an hour (Config::validate).
        let offset = self.over.as_nanos() * i as u128 / n;
        self.started + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_spread_evenly_over_the_period() {
        let t0 = Instant::now();
        let mut drain = Drain::new((0..4).map(Token).collect(), Duration::from_secs(8), t0);
        let due = |d: &mut Drain, secs: u64| std::iter::from_fn(|| d.next_due(t0 + Duration::from_secs(secs))).count();
        assert_eq!(due(&mut drain, 0), 1);
        assert_eq!(drain.next_at(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(due(&mut drain, 3), 1);
        assert_eq!(due(&mut drain, 5), 1);
        assert!(!drain.all_told());
        assert_eq!(due(&mut drain, 100), 1);
        assert!(drain.all_told());
        assert_eq!(drain.next_at(), None);
    }

    #[test]
    fn a_zero_period_closes_everyone_at_once() {
        let t0 = Instant::now();
        let mut drain = Drain::new((0..1000).map(Token).collect(), Duration::ZERO, t0);
        assert_eq!(std::iter::from_fn(|| drain.next_due(t0)).count(), 1000);
    }
}
