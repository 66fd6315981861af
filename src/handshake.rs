//! The HTTP side of a connection: the WebSocket upgrade (RFC 6455 section 4),
//! `/healthz`, `/metrics`, and clear HTTP errors for everything else.

use std::fmt::Write;

use tungstenite::handshake::derive_accept_key;

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
pub enum Outcome {
    /// The request head is not complete yet.
    Incomplete,
    /// Upgraded: the 101 response is in `out`; `consumed` bytes were the request.
    Upgrade { endpoint: Endpoint, consumed: usize },
    /// A plain HTTP response is in `out`; close after sending it.
    Respond { status: u16 },
}

/// What the HTTP side needs to know about the node.
pub struct Routes<'a> {
    pub ws_path: &'a str,
    pub echo_path: Option<&'a str>,
    pub max_header_bytes: usize,
}

/// Reads a request head from `buf`; writes any response into `out`.
/// `metrics` renders `/metrics` when asked for.
pub fn handle(buf: &[u8], routes: &Routes<'_>, out: &mut Vec<u8>, metrics: impl FnOnce() -> String) -> Outcome {
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
            "/metrics" => respond(out, 200, &metrics(), &[("Content-Type", "text/plain; version=0.0.4")]),
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
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(derive_accept_key(key).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Outcome::Upgrade { endpoint, consumed }
}

/// A key is 16 random bytes in base64: 24 characters ending in "==".
fn is_valid_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
}

fn respond(out: &mut Vec<u8>, status: u16, body: &str, extra: &[(&str, &str)]) -> Outcome {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
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

    const ROUTES: Routes<'static> = Routes { ws_path: "/ws", echo_path: Some("/echo"), max_header_bytes: 8192 };

    fn run(req: &str) -> (Outcome, String) {
        let mut out = Vec::new();
        let outcome = handle(req.as_bytes(), &ROUTES, &mut out, || "m 1\n".into());
        (outcome, String::from_utf8(out).unwrap())
    }

    const UPGRADE: &str = "GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn upgrades_with_the_rfc_accept_key() {
        let (outcome, out) = run(UPGRADE);
        assert_eq!(outcome, Outcome::Upgrade { endpoint: Endpoint::Chat, consumed: UPGRADE.len() });
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
        let (outcome, out) = run("GET /metrics HTTP/1.1\r\n\r\n");
        assert_eq!(outcome, Outcome::Respond { status: 200 });
        assert!(out.ends_with("m 1\n"));
    }
}
