//! JSON strings escaped exactly as Go's `encoding/json` escapes them, fast
//! on the common run of plain bytes.

/// What a byte needs inside a Go-escaped JSON string: 0 nothing, a letter for
/// its short escape (`\"`, `\\`, `\n`, `\r`, `\t`), `U` for `\u00XX`, and `E`
/// for 0xE2, the lead byte of U+2028 and U+2029. A table lookup per byte keeps
/// the common run of plain bytes to a load and a branch.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'U';
        b += 1;
    }
    table[b'<' as usize] = b'U';
    table[b'>' as usize] = b'U';
    table[b'&' as usize] = b'U';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[0xE2] = b'E';
    table
};

/// The index of the first byte at or after `i` that may need escaping, eight
/// bytes at a time (SWAR): a word passes when no byte is below 0x20, one of
/// `" \\ < > &`, or 0xE2. The lowest flagged byte is exact (a borrow only
/// spills upwards); a flagged 0xE2 that starts no U+2028/9 goes back to the loop.
fn skip_plain(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    /// High bit set in (at least the lowest of) the bytes of `v` that are zero.
    fn zero_bytes(v: u64) -> u64 {
        v.wrapping_sub(ONES) & !v & HIGH
    }
    while let Some(chunk) = bytes.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let flagged = (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
            | zero_bytes(w ^ (ONES * u64::from(b'"')))
            | zero_bytes(w ^ (ONES * u64::from(b'\\')))
            | zero_bytes(w ^ (ONES * u64::from(b'<')))
            | zero_bytes(w ^ (ONES * u64::from(b'>')))
            | zero_bytes(w ^ (ONES * u64::from(b'&')))
            | zero_bytes(w ^ (ONES * 0xE2));
        if flagged != 0 {
            return i + (flagged.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < bytes.len() && ESCAPE[usize::from(bytes[i])] == 0 {
        i += 1;
    }
    i
}

/// Appends `s` as a JSON string escaped exactly as Go's `encoding/json`:
/// `<`, `>`, `&`, U+2028 and U+2029 as `\u` escapes, `\n \r \t` short, other
/// control characters as `\u00XX`.
pub fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        i = skip_plain(bytes, i);
        let Some(&b) = bytes.get(i) else { break };
        let kind = ESCAPE[usize::from(b)];
        if kind == 0 {
            i += 1;
            continue;
        }
        let code = match kind {
            // U+2028 and U+2029 are E2 80 A8 / E2 80 A9; other E2 sequences pass.
            b'E' => match (bytes.get(i + 1), bytes.get(i + 2)) {
                (Some(0x80), Some(&last @ (0xA8 | 0xA9))) => 0x2028 + u32::from(last - 0xA8),
                _ => {
                    i += 1;
                    continue;
                }
            },
            b'U' => u32::from(b),
            short => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(&[b'\\', short]);
                i += 1;
                start = i;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(&[
            b'\\',
            b'u',
            HEX[(code >> 12) as usize & 0xF],
            HEX[(code >> 8) as usize & 0xF],
            HEX[(code >> 4) as usize & 0xF],
            HEX[code as usize & 0xF],
        ]);
        i += if code >= 0x2028 { 3 } else { 1 };
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_strings_round_trip_through_a_json_parser() {
        let nasty = "\u{0}\u{1f}\"\\/<>&\u{2028}\u{2029}\u{7f}😀 plain";
        let mut out = Vec::new();
        push_json_string(&mut out, nasty);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, nasty);
    }

    /// The reference: Go's encoding/json rules, one char at a time.
    fn go_escaped(s: &str) -> String {
        let each = |c: char| match c {
            '"' => "\\\"".into(),
            '\\' => "\\\\".into(),
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            '\u{0}'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        };
        format!("\"{}\"", s.chars().map(each).collect::<String>())
    }

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        push_json_string(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_byte_is_escaped_as_go_does() {
        let mut all: String = (0u32..0x800).filter_map(char::from_u32).collect();
        all.push_str("\u{2027}\u{2028}\u{2029}\u{202a}\u{20ac}\u{e000}😀");
        assert_eq!(escaped(&all), go_escaped(&all));
    }

    #[test]
    fn the_fast_scan_stops_at_the_first_byte_to_escape() {
        for special in ["\"", "\\", "<", ">", "&", "\u{0}", "\u{1f}", "\n", "\u{2028}", "\u{20ac}"] {
            for at in 0..20 {
                let s = format!("{}{special}{}", "é".repeat(at / 2) + &"a".repeat(at % 2), "z".repeat(9));
                assert_eq!(escaped(&s), go_escaped(&s), "{s:?}");
            }
        }
    }
}
