//! The check at start: before its threads start, a node greets Redis as a
//! link does and tries one of each command the bus will send, on keys and
//! channels no user has, so that a wrong password or an ACL user without
//! the rights the bus needs stops the node at once, with a message saying
//! what to fix, instead of a node that runs with every link refused.
//!
//! A Redis that cannot be reached is no reason to stop: the node starts
//! anyway and keeps trying (a member that boots before Redis works alone).
//! A certificate that is not trusted is: it is a setting to fix.

use thiserror::Error;

use super::channels::{self, BROADCAST_CHANNEL};
use super::exchange::{exchange, ExchangeError};
use super::registry::{Registry, NAME_TTL_LEASES};
use super::resp::{self, Frame};
use super::settings::Settings;
use crate::config::Routing;

/// Why Redis will not serve this node as configured.
#[derive(Debug, Error)]
pub enum PreflightError {
    #[error("--redis {url:?}: Redis refused {what} with \"{reply}\"; {hint}")]
    Refused { url: String, what: String, reply: String, hint: &'static str },
    #[error("--redis {url:?}: {reason}; {hint}")]
    Tls { url: String, reason: String, hint: &'static str },
}

/// Greets the first seed that answers and runs the probes there.
///
/// # Errors
/// Redis refused the credentials, the database or a right the bus needs;
/// the TLS handshake failed.
/// `Ok(true)` when a seed answered every probe, `Ok(false)` when none could be reached.
pub fn check(settings: &Settings) -> Result<bool, PreflightError> {
    let (commands, names) = probes(settings);
    let timeout = settings.link.reply_timeout;
    let mut last = None;
    for seed in &settings.seeds {
        let mut answered = 0;
        // The probe Redis refused (a refusal of the greeting names none).
        let mut refused_probe = None;
        let outcome = exchange(seed, &settings.link, &commands, timeout, |frame| {
            if let Frame::Error(e) = frame {
                if !is_redirect(e) {
                    refused_probe = names.get(answered).copied();
                    let reply = String::from_utf8_lossy(e).into_owned();
                    return Err(ExchangeError::Refused { server: seed.clone(), reply });
                }
            }
            answered += 1;
            Ok((answered == names.len()).then_some(()))
        });
        match outcome {
            Ok(()) => return Ok(true),
            Err(e) => {
                refuse(settings, &e, refused_probe)?;
                last = Some(e);
            }
        }
    }
    if let Some(e) = last {
        log::error!(
            "Redis is not reachable at start ({e}): starting anyway as a single node, retrying in the background"
        );
    }
    Ok(false)
}

/// `Err` for what no retry can fix; `Ok` for a Redis that is just unreachable.
fn refuse(settings: &Settings, e: &ExchangeError, probe: Option<&str>) -> Result<(), PreflightError> {
    let url = settings.shown_url.clone();
    match e {
        ExchangeError::Refused { reply, .. } => {
            let what = match probe {
                Some(command) => format!("{command}, a command the bus needs"),
                None => "the greeting (AUTH, SELECT, PING)".to_string(),
            };
            Err(PreflightError::Refused { url, hint: hint_for(reply), what, reply: reply.clone() })
        }
        ExchangeError::Tls { server, reason } => Err(PreflightError::Tls {
            url,
            reason: format!("TLS with {server} failed: {reason}"),
            hint: "name the CA that signed the Redis server's certificate with --redis-ca FILE \
                   (or --redis-insecure for a self-signed test setup); the URL's host must be in the certificate",
        }),
        _ => Ok(()),
    }
}

/// What to change for a refusal.
fn hint_for(reply: &str) -> &'static str {
    if reply.starts_with("NOAUTH") {
        "Redis requires a password: put it in --redis URL (redis://:PASSWORD@HOST:PORT, or \
         redis://USER:PASSWORD@HOST:PORT for an ACL user)"
    } else if reply.starts_with("WRONGPASS") || reply.contains("invalid password") || reply.contains("AUTH") {
        "fix the user name and password in --redis URL (redis://USER:PASSWORD@HOST:PORT)"
    } else if reply.starts_with("NOPERM") {
        "the Redis ACL user lacks a right the bus needs; README.md (Redis security checklist) lists them"
    } else if reply.contains("DB index") {
        "fix the database number (/DB) in --redis URL"
    } else {
        "fix --redis, or the Redis server's configuration"
    }
}

/// MOVED and friends: the command was allowed, it lives elsewhere.
fn is_redirect(e: &[u8]) -> bool {
    [&b"MOVED "[..], b"ASK ", b"TRYAGAIN", b"CLUSTERDOWN"].iter().any(|p| e.starts_with(p))
}

/// One of each command the bus sends, on keys and a channel no user has
/// (names are never empty): the lease key is set as the publisher will.
/// With broadcast routing nothing is published (every node and seed node
/// would get it); subscribing `msg` checks the channel right.
fn probes(settings: &Settings) -> (Vec<u8>, Vec<&'static str>) {
    let (cluster, targeted) = (settings.cluster, settings.routing == Routing::Targeted);
    let user = channels::user_channel(b"");
    let name_key = Registry::user_key("");
    let lease_key = Registry::node_key(&settings.node_id);
    let lease_ms = settings.lease.as_millis().to_string();
    let ttl_ms = (settings.lease.as_millis() * u128::from(NAME_TTL_LEASES)).to_string();
    let get = b"return redis.call('GET', KEYS[1])";
    let mut out = Vec::with_capacity(512);
    let mut names = Vec::with_capacity(6);
    let mut probe = |name: &'static str, args: &[&[u8]]| {
        resp::push_command(&mut out, args);
        names.push(name);
    };
    if targeted {
        probe("PUBLISH", &[if cluster { b"SPUBLISH" } else { b"PUBLISH" }, &user, b""]);
    }
    probe("EVAL (GET)", &[b"EVAL", get, b"1", &name_key]);
    probe("EXISTS", &[b"EXISTS", &lease_key]);
    probe("SET", &[b"SET", &lease_key, b"1", b"PX", lease_ms.as_bytes()]);
    probe("PEXPIRE", &[b"PEXPIRE", &name_key, ttl_ms.as_bytes()]);
    match (targeted, cluster) {
        (true, true) => probe("SSUBSCRIBE", &[b"SSUBSCRIBE", &user]),
        (true, false) => probe("SUBSCRIBE", &[b"SUBSCRIBE", &user]),
        (false, _) => probe("SUBSCRIBE", &[b"SUBSCRIBE", BROADCAST_CHANNEL]),
    }
    (out, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_says_what_to_fix() {
        assert!(hint_for("NOAUTH Authentication required.").contains("put it in --redis URL"));
        assert!(hint_for("WRONGPASS invalid username-password pair").contains("fix the user name and password"));
        assert!(hint_for("ERR invalid password").contains("fix the user name and password"));
        assert!(hint_for("NOPERM this user has no permissions").contains("lacks a right"));
        assert!(hint_for("ERR DB index is out of range").contains("/DB"));
        assert!(is_redirect(b"MOVED 3999 127.0.0.1:6381") && !is_redirect(b"NOPERM no"));
    }
}
