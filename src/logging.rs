//! Log lines on stderr, as JSON objects or as text, and warnings that repeat
//! rate-limited.
//!
//! Nothing is logged per message or per connection: a line is an event an
//! operator acts on. A warning that can fire in a burst (every failed accept
//! at the open-file limit) goes through [`warn_limited!`](crate::warn_limited),
//! which lets one line through per interval and counts the rest in it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::config::LogFormat;

/// The log format when none was asked for: text for a person at a
/// terminal, JSON for whatever collects the output of a service.
pub fn default_format() -> LogFormat {
    if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    }
}

/// Installs the logger: `format` (or [`default_format`]), the level from
/// `RUST_LOG` (default `info`). Called once, before the node starts.
pub fn init(format: Option<LogFormat>) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if format.unwrap_or_else(default_format) == LogFormat::Json {
        builder.format(|buf, record| {
            let thread = std::thread::current();
            let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into());
            writeln!(
                buf,
                "{{\"ts\":\"{}\",\"level\":\"{}\",\"target\":{},\"thread\":{},\"msg\":{}}}",
                buf.timestamp_millis(),
                record.level(),
                text(record.target()),
                text(thread.name().unwrap_or("?")),
                text(&record.args().to_string()),
            )
        });
    }
    // A second init (an embedding program with its own logger) keeps that one.
    let _ = builder.try_init();
}

/// Milliseconds since the first use, the clock of every [`RateLimit`].
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let elapsed = EPOCH.get_or_init(Instant::now).elapsed();
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// One line per interval: the state behind one [`warn_limited!`](crate::warn_limited)
/// call site, shared by every thread that reaches it.
pub struct RateLimit {
    /// When the next line may go out, in [`now_ms`] milliseconds (0: now).
    next_ms: AtomicU64,
    /// Lines held back since the last one that went out.
    held: AtomicU64,
}

impl RateLimit {
    pub const fn new() -> RateLimit {
        RateLimit { next_ms: AtomicU64::new(0), held: AtomicU64::new(0) }
    }

    /// `Some(held back since the last line)` when a line may go out now;
    /// `None` (and one more held back) otherwise.
    pub fn allow(&self, every: Duration) -> Option<u64> {
        self.allow_at(now_ms(), every)
    }

    fn allow_at(&self, now: u64, every: Duration) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX);
        if now >= next && self.next_ms.compare_exchange(next, now.saturating_add(every_ms), Relaxed, Relaxed).is_ok() {
            Some(self.held.swap(0, Relaxed))
        } else {
            self.held.fetch_add(1, Relaxed);
            None
        }
    }
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit::new()
    }
}

/// `log::warn!` at most once per `every` (a `Duration`) from this call site;
/// the line that goes out says how many were held back before it.
///
/// ```ignore
/// warn_limited!(Duration::from_secs(10), "accept failed: {e}");
/// ```
#[macro_export]
macro_rules! warn_limited {
    ($every:expr, $($arg:tt)+) => {{
        static LIMIT: $crate::logging::RateLimit = $crate::logging::RateLimit::new();
        match LIMIT.allow($every) {
            Some(0) => log::warn!($($arg)+),
            Some(held) => log::warn!("{} ({held} more like this held back)", format_args!($($arg)+)),
            None => {}
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_the_rest_counted() {
        let limit = RateLimit::new();
        let every = Duration::from_secs(10);
        assert_eq!(limit.allow_at(5, every), Some(0));
        assert_eq!(limit.allow_at(6, every), None);
        assert_eq!(limit.allow_at(10_004, every), None);
        assert_eq!(limit.allow_at(10_005, every), Some(2));
        assert_eq!(limit.allow_at(10_006, every), None);
    }
}
