//! The node's history as a client following it sees it (`--recover`): the stream offset
//! a delivered message carries (`"Offset":"<ms>-<seq>"`), the `recoverymsg` a login
//! gets, and the login that asks for everything after the last offset seen.

use std::borrow::Cow;
use std::io::Write as _;

/// A Redis stream id, `<ms>-<seq>`, ordered as the stream orders its entries. The zero
/// id (`0-0`) stands for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    /// Reads `<ms>-<seq>`; `None` for anything else (an empty epoch included).
    pub fn parse(text: &str) -> Option<StreamId> {
        let (ms, seq) = text.split_once('-')?;
        Some(StreamId { ms: ms.parse().ok()?, seq: seq.parse().ok()? })
    }

    pub fn is_none(self) -> bool {
        self == StreamId::default()
    }

    fn write(self, out: &mut Vec<u8>) {
        // Once per login: `write!` will do.
        let _ = write!(out, "{}-{}", self.ms, self.seq);
    }
}

/// Where a client is in its own channel's history: the last offset it got and the epoch
/// of the stream it got it from (zero: none). `known` once the node told it an offset
/// (`0-0` for a channel with no history yet counts: everything after it is missed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub offset: StreamId,
    pub epoch: StreamId,
    pub known: bool,
}

impl Position {
    /// A delivered message's offset: the position moves on (never back).
    pub fn saw(&mut self, offset: StreamId) {
        self.offset = self.offset.max(offset);
        self.known = true;
    }

    /// A `recoverymsg`'s word: the stream's last offset when its replay was read, and its
    /// epoch (zero when the channel has no history yet).
    pub fn told(&mut self, offset: StreamId, epoch: StreamId) {
        self.saw(offset);
        self.epoch = epoch;
    }
}

/// What a `recoverymsg` says of the replay before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every message after the offset given was replayed.
    Recovered,
    /// No offset was given; what was stored while offline was replayed.
    Fresh,
    /// The history no longer reaches back to the offset: some messages are gone.
    Gap,
    /// The stream is not the one the epoch named: nothing could be recovered.
    Reset,
    /// A word this load generator does not know.
    Other,
}

impl Outcome {
    pub fn of(data: &str) -> Outcome {
        match data {
            "recovered" => Outcome::Recovered,
            "fresh" => Outcome::Fresh,
            "gap" => Outcome::Gap,
            "reset" => Outcome::Reset,
            _ => Outcome::Other,
        }
    }
}

/// A `recoverymsg`: the channel (`Reciever`), the outcome, the stream's epoch and last
/// offset when the replay was read, and how many messages were replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery<'a> {
    pub channel: Cow<'a, str>,
    pub outcome: Outcome,
    pub epoch: Option<StreamId>,
    pub offset: Option<StreamId>,
    pub count: u64,
}

/// Appends `{"MessageType":"loginmsg","Sender":"<prefix><index>"}` with the position's
/// `"Offset"` and `"Epoch"` when it has them, so the node replays what came after.
pub fn write_login(out: &mut Vec<u8>, prefix: &str, index: u32, position: Position) {
    let _ = write!(out, r#"{{"MessageType":"loginmsg","Sender":"{prefix}{index}""#);
    if position.known {
        out.extend_from_slice(br#","Offset":""#);
        position.offset.write(out);
        out.push(b'"');
    }
    if !position.epoch.is_none() {
        out.extend_from_slice(br#","Epoch":""#);
        position.epoch.write(out);
        out.push(b'"');
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_read_and_order_as_redis_orders_them() {
        let a = StreamId::parse("1764632400000-3").unwrap();
        assert_eq!(a, StreamId { ms: 1_764_632_400_000, seq: 3 });
        assert!(StreamId::parse("1764632400000-10").unwrap() > a);
        assert!(StreamId::parse("1764632400001-0").unwrap() > a);
        for bad in ["", "5", "a-1", "1-", "-1", "1-2-3"] {
            assert_eq!(StreamId::parse(bad), None, "{bad:?}");
        }
        assert!(StreamId::parse("0-0").unwrap().is_none());
    }

    #[test]
    fn a_position_only_moves_forward() {
        let mut p = Position::default();
        p.saw(StreamId { ms: 5, seq: 1 });
        p.saw(StreamId { ms: 4, seq: 9 });
        assert_eq!(p.offset, StreamId { ms: 5, seq: 1 });
    }

    #[test]
    fn a_login_carries_the_position_it_has() {
        let mut out = Vec::new();
        write_login(&mut out, "u", 5, Position::default());
        assert_eq!(out, br#"{"MessageType":"loginmsg","Sender":"u5"}"#);
        out.clear();
        let mut position = Position::default();
        position.told(StreamId::default(), StreamId::default());
        write_login(&mut out, "u", 5, position);
        assert_eq!(out, br#"{"MessageType":"loginmsg","Sender":"u5","Offset":"0-0"}"#, "an empty channel's offset");
        out.clear();
        position.told(StreamId { ms: 17, seq: 2 }, StreamId { ms: 3, seq: 0 });
        write_login(&mut out, "u", 5, position);
        assert_eq!(out, br#"{"MessageType":"loginmsg","Sender":"u5","Offset":"17-2","Epoch":"3-0"}"#);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["Offset"], "17-2");
    }
}
