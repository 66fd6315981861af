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
//! once, eight at a time where nothing needs a look, and allocates nothing.
//! The frame is valid UTF-8 when every string in it is (the rest is ASCII
//! of our own), and a string of ASCII needs no further check: only a string
//! with a byte above 0x7F is validated as UTF-8.

use std::sync::atomic::Ordering::Relaxed;

use super::ratelog::Every;
use crate::hub::Hub;
use crate::names;

const HEAD: &[u8] = b"{\"MessageType\":\"chatmsg\",\"Data\":";
const TO: &[u8] = b",\"Reciever\":";
const FROM: &[u8] = b",\"Sender\":";
/// gorilla's newline ends every message a node publishes.
const TAIL: &[u8] = b"}\n";
/// Bytes of a rejected message quoted in the log.
const QUOTED: usize = 120;

/// Whether `payload` is a chat message for `name` as a node publishes it.
pub fn is_chat_for(payload: &[u8], name: &str) -> bool {
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
    (rest == TAIL || is_offset_tail(rest)) && from.encoded.len() > 2 && names_the(&to, name)
}

/// Whether `rest` is what a kept message ends with: `,"Offset":"MILLIS-SEQ"}`
/// and the newline (looked at only when the plain end did not match).
#[cold]
fn is_offset_tail(rest: &[u8]) -> bool {
    rest.strip_prefix(b",\"Offset\":\"")
        .and_then(|id| id.strip_suffix(b"\"}\n"))
        .is_some_and(|id| crate::protocol::StreamId::parse(id).is_some())
}

/// Whether `payload` is a room message for room `key` as a node publishes
/// it (`roommsg`, or a `joinmsg`/`leavemsg` notice, named by the room's key).
pub fn is_room_message_for(payload: &[u8], key: &str) -> bool {
    let fields = || {
        let rest = [
            &b"{\"MessageType\":\"roommsg\",\"Data\":"[..],
            b"{\"MessageType\":\"joinmsg\",\"Data\":",
            b"{\"MessageType\":\"leavemsg\",\"Data\":",
        ]
        .iter()
        .find_map(|head| payload.strip_prefix(*head))?;
        let (_data, rest) = json_string(rest)?;
        let (to, rest) = json_string(rest.strip_prefix(TO)?)?;
        let (from, rest) = json_string(rest.strip_prefix(FROM)?)?;
        Some((to, from, rest))
    };
    let Some((to, from, rest)) = fields() else {
        return false;
    };
    (rest == TAIL || is_offset_tail(rest)) && from.encoded.len() > 2 && is_key(&to, key)
}

/// Whether the JSON string `to` is `key` itself (rooms are named by their
/// key: nothing to fold), escaped as a node encodes it.
fn is_key(to: &JsonString<'_>, key: &str) -> bool {
    if !to.escaped {
        return &to.encoded[1..to.encoded.len() - 1] == key.as_bytes();
    }
    let mut encoded = Vec::with_capacity(to.encoded.len());
    crate::protocol::push_json_string(&mut encoded, key);
    encoded == to.encoded
}

/// A JSON string, quotes included, and whether it holds an escape.
struct JsonString<'a> {
    encoded: &'a [u8],
    escaped: bool,
}

/// Whether the JSON string `to` names the user whose key is `name`. The
/// `Reciever` is the name as its sender wrote it (`ALICE` for `alice`), so
/// anything but the plain key itself is decoded and keyed (rare).
fn names_the(to: &JsonString<'_>, name: &str) -> bool {
    let quoted = &to.encoded[1..to.encoded.len() - 1];
    if !to.escaped && quoted == name.as_bytes() {
        return true;
    }
    match serde_json::from_slice::<std::borrow::Cow<'_, str>>(to.encoded) {
        Ok(written) => *names::key(&written) == *name,
        Err(_) => false,
    }
}

/// The JSON string at the start of `bytes`, quotes included, and the rest:
/// valid UTF-8, no raw control character, every escape one JSON knows.
#[inline]
fn json_string(bytes: &[u8]) -> Option<(JsonString<'_>, &[u8])> {
    if bytes.first() != Some(&b'"') {
        return None;
    }
    let mut i = 1;
    let mut ascii = true;
    let mut escaped = false;
    loop {
        // Once a byte above 0x7F was seen, the string is validated as UTF-8
        // at its end: such bytes need no look one by one any more.
        i = skip_plain(bytes, i, ascii);
        match *bytes.get(i)? {
            b'"' => break,
            b'\\' => {
                escaped = true;
                match *bytes.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' if bytes.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                    _ => return None,
                }
            }
            0..=0x1F => return None,
            0x80.. => {
                ascii = false;
                i += 1;
            }
            // skip_plain stops at no other byte; stepping over one is harmless.
            _ => i += 1,
        }
    }
    if !ascii && std::str::from_utf8(&bytes[1..i]).is_err() {
        return None;
    }
    Some((JsonString { encoded: &bytes[..=i], escaped }, &bytes[i + 1..]))
}

/// The index of the first byte at or after `i` that is a quote, a
/// backslash, a control character or (with `stop_above_ascii`) above 0x7F,
/// or the length of `bytes` if none is: sixteen bytes at a time with SSE2
/// (every x86-64 has it), then a word at a time.
#[cfg(target_arch = "x86_64")]
#[inline]
fn skip_plain(bytes: &[u8], mut i: usize, stop_above_ascii: bool) -> usize {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    while let Some(chunk) = bytes.get(i..i + 16) {
        // SAFETY: SSE2 is part of the x86-64 baseline, enabled on every build
        // for this target; the unaligned load reads the 16 bytes of `chunk`.
        let found = unsafe {
            let v = _mm_loadu_si128(chunk.as_ptr().cast());
            let low = if stop_above_ascii {
                // Signed: bytes from 0x80 up are negative, so below 0x20 too.
                _mm_cmplt_epi8(v, _mm_set1_epi8(0x20))
            } else {
                _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1F)), v)
            };
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), low)) as u32
        };
        if found != 0 {
            return i + found.trailing_zeros() as usize;
        }
        i += 16;
    }
    skip_plain_words(bytes, i, stop_above_ascii)
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn skip_plain(bytes: &[u8], i: usize, stop_above_ascii: bool) -> usize {
    skip_plain_words(bytes, i, stop_above_ascii)
}

/// [`skip_plain`] eight bytes at a time (SWAR; the lowest flagged byte of a
/// word is exact, a borrow only spills upwards), the last few padded to a
/// word with a byte that is never flagged.
#[inline]
fn skip_plain_words(bytes: &[u8], mut i: usize, stop_above_ascii: bool) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let high = if stop_above_ascii { HIGH } else { 0 };
    let flagged = |w: u64| {
        let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | (w & high)
            | zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
    };
    while let Some(chunk) = bytes.get(i..i + 8) {
        let found = flagged(u64::from_le_bytes(chunk.try_into().expect("a slice of 8 bytes")));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    let rest = bytes.get(i..).unwrap_or_default();
    let mut last = [b'a'; 8];
    last[..rest.len()].copy_from_slice(rest);
    match flagged(u64::from_le_bytes(last)) {
        0 => bytes.len(),
        found => i + (found.trailing_zeros() / 8) as usize,
    }
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
        crate::protocol::encode_chat(&mut out, data, to, from);
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
        // The recipient as its sender wrote it, on the channel of its key.
        assert!(is_chat_for(&chat("hi", "ALICE", "carol"), "alice"));
        assert!(is_chat_for(&chat("hi", "ａｌｉｃｅ", "carol"), "alice"));
        assert!(!is_chat_for(&chat("hi", "ALICE", "carol"), "bob"));
    }

    #[test]
    fn room_messages_pass_for_their_room_only() {
        for (kind, data, room) in [("roommsg", "hi", "lobby"), ("joinmsg", "", "lobby"), ("leavemsg", "", "a<b>")] {
            let mut out = Vec::new();
            crate::protocol::encode_room(&mut out, kind, data, room, "alice");
            assert!(is_room_message_for(&out, room), "{kind}");
            assert!(!is_room_message_for(&out, "other"), "{kind}");
            assert!(!is_chat_for(&out, room));
        }
        assert!(!is_room_message_for(&chat("hi", "lobby", "a"), "lobby"));
    }

    #[test]
    fn kept_messages_pass_with_their_offset_only() {
        let kept = |tail: &str| {
            let mut out = chat("hi", "bob", "alice");
            out.truncate(out.len() - 2);
            out.extend_from_slice(tail.as_bytes());
            out
        };
        assert!(is_chat_for(&kept(",\"Offset\":\"1764632400000-3\"}\n"), "bob"));
        for bad in [",\"Offset\":\"x\"}\n", ",\"Offset\":\"1-2\"}", ",\"Offset\":1}\n", ",\"Other\":\"1-2\"}\n"] {
            assert!(!is_chat_for(&kept(bad), "bob"), "{bad}");
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
    fn both_scans_find_the_first_byte_to_look_at() {
        let mut text = vec![b'x'; 40];
        for at in 0..40 {
            for special in [b'"', b'\\', 0x01, 0x1F, 0x80, 0xC3, 0xFF] {
                text[at] = special;
                for from in [0, 1, 7, 9, 17, at] {
                    let from = from.min(at);
                    let stops = special < 0x80;
                    let expected = if stops { at } else { 40 };
                    assert_eq!(skip_plain(&text, from, false), expected, "{special:#x} at {at} from {from}");
                    assert_eq!(skip_plain_words(&text, from, false), expected, "{special:#x} at {at} from {from}");
                    assert_eq!(skip_plain(&text, from, true), at, "{special:#x} at {at} from {from}");
                    assert_eq!(skip_plain_words(&text, from, true), at, "{special:#x} at {at} from {from}");
                }
                text[at] = b'x';
            }
        }
    }

    #[test]
    fn the_word_scan_finds_the_first_byte_to_look_at() {
        let text = b"0123456789abcdef\"x";
        let words = skip_plain_words;
        assert_eq!(words(text, 0, true), 16);
        assert_eq!(words(b"01\x0134567", 0, true), 2);
        assert_eq!(words(b"0123\\56789", 0, true), 4);
        assert_eq!(words("abcdéfgh".as_bytes(), 0, true), 4, "a byte above 0x7F is looked at");
        assert_eq!(words("abcdéfgh\"".as_bytes(), 0, false), 9, "unless UTF-8 is checked at the end");
        assert_eq!(words(b"abcdefgh\"", 0, true), 8, "the padded last word");
        assert_eq!(words(b"abcdefghij\\", 0, true), 10);
        assert_eq!(words(b"abc", 0, true), 3, "none: the length");
        assert_eq!(words(b"abc", 3, true), 3);
        assert_eq!(words(b"ab\x1f", 1, true), 2);
    }
}
