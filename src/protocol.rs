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

use crate::names::{self, Refusal};

pub use self::escape::push_json_string;
use self::wire::Wire;

mod escape;
mod wire;

pub const LOGIN: &str = "loginmsg";
pub const CHAT: &str = "chatmsg";
pub const WHOAMI: &str = "whoamimsg";
pub const REFRESH: &str = "refreshmsg";
pub const ERROR: &str = "errormsg";

/// Every `MessageType` a client may send, for the error that lists them.
const REQUEST_TYPES: [&str; 4] = [LOGIN, CHAT, WHOAMI, REFRESH];

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
}

/// Why a text message was refused; sent back as an `errormsg`.
#[derive(Debug, PartialEq, Eq)]
pub enum RequestError {
    BadJson(String),
    UnknownType(String),
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
            RequestError::NoRecipient => f.write_str("chatmsg needs a non-empty Reciever"),
        }
    }
}

/// Why a name was refused, in words, `what` being the field it came in.
fn describe_refusal(f: &mut fmt::Formatter<'_>, what: &str, why: &Refusal) -> fmt::Result {
    match why {
        Refusal::Empty if what == "Sender" => f.write_str("loginmsg needs a non-empty Sender"),
        Refusal::Empty => write!(f, "{what} is empty"),
        Refusal::TooLong(max) => write!(f, "{what} is longer than {max} bytes"),
        Refusal::Control => write!(f, "{what} must not contain control characters"),
        Refusal::Invisible(c) => {
            write!(f, "{what} must not contain invisible or format characters (U+{:04X})", u32::from(*c))
        }
        Refusal::Bidi(c) => write!(f, "{what} must not contain bidirectional controls (U+{:04X})", u32::from(*c)),
        Refusal::Unassigned(c) => {
            write!(f, "{what} must not contain unassigned or private-use characters (U+{:04X})", u32::from(*c))
        }
        Refusal::Blank => write!(f, "{what} must not be only whitespace"),
        Refusal::EdgeSpace => write!(f, "{what} must not begin or end with whitespace"),
        Refusal::StrayMark => write!(f, "{what} must not begin a word with a combining mark"),
        Refusal::PiledMarks => write!(f, "{what} must not pile up combining marks"),
        Refusal::MixedScripts => {
            write!(f, "{what} mixes scripts the way look-alike names do (Latin with Cyrillic or Greek, say): use one")
        }
    }
}

/// Why a token was refused, in the client's words (an `errormsg`, then
/// close 1008 with [`TokenRefusal::close_reason`]).
#[derive(Debug, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Authenticated mode, and no token came.
    Missing,
    TooLong(usize),
    /// Not three base64url parts of JSON.
    Malformed,
    /// Signed with an algorithm this node's key does not allow (`none`, or
    /// HS256 against a public key).
    Algorithm {
        got: String,
        accepted: &'static str,
    },
    /// The signature does not verify.
    Forged,
    Expired,
    NotYetValid,
    IssuedInFuture,
    NoExpiry,
    NoSubject,
    WrongAudience,
    /// The `sub` is not a name the profile accepts.
    BadSubject(Refusal),
}

impl TokenRefusal {
    /// The reason in the close frame: short, no client data.
    pub fn close_reason(&self) -> &'static str {
        match self {
            TokenRefusal::Missing => "token missing",
            TokenRefusal::Malformed | TokenRefusal::TooLong(_) => "token malformed",
            TokenRefusal::Forged => "token forged",
            TokenRefusal::Expired => "token expired",
            _ => "token refused",
        }
    }
}

impl fmt::Display for TokenRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenRefusal::Missing => f.write_str(
                "token missing: this node logs in with signed tokens: {\"MessageType\":\"loginmsg\",\"Data\":\"<JWT>\"}",
            ),
            TokenRefusal::TooLong(max) => write!(f, "token malformed: longer than {max} bytes"),
            TokenRefusal::Malformed => f.write_str("token malformed: expected a JWT (three base64url parts joined by dots)"),
            TokenRefusal::Algorithm { got, accepted } => {
                write!(f, "token refused: algorithm {got:?} is not accepted here (only {accepted})")
            }
            TokenRefusal::Forged => f.write_str("token forged: its signature does not verify"),
            TokenRefusal::Expired => f.write_str("token expired"),
            TokenRefusal::NotYetValid => f.write_str("token refused: not valid yet (nbf)"),
            TokenRefusal::IssuedInFuture => f.write_str("token refused: issued in the future (iat)"),
            TokenRefusal::NoExpiry => f.write_str("token refused: no exp claim (only tokens that expire are taken)"),
            TokenRefusal::NoSubject => f.write_str("token refused: no sub claim (the user name)"),
            TokenRefusal::WrongAudience => f.write_str("token refused: its aud is not this service"),
            TokenRefusal::BadSubject(why) => {
                f.write_str("token refused: ")?;
                describe_refusal(f, "its sub", why)
            }
        }
    }
}

/// What went wrong with a valid request, in the words the client gets
/// (an `errormsg`). Every such text lives here, whoever found the failure.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure<'a> {
    /// A chat message from a connection that has not logged in.
    LogInFirst,
    /// The same, to a node in authenticated mode.
    LogInWithTokenFirst,
    /// A second login on a logged-in connection.
    AlreadyLoggedIn(&'a str),
    /// Nobody in reach holds the recipient.
    NotOnline(&'a str),
    /// The message was not sent: too much waits for the link between nodes.
    LinkDown,
    /// The `Sender` of a login is not a name the profile accepts.
    BadName(Refusal),
    /// A token was refused (the connection is then closed).
    Token(&'a TokenRefusal),
    /// A refresh with a token for someone else: (the token's user, the connection's).
    OtherUser(&'a str, &'a str),
    /// The connection's token ran out (the connection is then closed).
    TokenRanOut,
    /// A `refreshmsg` to a node without tokens.
    OpenMode,
    /// The message was not sent: the recipient's reactor has too much queued.
    RecipientBusy(&'a str),
    /// The connection sends over its message rate; what it sends is dropped.
    RateLimited { rate: u32, burst: u32 },
    /// The connection tried more logins than it may.
    TooManyLogins(u8),
    /// The connection did not log in within the login timeout (seconds).
    LoginTimeout(u64),
    /// The link between nodes failed with the message unconfirmed.
    Lost(&'a str),
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::LogInFirst => f.write_str("log in first: {\"MessageType\":\"loginmsg\",\"Sender\":\"NAME\"}"),
            Failure::LogInWithTokenFirst => {
                f.write_str("log in first: {\"MessageType\":\"loginmsg\",\"Data\":\"<JWT>\"}")
            }
            Failure::AlreadyLoggedIn(name) => write!(f, "already logged in as {name:?}"),
            Failure::NotOnline(name) => write!(f, "recipient {name:?} is not online"),
            Failure::LinkDown => f.write_str("message dropped: the link between nodes is down, try again later"),
            Failure::BadName(why) => describe_refusal(f, "Sender", why),
            Failure::Token(why) => why.fmt(f),
            Failure::OtherUser(theirs, ours) => {
                write!(f, "token refused: it is for {theirs:?}, this connection is logged in as {ours:?}")
            }
            Failure::TokenRanOut => {
                f.write_str("token expired: send {\"MessageType\":\"refreshmsg\",\"Data\":\"<JWT>\"} before it does")
            }
            Failure::OpenMode => f.write_str("refreshmsg: this node takes no tokens (it runs in open mode)"),
            Failure::RecipientBusy(name) => {
                write!(f, "message dropped: too many messages are waiting for {name:?}, try again later")
            }
            Failure::RateLimited { rate, burst } => write!(
                f,
                "slow down: over {rate} messages/s (bursts of {burst}); messages are dropped, and a client that goes on is disconnected"
            ),
            Failure::TooManyLogins(max) => write!(f, "too many login attempts: at most {max} per connection"),
            Failure::LoginTimeout(secs) => write!(f, "no login within {secs} s: closing"),
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
        other => Err(RequestError::UnknownType(other.into())),
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
    }

    #[test]
    fn refuses_bad_requests_with_a_reason() {
        assert!(matches!(parse("{nope"), Err(RequestError::BadJson(_))));
        assert!(matches!(parse(r#"{"MessageType":5}"#), Err(RequestError::BadJson(_))));
        assert!(matches!(parse(r#"["chatmsg","x","bob"]"#), Err(RequestError::BadJson(_))));
        assert_eq!(parse(r#"{"MessageType":"x"}"#), Err(RequestError::UnknownType("x".into())));
        assert_eq!(parse(r#"{"MessageType":"chatmsg","Data":"x"}"#), Err(RequestError::NoRecipient));
    }

    #[test]
    fn name_and_token_refusals_read_well() {
        assert_eq!(Failure::BadName(Refusal::Empty).to_string(), "loginmsg needs a non-empty Sender");
        assert_eq!(Failure::BadName(Refusal::TooLong(8)).to_string(), "Sender is longer than 8 bytes");
        assert_eq!(
            Failure::BadName(Refusal::Bidi('\u{202E}')).to_string(),
            "Sender must not contain bidirectional controls (U+202E)"
        );
        let sub = TokenRefusal::BadSubject(Refusal::Control);
        assert_eq!(sub.to_string(), "token refused: its sub must not contain control characters");
        assert_eq!(TokenRefusal::Expired.close_reason(), "token expired");
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
