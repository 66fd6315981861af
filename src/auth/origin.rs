//! Which web pages may open a WebSocket here: the `Origin` a browser sends
//! with the upgrade, against `--allowed-origin` or the mode's default. It
//! keeps another site's page from using a visitor's browser (its cookies,
//! its network position) to chat in the visitor's name. A request without
//! an `Origin` does not come from a browser page and is let through.

/// How upgrades with an `Origin` are judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Any origin (open mode without `--allowed-origin`, or `--allowed-origin '*'`).
    Any,
    /// Pages served by this host: the Origin's host and port are the Host
    /// header's (authenticated mode without `--allowed-origin`).
    SameHost,
    /// The origins given with `--allowed-origin`.
    Only(Vec<Pattern>),
}

/// One `--allowed-origin`: `scheme://host[:port]`, the host possibly
/// `*.suffix` (any subdomain, at any depth), the port possibly `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    scheme: String,
    host: Host,
    port: Port,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Exact(String),
    /// `*.example.com`, kept as `.example.com`.
    AnySubdomainOf(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Any,
    Is(Option<u16>),
}

/// An origin as a browser serialises it (RFC 6454): scheme, host, port.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    /// The explicit port, or the scheme's default.
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// `host[:port]` into the host and the port, if one is given (IPv6 in brackets).
fn split_port(authority: &str) -> Option<(&str, Option<&str>)> {
    let port_at = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => i,
        _ => return Some((authority, None)),
    };
    Some((&authority[..port_at], Some(&authority[port_at + 1..])))
}

impl<'a> Origin<'a> {
    fn parse(text: &'a str) -> Option<Origin<'a>> {
        let (scheme, authority) = text.split_once("://")?;
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_port(authority)?;
        let port = match port {
            Some(p) => Some(p.parse().ok()?),
            None => default_port(scheme),
        };
        Some(Origin { scheme, host, port })
    }
}

impl Pattern {
    /// Reads one `--allowed-origin` value.
    ///
    /// # Errors
    /// What is wrong with it, for the operator.
    pub fn parse(text: &str) -> Result<Pattern, &'static str> {
        let lower = text.to_ascii_lowercase();
        let (scheme, authority) = lower.split_once("://").ok_or("expected scheme://host[:port]")?;
        if scheme.is_empty() || authority.is_empty() {
            return Err("expected scheme://host[:port]");
        }
        if authority.contains(['/', '?', '#', '@']) {
            return Err("an origin has no path, query or user (drop any trailing /)");
        }
        let (host, port) = split_port(authority).ok_or("expected scheme://host[:port]")?;
        let port = match port {
            Some("*") => Port::Any,
            Some(p) => Port::Is(Some(p.parse().map_err(|_| "the port must be a number or *")?)),
            None => Port::Is(default_port(scheme)),
        };
        let host = match host.strip_prefix("*.") {
            Some(suffix) if !suffix.is_empty() && !suffix.contains('*') => Host::AnySubdomainOf(format!(".{suffix}")),
            _ if host.contains('*') => {
                return Err("a wildcard stands only at the start of the host: https://*.example.com")
            }
            _ if host.is_empty() => return Err("expected scheme://host[:port]"),
            _ => Host::Exact(host.to_string()),
        };
        Ok(Pattern { scheme: scheme.to_string(), host, port })
    }

    fn matches(&self, origin: &Origin<'_>) -> bool {
        let host_ok = match &self.host {
            Host::Exact(h) => origin.host.eq_ignore_ascii_case(h),
            Host::AnySubdomainOf(suffix) => {
                origin.host.len() > suffix.len()
                    && origin.host.is_char_boundary(origin.host.len() - suffix.len())
                    && origin.host[origin.host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        };
        let port_ok = match self.port {
            Port::Any => true,
            Port::Is(p) => p == origin.port,
        };
        origin.scheme.eq_ignore_ascii_case(&self.scheme) && host_ok && port_ok
    }
}

impl OriginPolicy {
    /// The policy for `--allowed-origin` values (none: the mode's default).
    ///
    /// # Errors
    /// The value at fault and why.
    pub fn new(allowed: &[String], authenticated: bool) -> Result<OriginPolicy, (String, &'static str)> {
        if allowed.is_empty() {
            return Ok(if authenticated { OriginPolicy::SameHost } else { OriginPolicy::Any });
        }
        if allowed.iter().any(|a| a == "*") {
            return Ok(OriginPolicy::Any);
        }
        let patterns = allowed.iter().map(|a| Pattern::parse(a).map_err(|why| (a.clone(), why)));
        Ok(OriginPolicy::Only(patterns.collect::<Result<_, _>>()?))
    }

    /// Whether an upgrade with these `Origin` and `Host` headers may proceed.
    pub fn allows(&self, origin: Option<&[u8]>, host: Option<&[u8]>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if *self == OriginPolicy::Any {
            return true;
        }
        let Some(origin) = std::str::from_utf8(origin).ok().and_then(|o| Origin::parse(o.trim())) else {
            // "null" (a sandboxed page, a file) or garbage: no page we know.
            return false;
        };
        match self {
            OriginPolicy::Any => true,
            OriginPolicy::Only(patterns) => patterns.iter().any(|p| p.matches(&origin)),
            OriginPolicy::SameHost => host.is_some_and(|h| same_host(&origin, h)),
        }
    }
}

/// The Origin names the host the request came to: its host and port (a
/// Host header without a port means the default port of the Origin's scheme).
fn same_host(origin: &Origin<'_>, host: &[u8]) -> bool {
    let Some((name, port)) = std::str::from_utf8(host).ok().and_then(|h| split_port(h.trim())) else {
        return false;
    };
    let port = match port {
        Some(p) => p.parse().ok(),
        None => default_port(origin.scheme),
    };
    name.eq_ignore_ascii_case(origin.host) && port == origin.port
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str], authenticated: bool) -> OriginPolicy {
        OriginPolicy::new(&allowed.iter().map(|s| s.to_string()).collect::<Vec<_>>(), authenticated).unwrap()
    }

    fn allows(p: &OriginPolicy, origin: &str, host: &str) -> bool {
        p.allows(Some(origin.as_bytes()), Some(host.as_bytes()))
    }

    #[test]
    fn the_default_follows_the_mode() {
        let open = policy(&[], false);
        assert!(allows(&open, "https://evil.example", "chat.example.com"));
        let auth = policy(&[], true);
        assert!(allows(&auth, "https://chat.example.com", "chat.example.com"));
        assert!(allows(&auth, "http://127.0.0.1:9000", "127.0.0.1:9000"));
        assert!(allows(&auth, "https://Chat.Example.com:443", "chat.example.com"));
        assert!(!allows(&auth, "https://evil.example", "chat.example.com"));
        assert!(!allows(&auth, "http://127.0.0.1:9001", "127.0.0.1:9000"));
        assert!(!allows(&auth, "https://chat.example.com:8443", "chat.example.com"));
        assert!(!allows(&auth, "null", "chat.example.com"));
        assert!(!auth.allows(Some(b"https://chat.example.com"), None));
        assert!(auth.allows(None, Some(b"chat.example.com")), "no Origin: not a browser");
        assert!(allows(&auth, "http://[::1]:9000", "[::1]:9000"));
    }

    #[test]
    fn patterns_match_exact_origins_and_subdomains() {
        let p = policy(&["https://*.example.com", "http://localhost:*", "https://app.test"], true);
        assert!(allows(&p, "https://a.example.com", "x"));
        assert!(allows(&p, "https://a.b.example.com", "x"));
        assert!(!allows(&p, "https://example.com", "x"));
        assert!(!allows(&p, "https://evilexample.com", "x"));
        assert!(!allows(&p, "http://a.example.com", "x"), "scheme");
        assert!(!allows(&p, "https://a.example.com:8443", "x"), "port");
        assert!(allows(&p, "http://localhost:3000", "x"));
        assert!(allows(&p, "https://app.test:443", "x"));
        assert!(!allows(&p, "https://app.test.evil", "x"));
        assert!(!allows(&p, "https://app.test/path", "x"));
        assert!(allows(&policy(&["*"], true), "https://anything", "x"));
    }

    #[test]
    fn bad_patterns_are_refused_at_start() {
        for bad in ["example.com", "https://example.com/", "https://a.*.com", "https://x:y", "https://"] {
            assert!(OriginPolicy::new(&[bad.to_string()], false).is_err(), "{bad}");
        }
    }
}
