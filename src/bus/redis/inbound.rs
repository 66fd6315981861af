//! What arrives from Redis is checked before a client sees it: any client
//! of the Redis server can PUBLISH to a user's channel, so only a chat
//! message in the exact shape a node publishes (UTF-8, the seed's fields in
//! the seed's order, the channel's user as `Reciever`, a `Sender`) is
//! delivered; anything else is dropped, counted in
//! `switchboard_bus_rejected_total` and logged once a minute.
//!
//! This stops garbage, not forgery: a well-formed message with any
//! `Sender` is indistinguishable from a node's. Redis must be private to
//! the cluster (README: the Redis security checklist).
//!
//! The check runs on every message a node receives, so it scans each byte
//! once (eight at a time where nothing needs a look) and allocates nothing.

use std::sync::atomic::Ordering::Relaxed;

use super::ratelog::Every;
use crate::hub::Hub;
use crate::protocol;

const HEAD: &[u8] = b"{\"MessageType\":\"chatmsg\",\"Data\":";
const TO: &[u8] = b",\"Reciever\":";
const FROM: &[u8] = b",\"Sender\":";
/// gorilla's newline ends every message a node publishes.
const TAIL: &[u8] = b"}\n";
/// Bytes of a rejected message quoted in the log.
const QUOTED: usize = 120;

/// Whether `payload` is a chat message for `name` as a node publishes it.
pub fn is_chat_for(payload: &[u8], name: &str) -> bool {
    if std::str::from_utf8(payload).is_err() {
        return false;
    }
    let fields = || {
        let rest = payload.strip_prefix(HEAD)?;
        let (_data, rest) = json_string(rest)?;
        let (to, rest) = json_string(rest.strip_prefix(TO)?)?;
        let (from, rest) = json_string(rest.strip_prefix(FROM)?)?;
        Some((to, from, rest))
    };
    let Some((to, from, rest)) = fields() else {
        return false;
    };
    rest == TAIL && from.len() > 2 && names_the(to, name)
}

/// Whether the JSON string `encoded` (quotes included) is `name`.
fn names_the(encoded: &[u8], name: &str) -> bool {
    let inner = &encoded[1..encoded.len() - 1];
    if !inner.contains(&b'\\') {
        return inner == name.as_bytes();
    }
    // Escaped: compare with how a node encodes the name (rare: `"`, `\`, `<`...).
    let mut expected = Vec::with_capacity(encoded.len());
    protocol::push_json_string(&mut expected, name);
    expected == encoded
}

/// The JSON string at the start of `bytes`, quotes included, and the rest:
/// no raw control character, every escape one JSON knows.
fn json_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    loop {
        i = skip_plain(bytes, i);
        match *bytes.get(i)? {
            b'"' => return Some((&bytes[..=i], &bytes[i + 1..])),
            b'\\' => match *bytes.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                b'u' if bytes.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                _ => return None,
            },
            0..=0x1F => return None,
            _ => i += 1,
        }
    }
}

/// The index of the first byte at or after `i` that is a quote, a backslash
/// or a control character, eight bytes at a time (SWAR; the lowest flagged
/// byte of a word is exact, a borrow only spills upwards). At most the last
/// seven bytes are left to the caller's byte loop.
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("a slice of 8 bytes"));
        let flagged = (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')));
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// Messages from Redis that no node published.
pub struct Inbound {
    log: Every,
}

impl Inbound {
    pub fn new() -> Inbound {
        Inbound { log: Every::minute() }
    }

    /// Drops a message that failed the check: counted, logged once a minute.
    pub fn reject(&mut self, hub: &Hub, channel: &[u8], payload: &[u8]) {
        hub.metrics.bus.rejected.fetch_add(1, Relaxed);
        self.log.note(|n| {
            log::warn!(
                "dropped a message from Redis on {:?} that no node published ({n} so far; is Redis open to \
                 other clients?): {:?}",
                String::from_utf8_lossy(channel),
                String::from_utf8_lossy(&payload[..payload.len().min(QUOTED)]),
            );
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(data: &str, to: &str, from: &str) -> Vec<u8> {
        let mut out = Vec::new();
        protocol::encode_chat(&mut out, data, to, from);
        out
    }

    #[test]
    fn what_a_node_publishes_passes() {
        for (data, to, from) in [
            ("hi", "bob", "alice"),
            ("", "bob", "alice"),
            ("quotes \" and \\ and <tags> & \u{2028} \n\t\u{1} é 日本", "bob", "alice"),
            ("a message long enough to be scanned eight bytes at a time, twice over", "b<o>b", "al\"ice"),
            ("x", "日本", "ünï"),
        ] {
            assert!(is_chat_for(&chat(data, to, from), to), "{data:?} to {to:?} from {from:?}");
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let good = chat("hi", "bob", "alice");
        assert!(!is_chat_for(&good, "carol"), "another user's message");
        assert!(!is_chat_for(&chat("hi", "bob", ""), "bob"), "no Sender");
        let mut bad_utf8 = good.clone();
        bad_utf8[34] = 0xFF;
        assert!(!is_chat_for(&bad_utf8, "bob"), "invalid UTF-8");
        assert!(!is_chat_for(&good[..good.len() - 1], "bob"), "no newline");
        for forged in [
            &b"hello bob"[..],
            b"",
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"hi\",\"Reciever\":\"bob\"}\n",
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"hi\",\"Reciever\":\"bob\",\"Sender\":\"a\",\"x\":1}\n",
            b"{\"MessageType\":\"errormsg\",\"Data\":\"hi\",\"Reciever\":\"bob\",\"Sender\":\"a\"}\n",
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"h\ni\",\"Reciever\":\"bob\",\"Sender\":\"a\"}\n",
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"h\\qi\",\"Reciever\":\"bob\",\"Sender\":\"a\"}\n",
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"h\\u00zz\",\"Reciever\":\"bob\",\"Sender\":\"a\"}\n",
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"unterminated,\"Reciever\":\"bob\",\"Sender\":\"a\"}\n",
            b"{\"MessageType\":\"chatmsg\",\"Data\":1,\"Reciever\":\"bob\",\"Sender\":\"a\"}\n",
            b"{\"MessageType\":\"chatmsg\",\"Data\":\"hi\",\"Reciever\":\"bob\",\"Sender\":\"a\"}\n\n",
        ] {
            assert!(!is_chat_for(forged, "bob"), "{:?}", String::from_utf8_lossy(forged));
        }
        // Every cut of a good message is refused.
        for end in 0..good.len() {
            assert!(!is_chat_for(&good[..end], "bob"), "cut at {end}");
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_byte_to_look_at() {
        let text = b"0123456789abcdef\"x";
        assert_eq!(skip_plain(text, 0), 16);
        assert_eq!(skip_plain(b"01\x0134567", 0), 2);
        assert_eq!(skip_plain(b"0123\\56789", 0), 4);
        assert_eq!(skip_plain("ééééé\"".as_bytes(), 0), 8, "stops before the last word; the byte loop goes on");
        assert_eq!(skip_plain(b"abc", 0), 0);
    }
}
