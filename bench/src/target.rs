//! Where connections go: a target URL, `ws://` or `wss://` (TLS), parsed and resolved
//! once at start, with the request path the chat protocol needs (Socket.IO adds its
//! Engine.IO query).

use std::net::{SocketAddr, ToSocketAddrs};

/// The Engine.IO path a Socket.IO server listens on unless told otherwise.
pub const SOCKETIO_DEFAULT_PATH: &str = "/socket.io/";
/// The query that asks for Engine.IO v4 over WebSocket from the first request (no HTTP
/// long-polling first: the load generator only speaks WebSocket).
pub const SOCKETIO_QUERY: &str = "EIO=4&transport=websocket";

/// One target node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// The Host header value.
    pub host: String,
    /// The request target of the upgrade request (path and query).
    pub path: String,
    /// `wss://`: TLS first, then the upgrade.
    pub tls: bool,
    /// The host without its port (and without IPv6 brackets): what the certificate must
    /// name, sent as SNI.
    pub server_name: String,
}

/// A URL that cannot be a target.
#[derive(Debug, thiserror::Error)]
#[error("bad --url {url:?}: {why}")]
pub struct BadUrl {
    pub url: String,
    pub why: String,
}

/// Parses `ws[s]://host[:port][/path]` and resolves the host. With `socketio`, the path
/// is the Engine.IO path (`/socket.io/` when the URL gives none) and the Engine.IO query
/// is added to it.
///
/// # Errors
/// Another scheme, no host, a host that does not resolve.
pub fn parse_url(url: &str, socketio: bool) -> Result<Target, BadUrl> {
    let bad = |why: &str| BadUrl { url: url.to_string(), why: why.to_string() };
    let (rest, tls) = if let Some(rest) = url.strip_prefix("ws://") {
        (rest, false)
    } else if let Some(rest) = url.strip_prefix("wss://") {
        (rest, true)
    } else {
        return Err(bad("expected ws://HOST:PORT/PATH or wss://HOST:PORT/PATH"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("missing host"));
    }
    let has_port = authority.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
    let with_port =
        if has_port { authority.to_string() } else { format!("{authority}:{}", if tls { 443 } else { 80 }) };
    let addrs: Vec<SocketAddr> =
        with_port.to_socket_addrs().map_err(|e| bad(&format!("cannot resolve {with_port}: {e}")))?.collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad("host resolves to no address"))?;
    let host_only = if has_port { authority.rsplit_once(':').map_or(authority, |(h, _)| h) } else { authority };
    let server_name = host_only.trim_start_matches('[').trim_end_matches(']').to_string();
    let path = if socketio { socketio_path(path) } else { path.to_string() };
    Ok(Target { url: url.to_string(), addr, host: authority.to_string(), path, tls, server_name })
}

/// The Engine.IO request target for a URL's path: `/` means the default path; the query
/// is added after any the URL has.
fn socketio_path(path: &str) -> String {
    let path = if path == "/" { SOCKETIO_DEFAULT_PATH } else { path };
    let joiner = if path.contains('?') { '&' } else { '?' };
    format!("{path}{joiner}{SOCKETIO_QUERY}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let t = parse_url("ws://127.0.0.1:9000/ws", false).unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!((t.path.as_str(), t.host.as_str(), t.tls), ("/ws", "127.0.0.1:9000", false));
        let t = parse_url("ws://127.0.0.1", false).unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        assert!(parse_url("http://x/ws", false).is_err());
        assert!(parse_url("ws:///ws", false).is_err());
    }

    #[test]
    fn wss_defaults_to_443_and_names_the_host_for_the_certificate() {
        let t = parse_url("wss://localhost/ws", false).unwrap();
        assert_eq!(
            (t.addr.port(), t.tls, t.server_name.as_str(), t.host.as_str()),
            (443, true, "localhost", "localhost")
        );
        let t = parse_url("wss://127.0.0.1:8443/ws", false).unwrap();
        assert_eq!((t.server_name.as_str(), t.host.as_str()), ("127.0.0.1", "127.0.0.1:8443"));
        let t = parse_url("wss://[::1]:8443/", false).unwrap();
        assert_eq!(t.server_name, "::1");
    }

    #[test]
    fn socketio_paths_carry_the_engineio_query() {
        let path = |url| parse_url(url, true).unwrap().path;
        assert_eq!(path("ws://127.0.0.1:9400"), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(path("ws://127.0.0.1:9400/"), "/socket.io/?EIO=4&transport=websocket");
        assert_eq!(path("ws://127.0.0.1:9400/chat/"), "/chat/?EIO=4&transport=websocket");
        assert_eq!(path("ws://127.0.0.1:9400/socket.io/?token=a"), "/socket.io/?token=a&EIO=4&transport=websocket");
    }
}
