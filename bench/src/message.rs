//! The chat protocol as the load generator speaks it: building login and chat messages,
//! the `Data` markers it puts in them, and reading what the server sends back.
//!
//! Login has no success reply in the seed's protocol, so a login is timed as: send the
//! login, then at once a chat message to oneself whose `Data` is a login marker; the
//! login is complete when that message comes back.

use std::borrow::Cow;
use std::io::Write as _;

/// `Data` of the self-addressed message that confirms a login.
pub const LOGIN_MARKER: &str = "login;";

/// What a text frame from the server means to the load generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A chat message delivered to this connection.
    Chat { data: Cow<'a, str>, reciever: Cow<'a, str>, sender: Cow<'a, str> },
    /// The seed's answer to a duplicate login: the JSON string "User already exists".
    UserExists,
    /// `{"MessageType":"errormsg","Data":"..."}`.
    ServerError(String),
    /// Anything else (unknown type, not JSON).
    Unexpected,
}

/// What a chat message's `Data` carries.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Mark {
    /// The self-addressed message that confirms a login.
    Login,
    /// A timed chat message: send time (CLOCK_MONOTONIC nanoseconds), sender index, sequence.
    Chat { sent_ns: u64, sender: u32, seq: u32 },
}

#[derive(serde::Deserialize)]
struct WireMessage<'a> {
    #[serde(rename = "MessageType", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "Data", borrow, default)]
    data: Option<Cow<'a, str>>,
    #[serde(rename = "Reciever", borrow, default)]
    reciever: Option<Cow<'a, str>>,
    #[serde(rename = "Sender", borrow, default)]
    sender: Option<Cow<'a, str>>,
}

/// Appends `{"MessageType":"loginmsg","Sender":"<prefix><index>"}`.
pub fn write_login(out: &mut Vec<u8>, prefix: &str, index: u32) {
    let _ = write!(out, r#"{{"MessageType":"loginmsg","Sender":"{prefix}{index}"}}"#);
}

/// Appends a chat message from `sender` to `recipient` carrying `data` (already JSON-safe).
pub fn write_chat(out: &mut Vec<u8>, prefix: &str, sender: u32, recipient: u32, data: &[u8]) {
    let _ = write!(out, r#"{{"MessageType":"chatmsg","Data":""#);
    out.extend_from_slice(data);
    let _ = write!(out, r#"","Reciever":"{prefix}{recipient}","Sender":"{prefix}{sender}"}}"#);
}

/// Appends a timed `Data` value, `t=<ns>;s=<sender>:<seq>;`, padded with `x` to
/// `payload` bytes (it is longer when `payload` is too small to hold the marker).
pub fn write_chat_data(out: &mut Vec<u8>, sent_ns: u64, sender: u32, seq: u32, payload: usize) {
    let start = out.len();
    let _ = write!(out, "t={sent_ns};s={sender}:{seq};");
    let written = out.len() - start;
    if written < payload {
        out.resize(start + payload, b'x');
    }
}

/// Reads a server text frame.
pub fn parse_incoming(payload: &[u8]) -> Incoming<'_> {
    let trimmed = payload.trim_ascii();
    if trimmed.first() == Some(&b'"') {
        return match serde_json::from_slice::<String>(trimmed) {
            Ok(s) if s == "User already exists" => Incoming::UserExists,
            Ok(s) => Incoming::ServerError(s),
            Err(_) => Incoming::Unexpected,
        };
    }
    let Ok(msg) = serde_json::from_slice::<WireMessage<'_>>(trimmed) else {
        return Incoming::Unexpected;
    };
    match &*msg.kind {
        "chatmsg" => Incoming::Chat {
            data: msg.data.unwrap_or_default(),
            reciever: msg.reciever.unwrap_or_default(),
            sender: msg.sender.unwrap_or_default(),
        },
        "errormsg" => Incoming::ServerError(msg.data.unwrap_or_default().into_owned()),
        _ => Incoming::Unexpected,
    }
}

/// Reads the marker at the start of a chat message's `Data`.
pub fn parse_mark(data: &str) -> Option<Mark> {
    if data.starts_with(LOGIN_MARKER) {
        return Some(Mark::Login);
    }
    let rest = data.strip_prefix("t=")?;
    let (t, rest) = rest.split_once(";s=")?;
    let (sender, rest) = rest.split_once(':')?;
    let (seq, _) = rest.split_once(';')?;
    Some(Mark::Chat { sent_ns: t.parse().ok()?, sender: sender.parse().ok()?, seq: seq.parse().ok()? })
}

/// The connection index in a name `<prefix><index>`, if the name has that shape.
pub fn index_of_name(name: &str, prefix: &str) -> Option<u32> {
    name.strip_prefix(prefix)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_round_trip_through_the_seed_format() {
        let mut data = Vec::new();
        write_chat_data(&mut data, 123_456_789, 42, 7, 64);
        assert_eq!(data.len(), 64);
        let mut out = Vec::new();
        write_chat(&mut out, "u", 42, 9, &data);
        // The server echoes the seed's field order with a trailing newline.
        out.push(b'\n');
        match parse_incoming(&out) {
            Incoming::Chat { data, reciever, sender } => {
                assert_eq!(reciever, "u9");
                assert_eq!(sender, "u42");
                assert_eq!(parse_mark(&data), Some(Mark::Chat { sent_ns: 123_456_789, sender: 42, seq: 7 }));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn small_payload_keeps_the_whole_marker() {
        let mut data = Vec::new();
        write_chat_data(&mut data, 1, 2, 3, 4);
        assert_eq!(data, b"t=1;s=2:3;");
    }

    #[test]
    fn login_message_and_marker() {
        let mut out = Vec::new();
        write_login(&mut out, "lg-", 5);
        assert_eq!(out, br#"{"MessageType":"loginmsg","Sender":"lg-5"}"#);
        assert_eq!(parse_mark("login;"), Some(Mark::Login));
        assert_eq!(parse_mark("hello"), None);
        assert_eq!(parse_mark("t=1;s=x:1;"), None);
    }

    #[test]
    fn seed_replies_are_recognised() {
        assert_eq!(parse_incoming(b"\"User already exists\"\n"), Incoming::UserExists);
        assert_eq!(
            parse_incoming(br#"{"MessageType":"errormsg","Data":"login first"}"#),
            Incoming::ServerError("login first".into())
        );
        assert_eq!(parse_incoming(b"garbage"), Incoming::Unexpected);
    }

    #[test]
    fn names_map_back_to_indices() {
        assert_eq!(index_of_name("u17", "u"), Some(17));
        assert_eq!(index_of_name("v17", "u"), None);
        assert_eq!(index_of_name("u", "u"), None);
    }
}
