//! The HTTP side of a connection: the WebSocket upgrade (RFC 6455 section 4),
//! with its Origin check and the token it may carry, `/healthz` (for load
//! balancers that can only probe the port they balance), and clear HTTP
//! errors for everything else. `/metrics` and `/readyz` are on the admin
//! listener (`admin.rs`), not here: the chat port is public. An upgrade the
//! node will not take (too many connections, from this address or in all) is
//! refused with 429 or 503 and a `Retry-After`.

use std::fmt::Write;
use std::net::IpAddr;

use ipnet::IpNet;

use tungstenite::handshake::derive_accept_key;

use crate::auth::OriginPolicy;
use crate::web;

/// Most headers we look at in one request; more gets 431.
const MAX_HEADERS: usize = 48;

/// Which WebSocket endpoint a connection was upgraded to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Echo,
}

/// What to do with the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The request head is not complete yet.
    Incomplete,
    /// Upgraded: the 101 response is in `out`; `consumed` bytes were the
    /// request, which may have carried a token (`Authorization: Bearer`, or
    /// `?token=` where a browser cannot set headers).
    Upgrade { endpoint: Endpoint, consumed: usize, token: Option<&'a str> },
    /// A plain HTTP response is in `out`; close after sending it.
    Respond { status: u16 },
}

/// What the HTTP side needs to know about the node.
pub struct Routes<'a> {
    pub ws_path: &'a str,
    pub echo_path: Option<&'a str>,
    pub max_header_bytes: usize,
    /// Which pages may open a WebSocket (403 for others).
    pub origins: &'a OriginPolicy,
}

/// Why an upgrade is refused: 429 (this source has too many connections)
/// or 503 (the node is full, or takes no more new connections this second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    /// Seconds the client should wait (`Retry-After`).
    pub retry_after: u64,
    pub why: &'static str,
}

/// The `X-Forwarded-For` headers of an upgrade request, for the admission check.
pub struct ForwardedFor<'h> {
    headers: &'h [httparse::Header<'h>],
}

impl ForwardedFor<'_> {
    /// The client behind a trusted proxy: the last address of the
    /// `X-Forwarded-For` chain (all such headers, in order) that is not
    /// itself in `trusted`. `None` when the chain names nobody else (no
    /// header, only trusted hops) or has a hop that is not an address: the
    /// proxy is then the source. Call it only when the peer is trusted.
    pub fn client(&self, trusted: &[IpNet]) -> Option<IpAddr> {
        let chain = self.headers.iter().rev().filter(|h| h.name.eq_ignore_ascii_case("X-Forwarded-For"));
        // From the nearest hop outwards: the last header, its last entry first.
        for hop in chain.flat_map(|h| h.value.rsplit(|&b| b == b',')) {
            let ip = std::str::from_utf8(hop).ok().and_then(|h| h.trim().parse::<IpAddr>().ok())?;
            if !trusted.iter().any(|net| net.contains(&ip.to_canonical())) {
                return Some(ip);
            }
        }
        None
    }
}

/// Reads a request head from `buf`; writes any response into `out`.
pub fn handle<'b>(buf: &'b [u8], routes: &Routes<'_>, out: &mut Vec<u8>) -> Outcome<'b> {
    handle_admitting(buf, routes, out, |_| Ok(()))
}

/// [`handle`], with `admit` asked before a WebSocket upgrade is answered:
/// a [`Refusal`] is sent instead of the 101.
pub fn handle_admitting<'b>(
    buf: &'b [u8],
    routes: &Routes<'_>,
    out: &mut Vec<u8>,
    admit: impl FnOnce(&ForwardedFor<'_>) -> Result<(), Refusal>,
) -> Outcome<'b> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > routes.max_header_bytes => {
            return respond(out, 431, "request head too large\n", &[]);
        }
        Ok(httparse::Status::Partial) => return Outcome::Incomplete,
        Ok(httparse::Status::Complete(n)) if n > routes.max_header_bytes => {
            return respond(out, 431, "request head too large\n", &[]);
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return respond(out, 431, "too many headers\n", &[]),
        Err(e) => return respond(out, 400, &format!("malformed HTTP request: {e}\n"), &[]),
    };
    if req.method != Some("GET") {
        return respond(out, 405, "only GET is served\n", &[("Allow", "GET")]);
    }
    let full_path = req.path.unwrap_or("/");
    let path = full_path.split_once('?').map_or(full_path, |(p, _)| p);
    let endpoint = if path == routes.ws_path {
        Endpoint::Chat
    } else if Some(path) == routes.echo_path {
        Endpoint::Echo
    } else {
        return match path {
            "/healthz" => respond(out, 200, "ok\n", &[]),
            _ => match web::asset(path) {
                // Revalidated on every load, so a new node version is picked up at once.
                Some(page) => {
                    respond(out, 200, page.body, &[("Content-Type", page.content_type), ("Cache-Control", "no-cache")])
                }
                None => respond(out, 404, &format!("no such endpoint: {path} (chat is at {})\n", routes.ws_path), &[]),
            },
        };
    };
    let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let has_token = |name: &str, token: &str| {
        header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let upgrade_to_ws = has_token("Upgrade", "websocket") && has_token("Connection", "upgrade");
    let version_13 = header("Sec-WebSocket-Version") == Some(b"13");
    if !upgrade_to_ws || !version_13 {
        return respond(
            out,
            426,
            "this endpoint speaks WebSocket (RFC 6455, version 13) only\n",
            &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        );
    }
    let Some(key) = header("Sec-WebSocket-Key").filter(|k| is_valid_key(k)) else {
        return respond(out, 400, "missing or malformed Sec-WebSocket-Key\n", &[]);
    };
    let origin = header("Origin");
    if !routes.origins.allows(origin, header("Host")) {
        let shown = String::from_utf8_lossy(origin.unwrap_or_default());
        return respond(out, 403, &format!("Origin {shown} may not open a WebSocket here (--allowed-origin)\n"), &[]);
    }
    if let Err(no) = admit(&ForwardedFor { headers: req.headers }) {
        let retry = no.retry_after.to_string();
        return respond(out, no.status, &format!("{}\n", no.why), &[("Retry-After", retry.as_str())]);
    }
    let token = bearer(header("Authorization")).or_else(|| query_token(full_path));
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(derive_accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Outcome::Upgrade { endpoint, consumed, token }
}

/// The token of an `Authorization: Bearer TOKEN` header (RFC 6750 2.1).
fn bearer(value: Option<&[u8]>) -> Option<&str> {
    let value = std::str::from_utf8(value?).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// The `token` parameter of the query. A JWT is base64url and dots, which
/// need no percent-escaping, so it is taken as it stands.
fn query_token(path: &str) -> Option<&str> {
    let (_, query) = path.split_once('?')?;
    query.split('&').find_map(|pair| pair.strip_prefix("token=")).filter(|t| !t.is_empty())
}

/// A key is 16 random bytes in base64: 24 characters ending in "==".
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

fn respond(out: &mut Vec<u8>, status: u16, body: &str, extra: &[(&str, &str)]) -> Outcome<'static> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let mut head = format!("HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !extra.iter().any(|(k, _)| *k == "Content-Type") {
        head.push_str("Content-Type: text/plain; charset=utf-8\r\n");
    }
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(body.as_bytes());
    Outcome::Respond { status }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: Routes<'static> =
        Routes { ws_path: "/ws", echo_path: Some("/echo"), max_header_bytes: 8192, origins: &OriginPolicy::Any };

    fn run(req: &str) -> (Outcome<'_>, String) {
        run_with(req, &ROUTES)
    }

    fn run_with<'a>(req: &'a str, routes: &Routes<'_>) -> (Outcome<'a>, String) {
        let mut out = Vec::new();
        let outcome = handle(req.as_bytes(), routes, &mut out);
        (outcome, String::from_utf8(out).unwrap())
    }

    const UPGRADE: &str = "GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn upgrades_with_the_rfc_accept_key() {
        let (outcome, out) = run(UPGRADE);
        assert_eq!(outcome, Outcome::Upgrade { endpoint: Endpoint::Chat, consumed: UPGRADE.len(), token: None });
        assert!(out.starts_with("HTTP/1.1 101 "));
        // The example from RFC 6455 section 1.3.
        assert!(out.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    }

    #[test]
    fn waits_for_the_whole_head() {
        assert_eq!(run(&UPGRADE[..40]).0, Outcome::Incomplete);
    }

    #[test]
    fn answers_http_errors() {
        assert_eq!(run("GET /nope HTTP/1.1\r\n\r\n").0, Outcome::Respond { status: 404 });
        assert_eq!(run("GET /ws HTTP/1.1\r\nHost: h\r\n\r\n").0, Outcome::Respond { status: 426 });
        assert_eq!(run("POST /ws HTTP/1.1\r\n\r\n").0, Outcome::Respond { status: 405 });
        assert_eq!(run("GARBAGE\0\r\n\r\n").0, Outcome::Respond { status: 400 });
        let bad_key = UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
        assert_eq!(run(&bad_key).0, Outcome::Respond { status: 400 });
        let v8 = UPGRADE.replace("Version: 13", "Version: 8");
        let (outcome, out) = run(&v8);
        assert_eq!(outcome, Outcome::Respond { status: 426 });
        assert!(out.contains("Sec-WebSocket-Version: 13"));
        let big = format!("GET /ws HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert_eq!(run(&big).0, Outcome::Respond { status: 431 });
        assert_eq!(run(&big[..8500]).0, Outcome::Respond { status: 431 });
        let (outcome, out) = run("GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(outcome, Outcome::Respond { status: 200 });
        assert!(out.ends_with("ok\n"));
        // Metrics are for the admin listener only.
        assert_eq!(run("GET /metrics HTTP/1.1\r\n\r\n").0, Outcome::Respond { status: 404 });
    }

    fn token_of(req: &str) -> Option<String> {
        match run(req).0 {
            Outcome::Upgrade { token, .. } => token.map(str::to_string),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_token_comes_in_the_authorization_header_or_the_query() {
        let header = UPGRADE.replace("Host: h\r\n", "Host: h\r\nAuthorization: Bearer a.b.c\r\n");
        assert_eq!(token_of(&header).as_deref(), Some("a.b.c"));
        let lower = UPGRADE.replace("Host: h\r\n", "Host: h\r\nauthorization: bearer  x.y.z \r\n");
        assert_eq!(token_of(&lower).as_deref(), Some("x.y.z"));
        let basic = UPGRADE.replace("Host: h\r\n", "Host: h\r\nAuthorization: Basic YTpi\r\n");
        assert_eq!(token_of(&basic), None);
        assert_eq!(token_of(&UPGRADE.replace("/ws?x=1", "/ws?x=1&token=q.r.s")).as_deref(), Some("q.r.s"));
        assert_eq!(token_of(&UPGRADE.replace("/ws?x=1", "/ws?token=")), None);
        assert_eq!(token_of(UPGRADE), None);
    }

    #[test]
    fn origins_outside_the_policy_get_403() {
        let same_host = OriginPolicy::SameHost;
        let routes = Routes { origins: &same_host, ..ROUTES };
        let evil = UPGRADE.replace("Host: h\r\n", "Host: h\r\nOrigin: https://evil.example\r\n");
        let (outcome, out) = run_with(&evil, &routes);
        assert_eq!(outcome, Outcome::Respond { status: 403 });
        assert!(out.starts_with("HTTP/1.1 403 Forbidden\r\n") && out.contains("https://evil.example"), "{out}");
        let own = UPGRADE.replace("Host: h\r\n", "Host: h\r\nOrigin: http://h\r\n");
        assert!(matches!(run_with(&own, &routes).0, Outcome::Upgrade { .. }));
        assert!(matches!(run_with(UPGRADE, &routes).0, Outcome::Upgrade { .. }), "no Origin");
        assert!(matches!(run(&evil).0, Outcome::Upgrade { .. }), "any origin");
    }

    #[test]
    fn a_refused_upgrade_says_when_to_come_back() {
        let mut out = Vec::new();
        let no = Refusal { status: 429, retry_after: 7, why: "too many connections from your address" };
        let outcome = handle_admitting(UPGRADE.as_bytes(), &ROUTES, &mut out, |_| Err(no));
        assert_eq!(outcome, Outcome::Respond { status: 429 });
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{out}");
        assert!(out.contains("\r\nRetry-After: 7\r\n"), "{out}");
    }

    #[test]
    fn the_client_is_the_last_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.1/32".parse().unwrap()];
        let client = |values: &[&str]| {
            let headers: Vec<httparse::Header<'_>> =
                values.iter().map(|v| httparse::Header { name: "x-forwarded-for", value: v.as_bytes() }).collect();
            ForwardedFor { headers: &headers }.client(&trusted)
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(client(&["203.0.113.9"]), ip("203.0.113.9"));
        // A client may write anything on the left; only the hops our proxies added count.
        assert_eq!(client(&["1.1.1.1, 203.0.113.9, 10.1.2.3"]), ip("203.0.113.9"));
        assert_eq!(client(&["1.1.1.1", "203.0.113.9,10.1.2.3 , 192.0.2.1"]), ip("203.0.113.9"));
        assert_eq!(client(&["2001:db8::7"]), ip("2001:db8::7"));
        assert_eq!(client(&[]), None);
        assert_eq!(client(&["10.0.0.1"]), None);
        assert_eq!(client(&["203.0.113.9, not-an-address"]), None);
    }
}
