//! The server API as an application backend calls it: plain HTTP/1.1 to a
//! node's admin listener, with or without `Authorization: Bearer KEY`.

use std::time::Duration;

use serde_json::Value;
use tungstenite::Message;

use super::{raw_exchange, NodeProc, Ws};

/// A key long enough for `--api-key`.
pub const KEY: &str = "test-api-key-0123456789";

/// An answer: its status and its body (JSON where it parses, else a string).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

/// Sends `method path` with `body` (if any) and `key` (if any) to the
/// admin listener of `node`.
pub fn call(node: &NodeProc, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Answer {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
    if let Some(key) = key {
        request.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or_default());
    let response = raw_exchange(node.admin, request.as_bytes());
    let status = response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {response:?}"));
    let text = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    let body = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
    Answer { status, body }
}

/// `POST path` with `body` and the right key.
pub fn post(node: &NodeProc, path: &str, body: &str) -> Answer {
    call(node, "POST", path, Some(KEY), Some(body))
}

/// `GET path` with the right key.
pub fn get(node: &NodeProc, path: &str) -> Answer {
    call(node, "GET", path, Some(KEY), None)
}

/// The close frame's code and reason `ws` gets next (skipping pings).
pub fn close_of(ws: &mut Ws) -> (u16, String) {
    ws.get_mut().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    loop {
        match ws.read().expect("a close frame") {
            Message::Close(Some(frame)) => return (u16::from(frame.code), frame.reason.to_string()),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a close, got {other:?}"),
        }
    }
}
