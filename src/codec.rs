//! RFC 6455 frames: header parsing for client frames, header writing for
//! server frames, masking, and close codes.
//!
//! Parsing works on whatever bytes the reactor holds (its scratch buffer or a
//! connection's pending input) and never copies; payloads are unmasked in place.

/// Frame opcodes (RFC 6455 section 5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Close codes this server sends (RFC 6455 section 7.4.1).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    /// The server API closed the connection (`POST /api/disconnect`): a code
    /// of the private range (4000-4999), so a client can tell it from the others.
    pub const DISCONNECTED: u16 = 4000;
}

/// Longest header a client frame can have: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;
/// Control frames carry at most 125 bytes (RFC 6455 section 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: u8,
    pub mask: [u8; 4],
    /// Bytes of header before the payload.
    pub header_len: usize,
    pub payload_len: u64,
}

impl FrameHead {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Why a client's frame is refused; each maps to a close code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set without a negotiated extension.
    ReservedBits,
    /// Opcode 3-7 or 0xB-0xF.
    ReservedOpcode,
    /// A client frame without a mask (section 5.1).
    Unmasked,
    /// A control frame fragmented or longer than 125 bytes.
    BadControl,
    /// A 64-bit length with its top bit set.
    BadLength,
}

impl FrameError {
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::ReservedBits => "reserved bits set without an extension",
            FrameError::ReservedOpcode => "reserved opcode",
            FrameError::Unmasked => "client frames must be masked",
            FrameError::BadControl => "control frames must be final and at most 125 bytes",
            FrameError::BadLength => "frame length out of range",
        }
    }
}

/// Parses one client frame header from the front of `buf`.
/// `Ok(None)` means more bytes are needed.
///
/// # Errors
/// A [`FrameError`] for a header that breaks RFC 6455.
pub fn parse_client_header(buf: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = b0 & 0x0F;
    if !matches!(opcode, 0x0..=0x2 | 0x8..=0xA) {
        return Err(FrameError::ReservedOpcode);
    }
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let fin = b0 & 0x80 != 0;
    let (payload_len, len_bytes) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 2)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(n);
            if len >> 63 != 0 {
                return Err(FrameError::BadLength);
            }
            (len, 8)
        }
        n => (u64::from(n), 0),
    };
    if opcode & 0x8 != 0 && (!fin || payload_len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(FrameError::BadControl);
    }
    let header_len = 2 + len_bytes + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + len_bytes..header_len]);
    Ok(Some(FrameHead { fin, opcode, mask, header_len, payload_len }))
}

/// XORs `data` with `mask`, where `data` starts `offset` bytes into the payload.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// Appends an unmasked, final server frame header for `len` payload bytes.
pub fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    let b0 = 0x80 | opcode;
    if len < 126 {
        out.extend_from_slice(&[b0, len as u8]);
    } else if len <= usize::from(u16::MAX) {
        let n = (len as u16).to_be_bytes();
        out.extend_from_slice(&[b0, 126, n[0], n[1]]);
    } else {
        out.extend_from_slice(&[b0, 127]);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Appends a whole server frame.
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    write_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// The length of the header of a frame this node wrote (unmasked), from its
/// second byte.
pub fn header_len(frame: &[u8]) -> usize {
    match frame.get(1).map(|b| b & 0x7F) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    }
}

/// Appends a close frame with `code` and a reason cut to fit 125 bytes on a char boundary.
pub fn write_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    write_header(out, op::CLOSE, 2 + end);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&reason.as_bytes()[..end]);
}

/// Whether a peer may send `code` in a close frame (section 7.4).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Incremental UTF-8 check for a message arriving in pieces.
/// Returns the new count of bytes known valid, or `None` for invalid UTF-8.
/// An incomplete sequence at the end is left for the next piece.
pub fn check_utf8_prefix(buf: &[u8], valid_up_to: usize) -> Option<usize> {
    match std::str::from_utf8(&buf[valid_up_to..]) {
        Ok(_) => Some(buf.len()),
        Err(e) if e.error_len().is_none() => Some(valid_up_to + e.valid_up_to()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_of_our_frames_is_found_again() {
        for len in [0, 125, 126, 65_535, 65_536] {
            let mut frame = Vec::new();
            write_frame(&mut frame, op::TEXT, &vec![b'x'; len]);
            assert_eq!(frame.len() - header_len(&frame), len);
        }
    }

    fn client_frame(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = Vec::new();
        write_header(&mut out, opcode, payload.len());
        if !fin {
            out[0] &= 0x7F;
        }
        out[1] |= 0x80;
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], mask, 0);
        out
    }

    #[test]
    fn parses_every_length_form_and_unmasks() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut frame = client_frame(true, op::BINARY, &payload, [1, 2, 3, 4]);
            for cut in [0, 1, frame.len().min(5)] {
                if cut < 2 {
                    assert_eq!(parse_client_header(&frame[..cut]), Ok(None));
                }
            }
            let head = parse_client_header(&frame).unwrap().unwrap();
            assert_eq!(head.payload_len, len as u64);
            assert!(head.fin);
            let body = &mut frame[head.header_len..];
            apply_mask(body, head.mask, 0);
            assert_eq!(body, &payload[..]);
        }
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_at_once() {
        let payload: Vec<u8> = (0..100u8).collect();
        let mask = [9, 8, 7, 6];
        let mut whole = payload.clone();
        apply_mask(&mut whole, mask, 0);
        let mut pieces = payload.clone();
        let (a, b) = pieces.split_at_mut(37);
        apply_mask(a, mask, 0);
        apply_mask(b, mask, 37);
        assert_eq!(whole, pieces);
    }

    #[test]
    fn refuses_what_rfc6455_forbids() {
        let mut unmasked = Vec::new();
        write_frame(&mut unmasked, op::TEXT, b"hi");
        assert_eq!(parse_client_header(&unmasked), Err(FrameError::Unmasked));
        let mut rsv = client_frame(true, op::TEXT, b"hi", [0; 4]);
        rsv[0] |= 0x40;
        assert_eq!(parse_client_header(&rsv), Err(FrameError::ReservedBits));
        let reserved = client_frame(true, 0x3, b"", [0; 4]);
        assert_eq!(parse_client_header(&reserved), Err(FrameError::ReservedOpcode));
        let frag_ping = client_frame(false, op::PING, b"", [0; 4]);
        assert_eq!(parse_client_header(&frag_ping), Err(FrameError::BadControl));
        let long_ping = client_frame(true, op::PING, &[0; 126], [0; 4]);
        assert_eq!(parse_client_header(&long_ping), Err(FrameError::BadControl));
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&(1u64 << 63).to_be_bytes());
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(parse_client_header(&huge), Err(FrameError::BadLength));
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let mut out = Vec::new();
        write_close(&mut out, close::POLICY, &"é".repeat(100));
        assert_eq!(out[1] as usize, out.len() - 2);
        assert!(out.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn utf8_is_checked_across_pieces() {
        let text = "aé€😀".as_bytes();
        let mut valid = 0;
        let mut buf = Vec::new();
        for byte in text {
            buf.push(*byte);
            valid = check_utf8_prefix(&buf, valid).unwrap();
        }
        assert_eq!(valid, text.len());
        assert_eq!(check_utf8_prefix(&[0xE2, 0x82], 0), Some(0));
        assert_eq!(check_utf8_prefix(&[0xC0, 0x80], 0), None);
        assert_eq!(check_utf8_prefix(b"ok\xff", 0), None);
    }

    #[test]
    fn close_codes() {
        for ok in [1000, 1001, 1003, 1007, 1011, 3000, 4999] {
            assert!(is_valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!is_valid_close_code(bad), "{bad}");
        }
    }
}
