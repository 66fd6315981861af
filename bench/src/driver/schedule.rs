//! A thread's schedule for a paced activity (connects, logins, chat messages, churn
//! cycles): operation `k` is meant to start at `start + k / rate`, where `rate` is the
//! thread's share of the asked rate. Chat and churn carry that intended time, so latency
//! is measured from when the operation should have happened, not from when a busy load
//! generator got round to it (coordinated omission: wrk2 and k6 measure the same way).

/// How far behind schedule a thread may fall before it drops what is due (counted), so a
/// saturated load generator reports the shortfall instead of bursting later.
pub(super) const MAX_LAG_NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    start_ns: u64,
    /// Operations per second for this thread; 0: unpaced, everything due at once.
    per_second: f64,
    /// The next operation's number.
    next: u64,
}

impl Schedule {
    /// A schedule from `start_ns` at `share` of `rate` per second (0: unpaced).
    pub(super) fn new(start_ns: u64, rate: u32, share: f64) -> Self {
        Schedule { start_ns, per_second: f64::from(rate) * share, next: 0 }
    }

    /// A schedule of `per_second` operations from `start_ns`, not a share of a rate.
    pub(super) fn at_rate(start_ns: u64, per_second: f64) -> Self {
        Schedule { start_ns, per_second, next: 0 }
    }

    /// The next operation's number.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// `n` more operations started.
    pub(super) fn advance(&mut self, n: u64) {
        self.next += n;
    }

    /// How many operations are due by `now` in all, at most `limit` (all of it unpaced).
    pub(super) fn due(&self, now: u64, limit: u64) -> u64 {
        if self.per_second <= 0.0 {
            return limit;
        }
        let elapsed = now.saturating_sub(self.start_ns) as f64 / 1e9;
        ((elapsed * self.per_second) as u64 + 1).min(limit)
    }

    /// When operation `k` is meant to start.
    pub(super) fn intended_ns(&self, k: u64) -> u64 {
        if self.per_second <= 0.0 {
            return self.start_ns;
        }
        self.start_ns + (k as f64 * 1e9 / self.per_second) as u64
    }

    /// Skips the operations more than [`MAX_LAG_NS`] overdue; returns how many.
    pub(super) fn drop_late(&mut self, now: u64) -> u64 {
        let keep = ((self.per_second * MAX_LAG_NS as f64 / 1e9) as u64).max(1);
        let behind = self.due(now, u64::MAX).saturating_sub(self.next);
        if self.per_second <= 0.0 || behind <= keep {
            return 0;
        }
        let dropped = behind - keep;
        self.next += dropped;
        dropped
    }

    /// Operations meant to start before `end_ns` that never did.
    pub(super) fn missed(&self, end_ns: u64) -> u64 {
        if self.per_second <= 0.0 {
            return 0;
        }
        // Operation k is due before the end when start + k / rate < end.
        let span = end_ns.saturating_sub(self.start_ns) as f64 / 1e9;
        ((span * self.per_second).ceil() as u64).saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn operations_fall_due_at_their_intended_times() {
        let mut s = Schedule::new(10 * S, 1000, 0.5);
        assert_eq!(s.due(10 * S, u64::MAX), 1);
        assert_eq!(s.intended_ns(0), 10 * S);
        assert_eq!(s.intended_ns(500), 11 * S);
        assert_eq!(s.due(11 * S, u64::MAX), 501);
        s.advance(501);
        assert_eq!(s.missed(12 * S), 499);
        assert_eq!(s.due(11 * S, 100), 100);
    }

    #[test]
    fn at_most_a_second_of_backlog_is_kept() {
        let mut s = Schedule::new(0, 100, 1.0);
        // 3.5 s in: 351 due, nothing sent; the oldest 251 go, 100 (one second) stay.
        assert_eq!(s.drop_late(3 * S + S / 2), 251);
        assert_eq!(s.next(), 251);
        assert_eq!(s.drop_late(3 * S + S / 2), 0);
        // A message 0.99 s overdue is still sent, stamped with its intended time.
        assert_eq!(s.intended_ns(251), 2_510_000_000);
    }

    #[test]
    fn unpaced_means_everything_now() {
        let mut s = Schedule::new(5, 0, 0.3);
        assert_eq!(s.due(5, 700), 700);
        assert_eq!(s.intended_ns(699), 5);
        assert_eq!((s.drop_late(100 * S), s.missed(100 * S)), (0, 0));
    }
}
