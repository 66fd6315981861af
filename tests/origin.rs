//! The Origin check at the upgrade: another site's page gets 403 where the
//! mode or `--allowed-origin` says so; clients that are not browsers (no
//! Origin) always get through.

// Helpers of tests: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::raw::{RawClient, KEY};
use common::NodeProc;

const SECRET: &str = "a-test-secret-of-more-than-32-bytes!";

/// The status line of an upgrade with these Host and Origin headers.
fn status(node: &NodeProc, host: &str, origin: Option<&str>) -> String {
    let mut c = RawClient::connect(node.addr);
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    c.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\n{origin}Upgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let head = c.read_http_head();
    head.lines().next().unwrap().to_string()
}

#[test]
fn open_mode_takes_any_origin() {
    let node = NodeProc::start(&[]);
    assert!(status(&node, "chat.example.com", Some("https://evil.example")).starts_with("HTTP/1.1 101 "));
}

#[test]
fn authenticated_mode_takes_pages_of_its_own_host_only() {
    let node = NodeProc::start(&["--auth-secret", SECRET]);
    let own = format!("{}", node.addr);
    assert_eq!(status(&node, &own, Some(&format!("http://{own}"))), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(status(&node, "chat.example.com", Some("https://chat.example.com")), "HTTP/1.1 101 Switching Protocols");
    assert_eq!(status(&node, "chat.example.com", Some("https://evil.example")), "HTTP/1.1 403 Forbidden");
    assert_eq!(status(&node, "chat.example.com", Some("https://chat.example.com:8443")), "HTTP/1.1 403 Forbidden");
    assert_eq!(status(&node, "chat.example.com", Some("null")), "HTTP/1.1 403 Forbidden");
    assert_eq!(status(&node, "chat.example.com", None), "HTTP/1.1 101 Switching Protocols", "not a browser");
    // The refusal says why.
    let mut c = RawClient::connect(node.addr);
    c.send(
        format!(
            "GET /ws HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut response = String::new();
    std::io::Read::read_to_string(&mut c.stream, &mut response).unwrap();
    assert!(response.contains("Origin https://evil.example may not open a WebSocket here"), "{response}");
}

#[test]
fn allowed_origins_replace_the_default_in_either_mode() {
    for auth in [&[][..], &["--auth-secret", SECRET][..]] {
        let mut args = vec!["--allowed-origin", "https://*.example.com", "--allowed-origin", "http://localhost:*"];
        args.extend_from_slice(auth);
        let node = NodeProc::start(&args);
        for (origin, allowed) in [
            ("https://chat.example.com", true),
            ("https://a.b.example.com", true),
            ("http://localhost:3000", true),
            ("https://example.com", false),
            ("https://evil.example", false),
            ("https://example.com.evil.example", false),
            ("http://chat.example.com", false),
        ] {
            let expected = if allowed { "HTTP/1.1 101 " } else { "HTTP/1.1 403 " };
            assert!(status(&node, "node.internal", Some(origin)).starts_with(expected), "{auth:?} {origin}");
        }
    }
}

#[test]
fn a_bad_pattern_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "text", "--allowed-origin", "https://example.com/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allowed-origin \"https://example.com/\": an origin has no path"), "{stderr}");
}
