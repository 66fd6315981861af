//! Messages for other connections of this reactor. A handler holds only its
//! own connection, so what it sends to a neighbour is encoded here, once,
//! and written to the neighbour's output when the handler returns (within
//! the same turn, before anything is flushed). A room message is queued
//! once, as its shared frame, for all the room's members here.

use std::sync::Arc;

use compact_str::CompactString;
use mio::Token;

/// Above this, the buffer is given back once drained. What one read turn
/// queues is bounded by the read budget (256 KiB) times what escaping adds,
/// so busy chat keeps its buffer (regrowing it each turn showed up as 5% more
/// instructions per message) and only a rare burst of escapes gives it back.
const KEEP_BYTES: usize = 2 * 1024 * 1024;

#[derive(Default)]
pub(super) struct LocalDeliveries {
    bytes: Vec<u8>,
    /// What to deliver, in the order it was sent.
    to: Vec<Delivery>,
}

/// One queued delivery.
enum Delivery {
    /// A chat message for one connection, ending at this offset of `bytes`
    /// (it starts where the previous one ended).
    Chat(Token, usize),
    /// A room message (its frame) for every member of the room (its key).
    Room(CompactString, Arc<[u8]>),
}

/// What [`LocalDeliveries::drain`] hands out.
pub(super) enum Queued<'a> {
    Chat(Token, &'a [u8]),
    Room(&'a str, &'a Arc<[u8]>),
}

impl LocalDeliveries {
    /// Queues one message for `token`, encoded by `encode` in place.
    pub fn push(&mut self, token: Token, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.bytes);
        self.to.push(Delivery::Chat(token, self.bytes.len()));
    }

    /// Queues a room message for the room's members on this reactor.
    pub fn push_room(&mut self, key: &str, frame: &Arc<[u8]>) {
        self.to.push(Delivery::Room(CompactString::from(key), Arc::clone(frame)));
    }

    pub fn is_empty(&self) -> bool {
        self.to.is_empty()
    }

    /// Hands each queued message to `each`, in order, and empties the queue.
    pub fn drain(&mut self, mut each: impl FnMut(Queued<'_>)) {
        let mut start = 0;
        for delivery in &self.to {
            match delivery {
                Delivery::Chat(token, end) => {
                    each(Queued::Chat(*token, &self.bytes[start..*end]));
                    start = *end;
                }
                Delivery::Room(key, frame) => each(Queued::Room(key, frame)),
            }
        }
        self.to.clear();
        self.bytes.clear();
        if self.bytes.capacity() > KEEP_BYTES {
            self.bytes = Vec::new();
            self.to = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_in_order_and_whole() {
        let mut local = LocalDeliveries::default();
        local.push(Token(1), |out| out.extend_from_slice(b"one"));
        local.push(Token(2), |out| out.extend_from_slice(b""));
        local.push(Token(1), |out| out.extend_from_slice(b"three"));
        let mut seen = Vec::new();
        local.drain(|q| {
            if let Queued::Chat(t, m) = q {
                seen.push((t, m.to_vec()));
            }
        });
        assert_eq!(seen, [(Token(1), b"one".to_vec()), (Token(2), vec![]), (Token(1), b"three".to_vec())]);
        assert!(local.is_empty());
    }
}
