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

use crate::names;

pub use self::api::{ApiError, ApiResult};
pub use self::escape::push_json_string;
pub use self::failure::{Failure, TokenRefusal};
pub use self::history::{encode_recovery, encode_stored, offset_of, resume_of, Outcome, Resume, StreamId};
pub use self::rooms::{encode_members, encode_presence, encode_room, ROOM_KINDS};
use self::wire::Wire;

mod api;
mod escape;
mod failure;
mod history;
mod rooms;
mod wire;

pub const LOGIN: &str = "loginmsg";
pub const CHAT: &str = "chatmsg";
pub const WHOAMI: &str = "whoamimsg";
pub const REFRESH: &str = "refreshmsg";
pub const JOIN: &str = "joinmsg";
pub const LEAVE: &str = "leavemsg";
pub const ROOM: &str = "roommsg";
pub const PRESENCE: &str = "presencemsg";
pub const MEMBERS: &str = "membersmsg";
pub const ERROR: &str = "errormsg";

/// Every `MessageType` a client may send, for the error that lists them.
const REQUEST_TYPES: [&str; 9] = [LOGIN, CHAT, WHOAMI, REFRESH, JOIN, LEAVE, ROOM, PRESENCE, MEMBERS];

/// The close reason sent with [`crate::codec::close::DISCONNECTED`].
pub const DISCONNECTED_REASON: &str = "disconnected by the server";

/// The seed's reply to a login whose name is taken, as gorilla's `WriteJSON` sends it.
pub const USER_EXISTS: &[u8] = b"\"User already exists\"\n";

/// A valid request from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `name` is the `Sender` (open mode), `token` the `Data` (a JWT, in
    /// authenticated mode); the node judges them, knowing its mode.
    Login { name: Cow<'a, str>, token: Cow<'a, str> },
    /// `Sender` is ignored: the server stamps the logged-in name.
    Chat { to: Cow<'a, str>, data: Cow<'a, str> },
    /// Asks which name the connection is logged in as.
    WhoAmI,
    /// A new token (`Data`) for the logged-in user, before the current one expires.
    Refresh { token: Cow<'a, str> },
    /// Joins the room named in `Reciever`.
    Join { room: Cow<'a, str> },
    /// Leaves it.
    Leave { room: Cow<'a, str> },
    /// To every member of the room in `Reciever`, the sender included.
    Room { room: Cow<'a, str>, data: Cow<'a, str> },
    /// Which of the users named in `Reciever` (comma-separated) are online.
    Presence { names: Cow<'a, str> },
    /// Who is in the room named in `Reciever`.
    Members { room: Cow<'a, str> },
}

/// Why a text message was refused; sent back as an `errormsg`.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    BadJson(String),
    UnknownType(String),
    NoRecipient,
    /// A room request (its `MessageType`) without a room in `Reciever`.
    NoRoom(&'static str),
    NoNames,
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
            RequestError::NoRecipient => f.write_str("chatmsg needs a non-empty Reciever"),
            RequestError::NoRoom(kind) => write!(f, "{kind} needs a non-empty Reciever (the room)"),
            RequestError::NoNames => {
                f.write_str("presencemsg needs a non-empty Reciever: the names to look up, separated by commas")
            }
        }
    }
}

/// Parses one text message. Takes `&str` (the frame's UTF-8 is checked once,
/// by the caller), so strings are not validated a second time inside JSON.
///
/// # Errors
/// A [`RequestError`] saying what is wrong, for the client.
pub fn parse(text: &str) -> Result<Request<'_>, RequestError> {
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| RequestError::BadJson(e.to_string()))?;
    match &*wire.message_type {
        LOGIN => Ok(Request::Login { name: wire.sender, token: wire.data }),
        CHAT => {
            if wire.reciever.is_empty() {
                return Err(RequestError::NoRecipient);
            }
            Ok(Request::Chat { to: wire.reciever, data: wire.data })
        }
        WHOAMI => Ok(Request::WhoAmI),
        REFRESH => Ok(Request::Refresh { token: wire.data }),
        JOIN => Ok(Request::Join { room: room_of(wire.reciever, JOIN)? }),
        LEAVE => Ok(Request::Leave { room: room_of(wire.reciever, LEAVE)? }),
        ROOM => Ok(Request::Room { room: room_of(wire.reciever, ROOM)?, data: wire.data }),
        MEMBERS => Ok(Request::Members { room: room_of(wire.reciever, MEMBERS)? }),
        PRESENCE if wire.reciever.is_empty() => Err(RequestError::NoNames),
        PRESENCE => Ok(Request::Presence { names: wire.reciever }),
        other => Err(RequestError::UnknownType(other.into())),
    }
}

/// The room a room request names (its `Reciever`).
fn room_of<'a>(reciever: Cow<'a, str>, kind: &'static str) -> Result<Cow<'a, str>, RequestError> {
    if reciever.is_empty() {
        Err(RequestError::NoRoom(kind))
    } else {
        Ok(reciever)
    }
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

/// The key of the recipient named in an encoded chat message (for the
/// broadcast bus, which receives whole messages). `None` when `payload` is
/// not a chat message.
pub fn recipient_of(payload: &[u8]) -> Option<String> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    (wire.message_type == CHAT).then(|| names::key(&wire.reciever).to_string())
}

/// Re-encodes a chat message received from the broadcast channel, in the seed's
/// format (a seed node publishes `json.Marshal` output; the Sender is theirs).
/// Returns the key of its recipient (a seed node writes names as its users typed them).
pub fn reencode_chat(payload: &[u8], out: &mut Vec<u8>) -> Option<String> {
    let wire: Wire<'_> = serde_json::from_slice(payload).ok()?;
    if wire.message_type != CHAT {
        return None;
    }
    encode_chat(out, &wire.data, &wire.reciever, &wire.sender);
    Some(names::key(&wire.reciever).to_string())
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
    fn plain_fields_are_borrowed_and_null_reads_as_empty() {
        let text = r#"{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":null}"#;
        let Ok(Request::Chat { to, data }) = parse(text) else { panic!("a chat request") };
        assert!(matches!((&to, &data), (Cow::Borrowed("bob"), Cow::Borrowed("hi"))));
        let escaped = r#"{"MessageType":"chatmsg","Data":"a\"b","Reciever":"bob"}"#;
        assert_eq!(parse(escaped), Ok(Request::Chat { to: "bob".into(), data: "a\"b".into() }));
        assert_eq!(parse(r#"{"MessageType":null}"#), Err(RequestError::UnknownType(String::new())));
    }

    #[test]
    fn parses_the_seed_messages_and_ours() {
        assert_eq!(
            parse(r#"{"MessageType":"loginmsg","Sender":"alice"}"#),
            Ok(Request::Login { name: "alice".into(), token: "".into() })
        );
        assert_eq!(
            parse(r#"{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"mallory","Extra":1}"#),
            Ok(Request::Chat { to: "bob".into(), data: "hi".into() })
        );
        assert_eq!(
            parse(r#"{"MessageType":"refreshmsg","Data":"a.b.c"}"#),
            Ok(Request::Refresh { token: "a.b.c".into() })
        );
        assert_eq!(parse(r#"{"messagetype":"whoamimsg"}"#), Ok(Request::WhoAmI));
        assert_eq!(
            parse(r#"{"MessageType":"joinmsg","Reciever":"lobby"}"#),
            Ok(Request::Join { room: "lobby".into() })
        );
        assert_eq!(
            parse(r#"{"MessageType":"roommsg","Data":"hi","Reciever":"lobby","Sender":"x"}"#),
            Ok(Request::Room { room: "lobby".into(), data: "hi".into() })
        );
        assert_eq!(
            parse(r#"{"MessageType":"presencemsg","Reciever":"a,b"}"#),
            Ok(Request::Presence { names: "a,b".into() })
        );
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        assert!(matches!(parse("{nope"), Err(RequestError::BadJson(_))));
        assert!(matches!(parse(r#"{"MessageType":5}"#), Err(RequestError::BadJson(_))));
        assert!(matches!(parse(r#"["chatmsg","x","bob"]"#), Err(RequestError::BadJson(_))));
        assert_eq!(parse(r#"{"MessageType":"x"}"#), Err(RequestError::UnknownType("x".into())));
        assert_eq!(parse(r#"{"MessageType":"chatmsg","Data":"x"}"#), Err(RequestError::NoRecipient));
        assert_eq!(parse(r#"{"MessageType":"roommsg","Data":"x"}"#), Err(RequestError::NoRoom("roommsg")));
        assert_eq!(RequestError::NoRoom("joinmsg").to_string(), "joinmsg needs a non-empty Reciever (the room)");
        assert_eq!(parse(r#"{"MessageType":"presencemsg"}"#), Err(RequestError::NoNames));
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
