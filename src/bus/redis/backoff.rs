//! How a link that is down tries again, and says so: exponential backoff
//! with jitter (longer while Redis refuses our credentials), and log lines
//! that tell an outage without flooding the log: a warning when it starts
//! and when its reason changes, a reminder a minute while it lasts, one
//! line when it ends.

use std::collections::hash_map::RandomState;
use std::fmt::Display;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;

/// First reconnect delay: short, since most outages on a LAN are a restart.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// Longest reconnect delay. Small enough that delivery resumes within about a
/// second of Redis coming back; one failed connect to a dead port costs microseconds.
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// Longest reconnect delay while Redis refuses the credentials: only a new
/// password (in Redis or in `--redis`) helps, and each try costs Redis a
/// connection and us a log line.
const BACKOFF_REFUSED_MAX: Duration = Duration::from_secs(10);
/// How often a link that stays down says so again.
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// A link's failed attempts since it was last up, and what was logged;
/// `K` tells kinds of failure apart (a refusal after a closed connection is news).
pub struct Outage<K> {
    /// The backoff's exponent, and which of the host's addresses the next
    /// attempt tries. Reset only when Redis answered the greeting, never
    /// on a bare TCP connect (a server that refuses us is not "up").
    failures: u32,
    /// When the link went down (or first failed), while it stays down.
    since: Option<Instant>,
    reminded_at: Option<Instant>,
    /// The kind of failure last logged.
    logged: Option<K>,
    ever_up: bool,
}

impl<K: PartialEq + Copy> Outage<K> {
    pub fn new() -> Outage<K> {
        Outage { failures: 0, since: None, reminded_at: None, logged: None, ever_up: false }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// One more failed attempt (`refused`: Redis refused us): how long to
    /// wait before the next.
    pub fn retry_delay(&mut self, refused: bool) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let cap = if refused { BACKOFF_REFUSED_MAX } else { BACKOFF_MAX };
        let exp = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(10).saturating_sub(1));
        jitter(exp.min(cap))
    }

    /// Logs the failure [`Outage::retry_delay`] counted: a warning when the
    /// link was up, this is the outage's first or its reason changed, then
    /// one a minute.
    pub fn failed(&mut self, endpoint: &Endpoint, role: &str, why: &dyn Display, kind: K, was_up: bool, now: Instant) {
        let since = *self.since.get_or_insert(now);
        let news = self.logged != Some(kind);
        if was_up || self.failures == 1 {
            self.reminded_at = Some(now);
            self.logged = Some(kind);
            log::warn!("redis {endpoint} ({role}): link down: {why}; reconnecting");
        } else if news || self.reminded_at.is_none_or(|at| now.duration_since(at) >= REMIND_EVERY) {
            self.reminded_at = Some(now);
            self.logged = Some(kind);
            log::warn!(
                "redis {endpoint} ({role}): still down after {:.0?} and {} attempts: {why}",
                now.duration_since(since),
                self.failures
            );
        } else {
            log::debug!("redis {endpoint} ({role}): retry {} failed: {why}", self.failures);
        }
    }

    /// Redis answered the greeting: the link is up.
    pub fn recovered(&mut self, endpoint: &Endpoint, role: &str, now: Instant) {
        match self.since.take() {
            Some(since) => log::warn!(
                "redis {endpoint} ({role}): link {} after {:.1?} and {} failed attempts",
                if self.ever_up { "back up" } else { "up" },
                now.duration_since(since),
                self.failures
            ),
            None => log::info!("redis {endpoint} ({role}): link up"),
        }
        self.ever_up = true;
        self.failures = 0;
        self.reminded_at = None;
        self.logged = None;
    }
}

/// A delay between half and all of `delay`, chosen at random.
pub fn jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(random() % nanos)
}

/// A random number from the standard library's per-process hash seed.
pub fn random() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(800));
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(800));
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_and_longer_when_refused() {
        let mut outage: Outage<u8> = Outage::new();
        let delays: Vec<Duration> = (0..12).map(|_| outage.retry_delay(false)).collect();
        assert!(delays[0] <= BACKOFF_FIRST);
        assert!(delays[11] >= BACKOFF_MAX / 2 && delays[11] <= BACKOFF_MAX);
        let mut refused: Outage<u8> = Outage::new();
        let last = (0..12).map(|_| refused.retry_delay(true)).last().unwrap();
        assert!(last >= BACKOFF_REFUSED_MAX / 2, "{last:?}");
        refused.recovered(&Endpoint::new("127.0.0.1", 1), "publisher", Instant::now());
        assert_eq!(refused.failures(), 0);
        assert!(refused.retry_delay(true) <= BACKOFF_FIRST);
    }
}
