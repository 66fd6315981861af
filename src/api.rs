//! The server API: what an application backend may do without a WebSocket,
//! on the admin listener under `/api/`, with `Authorization: Bearer KEY`
//! (`--api-key` or `--api-key-file`; without one the routes are absent).
//!
//! - `POST /api/publish` ([`publish`]): a chat message to a user or a room
//!   message to a room, from `--api-sender`, through the node's own publish
//!   path (the directory, the reactors' inboxes, the bus).
//! - `POST /api/disconnect` ([`disconnect`]): closes a user's connection
//!   wherever in the cluster it is.
//! - `GET /api/presence` ([`presence`]): who is online, who is in a room,
//!   the answers of `presencemsg` and `membersmsg`.
//! - `GET /api/history` ([`history`]): a channel's stored messages.
//!
//! Requests run on the admin listener's threads. They never block a
//! reactor: what needs the cluster is asked of the bus as a reactor asks it,
//! with a caller of [`crate::answers`] in place of a connection, and the
//! thread waits for the answer at most [`Api::patience`]. Answers are JSON:
//! 200 with what happened, or 4xx/5xx with `{"Error":"..."}`.

mod disconnect;
mod history;
mod presence;
mod publish;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::admin::router::{Request, Response, Router};
use crate::bus::Bus;
use crate::config::Config;
use crate::hub::Hub;
use crate::protocol::ApiError;

/// Shortest key: a guessable key would let anyone publish as the server.
const MIN_KEY_BYTES: usize = 16;
/// Room for the fields of a publish around its `Data`.
const BODY_SLACK: usize = 4096;
/// How much longer than a Redis reply may take a request waits for the
/// cluster: the link gives up on a reply after `--redis-timeout-ms` and
/// reports it, which the wait should see.
const PATIENCE_MARGIN: Duration = Duration::from_millis(1000);

/// Why the API key cannot be used.
#[derive(Debug, Error)]
pub enum ApiKeyError {
    #[error("--api-key-file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{flag} must be at least {MIN_KEY_BYTES} bytes (got {got}): try `openssl rand -hex 32`")]
    Short { flag: &'static str, got: usize },
}

/// The server API of one node.
pub struct Api {
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    config: Arc<Config>,
    key: Vec<u8>,
}

impl Api {
    /// The API, when a key is configured; says at start whether it is on.
    ///
    /// # Errors
    /// An unreadable key file or a key shorter than [`MIN_KEY_BYTES`].
    pub fn from_config(config: &Arc<Config>, hub: &Arc<Hub>, bus: &Arc<dyn Bus>) -> Result<Option<Api>, ApiKeyError> {
        let Some(key) = load_key(config)? else {
            log::info!("server API off: no --api-key or --api-key-file, the /api routes answer 404");
            return Ok(None);
        };
        log::info!(
            "server API on the admin listener: /api/publish /api/disconnect /api/presence /api/history, \
             messages from {:?}",
            config.api_sender
        );
        Ok(Some(Api { hub: Arc::clone(hub), bus: Arc::clone(bus), config: Arc::clone(config), key }))
    }

    /// `router` with the API's routes, each behind the key check.
    pub fn routes(self, router: Router) -> Router {
        let api = Arc::new(self);
        let guarded = |handler: fn(&Api, &Request) -> Response| {
            let api = Arc::clone(&api);
            move |request: &Request| match api.authorized(request) {
                true => handler(&api, request),
                false => refuse(401, &ApiError::Unauthorized).header("WWW-Authenticate", "Bearer"),
            }
        };
        router
            .post("/api/publish", guarded(publish::publish))
            .post("/api/disconnect", guarded(disconnect::disconnect))
            .get("/api/presence", guarded(presence::presence))
            .get("/api/history", guarded(history::history))
    }

    /// Largest request body: a client's largest message (`--max-message-size`,
    /// the whole JSON) with room for the fields around its `Data`.
    pub fn max_body(&self) -> usize {
        crate::admin::router::MAX_BODY_BYTES.max(self.config.max_message_size.saturating_add(BODY_SLACK))
    }

    /// Whether the request carries the key (compared in constant time).
    fn authorized(&self, request: &Request) -> bool {
        request.bearer().is_some_and(|given| bool::from(given.as_bytes().ct_eq(&self.key)))
    }

    /// How long a request waits for the cluster.
    fn patience(&self) -> Duration {
        Duration::from_millis(self.config.redis_timeout_ms) + PATIENCE_MARGIN
    }

    fn deadline(&self) -> Instant {
        Instant::now() + self.patience()
    }

    /// Whether the node is a cluster member (a bus other than the embedded one).
    fn clustered(&self) -> bool {
        self.config.redis.is_some()
    }
}

/// The key from `--api-key` or `--api-key-file`, or none.
///
/// # Errors
/// An unreadable file or a key that is too short.
pub fn load_key(config: &Config) -> Result<Option<Vec<u8>>, ApiKeyError> {
    let (flag, key) = match (&config.api_key, &config.api_key_file) {
        (Some(key), _) => ("--api-key", key.0.clone().into_bytes()),
        (None, Some(path)) => {
            let mut key = std::fs::read(path).map_err(|source| ApiKeyError::Read { path: path.clone(), source })?;
            // Files written by editors and `echo` end with a newline that is no part of the key.
            if key.ends_with(b"\n") {
                key.pop();
                if key.ends_with(b"\r") {
                    key.pop();
                }
            }
            ("--api-key-file", key)
        }
        (None, None) => return Ok(None),
    };
    if key.len() < MIN_KEY_BYTES {
        return Err(ApiKeyError::Short { flag, got: key.len() });
    }
    Ok(Some(key))
}

/// A JSON answer.
fn answer(status: u16, body: &Value) -> Response {
    Response::with_type(status, "application/json", format!("{body}\n").into_bytes())
}

/// A JSON error: `{"Error":"..."}`.
fn refuse(status: u16, why: &ApiError<'_>) -> Response {
    answer(status, &json!({ "Error": why.to_string() }))
}

/// The body as `T`, or a 400 saying what is wrong with it.
fn body<T: DeserializeOwned>(request: &Request) -> Result<T, Response> {
    from_json(&request.body).map_err(|e| refuse(400, &ApiError::BadJson(e.to_string())))
}

/// Parses JSON through serde_json's reader, not its slice or str parser:
/// the chat parser (`protocol::parse`) is the only user of those on the
/// hot path, and more users of the same code made the compiler stop
/// inlining it there (scripts/callgrind.sh: +3% instructions per message).
fn from_json<T: DeserializeOwned>(json: &[u8]) -> serde_json::Result<T> {
    serde_json::from_reader(json)
}

/// The query's value of `name`, percent-decoded.
fn query_value(request: &Request, name: &str) -> Option<String> {
    let query = request.query.as_deref()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_flag_or_a_file_and_are_long_enough() {
        use clap::Parser;
        let parse = |args: &[&str]| Config::parse_from([&["switchboard"], args].concat());
        assert_eq!(load_key(&parse(&[])).unwrap(), None);
        assert_eq!(load_key(&parse(&["--api-key", "0123456789abcdef"])).unwrap(), Some(b"0123456789abcdef".to_vec()));
        assert!(matches!(load_key(&parse(&["--api-key", "short"])), Err(ApiKeyError::Short { got: 5, .. })));
        let path = std::env::temp_dir().join(format!("sb-api-key-{}", std::process::id()));
        std::fs::write(&path, "0123456789abcdefXYZ\r\n").unwrap();
        let from_file = load_key(&parse(&["--api-key-file", path.to_str().unwrap()])).unwrap();
        assert_eq!(from_file, Some(b"0123456789abcdefXYZ".to_vec()));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(load_key(&parse(&["--api-key-file", "/nonexistent/key"])), Err(ApiKeyError::Read { .. })));
    }
}
