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
fn in_range(flag: &'static str, value: u64, min: u64, max: u64, unit: &'static str) -> Result<(), ConfigError> {
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
        // The lease is renewed every third of it.
        in_range("--lease-secs", self.lease_secs, 3, MAX_TIMEOUT_SECS, " s")?;
        in_range("--drain-secs", self.drain_secs, 0, MAX_DRAIN_SECS, " s")?;
        if let Some(secs) = self.fault_panic_after {
            in_range("--fault-panic-after", secs, 0, MAX_TIMEOUT_SECS, " s")?;
        }
        if self.redis.is_none() {
            if self.redis_cluster {
                return Err(ConfigError::NeedsRedis { flag: "--redis-cluster" });
            }
            if self.routing == Routing::Broadcast {
                return Err(ConfigError::NeedsRedis { flag: "--routing broadcast" });
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
    fn admin_and_chat_need_ports_of_their_own() {
        let same = with(&["--listen", "127.0.0.1:9000", "--admin-addr", "127.0.0.1:9000"]);
        assert!(matches!(same, Err(ConfigError::SameAddress { .. })));
        assert_eq!(with(&["--listen", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"]), Ok(()));
    }
}
