//! The chat protocol as the load generator speaks it: building login and chat messages,
//! the `Data` markers it puts in them, and reading what the server sends back.
//!
//! Login has no success reply in the seed's protocol, so a login is timed as: send the
//! login, then at once a chat message to oneself whose `Data` is a login marker; the
//! login is complete when that message comes back.

use std::borrow::Cow;
use std::io::Write as _;

use crate::history::{Outcome, Recovery, StreamId};

/// `Data` of the self-addressed message that confirms a login.
pub const LOGIN_MARKER: &str = "login;";

/// What a text frame from the server means to the load generator.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A chat message delivered to this connection, with its history offset when the
    /// recipient's channel keeps history.
    Chat { data: Cow<'a, str>, reciever: Cow<'a, str>, sender: Cow<'a, str>, offset: Option<StreamId> },
    /// A room message delivered to this member (`Reciever` is the room).
    Room { data: Cow<'a, str>, room: Cow<'a, str>, sender: Cow<'a, str> },
    /// `Sender` joined `room`: a join's confirmation, or a notice to the other members.
    Joined { room: Cow<'a, str>, sender: Cow<'a, str> },
    /// Someone left a room (a notice, or the leaver's confirmation).
    Left,
    /// `recoverymsg`: the replay after a login or join is over.
    Recovery(Recovery<'a>),
    /// `storedmsg`: a message was kept for a user who is offline.
    Stored,
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
    /// A timed chat message: when the schedule meant it to go (CLOCK_MONOTONIC
    /// nanoseconds), how much later the load generator actually sent it, sender index and
    /// sequence number.
    Chat { intended_ns: u64, lag_ns: u64, sender: u32, seq: u32 },
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
    #[serde(rename = "Offset", borrow, default)]
    offset: Option<Cow<'a, str>>,
    #[serde(rename = "Epoch", borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(rename = "Count", default)]
    count: u64,
}

/// Appends `{"MessageType":"loginmsg","Sender":"<prefix><index>"}`.
pub fn write_login(out: &mut Vec<u8>, prefix: &str, index: u32) {
    let _ = write!(out, r#"{{"MessageType":"loginmsg","Sender":"{prefix}{index}"}}"#);
}

/// Appends a chat message from `sender` to `recipient` carrying `data` (already JSON-safe).
pub fn write_chat(out: &mut Vec<u8>, prefix: &str, sender: u32, recipient: u32, data: &[u8]) {
    // Written by hand, not with `write!`: this runs once per message sent.
    out.extend_from_slice(br#"{"MessageType":"chatmsg","Data":""#);
    out.extend_from_slice(data);
    out.extend_from_slice(br#"","Reciever":""#);
    out.extend_from_slice(prefix.as_bytes());
    push_decimal(out, recipient.into());
    out.extend_from_slice(br#"","Sender":""#);
    out.extend_from_slice(prefix.as_bytes());
    push_decimal(out, sender.into());
    out.extend_from_slice(br#""}"#);
}

/// Appends `{"MessageType":"joinmsg","Reciever":"<prefix><room>"}`.
pub fn write_join(out: &mut Vec<u8>, prefix: &str, room: u32) {
    out.extend_from_slice(br#"{"MessageType":"joinmsg","Reciever":""#);
    out.extend_from_slice(prefix.as_bytes());
    push_decimal(out, room.into());
    out.extend_from_slice(br#""}"#);
}

/// Appends a room message to `<prefix><room>` carrying `data` (already JSON-safe); the
/// server stamps the sender.
pub fn write_room(out: &mut Vec<u8>, prefix: &str, room: u32, data: &[u8]) {
    out.extend_from_slice(br#"{"MessageType":"roommsg","Data":""#);
    out.extend_from_slice(data);
    out.extend_from_slice(br#"","Reciever":""#);
    out.extend_from_slice(prefix.as_bytes());
    push_decimal(out, room.into());
    out.extend_from_slice(br#""}"#);
}

/// Appends a timed `Data` value, `t=<intended ns>;l=<lag ns>;s=<sender>:<seq>;`, padded
/// with `x` to `payload` bytes (it is longer when `payload` is too small to hold the
/// marker). The recipient measures latency from the intended time (what a user would
/// see, the load generator's own delay included) and from the actual send (`t + l`).
pub fn write_chat_data(out: &mut Vec<u8>, intended_ns: u64, lag_ns: u64, sender: u32, seq: u32, payload: usize) {
    let start = out.len();
    out.extend_from_slice(b"t=");
    push_decimal(out, intended_ns);
    out.extend_from_slice(b";l=");
    push_decimal(out, lag_ns);
    out.extend_from_slice(b";s=");
    push_decimal(out, sender.into());
    out.push(b':');
    push_decimal(out, seq.into());
    out.push(b';');
    let written = out.len() - start;
    if written < payload {
        out.resize(start + payload, b'x');
    }
}

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Reads a server text frame.
pub fn parse_incoming(payload: &[u8]) -> Incoming<'_> {
    let trimmed = payload.trim_ascii();
    if let Some(chat) = parse_plain_chat(trimmed) {
        return chat;
    }
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
    let (data, reciever, sender) =
        (msg.data.unwrap_or_default(), msg.reciever.unwrap_or_default(), msg.sender.unwrap_or_default());
    let offset = msg.offset.as_deref().and_then(StreamId::parse);
    match &*msg.kind {
        "chatmsg" => Incoming::Chat { data, reciever, sender, offset },
        "roommsg" => Incoming::Room { data, room: reciever, sender },
        "joinmsg" => Incoming::Joined { room: reciever, sender },
        "leavemsg" => Incoming::Left,
        "recoverymsg" => Incoming::Recovery(Recovery {
            outcome: Outcome::of(&data),
            channel: reciever,
            epoch: msg.epoch.as_deref().and_then(StreamId::parse),
            offset,
            count: msg.count,
        }),
        "storedmsg" => Incoming::Stored,
        "errormsg" => Incoming::ServerError(data.into_owned()),
        _ => Incoming::Unexpected,
    }
}

/// A delivered chat or room message in the exact shape the seed and switchboard send,
/// with no escapes in its strings and maybe a history `Offset` last, read without a JSON
/// parser (it is most of what the load generator receives). Anything else is left to
/// serde_json, which reads this shape the same way.
fn parse_plain_chat(text: &[u8]) -> Option<Incoming<'_>> {
    let rest = text.strip_prefix(br#"{"MessageType":""#)?;
    let (room, rest) = if let Some(rest) = rest.strip_prefix(br#"chatmsg","Data":""#) {
        (false, rest)
    } else {
        (true, rest.strip_prefix(br#"roommsg","Data":""#)?)
    };
    let (data, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(br#","Reciever":""#)?;
    let (reciever, rest) = plain_string(rest)?;
    let rest = rest.strip_prefix(br#","Sender":""#)?;
    let (sender, rest) = plain_string(rest)?;
    let offset = match rest.strip_prefix(br#","Offset":""#) {
        Some(rest) => {
            let (offset, rest) = plain_string(rest)?;
            if rest != b"}" {
                return None;
            }
            Some(StreamId::parse(offset)?)
        }
        None if rest == b"}" => None,
        None => return None,
    };
    let (data, reciever, sender) = (Cow::Borrowed(data), Cow::Borrowed(reciever), Cow::Borrowed(sender));
    Some(if room {
        Incoming::Room { data, room: reciever, sender }
    } else {
        Incoming::Chat { data, reciever, sender, offset }
    })
}

/// The contents of a JSON string up to its closing quote, and what follows the quote;
/// `None` if an escape or a control character comes first, or the text is not UTF-8.
fn plain_string(text: &[u8]) -> Option<(&str, &[u8])> {
    let end = text.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if text[end] != b'"' {
        return None;
    }
    Some((std::str::from_utf8(&text[..end]).ok()?, &text[end + 1..]))
}

/// Reads the marker at the start of a chat message's `Data`.
pub fn parse_mark(data: &str) -> Option<Mark> {
    if data.starts_with(LOGIN_MARKER) {
        return Some(Mark::Login);
    }
    let rest = data.strip_prefix("t=")?;
    let (t, rest) = rest.split_once(";l=")?;
    let (lag, rest) = rest.split_once(";s=")?;
    let (sender, rest) = rest.split_once(':')?;
    let (seq, _) = rest.split_once(';')?;
    Some(Mark::Chat {
        intended_ns: t.parse().ok()?,
        lag_ns: lag.parse().ok()?,
        sender: sender.parse().ok()?,
        seq: seq.parse().ok()?,
    })
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
        write_chat_data(&mut data, 123_456_789, 2_500, 42, 7, 64);
        assert_eq!(data.len(), 64);
        let mut out = Vec::new();
        write_chat(&mut out, "u", 42, 9, &data);
        // The server echoes the seed's field order with a trailing newline.
        out.push(b'\n');
        match parse_incoming(&out) {
            Incoming::Chat { data, reciever, sender, offset: None } => {
                assert_eq!(reciever, "u9");
                assert_eq!(sender, "u42");
                let mark = Mark::Chat { intended_ns: 123_456_789, lag_ns: 2_500, sender: 42, seq: 7 };
                assert_eq!(parse_mark(&data), Some(mark));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn small_payload_keeps_the_whole_marker() {
        let mut data = Vec::new();
        write_chat_data(&mut data, 1, 0, 2, 3, 4);
        assert_eq!(data, b"t=1;l=0;s=2:3;");
    }

    #[test]
    fn login_message_and_marker() {
        let mut out = Vec::new();
        write_login(&mut out, "lg-", 5);
        assert_eq!(out, br#"{"MessageType":"loginmsg","Sender":"lg-5"}"#);
        assert_eq!(parse_mark("login;"), Some(Mark::Login));
        assert_eq!(parse_mark("hello"), None);
        assert_eq!(parse_mark("t=1;l=0;s=x:1;"), None);
        // The marker of builds before the lag was carried is not taken for a message.
        assert_eq!(parse_mark("t=1;s=2:1;"), None);
    }

    #[test]
    fn seed_replies_are_recognised() {
        assert_eq!(parse_incoming(b"\"User already exists\"\n"), Incoming::UserExists);
        assert_eq!(
            parse_incoming(br#"{"MessageType":"errormsg","Data":"login first"}"#),
            Incoming::ServerError("login first".into())
        );
        assert_eq!(parse_incoming(b"garbage"), Incoming::Unexpected);
        let recovery =
            br#"{"MessageType":"recoverymsg","Data":"gap","Reciever":"u1","Epoch":"1-0","Offset":"9-2","Count":4}"#;
        let expected = Recovery {
            channel: "u1".into(),
            outcome: Outcome::Gap,
            epoch: Some(StreamId { ms: 1, seq: 0 }),
            offset: Some(StreamId { ms: 9, seq: 2 }),
            count: 4,
        };
        assert_eq!(parse_incoming(recovery), Incoming::Recovery(expected));
        let empty =
            br#"{"MessageType":"recoverymsg","Data":"fresh","Reciever":"u1","Epoch":"","Offset":"0-0","Count":0}"#;
        let Incoming::Recovery(r) = parse_incoming(empty) else { panic!("not a recovery") };
        assert_eq!((r.outcome, r.epoch, r.count), (Outcome::Fresh, None, 0));
        let stored = br#"{"MessageType":"storedmsg","Reciever":"u2","Data":"x","Offset":"5-0"}"#;
        assert_eq!(parse_incoming(stored), Incoming::Stored);
    }

    #[test]
    fn the_plain_chat_shape_reads_as_serde_reads_it() {
        let serde = |text: &[u8]| match serde_json::from_slice::<WireMessage<'_>>(text.trim_ascii()) {
            Ok(m) if m.kind == "chatmsg" => Some((
                m.data.unwrap_or_default().into_owned(),
                m.reciever.unwrap_or_default().into_owned(),
                m.sender.unwrap_or_default().into_owned(),
                m.offset.as_deref().and_then(StreamId::parse),
            )),
            _ => None,
        };
        let cases: [&[u8]; 12] = [
            br#"{"MessageType":"chatmsg","Data":"x","Reciever":"u9","Sender":"u4","Offset":"17-3"}"#,
            br#"{"MessageType":"chatmsg","Data":"x","Reciever":"u9","Sender":"u4","Offset":"17-3"}}"#,
            br#"{"MessageType":"chatmsg","Data":"x","Reciever":"u9","Sender":"u4","Offset":"bad"}"#,
            br#"{"MessageType":"chatmsg","Data":"t=1;s=2:3;xx","Reciever":"u9","Sender":"u42"}"#,
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"\",\"Reciever\":\"u9\",\"Sender\":\"u4\"}\n",
            "{\"MessageType\":\"chatmsg\",\"Data\":\"\u{e9}t\u{e9}\",\"Reciever\":\"b\",\"Sender\":\"a\"}".as_bytes(),
            br#"{"MessageType":"chatmsg","Data":"a\"b","Reciever":"u9","Sender":"u4"}"#,
            br#"{"MessageType":"chatmsg","Data":"\u003c","Reciever":"u9","Sender":"u4"}"#,
            br#"{"MessageType":"chatmsg","Data":"x","Reciever":"u9","Sender":"u4","Extra":1}"#,
            br#"{"MessageType":"chatmsg","Data":"x","Reciever":"u9"}"#,
            br#"{"MessageType":"chatmsg","Data":"x","Reciever":"u9","Sender":"u4"}}"#,
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"a\tb\",\"Reciever\":\"u9\",\"Sender\":\"u4\"}",
        ];
        for text in cases {
            let fast = match parse_incoming(text) {
                Incoming::Chat { data, reciever, sender, offset } => {
                    Some((data.into_owned(), reciever.into_owned(), sender.into_owned(), offset))
                }
                _ => None,
            };
            assert_eq!(fast, serde(text), "{}", String::from_utf8_lossy(text));
        }
        assert!(parse_plain_chat(cases[3]).is_some() && parse_plain_chat(cases[6]).is_none());
        assert!(parse_plain_chat(cases[0]).is_some(), "a chat with its offset is read without serde");
    }

    #[test]
    fn room_messages_and_joins_read_as_the_node_writes_them() {
        let mut data = Vec::new();
        write_chat_data(&mut data, 5, 0, 3, 1, 16);
        let line = format!(
            "{{\"MessageType\":\"roommsg\",\"Data\":\"{}\",\"Reciever\":\"room2\",\"Sender\":\"u3\"}}\n",
            String::from_utf8_lossy(&data)
        );
        let Incoming::Room { data, room, sender } = parse_incoming(line.as_bytes()) else { panic!("{line}") };
        assert_eq!((room.as_ref(), sender.as_ref()), ("room2", "u3"));
        assert_eq!(parse_mark(&data), Some(Mark::Chat { intended_ns: 5, lag_ns: 0, sender: 3, seq: 1 }));
        let join = br#"{"MessageType":"joinmsg","Data":"","Reciever":"room2","Sender":"u3"}"#;
        assert_eq!(parse_incoming(join), Incoming::Joined { room: "room2".into(), sender: "u3".into() });
        let mut out = Vec::new();
        write_join(&mut out, "room", 2);
        assert_eq!(out, br#"{"MessageType":"joinmsg","Reciever":"room2"}"#);
        out.clear();
        write_room(&mut out, "room", 2, b"hi");
        assert_eq!(out, br#"{"MessageType":"roommsg","Data":"hi","Reciever":"room2"}"#);
    }

    #[test]
    fn decimals_are_written_like_display() {
        for n in [0u64, 7, 10, 99, 1_000_000_007, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn names_map_back_to_indices() {
        assert_eq!(index_of_name("u17", "u"), Some(17));
        assert_eq!(index_of_name("v17", "u"), None);
        assert_eq!(index_of_name("u", "u"), None);
    }
}
