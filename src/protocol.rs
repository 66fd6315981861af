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

use serde::Deserialize;

pub const LOGIN: &str = "loginmsg";
pub const CHAT: &str = "chatmsg";
pub const ERROR: &str = "errormsg";

/// The seed's reply to a login whose name is taken, as gorilla's `WriteJSON` sends it.
pub const USER_EXISTS: &[u8] = b"\"User already exists\"\n";

/// The seed's message struct, every field optional as in Go (absent = "").
#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(rename = "MessageType", borrow, default)]
    message_type: Option<Cow<'a, str>>,
    #[serde(rename = "Data", borrow, default)]
    data: Option<Cow<'a, str>>,
    #[serde(rename = "Reciever", borrow, default)]
    reciever: Option<Cow<'a, str>>,
    #[serde(rename = "Sender", borrow, default)]
    sender: Option<Cow<'a, str>>,
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
                write!(f, "unknown MessageType {t:?}: expected \"loginmsg\" or \"chatmsg\"")
            }
            RequestError::EmptyName => f.write_str("loginmsg needs a non-empty Sender"),
            RequestError::NameTooLong(max) => write!(f, "Sender is longer than {max} bytes"),
            RequestError::NameHasControl => f.write_str("Sender must not contain control characters"),
            RequestError::NoRecipient => f.write_str("chatmsg needs a non-empty Reciever"),
        }
    }
}

/// Parses one text message.
///
/// # Errors
/// A [`RequestError`] saying what is wrong, for the client.
pub fn parse(text: &[u8], max_name_len: usize) -> Result<Request<'_>, RequestError> {
    let wire: Wire<'_> = serde_json::from_slice(text).map_err(|e| RequestError::BadJson(e.to_string()))?;
    match wire.message_type.as_deref().unwrap_or("") {
        LOGIN => {
            let name = wire.sender.unwrap_or_default();
            check_name(&name, max_name_len)?;
            Ok(Request::Login { name })
        }
        CHAT => {
            let to = wire.reciever.unwrap_or_default();
            if to.is_empty() {
                return Err(RequestError::NoRecipient);
            }
            Ok(Request::Chat { to, data: wire.data.unwrap_or_default() })
        }
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
    (wire.message_type.as_deref() == Some(CHAT)).then(|| wire.reciever.unwrap_or_default().into_owned())
}

/// Re-encodes a chat message received from the broadcast channel, in the seed's
/// format (a seed node publishes `json.Marshal` output; the Sender is theirs).
pub fn reencode_chat(payload: &[u8], out: &mut Vec<u8>) -> Option<String> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    if wire.message_type.as_deref() != Some(CHAT) {
        return None;
    }
    let to = wire.reciever.unwrap_or_default();
    encode_chat(out, &wire.data.unwrap_or_default(), &to, &wire.sender.unwrap_or_default());
    Some(to.into_owned())
}

/// Appends `s` as a JSON string escaped exactly as Go's `encoding/json`:
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes, `\n \r \t` short, other
/// control characters as `\u00XX`.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x00..=0x1F | b'<' | b'>' | b'&' => Some(b""),
            // U+2028 and U+2029 are E2 80 A8 / E2 80 A9.
            0xE2 if bytes.get(i + 1) == Some(&0x80) && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9)) => Some(b""),
            _ => None,
        };
        let Some(short) = escape else {
            i += 1;
            continue;
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            let (code, width) =
                if b == 0xE2 { (0x2028 + u32::from(bytes[i + 2] - 0xA8), 3) } else { (u32::from(b), 1) };
            out.extend_from_slice(b"\\u");
            for shift in [12, 8, 4, 0] {
                out.push(HEX[((code >> shift) & 0xF) as usize]);
            }
            i += width;
        } else {
            out.extend_from_slice(short);
            i += 1;
        }
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

    #[test]
    fn parses_the_seed_messages() {
        assert_eq!(
            parse(br#"{"MessageType":"loginmsg","Sender":"alice"}"#, 64),
            Ok(Request::Login { name: "alice".into() })
        );
        assert_eq!(
            parse(br#"{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"mallory","Extra":1}"#, 64),
            Ok(Request::Chat { to: "bob".into(), data: "hi".into() })
        );
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        assert!(matches!(parse(b"{nope", 64), Err(RequestError::BadJson(_))));
        assert!(matches!(parse(br#"{"MessageType":5}"#, 64), Err(RequestError::BadJson(_))));
        assert_eq!(parse(br#"{"MessageType":"x"}"#, 64), Err(RequestError::UnknownType("x".into())));
        assert_eq!(parse(br#"{"MessageType":"loginmsg"}"#, 64), Err(RequestError::EmptyName));
        assert_eq!(parse(br#"{"MessageType":"loginmsg","Sender":"abcdef"}"#, 5), Err(RequestError::NameTooLong(5)));
        assert_eq!(parse(br#"{"MessageType":"loginmsg","Sender":"a\nb"}"#, 64), Err(RequestError::NameHasControl));
        assert_eq!(parse(br#"{"MessageType":"chatmsg","Data":"x"}"#, 64), Err(RequestError::NoRecipient));
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
