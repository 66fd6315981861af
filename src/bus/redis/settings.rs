//! How to reach Redis: `--redis` (one URL or a comma-separated list of
//! seeds), `--redis-cluster`, `--redis-timeout-ms`, `--redis-ca`,
//! `--redis-insecure`, checked at start.
//!
//! Each URL is `redis://[USER:PASSWORD@]HOST[:PORT][/DB]`; `rediss://` is
//! the same over TLS, `redis+cluster://` (`rediss+cluster://`) also turns on
//! Redis Cluster, and a bare `HOST:PORT` means `redis://`. Credentials, the
//! database and TLS come from the first URL; every URL adds a seed. Each
//! host is resolved now (a typo is refused at start) and again on every
//! connect. Errors quote a URL with its password masked.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use percent_encoding::percent_decode_str;
use rustls::ClientConfig;
use thiserror::Error;
use url::{Host, Url};

use super::backoff;
use super::endpoint::Endpoint;
use super::resp;
use super::tls::{self, TlsError, Trust};
use crate::config::{Config, Routing};

/// Silence after which a link is checked with PING, at most.
const IDLE_PING_MAX: Duration = Duration::from_secs(5);

/// What every link of a node does the same way.
pub struct LinkConfig {
    /// AUTH and SELECT from the URL, then PING: what a new connection sends first.
    pub greeting: Vec<u8>,
    /// Replies the greeting gets, PING's last.
    pub greeting_replies: usize,
    /// `rediss://`: TLS with this config.
    pub tls: Option<Arc<ClientConfig>>,
    /// Silence after which a link is checked with PING.
    pub idle_ping: Duration,
    /// `--redis-timeout-ms`: how long a connect, the greeting, or the oldest
    /// command awaiting a reply may take before the link counts as down.
    pub reply_timeout: Duration,
}

impl LinkConfig {
    /// A third of the name lease, capped at 5 s: a quiet server is checked
    /// well before the names this node holds could lapse there.
    pub fn idle_ping_for_lease(lease: Duration) -> Duration {
        (lease / 3).min(IDLE_PING_MAX)
    }
}

/// Redis's own default port, for a URL that names none.
const DEFAULT_PORT: u16 = 6379;

/// A `--redis` setting the node cannot use, and what to change.
#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("--redis {url:?}: {source}; expected redis://[USER:PASSWORD@]HOST[:PORT][/DB]")]
    Unparsable { url: String, source: url::ParseError },
    #[error(
        "--redis {url:?}: {scheme}:// is not supported; use redis://HOST:PORT (plain TCP), rediss:// (TLS), \
         or redis+cluster:// / rediss+cluster://"
    )]
    Scheme { url: String, scheme: String },
    #[error("--redis {url:?}: every URL must use TLS (rediss://) or none")]
    MixedTls { url: String },
    #[error("{flag} needs a rediss:// URL in --redis (TLS to Redis)")]
    NeedsTls { flag: &'static str },
    #[error("--redis-ca and --redis-insecure contradict each other: verify against the CA, or not at all")]
    CaAndInsecure,
    #[error(transparent)]
    Tls(#[from] TlsError),
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
    pub seeds: Vec<Endpoint>,
    pub cluster: bool,
    pub routing: Routing,
    /// The greeting, TLS and timers every link (and blocking exchange) uses.
    pub link: Arc<LinkConfig>,
    /// The first `--redis` URL with its password masked, for messages.
    pub shown_url: String,
    pub node_id: CompactString,
    pub lease: Duration,
}

impl Settings {
    /// # Errors
    /// The first `--redis` URL that is malformed, unsupported or
    /// unresolvable; TLS flags without TLS, or a CA file that cannot be used.
    pub fn from_config(config: &Config) -> Result<Settings, SettingsError> {
        let urls = config.redis.as_deref().unwrap_or_default();
        let servers = Servers::parse(urls, config.redis_cluster)?;
        let node_id = match &config.node_id {
            Some(id) if !id.is_empty() => CompactString::from(id.as_str()),
            _ => CompactString::from(format!(
                "{}-{}-{:06x}",
                hostname(),
                std::process::id(),
                backoff::random() & 0xFF_FFFF
            )),
        };
        let lease = Duration::from_secs(config.lease_secs);
        let tls = match (servers.tls, &config.redis_ca, config.redis_insecure) {
            (_, Some(_), true) => return Err(SettingsError::CaAndInsecure),
            (false, Some(_), _) => return Err(SettingsError::NeedsTls { flag: "--redis-ca" }),
            (false, None, true) => return Err(SettingsError::NeedsTls { flag: "--redis-insecure" }),
            (false, None, false) => None,
            (true, Some(path), _) => Some(tls::client_config(&Trust::CaFile(path.clone()))?),
            (true, None, true) => Some(tls::client_config(&Trust::Anyone)?),
            (true, None, false) => Some(tls::client_config(&Trust::System)?),
        };
        let mut greeting = servers.hello;
        let mut greeting_replies = servers.hello_replies + 1;
        if config.history.enabled() {
            // Loaded on every connection, so EVALSHA finds it after a Redis restart.
            resp::push_command(&mut greeting, &[b"SCRIPT", b"LOAD", super::streams::PUBLISH_SCRIPT]);
            greeting_replies += 1;
        }
        resp::push_command(&mut greeting, &[b"PING"]);
        let link = LinkConfig {
            greeting,
            greeting_replies,
            tls,
            idle_ping: LinkConfig::idle_ping_for_lease(lease),
            reply_timeout: Duration::from_millis(config.redis_timeout_ms),
        };
        let first = urls.split(',').next().unwrap_or_default().trim();
        Ok(Settings {
            seeds: servers.seeds,
            cluster: servers.cluster,
            routing: config.routing,
            link: Arc::new(link),
            shown_url: masked(first),
            node_id,
            lease,
        })
    }
}

/// `url` with the password of its user info, if any, as `***`.
pub fn masked(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    let Some(at) = url[start..authority_end].rfind('@').map(|i| start + i) else {
        return url.to_string();
    };
    match url[start..at].find(':').map(|i| start + i) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_string(),
    }
}

/// What the `--redis` URLs say.
#[derive(Debug, PartialEq, Eq)]
struct Servers {
    seeds: Vec<Endpoint>,
    cluster: bool,
    tls: bool,
    hello: Vec<u8>,
    hello_replies: usize,
}

impl Servers {
    fn parse(urls: &str, cluster: bool) -> Result<Servers, SettingsError> {
        let mut servers = Servers { seeds: Vec::new(), cluster, tls: false, hello: Vec::new(), hello_replies: 0 };
        for (i, url) in urls.split(',').map(str::trim).enumerate() {
            // Errors quote the URL as given (password masked); it is parsed as `redis://`.
            let (normal, tls) = servers.normalize(url);
            let parsed =
                Url::parse(&normal).map_err(|source| SettingsError::Unparsable { url: masked(url), source })?;
            if parsed.scheme() != "redis" {
                return Err(SettingsError::Scheme { scheme: parsed.scheme().into(), url: masked(url) });
            }
            if i == 0 {
                servers.tls = tls;
                servers.hello_from(url, &parsed)?;
            } else if tls != servers.tls {
                return Err(SettingsError::MixedTls { url: masked(url) });
            }
            servers.seeds.push(resolve(url, &parsed)?);
        }
        Ok(servers)
    }

    /// `url` as a `redis://` URL, and whether it asks for TLS: the
    /// `+cluster` schemes turn on Redis Cluster; a bare address gets the scheme.
    fn normalize(&mut self, url: &str) -> (String, bool) {
        for (scheme, tls, cluster) in
            [("redis+cluster://", false, true), ("rediss+cluster://", true, true), ("rediss://", true, false)]
        {
            if let Some(rest) = url.strip_prefix(scheme) {
                self.cluster |= cluster;
                return (format!("redis://{rest}"), tls);
            }
        }
        if url.contains("://") {
            (url.to_string(), false)
        } else {
            (format!("redis://{url}"), false)
        }
    }

    /// AUTH and SELECT from the URL's credentials and database.
    fn hello_from(&mut self, url: &str, parsed: &Url) -> Result<(), SettingsError> {
        let decode = |raw: &str, part| {
            percent_decode_str(raw)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| SettingsError::NotUtf8 { url: masked(url), part })
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
            path => path.parse::<i64>().map_err(|_| SettingsError::Database { url: masked(url), path: path.into() })?,
        };
        if db != 0 {
            if self.cluster {
                return Err(SettingsError::ClusterDatabase { url: masked(url) });
            }
            resp::push_command(&mut self.hello, &[b"SELECT", db.to_string().as_bytes()]);
            self.hello_replies += 1;
        }
        Ok(())
    }
}

/// The server `url` names; its host must resolve now.
fn resolve(url: &str, parsed: &Url) -> Result<Endpoint, SettingsError> {
    // An IPv6 host without its brackets, as `to_socket_addrs` takes it.
    let host = match parsed.host() {
        Some(Host::Domain(name)) => name.to_string(),
        Some(Host::Ipv4(v4)) => v4.to_string(),
        Some(Host::Ipv6(v6)) => v6.to_string(),
        None => return Err(SettingsError::NoHost { url: masked(url) }),
    };
    if host.is_empty() {
        return Err(SettingsError::NoHost { url: masked(url) });
    }
    if host == "0.0.0.0" || host == "::" {
        return Err(SettingsError::Wildcard { url: masked(url), host });
    }
    let endpoint = Endpoint::new(host.clone(), parsed.port().unwrap_or(DEFAULT_PORT));
    match endpoint.resolve_now() {
        Ok(_) => Ok(endpoint),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SettingsError::NoAddress { url: masked(url), host }),
        Err(source) => Err(SettingsError::Resolve { url: masked(url), host, source }),
    }
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

    fn addr(s: &str) -> Endpoint {
        Endpoint::from(s.parse::<std::net::SocketAddr>().unwrap())
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
            Servers {
                seeds: vec![addr("127.0.0.1:6380")],
                cluster: false,
                tls: false,
                hello: vec![],
                hello_replies: 0
            }
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
    fn tls_urls_parse_and_passwords_are_masked() {
        let tls = Servers::parse("rediss://u:p@127.0.0.1:6380", false).unwrap();
        assert!(tls.tls && !tls.cluster);
        assert_eq!(tls.hello, hello(&[&[b"AUTH", b"u", b"p"]]));
        let cluster = Servers::parse("rediss+cluster://127.0.0.1:7000,rediss://127.0.0.1:7001", false).unwrap();
        assert!(cluster.tls && cluster.cluster && cluster.seeds.len() == 2);
        assert_eq!(masked("redis://user:pw@h:1/2"), "redis://user:***@h:1/2");
        assert_eq!(masked("rediss://:pw@h"), "rediss://:***@h");
        assert_eq!(masked("redis://user@h:1"), "redis://user@h:1");
        assert_eq!(masked("h:1"), "h:1");
        assert_eq!(masked("redis://h:1/a@b"), "redis://h:1/a@b");
    }

    #[test]
    fn a_bad_url_says_what_to_change() {
        let refused = |urls: &str| Servers::parse(urls, false).unwrap_err();
        assert!(matches!(refused("unix:///tmp/redis.sock"), SettingsError::Scheme { .. }));
        assert!(matches!(refused("redis://"), SettingsError::NoHost { .. }));
        assert!(matches!(refused("redis://0.0.0.0:1"), SettingsError::Wildcard { .. }));
        assert!(matches!(refused("redis://127.0.0.1:99999"), SettingsError::Unparsable { .. }));
        assert!(matches!(refused("redis://127.0.0.1:1/x"), SettingsError::Database { path, .. } if path == "x"));
        assert!(matches!(refused("redis+cluster://127.0.0.1:1/3"), SettingsError::ClusterDatabase { .. }));
        assert!(matches!(refused("redis://127.0.0.1:1,rediss://h"), SettingsError::MixedTls { .. }));
        assert!(matches!(refused("redis://127.0.0.1:1,http://h"), SettingsError::Scheme { .. }));
        let message = refused("redis://al:s3cret@127.0.0.1:1/x").to_string();
        assert!(message.starts_with("--redis \"redis://al:***@127.0.0.1:1/x\""), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        let message = refused("redis://127.0.0.1:1/x").to_string();
        assert!(message.starts_with("--redis \"redis://127.0.0.1:1/x\": \"x\" is not a database number"), "{message}");
        let message = refused("redis+cluster://127.0.0.1:1/3").to_string();
        assert!(message.starts_with("--redis \"redis+cluster://127.0.0.1:1/3\": Redis Cluster"), "{message}");
    }
}
