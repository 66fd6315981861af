//! What the server API answers when a request cannot be served, in the
//! words its caller reads (`{"Error":"..."}`), and the words of what became
//! of a publish or a disconnect (`"Result"`).

use std::fmt;

use super::failure::describe_refusal;
use crate::names::Refusal;

/// Why the server API refused a request.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiError<'a> {
    /// No `Authorization: Bearer KEY`, or another key.
    Unauthorized,
    /// The body is not the JSON document the endpoint takes.
    BadJson(String),
    /// A publish names neither a user nor a room, or both.
    OneTarget,
    /// A field the endpoint needs is missing.
    Missing(&'static str),
    /// A user or room name the name profile refuses (`field`, why).
    BadName(&'static str, Refusal),
    /// `Data` is longer than a client's message may be.
    DataTooLong { len: usize, max: usize },
    /// A query without what the endpoint needs.
    BadQuery(&'static str),
    /// A presence query about more names than one answer holds.
    TooManyNames(usize),
    /// The endpoint needs --redis.
    NeedsRedis(&'static str),
    /// The cluster did not answer in time.
    NoAnswer(u64),
    /// Redis refused or failed a read (history).
    Redis(&'a str),
}

impl fmt::Display for ApiError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::Unauthorized => f.write_str("missing or wrong API key: send Authorization: Bearer KEY"),
            ApiError::BadJson(why) => write!(f, "the body is not the JSON this endpoint takes: {why}"),
            ApiError::OneTarget => {
                f.write_str("name one recipient: \"Reciever\" (a user) or \"Room\" (a room), not both")
            }
            ApiError::Missing(field) => write!(f, "{field} is missing"),
            ApiError::BadName(field, why) => describe_refusal(f, field, why),
            ApiError::DataTooLong { len, max } => {
                write!(f, "Data is {len} bytes: at most {max} (--max-message-size, as for clients)")
            }
            ApiError::BadQuery(takes) => write!(f, "this endpoint takes {takes}"),
            ApiError::TooManyNames(max) => write!(f, "users lists too many names: at most {max}"),
            ApiError::NeedsRedis(what) => write!(f, "{what} needs a node started with --redis"),
            ApiError::NoAnswer(ms) => write!(f, "the cluster did not answer within {ms} ms"),
            ApiError::Redis(why) => write!(f, "Redis: {why}"),
        }
    }
}

/// What became of a publish or a disconnect (`"Result"` of the answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiResult {
    /// Handed to the connection that holds the user (here, or on the node
    /// Redis handed it to).
    Delivered,
    /// A room message handed to this node's members and to the cluster.
    Sent,
    /// Nobody in reach holds the user.
    NotOnline,
    /// Not sent: the user's reactor has too much queued.
    Busy,
    /// Not sent: too much waits for a Redis link that is down.
    Dropped,
    /// The link to Redis failed before Redis confirmed it: it may or may not have arrived.
    Lost,
    /// Queued for Redis (its link may be down), and no confirmation came in time.
    Unconfirmed,
    /// A connection was closed (or is being closed).
    Disconnected,
    /// The user is offline: the message was kept in their history, for
    /// their next login.
    Stored,
}

impl ApiResult {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiResult::Delivered => "delivered",
            ApiResult::Sent => "sent",
            ApiResult::NotOnline => "not online",
            ApiResult::Busy => "dropped: the recipient has too many messages waiting",
            ApiResult::Dropped => "dropped: the link between nodes is down",
            ApiResult::Lost => "lost: the link between nodes failed, it may not have been delivered",
            ApiResult::Unconfirmed => "unconfirmed: queued for Redis, no confirmation in time (it may still arrive)",
            ApiResult::Disconnected => "disconnected",
            ApiResult::Stored => "stored",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_field() {
        assert_eq!(ApiError::BadName("Reciever", Refusal::Empty).to_string(), "Reciever is empty");
        assert_eq!(
            ApiError::DataTooLong { len: 9, max: 8 }.to_string(),
            "Data is 9 bytes: at most 8 (--max-message-size, as for clients)"
        );
    }
}
