//! A byte-level WebSocket client: writes exactly the frames a test builds and
//! reads back exactly what the server sent, so tests can assert on the wire.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame as the server sent it.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code and reason of a close frame.
    pub fn close_code(&self) -> (u16, String) {
        assert_eq!(self.opcode, 8, "not a close frame: {self:?}");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        (code, String::from_utf8_lossy(&self.payload[2..]).into_owned())
    }
}

/// A masked client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

pub fn text(s: &str) -> Vec<u8> {
    frame(true, 1, s.as_bytes())
}

pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

impl RawClient {
    /// Connects and completes the upgrade on `path`, checking the 101.
    pub fn open(addr: SocketAddr, path: &str) -> RawClient {
        let mut c = RawClient::connect(addr);
        c.send(upgrade_request(path).as_bytes());
        let head = c.read_http_head();
        assert!(head.starts_with("HTTP/1.1 101 "), "no upgrade: {head}");
        c
    }

    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// Wraps a connected stream (set up by the test, e.g. with a small buffer).
    pub fn from_stream(stream: TcpStream) -> RawClient {
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient { stream, buf: Vec::new() }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads an HTTP response head (through the blank line).
    pub fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8(head).expect("ASCII head");
            }
            assert!(self.fill().expect("read head") > 0, "EOF before the response head");
        }
    }

    /// Reads one server frame; panics on timeout or EOF.
    pub fn read_frame(&mut self) -> Frame {
        self.try_read_frame().expect("a frame, not EOF")
    }

    /// Reads one server frame, or `None` at EOF. Server frames are never masked.
    pub fn try_read_frame(&mut self) -> Option<Frame> {
        loop {
            if self.buf.len() >= 2 {
                assert_eq!(self.buf[1] & 0x80, 0, "server frames must not be masked");
                let (len, hdr) = match self.buf[1] & 0x7F {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= hdr + len {
                    let frame = Frame {
                        fin: self.buf[0] & 0x80 != 0,
                        opcode: self.buf[0] & 0x0F,
                        payload: self.buf[hdr..hdr + len].to_vec(),
                    };
                    self.buf.drain(..hdr + len);
                    return Some(frame);
                }
            }
            match self.fill() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read failed: {e}"),
            }
        }
    }

    /// Reads one text frame and returns it as a string.
    pub fn read_text(&mut self) -> String {
        let f = self.read_frame();
        assert_eq!(f.opcode, 1, "expected text, got {f:?}");
        String::from_utf8(f.payload).expect("UTF-8")
    }

    /// Expects a close frame; returns its code and reason, then expects EOF.
    pub fn expect_close(&mut self) -> (u16, String) {
        let f = self.read_frame();
        let code = f.close_code();
        // Answer the close, as a client should; the server then closes TCP.
        self.send(&frame(true, 8, &f.payload[..2]));
        assert!(self.try_read_frame().is_none(), "the server must close after the close handshake");
        code
    }

    /// True when the server has closed the TCP connection (EOF within the timeout).
    pub fn at_eof(&mut self) -> bool {
        self.try_read_frame().is_none()
    }
}
