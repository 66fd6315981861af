//! The history flags: which channels keep their last messages in Redis
//! Streams, how many, how old and how big, and the check that refuses
//! settings history cannot work with.

use clap::builder::BoolishValueParser;
use clap::Args;

use super::validate::ConfigError;
use super::{Config, Routing};

/// History per channel (a user's inbox, a room), kept in Redis.
#[derive(Args, Debug, Clone, Default)]
pub struct HistoryConfig {
    /// Messages each channel with history keeps (0: no history). 0 by default:
    /// history costs Redis memory and a script per message, so it is opted into.
    #[arg(long, global = true, env = "SWITCHBOARD_HISTORY_SIZE", value_name = "N", default_value_t = 0)]
    pub history_size: u64,

    /// Seconds a kept message lives (0: no age bound): older entries are trimmed
    /// and a channel quiet that long is forgotten. A day covers any reconnect
    /// and a night offline, and bounds what idle channels cost.
    #[arg(long, global = true, env = "SWITCHBOARD_HISTORY_TTL", value_name = "SECS", default_value_t = 86_400)]
    pub history_ttl: u64,

    /// Largest chat message, in bytes of its JSON, a channel with history takes
    /// (a longer one is refused with an errormsg). 4 KiB holds any chat line and
    /// bounds a channel's history to size x 4 KiB.
    #[arg(long, global = true, env = "SWITCHBOARD_HISTORY_ENTRY_BYTES", value_name = "BYTES", default_value_t = 4096)]
    pub history_entry_bytes: usize,

    /// Keep history for every user's inbox (one-to-one chat): recovery at login
    /// and delivery of messages sent while the user was offline. Off by default,
    /// as history is.
    #[arg(long, global = true, env = "SWITCHBOARD_HISTORY_USERS", default_value_t = false,
          action = clap::ArgAction::Set, value_parser = BoolishValueParser::new(), value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true")]
    pub history_users: bool,

    /// Rooms (by name, `*` matching any run of characters, repeatable) that keep
    /// history: `--history-room 'support-*'`. None by default, as history is off.
    #[arg(
        long = "history-room",
        global = true,
        env = "SWITCHBOARD_HISTORY_ROOM",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub history_rooms: Vec<String>,
}

impl HistoryConfig {
    /// Whether any channel keeps history.
    pub fn enabled(&self) -> bool {
        self.history_size > 0 && (self.history_users || !self.history_rooms.is_empty())
    }

    /// Whether room `key` keeps history (`--history-room` patterns).
    pub fn keeps_room(&self, key: &str) -> bool {
        self.enabled() && self.history_rooms.iter().any(|pattern| glob_matches(pattern, key))
    }

    /// Whether users' inboxes keep history (`--history-users`).
    pub fn keeps_users(&self) -> bool {
        self.enabled() && self.history_users
    }
}

impl Config {
    /// History needs a Redis it can run its script on, and flags that agree.
    pub(super) fn validate_history(&self) -> Result<(), ConfigError> {
        let h = &self.history;
        super::validate::in_range("--history-ttl", h.history_ttl, 0, 10 * 365 * 86_400, " s")?;
        super::validate::in_range("--history-size", h.history_size, 0, 1_000_000, "")?;
        super::validate::in_range("--history-entry-bytes", h.history_entry_bytes as u64, 64, 1 << 20, " bytes")?;
        if h.history_size == 0 {
            if h.history_users {
                return Err(ConfigError::HistoryNeedsSize { flag: "--history-users" });
            }
            if !h.history_rooms.is_empty() {
                return Err(ConfigError::HistoryNeedsSize { flag: "--history-room" });
            }
            return Ok(());
        }
        if !h.enabled() {
            return Err(ConfigError::HistoryForNothing);
        }
        if self.redis.is_none() {
            return Err(ConfigError::NeedsRedis { flag: "--history-size" });
        }
        if self.routing == Routing::Broadcast {
            return Err(ConfigError::HistoryUnsupported { with: "--routing broadcast" });
        }
        Ok(())
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut text) = text.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = rest.split('*').collect();
    let last = parts.pop().unwrap_or_default();
    for part in parts {
        match text.find(part) {
            Some(at) => text = &text[at + part.len()..],
            None => return false,
        }
    }
    text.len() >= last.len() && text.ends_with(last)
}
