//! What went wrong, in the words the client reads: every `errormsg` text
//! the node sends, whoever found the failure, and the close reasons of
//! refused tokens.

use std::fmt;

use crate::names::Refusal;

/// Why a name was refused, in words, `what` being the field it came in.
pub(super) fn describe_refusal(f: &mut fmt::Formatter<'_>, what: &str, why: &Refusal) -> fmt::Result {
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
        Refusal::Comma => write!(f, "{what} must not contain a comma (lists of names are comma-separated)"),
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
    RateLimited {
        rate: u32,
        burst: u32,
    },
    /// The connection tried more logins than it may.
    TooManyLogins(u8),
    /// The connection did not log in within the login timeout (seconds).
    LoginTimeout(u64),
    /// The link between nodes failed with the message unconfirmed.
    Lost(&'a str),
    /// A room request's room name is not one the name profile accepts.
    BadRoom(Refusal),
    /// A `roommsg` or `leavemsg` for a room the connection is not in.
    NotInRoom(&'a str),
    AlreadyInRoom(&'a str),
    /// The connection is in as many rooms as it may be.
    TooManyRooms(usize),
    /// The room has as many members on this node as it may.
    RoomFull(&'a str, usize),
    /// A `presencemsg` asked about more names than one answer holds.
    TooManyNames(usize),
    /// A message for a channel with history is longer than an entry may be.
    TooLongForHistory(usize),
    /// The history of a channel (a user's or a room's) could not be read:
    /// Redis is unreachable. Live messages follow as usual.
    HistoryUnavailable(&'a str),
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
            Failure::BadRoom(why) => describe_refusal(f, "the room name", why),
            Failure::NotInRoom(room) => write!(f, "not in room {room:?}: join it first"),
            Failure::AlreadyInRoom(room) => write!(f, "already in room {room:?}"),
            Failure::TooManyRooms(max) => write!(f, "too many rooms: at most {max} per connection"),
            Failure::RoomFull(room, max) => write!(f, "room {room:?} is full on this node: at most {max} members"),
            Failure::TooManyNames(max) => write!(f, "presencemsg asks about too many names: at most {max}"),
            Failure::TooLongForHistory(max) => {
                write!(f, "message too long for a channel with history: at most {max} bytes")
            }
            Failure::HistoryUnavailable(channel) => {
                write!(f, "history of {channel:?} is unavailable (Redis cannot be reached): nothing was replayed")
            }
            Failure::Lost(name) => {
                write!(f, "message to {name:?} may not have been delivered: the link between nodes failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
