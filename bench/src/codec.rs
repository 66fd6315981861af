//! The client side of RFC 6455, only as much as a load generator needs: the upgrade
//! request, the check of the server's `101` answer, masked client frames out and
//! unmasked server frames in. Everything works on caller-owned buffers so that a
//! connection owns no buffer while nothing is pending.

use base64::Engine as _;

/// Opcodes the load generator sends or understands (RFC 6455 section 5.2).
pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Largest server frame accepted. Chat messages are small; anything bigger than this is
/// a protocol error rather than a reason to buffer without bound.
pub const MAX_FRAME_PAYLOAD: usize = 1 << 20;

/// Largest HTTP answer to the upgrade request we wait for before calling it malformed.
pub const MAX_HANDSHAKE_RESPONSE: usize = 8 * 1024;

/// Why a server's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("HTTP {status} {reason} instead of 101 Switching Protocols")]
    Status { status: u16, reason: String },
    #[error("bad Sec-WebSocket-Accept in the 101 answer")]
    BadAccept,
    #[error("malformed HTTP answer to the upgrade request: {0}")]
    MalformedHttp(String),
    #[error("server frame is masked (RFC 6455 forbids it)")]
    MaskedServerFrame,
    #[error("server frame payload of {0} bytes is over the limit")]
    FrameTooLarge(u64),
    #[error("reserved bits set in a server frame")]
    ReservedBits,
}

/// One decoded server frame, borrowing its payload from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub fin: bool,
    pub opcode: u8,
    pub payload: &'a [u8],
}

/// The `Sec-WebSocket-Key` for a connection, derived from its index and generation so that
/// nothing has to be stored per connection to check the server's answer later.
pub fn handshake_key(index: u32, generation: u16, run_seed: u64) -> String {
    let a = splitmix64(run_seed ^ ((index as u64) << 16) ^ generation as u64);
    let b = splitmix64(a);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&a.to_le_bytes());
    raw[8..].copy_from_slice(&b.to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Appends the HTTP upgrade request to `out`.
pub fn write_upgrade_request(out: &mut Vec<u8>, host: &str, path: &str, key: &str) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
}

/// Parses the server's answer to the upgrade request.
///
/// Returns `Ok(None)` while the header is incomplete, `Ok(Some(n))` with the header length
/// once a valid `101` with the right accept key is in `buf`.
///
/// # Errors
/// A status other than 101, a wrong accept key, or a malformed or oversize header.
pub fn parse_upgrade_response(buf: &[u8], key: &str) -> Result<Option<usize>, ProtocolError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HANDSHAKE_RESPONSE {
                return Err(ProtocolError::MalformedHttp("header too long".into()));
            }
            return Ok(None);
        }
        Err(e) => return Err(ProtocolError::MalformedHttp(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    if status != 101 {
        return Err(ProtocolError::Status { status, reason: response.reason.unwrap_or("").to_string() });
    }
    let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept_ok = response
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept") && h.value == expected.as_bytes());
    if !accept_ok {
        return Err(ProtocolError::BadAccept);
    }
    Ok(Some(len))
}

/// Appends one masked client frame (FIN set) to `out`.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | (opcode & 0x0F));
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, byte) in out[start..].iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// Decodes one server frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, else the frame and the number
/// of bytes it took.
///
/// # Errors
/// A masked frame, reserved bits, or a payload over [`MAX_FRAME_PAYLOAD`].
pub fn decode_server_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, ProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    if b1 & 0x80 != 0 {
        return Err(ProtocolError::MaskedServerFrame);
    }
    let (len, header) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(raw), 10)
        }
        n => (n as u64, 2),
    };
    if len > MAX_FRAME_PAYLOAD as u64 {
        return Err(ProtocolError::FrameTooLarge(len));
    }
    let total = header + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let frame = Frame { fin: b0 & 0x80 != 0, opcode: b0 & 0x0F, payload: &buf[header..total] };
    Ok(Some((frame, total)))
}

/// A fast, well-mixed 64-bit hash step (also the load generator's RNG step).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        if payload.len() < 126 {
            out.push(payload.len() as u8);
        } else if payload.len() <= 65535 {
            out.push(126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            out.push(127);
            out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn client_frame_matches_tungstenite_parser() {
        for size in [0usize, 5, 125, 126, 1000, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_client_frame(&mut out, OP_TEXT, &payload, [1, 2, 3, 4]);
            let mut cursor = std::io::Cursor::new(&out[..]);
            let (header, len) =
                tungstenite::protocol::frame::FrameHeader::parse(&mut cursor).expect("parse").expect("complete");
            assert!(header.is_final);
            assert_eq!(header.mask, Some([1, 2, 3, 4]));
            assert_eq!(len as usize, size);
            let start = cursor.position() as usize;
            let unmasked: Vec<u8> = out[start..].iter().enumerate().map(|(i, b)| b ^ [1, 2, 3, 4][i & 3]).collect();
            assert_eq!(unmasked, payload);
        }
    }

    #[test]
    fn server_frames_decode_whole_and_report_partial() {
        for size in [0usize, 1, 125, 126, 65535, 65536] {
            let payload = vec![b'a'; size];
            let bytes = server_frame(OP_TEXT, &payload);
            for cut in 0..bytes.len().min(12) {
                assert_eq!(decode_server_frame(&bytes[..cut]), Ok(None), "cut {cut}");
            }
            let (frame, used) = decode_server_frame(&bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert!(frame.fin);
            assert_eq!(frame.opcode, OP_TEXT);
            assert_eq!(frame.payload, &payload[..]);
        }
    }

    #[test]
    fn two_frames_in_one_buffer() {
        let mut bytes = server_frame(OP_TEXT, b"one");
        bytes.extend(server_frame(OP_PING, b"p"));
        let (first, used) = decode_server_frame(&bytes).unwrap().unwrap();
        assert_eq!(first.payload, b"one");
        let (second, rest) = decode_server_frame(&bytes[used..]).unwrap().unwrap();
        assert_eq!(second.opcode, OP_PING);
        assert_eq!(used + rest, bytes.len());
    }

    #[test]
    fn masked_or_oversize_server_frames_are_refused() {
        assert_eq!(decode_server_frame(&[0x81, 0x81, 0, 0, 0, 0, b'a']), Err(ProtocolError::MaskedServerFrame));
        let mut huge = vec![0x81, 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        assert!(matches!(decode_server_frame(&huge), Err(ProtocolError::FrameTooLarge(_))));
        assert_eq!(decode_server_frame(&[0xC1, 0]), Err(ProtocolError::ReservedBits));
    }

    #[test]
    fn upgrade_response_checks_status_and_accept() {
        let key = handshake_key(7, 0, 42);
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let ok = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let header_len = ok.len();
        let ok = format!("{ok}hi");
        assert_eq!(parse_upgrade_response(ok.as_bytes(), &key), Ok(Some(header_len)));
        assert_eq!(parse_upgrade_response(&ok.as_bytes()[..20], &key), Ok(None));
        let wrong = ok.replace(&accept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(parse_upgrade_response(wrong.as_bytes(), &key), Err(ProtocolError::BadAccept));
        let not_found = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let err = parse_upgrade_response(not_found.as_bytes(), &key).unwrap_err();
        assert_eq!(err.to_string(), "HTTP 404 Not Found instead of 101 Switching Protocols");
    }

    #[test]
    fn handshake_keys_differ_per_connection_and_generation() {
        let a = handshake_key(1, 0, 9);
        assert_eq!(a.len(), 24);
        assert_ne!(a, handshake_key(2, 0, 9));
        assert_ne!(a, handshake_key(1, 1, 9));
        assert_eq!(a, handshake_key(1, 0, 9));
    }

    #[test]
    fn upgrade_request_is_valid_http() {
        let mut out = Vec::new();
        write_upgrade_request(&mut out, "127.0.0.1:9000", "/ws", "abc");
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(&out).unwrap().is_complete());
        assert_eq!(req.path, Some("/ws"));
        assert!(req.headers.iter().any(|h| h.name == "Sec-WebSocket-Key" && h.value == b"abc"));
    }
}
