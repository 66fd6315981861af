//! Settings that cannot work are refused at start, each with the flag's name
//! and what it accepts. Every number a flag gives is bounded here, so that
//! the durations and sizes made from it later cannot overflow.

use thiserror::Error;

use super::{Config, Routing};

/// A setting that cannot work, naming the flag and what it accepts.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{flag} must be an absolute path without a query, like /ws (got {got:?})")]
    BadPath { flag: &'static str, got: String },
    #[error("--echo-path must differ from --ws-path")]
    SamePaths,
    #[error("{flag} must be between {min} and {max}{unit} (got {got})")]
    OutOfRange { flag: &'static str, min: u64, max: u64, unit: &'static str, got: u64 },
    #[error("{flag} needs --redis URL")]
    NeedsRedis { flag: &'static str },
    #[error("--admin-addr must differ from --listen ({addr}): the admin listener has a port of its own")]
    SameAddress { addr: std::net::SocketAddr },
    #[error("{flag} needs --auth-secret, --auth-secret-file or --auth-public-key")]
    NeedsAuth { flag: &'static str },
    #[error("--pong-timeout must be shorter than --ping-interval (got {pong} and {ping})")]
    PongAfterPing { pong: u64, ping: u64 },
    #[error("--message-burst / --message-rate must be at most 1000 s (got {burst} / {rate})")]
    BurstTooLong { burst: u32, rate: u32 },
    #[error("{flag} needs --history-size N (N > 0: the messages each channel keeps)")]
    HistoryNeedsSize { flag: &'static str },
    #[error("--history-size needs channels to keep: --history-users and/or --history-room PATTERN")]
    HistoryForNothing,
    #[error(
        "history (--history-size) does not work with {with}: its publish script runs on one Redis \
         (use a single Redis or a primary with replicas, and targeted routing)"
    )]
    HistoryUnsupported { with: &'static str },
    #[error("--api-sender {got:?} is not a user name: {why}")]
    BadApiSender { got: String, why: String },
}

/// Most reactor threads: far past any core count worth running one node on.
const MAX_REACTORS: u64 = 1024;
/// Longest TCP keepalive idle time Linux takes (TCP_KEEPIDLE, MAX_TCP_KEEPIDLE).
const MAX_KEEPALIVE_SECS: u64 = 32_767;
/// Longest timeout in seconds: a day; more is a typo, not a setting.
const MAX_TIMEOUT_SECS: u64 = 86_400;
/// Longest drain: an hour; stop timeouts of supervisors are far shorter.
const MAX_DRAIN_SECS: u64 = 3_600;

/// `value` of `flag` within `min..=max`.
pub(super) fn in_range(
    flag: &'static str,
    value: u64,
    min: u64,
    max: u64,
    unit: &'static str,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { flag, min, max, unit, got: value })
    }
}

/// A `usize` flag as `u64` (saturating: no platform has a wider usize).
fn wide(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl Config {
    /// Refuses settings that cannot work, saying what to change.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flag at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, path) in [("--ws-path", Some(&self.ws_path)), ("--echo-path", self.echo_path.as_ref())] {
            if let Some(p) = path {
                if !p.starts_with('/') || p.contains('?') {
                    return Err(ConfigError::BadPath { flag, got: p.clone() });
                }
            }
        }
        if self.echo_path.as_deref() == Some(self.ws_path.as_str()) {
            return Err(ConfigError::SamePaths);
        }
        if self.admin_addr == self.listen && self.listen.port() != 0 {
            return Err(ConfigError::SameAddress { addr: self.listen });
        }
        in_range("--reactors", wide(self.reactors), 0, MAX_REACTORS, "")?;
        in_range("--max-message-size", wide(self.max_message_size), 125, 1 << 30, " bytes")?;
        in_range("--max-output", wide(self.max_output), 4096, 1 << 40, " bytes")?;
        in_range("--max-header-bytes", wide(self.max_header_bytes), 512, 1 << 20, " bytes")?;
        in_range("--message-timeout", self.message_timeout, 1, MAX_TIMEOUT_SECS, " s")?;
        in_range("--handshake-timeout", self.handshake_timeout, 1, MAX_TIMEOUT_SECS, " s")?;
        in_range("--keepalive", self.keepalive, 0, MAX_KEEPALIVE_SECS, " s")?;
        in_range("--max-name-len", wide(self.max_name_len), 1, 1024, " bytes")?;
        in_range("--drain-secs", self.drain_secs, 0, MAX_DRAIN_SECS, " s")?;
        if let Some(secs) = self.fault_panic_after {
            in_range("--fault-panic-after", secs, 0, MAX_TIMEOUT_SECS, " s")?;
        }
        self.validate_auth()?;
        if let Err(why) = crate::names::check(&self.api_sender, self.max_name_len) {
            return Err(ConfigError::BadApiSender {
                got: self.api_sender.clone(),
                why: crate::protocol::ApiError::BadName("it", why).to_string(),
            });
        }
        self.validate_limits()?;
        self.validate_redis()?;
        self.validate_history()
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        in_range("--auth-leeway", self.auth_leeway, 0, 3600, " s")?;
        if self.auth_audience.is_some() && !self.authenticated() {
            return Err(ConfigError::NeedsAuth { flag: "--auth-audience" });
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), ConfigError> {
        in_range("--login-timeout", self.login_timeout, 1, MAX_TIMEOUT_SECS, " s")?;
        // The liveness sweep also keeps the rate limiter's clock from wrapping,
        // which needs a visit at least every half hour.
        in_range("--ping-interval", self.ping_interval, 0, 1800, " s")?;
        in_range("--pong-timeout", self.pong_timeout, 1, 3600, " s")?;
        if self.ping_interval > 0 && self.pong_timeout >= self.ping_interval {
            return Err(ConfigError::PongAfterPing { pong: self.pong_timeout, ping: self.ping_interval });
        }
        in_range("--message-rate", u64::from(self.message_rate), 0, 1_000_000, "/s")?;
        if self.message_rate > 0 {
            in_range("--message-burst", u64::from(self.message_burst), 1, 1_000_000, "")?;
            if u64::from(self.message_burst) > u64::from(self.message_rate) * 1000 {
                return Err(ConfigError::BurstTooLong { burst: self.message_burst, rate: self.message_rate });
            }
        }
        in_range("--connect-rate", u64::from(self.connect_rate), 0, 10_000_000, "/s")?;
        in_range("--max-partial-bytes", wide(self.max_partial_bytes), 64 * 1024, 1 << 40, " bytes")?;
        in_range("--send-buffer", wide(self.send_buffer), 0, 1 << 30, " bytes")?;
        in_range("--inbox-size", wide(self.inbox_size), 1, 1 << 30, " commands")?;
        in_range("--max-rooms-per-conn", wide(self.max_rooms_per_conn), 1, 100_000, "")?;
        in_range("--max-room-members", wide(self.max_room_members), 1, 100_000_000, "")?;
        in_range("--max-presence-names", wide(self.max_presence_names), 1, 10_000, "")?;
        in_range("--max-members-listed", wide(self.max_members_listed), 0, 100_000, "")
    }

    fn validate_redis(&self) -> Result<(), ConfigError> {
        // The lease is renewed every third of it.
        in_range("--lease-secs", self.lease_secs, 3, MAX_TIMEOUT_SECS, " s")?;
        in_range("--redis-timeout-ms", self.redis_timeout_ms, 100, 60_000, " ms")?;
        if self.redis.is_none() {
            for (flag, given) in [
                ("--redis-cluster", self.redis_cluster),
                ("--redis-ca", self.redis_ca.is_some()),
                ("--redis-insecure", self.redis_insecure),
                ("--routing broadcast", self.routing == Routing::Broadcast),
            ] {
                if given {
                    return Err(ConfigError::NeedsRedis { flag });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(args: &[&str]) -> Result<(), ConfigError> {
        use clap::Parser;
        let mut argv = vec!["switchboard"];
        argv.extend_from_slice(args);
        Config::parse_from(argv).validate()
    }

    #[test]
    fn every_number_is_bounded_with_the_flag_named() {
        assert_eq!(with(&[]), Ok(()));
        for (flag, bad) in [
            ("--keepalive", "4294967296"),
            ("--reactors", "100000"),
            ("--drain-secs", "86401"),
            ("--handshake-timeout", "0"),
            ("--message-timeout", "18446744073709551615"),
            ("--max-header-bytes", "1"),
        ] {
            match with(&[flag, bad]) {
                Err(ConfigError::OutOfRange { flag: f, got, .. }) => {
                    assert_eq!((f, got.to_string()), (flag, bad.to_string()));
                }
                other => panic!("{flag} {bad}: {other:?}"),
            }
        }
        assert_eq!(with(&["--keepalive", "0"]), Ok(()));
        assert_eq!(with(&["--drain-secs", "0"]), Ok(()));
    }

    #[test]
    fn the_api_sender_is_a_user_name() {
        assert_eq!(with(&["--api-sender", "notifications"]), Ok(()));
        for bad in ["", "a,b", " leading space"] {
            assert!(matches!(with(&["--api-sender", bad]), Err(ConfigError::BadApiSender { .. })), "{bad:?}");
        }
    }

    #[test]
    fn admin_and_chat_need_ports_of_their_own() {
        let same = with(&["--listen", "127.0.0.1:9000", "--admin-addr", "127.0.0.1:9000"]);
        assert!(matches!(same, Err(ConfigError::SameAddress { .. })));
        assert_eq!(with(&["--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"]), Ok(()));
    }
}
