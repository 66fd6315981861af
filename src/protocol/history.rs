//! The history messages: the `Offset` a kept message carries, the
//! `recoverymsg` after a login or join, and the `storedmsg` a sender gets
//! for a message kept for a user who is offline.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

use super::push_json_string;

/// What precedes a kept message's offset: it is the last field.
const OFFSET_FIELD: &[u8] = b",\"Offset\":\"";

/// A Redis stream id (`MILLIS-SEQ`), ordered as Redis orders them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamId {
    pub millis: u64,
    pub seq: u64,
}

impl StreamId {
    /// `MILLIS-SEQ` or `MILLIS` (sequence 0); `None` for anything else.
    pub fn parse(text: &[u8]) -> Option<StreamId> {
        let text = std::str::from_utf8(text).ok()?;
        let (millis, seq) = text.split_once('-').unwrap_or((text, "0"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(millis) || !digits(seq) {
            return None;
        }
        Some(StreamId { millis: millis.parse().ok()?, seq: seq.parse().ok()? })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.millis, self.seq)
    }
}

/// The offset of a kept message (its JSON, the newline included), read from
/// its last field; `None` for a message without one.
pub fn offset_of(json: &[u8]) -> Option<StreamId> {
    let body = json.strip_suffix(b"\"}\n")?;
    let start = body.len().saturating_sub(48);
    let at = body[start..].windows(OFFSET_FIELD.len()).rposition(|w| w == OFFSET_FIELD)? + start;
    StreamId::parse(&body[at + OFFSET_FIELD.len()..])
}

/// Where a client's history of a channel left off: the `Offset` and
/// `Epoch` of the last message it saw (both empty when it saw none).
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Resume<'a> {
    #[serde(rename = "Offset", borrow, default)]
    pub offset: Cow<'a, str>,
    #[serde(rename = "Epoch", borrow, default)]
    pub epoch: Cow<'a, str>,
}

/// The `Offset` and `Epoch` of a `loginmsg` or `joinmsg` (read apart from
/// the request, only where history is kept, so other messages pay nothing
/// for them); empty when absent or not strings.
pub fn resume_of(text: &str) -> Resume<'_> {
    // From bytes, not `from_str`: the hot request parser's reader stays the
    // only user of its instantiation (a second one changed how it is inlined,
    // +1% instructions per chat message).
    serde_json::from_slice(text.as_bytes()).unwrap_or_default()
}

/// How a recovery went, the `Data` of a `recoverymsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every message after the offset given was replayed.
    Recovered,
    /// No offset given: only messages kept while the user was offline were replayed.
    Fresh,
    /// The offset is older than what is kept: some messages are gone.
    Gap,
    /// The epoch differs: the history was reset, nothing can be recovered.
    Reset,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Recovered => "recovered",
            Outcome::Fresh => "fresh",
            Outcome::Gap => "gap",
            Outcome::Reset => "reset",
        }
    }
}

/// Appends a `recoverymsg`: how the recovery of `channel` went, its epoch,
/// its last offset now and how many messages were replayed before it.
pub fn encode_recovery(out: &mut Vec<u8>, channel: &str, outcome: Outcome, epoch: &str, last: &str, count: usize) {
    out.extend_from_slice(b"{\"MessageType\":\"recoverymsg\",\"Data\":\"");
    out.extend_from_slice(outcome.as_str().as_bytes());
    out.extend_from_slice(b"\",\"Reciever\":");
    push_json_string(out, channel);
    out.extend_from_slice(b",\"Epoch\":");
    push_json_string(out, epoch);
    out.extend_from_slice(b",\"Offset\":");
    push_json_string(out, last);
    out.extend_from_slice(b",\"Count\":");
    out.extend_from_slice(count.to_string().as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Appends a `storedmsg`: the message to `to` (offline) was kept at `offset`
/// and will be delivered at their next login.
pub fn encode_stored(out: &mut Vec<u8>, to: &str, offset: &str) {
    out.extend_from_slice(b"{\"MessageType\":\"storedmsg\",\"Reciever\":");
    push_json_string(out, to);
    out.extend_from_slice(b",\"Data\":");
    push_json_string(out, &format!("recipient {to:?} is not online: the message is kept for their next login"));
    out.extend_from_slice(b",\"Offset\":");
    push_json_string(out, offset);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_read_from_the_last_field_and_ordered() {
        let kept = b"{\"MessageType\":\"chatmsg\",\"Data\":\"hi\",\"Reciever\":\"bob\",\"Sender\":\"al\",\"Offset\":\"17-3\"}\n";
        assert_eq!(offset_of(kept), Some(StreamId { millis: 17, seq: 3 }));
        assert_eq!(offset_of(b"{\"MessageType\":\"chatmsg\",\"Data\":\"x\"}\n"), None);
        assert_eq!(offset_of(b"\"}\n"), None);
        assert!(StreamId::parse(b"17-3") < StreamId::parse(b"17-10"));
        assert!(StreamId::parse(b"9-99") < StreamId::parse(b"10-0"));
        assert_eq!(StreamId::parse(b"5"), Some(StreamId { millis: 5, seq: 0 }));
        for bad in [&b""[..], b"-", b"1-", b"a-1", b"1-2-3", b"1 -2"] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn resume_fields_are_read_from_logins_and_joins() {
        let resume = resume_of(r#"{"MessageType":"joinmsg","Reciever":"lobby","Offset":"5-1","Epoch":"e","X":[1]}"#);
        assert_eq!(resume, Resume { offset: "5-1".into(), epoch: "e".into() });
        assert_eq!(resume_of(r#"{"MessageType":"loginmsg","Sender":"al"}"#), Resume::default());
        assert_eq!(resume_of(r#"{"Offset":5}"#), Resume::default());
    }

    #[test]
    fn recovery_and_stored_read_as_the_contract_says() {
        let mut out = Vec::new();
        encode_recovery(&mut out, "bob", Outcome::Gap, "1-0", "9-1", 3);
        assert_eq!(
            out,
            b"{\"MessageType\":\"recoverymsg\",\"Data\":\"gap\",\"Reciever\":\"bob\",\"Epoch\":\"1-0\",\"Offset\":\"9-1\",\"Count\":3}\n"
        );
        out.clear();
        encode_stored(&mut out, "bob", "9-2");
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("{\"MessageType\":\"storedmsg\",\"Reciever\":\"bob\",\"Data\":\"recipient \\\"bob\\\" is")
        );
        assert!(text.ends_with(",\"Offset\":\"9-2\"}\n"));
    }
}
