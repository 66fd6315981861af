//! Per-connection state. An idle connection holds no heap buffers: `input`,
//! `output` and `message` exist only while a partial frame, unsent bytes or a
//! fragmented message are pending, and go back to the reactor's pool when drained.

use compact_str::CompactString;
use mio::net::TcpStream;
use mio::Token;

use crate::handshake::Endpoint;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the HTTP upgrade request.
    Handshake,
    /// A WebSocket on one of the endpoints.
    Open(Endpoint),
    /// Our close frame or HTTP response is queued; waiting for the peer's EOF.
    Closing,
}

/// Bit flags (kept in one byte to keep the slab entry small).
pub mod flag {
    /// Listed in the reactor's flush list for this turn.
    pub const DIRTY: u8 = 1;
    /// Logged in locally, waiting for the bus to grant the name cluster-wide.
    pub const LOGIN_PENDING: u8 = 2;
    /// Shut down our sending side once `output` is drained.
    pub const SHUTDOWN_AFTER_FLUSH: u8 = 4;
    /// Removed at the end of this turn; ignore from now on.
    pub const GONE: u8 = 8;
    /// Holds a partial frame or an unfinished fragmented message.
    pub const STALLED: u8 = 16;
    /// Has an entry in the reactor's stalled-message timer queue.
    pub const STALL_TIMER: u8 = 32;
}

/// A message arriving in fragments.
pub struct Fragments {
    pub opcode: u8,
    pub data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (text messages).
    pub utf8_valid: usize,
}

pub struct Conn {
    pub socket: TcpStream,
    pub generation: u32,
    pub phase: Phase,
    pub flags: u8,
    /// When the connection started holding an unfinished message (milliseconds
    /// on the reactor's wrapping clock; meaningful while `STALLED`).
    pub stalled_since: u32,
    /// The logged-in user (or the one whose login is pending).
    pub user: Option<CompactString>,
    /// Received bytes not yet consumed: a partial HTTP head or frame.
    pub input: Vec<u8>,
    /// Queued bytes; `output[out_pos..]` is still to be written.
    pub output: Vec<u8>,
    pub out_pos: usize,
    pub message: Option<Box<Fragments>>,
}

impl Conn {
    pub fn new(socket: TcpStream, generation: u32) -> Conn {
        Conn {
            socket,
            generation,
            phase: Phase::Handshake,
            flags: 0,
            stalled_since: 0,
            user: None,
            input: Vec::new(),
            output: Vec::new(),
            out_pos: 0,
            message: None,
        }
    }

    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.output.len() - self.out_pos
    }

    /// The name this connection may chat as: logged in and granted.
    pub fn speaker(&self) -> Option<&str> {
        if self.has(flag::LOGIN_PENDING) {
            None
        } else {
            self.user.as_deref()
        }
    }
}

/// Tokens carry the slab key in the low 32 bits and a generation above it,
/// so an event for a closed connection never reaches its successor.
pub fn token_of(key: usize, generation: u32) -> Token {
    Token((generation as usize) << 32 | key)
}

/// The slab key and generation inside a token.
pub fn split_token(token: Token) -> (usize, u32) {
    (token.0 & 0xFFFF_FFFF, (token.0 >> 32) as u32)
}

/// Generations stay below 2^31 so no connection token meets a reserved one.
pub fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1) & 0x7FFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_stay_clear_of_reserved_ones() {
        let t = token_of(12345, 0x7FFF_FFFF);
        assert_eq!(split_token(t), (12345, 0x7FFF_FFFF));
        assert!(t.0 < usize::MAX - 1);
        assert_eq!(next_generation(0x7FFF_FFFF), 0);
    }

    #[test]
    fn an_idle_connection_is_small() {
        // The slab entry is most of what an idle connection costs in user space.
        // 104 bytes in release builds; mio's sockets carry a selector id in debug builds.
        assert!(std::mem::size_of::<Conn>() <= 128, "{}", std::mem::size_of::<Conn>());
    }
}
