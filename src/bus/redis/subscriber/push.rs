//! What a frame read from a subscribed connection means: a message, an
//! ack of a (un)subscription, a refusal, a PONG, or nothing we asked for.

use crate::bus::redis::resp::Frame;

/// A frame from a subscribed connection, by what it means.
pub(super) enum Push<'a> {
    Message {
        channel: &'a [u8],
        payload: &'a [u8],
    },
    Subscribed {
        channel: &'a [u8],
        count: u64,
    },
    Unsubscribed {
        channel: &'a [u8],
        count: u64,
    },
    Refused(&'a [u8]),
    /// The answer to PING.
    Pong,
    /// Anything else, which asks nothing of us.
    Other,
}

impl<'a> Push<'a> {
    pub(super) fn of(frame: &Frame<'a>) -> Push<'a> {
        let items = match frame {
            Frame::Array(Some(items)) => items.as_slice(),
            Frame::Error(e) => return Push::Refused(e),
            Frame::Simple(b"PONG") => return Push::Pong,
            _ => return Push::Other,
        };
        if items.first().and_then(Frame::bytes) == Some(b"pong") {
            return Push::Pong;
        }
        let (Some(kind), Some(channel)) = (items.first().and_then(Frame::bytes), items.get(1).and_then(Frame::bytes))
        else {
            return Push::Other;
        };
        let count = || items.get(2).and_then(Frame::integer).unwrap_or(0) as u64;
        match kind {
            b"message" | b"smessage" => match items.get(2).and_then(Frame::bytes) {
                Some(payload) => Push::Message { channel, payload },
                None => Push::Other,
            },
            b"subscribe" | b"ssubscribe" => Push::Subscribed { channel, count: count() },
            b"unsubscribe" | b"sunsubscribe" => Push::Unsubscribed { channel, count: count() },
            _ => Push::Other,
        }
    }
}
