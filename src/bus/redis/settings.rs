//! How to reach Redis: `--redis` (one URL or a comma-separated list of
//! seeds), `--redis-cluster` and friends, resolved once at start.
//!
//! Each URL is `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`; `redis+cluster://`
//! also turns on Redis Cluster, and a bare `HOST:PORT` means `redis://`.
//! Credentials and the database come from the first URL; every URL adds a
//! seed address.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use compact_str::CompactString;
use percent_encoding::percent_decode_str;
use thiserror::Error;
use url::{Host, Url};

use super::link::{self, PingTimers};
use super::resp;
use crate::config::{Config, Routing};

/// Redis's own default port, for a URL that names none.
const DEFAULT_PORT: u16 = 6379;

/// A `--redis` setting the node cannot use, and what to change.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("--redis {url:?}: {source}; expected redis://[USER:PASSWORD@]HOST[:PORT][/DB]")]
    Unparsable { url: String, source: url::ParseError },
    #[error("--redis {url:?}: {scheme}:// is not supported; use redis://HOST:PORT (plain TCP) or redis+cluster://")]
    Scheme { url: String, scheme: String },
    #[error("--redis {url:?}: no host; expected redis://HOST[:PORT]")]
    NoHost { url: String },
    #[error("--redis {url:?}: {host} is a wildcard address; name the Redis server's address")]
    Wildcard { url: String, host: String },
    #[error("--redis {url:?}: the {part} is not valid UTF-8 once percent-decoded")]
    NotUtf8 { url: String, part: &'static str },
    #[error("--redis {url:?}: {path:?} is not a database number; expected /DB, as in redis://HOST:PORT/0")]
    Database { url: String, path: String },
    #[error("--redis {url:?}: Redis Cluster has only database 0; drop the /DB part")]
    ClusterDatabase { url: String },
    #[error("--redis {url:?}: cannot resolve {host}: {source}")]
    Resolve { url: String, host: String, source: io::Error },
    #[error("--redis {url:?}: {host} has no address")]
    NoAddress { url: String, host: String },
}

/// How to reach Redis, resolved from `--redis` and friends.
pub(crate) struct Settings {
    pub seeds: Vec<SocketAddr>,
    pub cluster: bool,
    pub routing: Routing,
    /// AUTH / SELECT commands every new connection sends first.
    pub hello: Vec<u8>,
    pub hello_replies: usize,
    pub node_id: CompactString,
    pub lease: Duration,
    /// Derived from the lease: see [`PingTimers::for_lease`].
    pub ping: PingTimers,
}

impl Settings {
    /// # Errors
    /// The first `--redis` URL that is malformed, unsupported or unresolvable.
    pub fn from_config(config: &Config) -> Result<Settings, SettingsError> {
        let servers = Servers::parse(config.redis.as_deref().unwrap_or_default(), config.redis_cluster)?;
        let node_id = match &config.node_id {
            Some(id) if !id.is_empty() => CompactString::from(id.as_str()),
            _ => {
                CompactString::from(format!("{}-{}-{:06x}", hostname(), std::process::id(), link::random() & 0xFF_FFFF))
            }
        };
        let lease = Duration::from_secs(config.lease_secs);
        Ok(Settings {
            seeds: servers.seeds,
            cluster: servers.cluster,
            routing: config.routing,
            hello: servers.hello,
            hello_replies: servers.hello_replies,
            node_id,
            lease,
            ping: PingTimers::for_lease(lease),
        })
    }
}

/// What the `--redis` URLs say.
#[derive(Debug, PartialEq, Eq)]
struct Servers {
    seeds: Vec<SocketAddr>,
    cluster: bool,
    hello: Vec<u8>,
    hello_replies: usize,
}

impl Servers {
    fn parse(urls: &str, cluster: bool) -> Result<Servers, SettingsError> {
        let mut servers = Servers { seeds: Vec::new(), cluster, hello: Vec::new(), hello_replies: 0 };
        for (i, url) in urls.split(',').map(str::trim).enumerate() {
            // Errors quote the URL as given; it is parsed as `redis://`.
            let parsed = Url::parse(&servers.normalize(url))
                .map_err(|source| SettingsError::Unparsable { url: url.into(), source })?;
            if parsed.scheme() != "redis" {
                return Err(SettingsError::Scheme { scheme: parsed.scheme().into(), url: url.into() });
            }
            servers.seeds.push(resolve(url, &parsed)?);
            if i == 0 {
                servers.hello_from(url, &parsed)?;
            }
        }
        Ok(servers)
    }

    /// `url` as a `redis://` URL: `redis+cluster://` turns on Redis Cluster;
    /// a bare address gets the scheme.
    fn normalize(&mut self, url: &str) -> String {
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            self.cluster = true;
            format!("redis://{rest}")
        } else if url.contains("://") {
            url.to_string()
        } else {
            format!("redis://{url}")
        }
    }

    /// AUTH and SELECT from the URL's credentials and database.
    fn hello_from(&mut self, url: &str, parsed: &Url) -> Result<(), SettingsError> {
        let decode = |raw: &str, part| {
            percent_decode_str(raw)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| SettingsError::NotUtf8 { url: url.into(), part })
        };
        if let Some(password) = parsed.password() {
            let password = decode(password, "password")?;
            let user = match parsed.username() {
                "" => None,
                user => Some(decode(user, "user name")?),
            };
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            args.extend(user.as_deref().map(str::as_bytes));
            args.push(password.as_bytes());
            resp::push_command(&mut self.hello, &args);
            self.hello_replies += 1;
        }
        let db = match parsed.path().trim_matches('/') {
            "" => 0,
            path => path.parse::<i64>().map_err(|_| SettingsError::Database { url: url.into(), path: path.into() })?,
        };
        if db != 0 {
            if self.cluster {
                return Err(SettingsError::ClusterDatabase { url: url.into() });
            }
            resp::push_command(&mut self.hello, &[b"SELECT", db.to_string().as_bytes()]);
            self.hello_replies += 1;
        }
        Ok(())
    }
}

/// The address of the server `url` names.
fn resolve(url: &str, parsed: &Url) -> Result<SocketAddr, SettingsError> {
    // An IPv6 host without its brackets, as `to_socket_addrs` takes it.
    let host = match parsed.host() {
        Some(Host::Domain(name)) => name.to_string(),
        Some(Host::Ipv4(v4)) => v4.to_string(),
        Some(Host::Ipv6(v6)) => v6.to_string(),
        None => return Err(SettingsError::NoHost { url: url.into() }),
    };
    if host.is_empty() {
        return Err(SettingsError::NoHost { url: url.into() });
    }
    if host == "0.0.0.0" || host == "::" {
        return Err(SettingsError::Wildcard { url: url.into(), host });
    }
    let port = parsed.port().unwrap_or(DEFAULT_PORT);
    let mut addrs = (host.as_str(), port).to_socket_addrs().map_err(|source| SettingsError::Resolve {
        url: url.into(),
        host: host.clone(),
        source,
    })?;
    addrs.next().ok_or(SettingsError::NoAddress { url: url.into(), host })
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at
    // most that many bytes and we read only up to the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "node".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn hello(commands: &[&[&[u8]]]) -> Vec<u8> {
        let mut out = Vec::new();
        for args in commands {
            resp::push_command(&mut out, args);
        }
        out
    }

    #[test]
    fn the_url_forms_in_use_parse() {
        let plain = Servers::parse("redis://127.0.0.1:6380", false).unwrap();
        assert_eq!(
            plain,
            Servers { seeds: vec![addr("127.0.0.1:6380")], cluster: false, hello: vec![], hello_replies: 0 }
        );
        assert_eq!(Servers::parse("127.0.0.1:6380", false).unwrap(), plain);
        assert_eq!(Servers::parse("redis://127.0.0.1", false).unwrap().seeds, [addr("127.0.0.1:6379")]);
        assert_eq!(Servers::parse("redis://[::1]:7000", false).unwrap().seeds, [addr("[::1]:7000")]);

        let cluster = Servers::parse("redis+cluster://127.0.0.1:7000, 127.0.0.1:7001", false).unwrap();
        assert!(cluster.cluster);
        assert_eq!(cluster.seeds, [addr("127.0.0.1:7000"), addr("127.0.0.1:7001")]);
        assert!(Servers::parse("redis://127.0.0.1:7000", true).unwrap().cluster);

        let auth = Servers::parse("redis://al%40ice:p%3Ass@127.0.0.1:1/2,redis://127.0.0.1:2/5", false).unwrap();
        assert_eq!(auth.hello, hello(&[&[b"AUTH", b"al@ice", b"p:ss"], &[b"SELECT", b"2"]]));
        assert_eq!(auth.hello_replies, 2);
        let password_only = Servers::parse("redis://:secret@127.0.0.1:1/0", false).unwrap();
        assert_eq!(password_only.hello, hello(&[&[b"AUTH", b"secret"]]));
        assert_eq!(Servers::parse("redis://user@127.0.0.1:1", false).unwrap().hello_replies, 0);
    }

    #[test]
    fn a_bad_url_says_what_to_change() {
        let refused = |urls: &str| Servers::parse(urls, false).unwrap_err();
        assert!(matches!(refused("rediss://127.0.0.1:1"), SettingsError::Scheme { scheme, .. } if scheme == "rediss"));
        assert!(matches!(refused("unix:///tmp/redis.sock"), SettingsError::Scheme { .. }));
        assert!(matches!(refused("redis://"), SettingsError::NoHost { .. }));
        assert!(matches!(refused("redis://0.0.0.0:1"), SettingsError::Wildcard { .. }));
        assert!(matches!(refused("redis://127.0.0.1:99999"), SettingsError::Unparsable { .. }));
        assert!(matches!(refused("redis://127.0.0.1:1/x"), SettingsError::Database { path, .. } if path == "x"));
        assert!(matches!(refused("redis+cluster://127.0.0.1:1/3"), SettingsError::ClusterDatabase { .. }));
        assert!(matches!(refused("redis://127.0.0.1:1,rediss://h"), SettingsError::Scheme { .. }));
        let message = refused("redis://127.0.0.1:1/x").to_string();
        assert!(message.starts_with("--redis \"redis://127.0.0.1:1/x\": \"x\" is not a database number"), "{message}");
        let message = refused("redis+cluster://127.0.0.1:1/3").to_string();
        assert!(message.starts_with("--redis \"redis+cluster://127.0.0.1:1/3\": Redis Cluster"), "{message}");
    }
}
