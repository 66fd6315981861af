//! The seed's chat protocol: JSON text messages with its field names,
//! misspelling included, and replies byte-identical to the seed's Go server.
//!
//! In:  `{"MessageType":"loginmsg","Sender":"alice"}`
//!      `{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"alice"}`
//! Out: the chat message in the seed's field order, strings escaped as Go's
//! `encoding/json` does, with the newline gorilla's `WriteJSON` adds; a duplicate
//! login gets the JSON string `"User already exists"`; errors get
//! `{"MessageType":"errormsg","Data":"..."}`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

pub const LOGIN: &str = "loginmsg";
pub const CHAT: &str = "chatmsg";
pub const WHOAMI: &str = "whoamimsg";
pub const ERROR: &str = "errormsg";

/// Every `MessageType` a client may send, for the error that lists them.
const REQUEST_TYPES: [&str; 3] = [LOGIN, CHAT, WHOAMI];

/// The seed's reply to a login whose name is taken, as gorilla's `WriteJSON` sends it.
pub const USER_EXISTS: &[u8] = b"\"User already exists\"\n";

/// The seed's message struct, every field optional as in Go (absent or null = "").
/// Fields borrow from the message unless they hold escapes: no allocation for
/// a plain message (serde's `Option<Cow<str>>` would always allocate a `String`).
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "MessageType", borrow, default, deserialize_with = "str_or_null")]
    message_type: Cow<'a, str>,
    #[serde(rename = "Data", borrow, default, deserialize_with = "str_or_null")]
    data: Cow<'a, str>,
    #[serde(rename = "Reciever", borrow, default, deserialize_with = "str_or_null")]
    reciever: Cow<'a, str>,
    #[serde(rename = "Sender", borrow, default, deserialize_with = "str_or_null")]
    sender: Cow<'a, str>,
}

/// A JSON string, borrowed where it has no escapes, or `null` as "" (as Go reads it).
fn str_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'de, str>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Cow<'de, str>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Cow::Owned(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Cow::Borrowed(""))
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(Text)
        }
    }
    d.deserialize_option(Text)
}

/// A valid request from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Login {
        name: Cow<'a, str>,
    },
    /// `Sender` is ignored: the server stamps the logged-in name.
    Chat {
        to: Cow<'a, str>,
        data: Cow<'a, str>,
    },
    /// Asks which name the connection is logged in as.
    WhoAmI,
}

/// Why a text message was refused; sent back as an `errormsg`.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    BadJson(String),
    UnknownType(String),
    EmptyName,
    NameTooLong(usize),
    NameHasControl,
    NoRecipient,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::BadJson(e) => write!(f, "invalid JSON: {e}"),
            RequestError::UnknownType(t) => {
                write!(f, "unknown MessageType {t:?}: expected one of ")?;
                for (i, known) in REQUEST_TYPES.iter().enumerate() {
                    write!(f, "{}{known:?}", if i > 0 { ", " } else { "" })?;
                }
                Ok(())
            }
            RequestError::EmptyName => f.write_str("loginmsg needs a non-empty Sender"),
            RequestError::NameTooLong(max) => write!(f, "Sender is longer than {max} bytes"),
            RequestError::NameHasControl => f.write_str("Sender must not contain control characters"),
            RequestError::NoRecipient => f.write_str("chatmsg needs a non-empty Reciever"),
        }
    }
}

/// What went wrong with a valid request, in the words the client gets
/// (an `errormsg`). Every such text lives here, whoever found the failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure<'a> {
    /// A chat message from a connection that has not logged in.
    LogInFirst,
    /// A second login on a logged-in connection.
    AlreadyLoggedIn(&'a str),
    /// Nobody in reach holds the recipient.
    NotOnline(&'a str),
    /// The message was not sent: too much waits for the link between nodes.
    LinkDown,
    /// The link between nodes failed with the message unconfirmed.
    Lost(&'a str),
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::LogInFirst => f.write_str("log in first: {\"MessageType\":\"loginmsg\",\"Sender\":\"NAME\"}"),
            Failure::AlreadyLoggedIn(name) => write!(f, "already logged in as {name:?}"),
            Failure::NotOnline(name) => write!(f, "recipient {name:?} is not online"),
            Failure::LinkDown => f.write_str("message dropped: the link between nodes is down, try again later"),
            Failure::Lost(name) => {
                write!(f, "message to {name:?} may not have been delivered: the link between nodes failed")
            }
        }
    }
}

/// Parses one text message. Takes `&str` (the frame's UTF-8 is checked once,
/// by the caller), so strings are not validated a second time inside JSON.
///
/// # Errors
/// A [`RequestError`] saying what is wrong, for the client.
pub fn parse(text: &str, max_name_len: usize) -> Result<Request<'_>, RequestError> {
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| RequestError::BadJson(e.to_string()))?;
    match &*wire.message_type {
        LOGIN => {
            check_name(&wire.sender, max_name_len)?;
            Ok(Request::Login { name: wire.sender })
        }
        CHAT => {
            if wire.reciever.is_empty() {
                return Err(RequestError::NoRecipient);
            }
            Ok(Request::Chat { to: wire.reciever, data: wire.data })
        }
        WHOAMI => Ok(Request::WhoAmI),
        other => Err(RequestError::UnknownType(other.into())),
    }
}

fn check_name(name: &str, max: usize) -> Result<(), RequestError> {
    if name.is_empty() {
        return Err(RequestError::EmptyName);
    }
    if name.len() > max {
        return Err(RequestError::NameTooLong(max));
    }
    if name.chars().any(char::is_control) {
        return Err(RequestError::NameHasControl);
    }
    Ok(())
}

/// Appends the chat message a recipient receives, in the seed's field order.
pub fn encode_chat(out: &mut Vec<u8>, data: &str, to: &str, from: &str) {
    out.extend_from_slice(b"{\"MessageType\":\"chatmsg\",\"Data\":");
    push_json_string(out, data);
    out.extend_from_slice(b",\"Reciever\":");
    push_json_string(out, to);
    out.extend_from_slice(b",\"Sender\":");
    push_json_string(out, from);
    out.extend_from_slice(b"}\n");
}

/// Appends the answer to `whoamimsg`: the logged-in name in `Data`, empty
/// when the connection has not logged in.
pub fn encode_whoami(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"{\"MessageType\":\"whoamimsg\",\"Data\":");
    push_json_string(out, name);
    out.extend_from_slice(b"}\n");
}

/// Appends an error reply.
pub fn encode_error(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(b"{\"MessageType\":\"errormsg\",\"Data\":");
    push_json_string(out, message);
    out.extend_from_slice(b"}\n");
}

/// The recipient named in an encoded chat message (for the broadcast bus,
/// which receives whole messages). `None` when `payload` is not a chat message.
pub fn recipient_of(payload: &[u8]) -> Option<String> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    (wire.message_type == CHAT).then(|| wire.reciever.into_owned())
}

/// Re-encodes a chat message received from the broadcast channel, in the seed's
/// format (a seed node publishes `json.Marshal` output; the Sender is theirs).
pub fn reencode_chat(payload: &[u8], out: &mut Vec<u8>) -> Option<String> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    if wire.message_type != CHAT {
        return None;
    }
    encode_chat(out, &wire.data, &wire.reciever, &wire.sender);
    Some(wire.reciever.into_owned())
}

/// What a byte needs inside a Go-escaped JSON string: 0 nothing, a letter for
/// its short escape (`\"`, `\\`, `\n`, `\r`, `\t`), `U` for `\u00XX`, and `E`
/// for 0xE2, the lead byte of U+2028 and U+2029. A table lookup per byte keeps
/// the common run of plain bytes to a load and a branch.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'U';
        b += 1;
    }
    table[b'<' as usize] = b'U';
    table[b'>' as usize] = b'U';
    table[b'&' as usize] = b'U';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0xE2] = b'E';
    table
};

/// The index of the first byte at or after `i` that may need escaping, eight
/// bytes at a time (SWAR): a word passes when no byte is below 0x20, one of
/// `" \\ < > &`, or 0xE2. The lowest flagged byte is exact (a borrow only
/// spills upwards); a flagged 0xE2 that starts no U+2028/9 goes back to the loop.
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    /// High bit set in (at least the lowest of) the bytes of `v` that are zero.
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let flagged = (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
            | zero_bytes(w ^ (ONES * u64::from(b'<')))
            | zero_bytes(w ^ (ONES * u64::from(b'>')))
            | zero_bytes(w ^ (ONES * u64::from(b'&')))
            | zero_bytes(w ^ (ONES * 0xE2));
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && ESCAPE[usize::from(bytes[i])] == 0 {
        i += 1;
    }
    i
}

/// Appends `s` as a JSON string escaped exactly as Go's `encoding/json`:
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes, `\n \r \t` short, other
/// control characters as `\u00XX`.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        i = skip_plain(bytes, i);
        let Some(&b) = bytes.get(i) else { break };
        let kind = ESCAPE[usize::from(b)];
        if kind == 0 {
            i += 1;
            continue;
        }
        let code = match kind {
            // U+2028 and U+2029 are E2 80 A8 / E2 80 A9; other E2 sequences pass.
            b'E' => match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(0x80), Some(&last @ (0xA8 | 0xA9))) => 0x2028 + u32::from(last - 0xA8),
                _ => {
                    i += 1;
                    continue;
                }
            },
            b'U' => u32::from(b),
            short => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&[b'\\', short]);
                i += 1;
                start = i;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(&[
            b'\\',
            b'u',
            HEX[(code >> 12) as usize & 0xF],
            HEX[(code >> 8) as usize & 0xF],
            HEX[(code >> 4) as usize & 0xF],
            HEX[code as usize & 0xF],
        ]);
        i += if code >= 0x2028 { 3 } else { 1 };
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_is_encoded_in_the_seed_order_with_go_escaping() {
        let mut out = Vec::new();
        encode_chat(&mut out, "a\"b\\c\n<&>\u{1}\u{2028}é", "bob", "alice");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"MessageType\":\"chatmsg\",\"Data\":\"a\\\"b\\\\c\\n\\u003c\\u0026\\u003e\\u0001\\u2028é\",\"Reciever\":\"bob\",\"Sender\":\"alice\"}\n"
        );
    }

    #[test]
    fn encoded_strings_round_trip_through_a_json_parser() {
        let nasty = "\u{0}\u{1f}\"\\/<>&\u{2028}\u{2029}\u{7f}😀 plain";
        let mut out = Vec::new();
        push_json_string(&mut out, nasty);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, nasty);
    }

    /// The reference: Go's encoding/json rules, one char at a time.
    fn go_escaped(s: &str) -> String {
        let each = |c: char| match c {
            '"' => "\\\"".into(),
            '\\' => "\\\\".into(),
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        };
        format!("\"{}\"", s.chars().map(each).collect::<String>())
    }

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        push_json_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_byte_is_escaped_as_go_does() {
        let mut all: String = (0u32..0x800).filter_map(char::from_u32).collect();
        all.push_str("\u{2027}\u{2028}\u{2029}\u{202a}\u{20ac}\u{e000}😀");
        assert_eq!(escaped(&all), go_escaped(&all));
    }

    #[test]
    fn the_fast_scan_stops_at_the_first_byte_to_escape() {
        for special in ["\"", "\\", "<", ">", "&", "\u{0}", "\u{1f}", "\n", "\u{2028}", "\u{20ac}"] {
            for at in 0..20 {
                let s = format!("{}{special}{}", "é".repeat(at / 2) + &"a".repeat(at % 2), "z".repeat(9));
                assert_eq!(escaped(&s), go_escaped(&s), "{s:?}");
            }
        }
    }

    #[test]
    fn plain_fields_are_borrowed_and_null_reads_as_empty() {
        let text = r#"{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":null}"#;
        let Ok(Request::Chat { to, data }) = parse(text, 64) else { panic!("a chat request") };
        assert!(matches!((&to, &data), (Cow::Borrowed("bob"), Cow::Borrowed("hi"))));
        let escaped = r#"{"MessageType":"chatmsg","Data":"a\"b","Reciever":"bob"}"#;
        assert_eq!(parse(escaped, 64), Ok(Request::Chat { to: "bob".into(), data: "a\"b".into() }));
        assert_eq!(parse(r#"{"MessageType":null}"#, 64), Err(RequestError::UnknownType(String::new())));
    }

    #[test]
    fn parses_the_seed_messages() {
        assert_eq!(
            parse(r#"{"MessageType":"loginmsg","Sender":"alice"}"#, 64),
            Ok(Request::Login { name: "alice".into() })
        );
        assert_eq!(
            parse(r#"{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"mallory","Extra":1}"#, 64),
            Ok(Request::Chat { to: "bob".into(), data: "hi".into() })
        );
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        assert!(matches!(parse("{nope", 64), Err(RequestError::BadJson(_))));
        assert!(matches!(parse(r#"{"MessageType":5}"#, 64), Err(RequestError::BadJson(_))));
        assert_eq!(parse(r#"{"MessageType":"x"}"#, 64), Err(RequestError::UnknownType("x".into())));
        assert_eq!(parse(r#"{"MessageType":"loginmsg"}"#, 64), Err(RequestError::EmptyName));
        assert_eq!(parse(r#"{"MessageType":"loginmsg","Sender":"abcdef"}"#, 5), Err(RequestError::NameTooLong(5)));
        assert_eq!(parse(r#"{"MessageType":"loginmsg","Sender":"a\nb"}"#, 64), Err(RequestError::NameHasControl));
        assert_eq!(parse(r#"{"MessageType":"chatmsg","Data":"x"}"#, 64), Err(RequestError::NoRecipient));
    }

    #[test]
    fn broadcast_payloads_are_reencoded() {
        let seed = br#"{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"gopher"}"#;
        let mut out = Vec::new();
        assert_eq!(reencode_chat(seed, &mut out), Some("bob".into()));
        assert_eq!(&out[..out.len() - 1], &seed[..]);
        assert_eq!(recipient_of(&out), Some("bob".into()));
    }
}
