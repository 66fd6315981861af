//! A log line for something that can happen thousands of times a second
//! (a refused PUBLISH, a forged message from Redis): the first time, then
//! at most once a period, each time with the count so far.

use std::time::{Duration, Instant};

/// How often a repeated problem is logged again.
const PERIOD: Duration = Duration::from_secs(60);

pub struct Every {
    period: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Every {
    /// Logs the first time, then once a minute.
    pub fn minute() -> Every {
        Every { period: PERIOD, last: None, count: 0 }
    }

    /// Counts one occurrence and calls `log` with the count so far when a
    /// line is due.
    pub fn note(&mut self, log: impl FnOnce(u64)) {
        self.count += 1;
        let now = Instant::now();
        if self.last.is_none_or(|at| now.duration_since(at) >= self.period) {
            self.last = Some(now);
            log(self.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_logged_then_one_a_period() {
        let mut every = Every { period: Duration::from_millis(50), last: None, count: 0 };
        let mut logged = Vec::new();
        for _ in 0..1000 {
            every.note(|n| logged.push(n));
        }
        assert_eq!(logged, [1]);
        std::thread::sleep(Duration::from_millis(60));
        every.note(|n| logged.push(n));
        assert_eq!(logged, [1, 1001]);
    }
}
