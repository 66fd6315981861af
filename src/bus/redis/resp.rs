//! RESP2, the Redis wire format: commands out, replies and pub/sub pushes in.
//!
//! Commands are arrays of bulk strings, encoded straight into the caller's
//! buffer (a reactor encodes its own PUBLISH, so the bus thread only copies
//! bytes). Replies are parsed in place from a read buffer: [`parse`] borrows
//! bulk strings from it and says how many bytes a complete frame took, or
//! that more bytes are needed, so a parse resumes after any short read. The
//! noise test feeds it about 50,000 truncated, mutated and random inputs.
//!
//! # Why not the `redis` crate's parser
//!
//! `redis::Parser` resumes across partial reads too, but it reads through
//! `io::Read` into a buffer of its own (a copy of every byte) and returns
//! owned values (a `Vec` per bulk string and per array). This parser borrows
//! every string from the link's read buffer: one allocation per array (its
//! items), none per string. Both on one buffer of 100,000 `message` pushes of
//! a 94-byte chat payload, best of 7, release build, on the 2-core
//! development machine while others built on it (load average 7.5):
//!
//! ```text
//! cargo test --release --lib resp::tests::parsers_side_by_side -- --ignored --nocapture
//! ```
//!
//! | parser | ns per message, 3 runs |
//! |---|---|
//! | this one | 55.3 / 95.5 / 57.1 |
//! | `redis::Parser` | 670.5 / 677.7 / 729.0 |
//!
//! The crate's parser would cost the subscriber 7 to 13 times as much per
//! message, so this one stays, and the crate is no dependency of the node
//! (only of that measurement); `--redis` URLs are parsed with `url`.

/// Deepest array nesting accepted (CLUSTER SLOTS nests 3 deep); more is an error,
/// so a hostile or broken peer cannot make us recurse without bound.
const MAX_DEPTH: usize = 8;
/// Longest bulk string accepted: Redis's own `proto-max-bulk-len` default (512 MiB).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// One reply frame, borrowing its strings from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    /// `None` is the null bulk string (`$-1`).
    Bulk(Option<&'a [u8]>),
    /// `None` is the null array (`*-1`).
    Array(Option<Vec<Frame<'a>>>),
}

impl<'a> Frame<'a> {
    /// The bytes of a simple or bulk string.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Frame::Simple(b) | Frame::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    pub fn integer(&self) -> Option<i64> {
        match *self {
            Frame::Integer(n) => Some(n),
            _ => None,
        }
    }

    pub fn items(&self) -> Option<&[Frame<'a>]> {
        match self {
            Frame::Array(Some(items)) => Some(items),
            _ => None,
        }
    }
}

/// The peer broke the protocol; the connection must be dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("RESP protocol error: {0}")]
pub struct ProtocolError(pub &'static str);

/// Parses one frame from the start of `buf`.
///
/// Returns the frame and the bytes it took, or `Ok(None)` when `buf` holds
/// only part of a frame.
///
/// # Errors
/// [`ProtocolError`] when `buf` does not start with a valid frame.
pub fn parse(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, ProtocolError> {
    let mut pos = 0;
    match parse_at(buf, &mut pos, 0)? {
        Some(frame) => Ok(Some((frame, pos))),
        None => Ok(None),
    }
}

fn parse_at<'a>(buf: &'a [u8], pos: &mut usize, depth: usize) -> Result<Option<Frame<'a>>, ProtocolError> {
    let Some(line) = line_at(buf, *pos) else {
        return Ok(None);
    };
    let (kind, body) = (buf[*pos], &buf[*pos + 1..line]);
    let after_line = line + 2;
    match kind {
        b'+' => {
            *pos = after_line;
            Ok(Some(Frame::Simple(body)))
        }
        b'-' => {
            *pos = after_line;
            Ok(Some(Frame::Error(body)))
        }
        b':' => {
            *pos = after_line;
            Ok(Some(Frame::Integer(number(body)?)))
        }
        b'$' => {
            let len = number(body)?;
            if len < 0 {
                *pos = after_line;
                return Ok(Some(Frame::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError("bad bulk length"))?;
            if len > MAX_BULK {
                return Err(ProtocolError("bulk string over 512 MiB"));
            }
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string not followed by CRLF"));
            }
            *pos = end + 2;
            Ok(Some(Frame::Bulk(Some(&buf[after_line..end]))))
        }
        b'*' | b'>' => {
            let count = number(body)?;
            if count < 0 {
                *pos = after_line;
                return Ok(Some(Frame::Array(None)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("arrays nested too deep"));
            }
            // Each element takes at least 3 bytes, which bounds the allocation.
            let count = usize::try_from(count).map_err(|_| ProtocolError("bad array length"))?;
            let mut items = Vec::with_capacity(count.min((buf.len() - after_line) / 3 + 1));
            let mut at = after_line;
            for _ in 0..count {
                match parse_at(buf, &mut at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            *pos = at;
            Ok(Some(Frame::Array(Some(items))))
        }
        _ => Err(ProtocolError("unknown frame type")),
    }
}

/// The index of the CR that ends the line starting at `from`, if complete.
fn line_at(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let cr = rest.windows(2).position(|w| w == b"\r\n")?;
    (cr > 0).then_some(from + cr)
}

fn number(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits).ok().and_then(|s| s.parse().ok()).ok_or(ProtocolError("bad number"))
}

/// Appends a command (an array of bulk strings).
pub fn push_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_bulk(out, arg);
    }
}

/// Appends one bulk string.
pub fn push_bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    push_header(out, b'$', bytes.len());
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// Appends `*N\r\n` or `$N\r\n`.
pub fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Bytes that [`push_header`] appends for `n`.
pub fn header_len(n: usize) -> usize {
    let mut digits = 1;
    let mut n = n / 10;
    while n > 0 {
        digits += 1;
        n /= 10;
    }
    digits + 3
}

/// Bytes of a bulk string of `len` bytes.
pub fn bulk_len(len: usize) -> usize {
    header_len(len) + len + 2
}

#[cfg(test)]
mod tests;
