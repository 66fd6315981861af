//! Per-connection state. An idle connection holds no heap buffers: its
//! output and its [`Partial`] input exist only while unsent bytes, a partial
//! frame or a fragmented message are pending, and go back to the reactor's
//! pool when drained.
//!
//! The slab entry is most of what an idle connection costs in user space, so
//! it is kept small (88 bytes): what only a connection in the middle of a
//! message needs is boxed behind one pointer, and the login is a name plus a one-byte state
//! rather than an enum of two name-carrying variants (which would not fit the
//! name's niche and would cost 8 bytes more per connection); [`Conn::login`]
//! gives it back as the enum [`Login`]. Beyond the basics it holds the
//! source address key (4 bytes) and the message-rate bucket (4, see `rate`)
//! for the limits, a token's expiry (4, Unix seconds), and a count of login
//! attempts (1); the login's state, liveness and the limits' state are bits
//! of `flags`.

use compact_str::CompactString;
use mio::net::TcpStream;
use mio::Token;

use super::output::Output;
use crate::handshake::Endpoint;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the HTTP upgrade request.
    Handshake,
    /// A WebSocket on the chat endpoint.
    Chat,
    /// A WebSocket on the echo endpoint. (One variant per endpoint rather
    /// than one carrying an `Endpoint` keeps `Phase` in one byte, and
    /// `Conn` at 88 rather than 96.)
    Echo,
    /// Our close frame or HTTP response is queued; waiting for the peer's EOF.
    Closing(Closing),
    /// Removed at the end of this turn; nothing reaches it any more.
    Gone,
}

impl Phase {
    /// The phase of a WebSocket just upgraded on `endpoint`.
    pub fn open(endpoint: Endpoint) -> Phase {
        match endpoint {
            Endpoint::Chat => Phase::Chat,
            Endpoint::Echo => Phase::Echo,
        }
    }

    /// The endpoint of an open WebSocket.
    pub fn endpoint(self) -> Option<Endpoint> {
        match self {
            Phase::Chat => Some(Endpoint::Chat),
            Phase::Echo => Some(Endpoint::Echo),
            _ => None,
        }
    }
}

/// The two steps of closing: our sending side is shut once what is queued
/// (the close frame or the HTTP response) has been written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closing {
    Flushing,
    Shut,
}

/// Who the connection speaks as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Login<'a> {
    Anonymous,
    /// Held on this node, waiting for the bus to grant the name cluster-wide.
    /// What the client sends meanwhile waits, unread.
    Pending(&'a str),
    Granted(&'a str),
}

/// Bit flags of bookkeeping (two bytes for eleven states: the slab entry stays small).
pub(super) mod flag {
    /// Listed in the reactor's flush list for this turn.
    pub const DIRTY: u16 = 1;
    /// Holds a partial frame or an unfinished fragmented message.
    pub const STALLED: u16 = 2;
    /// Has an entry in the reactor's stalled-message timer queue.
    pub const STALL_TIMER: u16 = 4;
    /// Sent something since the liveness sweep last visited it.
    pub const HEARD: u16 = 8;
    /// Pinged by the sweep and not heard from since.
    pub const PING_OUT: u16 = 16;
    /// Told it is over the message rate (cleared once it is under again).
    pub const RATE_WARNED: u16 = 32;
    /// Counted in the node's per-address table under `Conn::source`.
    pub const COUNTED: u16 = 64;
    /// Its login deadline passed while its login was pending: should the
    /// login be refused, the connection is closed.
    pub const LOGIN_DUE: u16 = 128;
    /// Has an entry in the reactor's token-expiry wheel.
    pub const EXPIRY_TIMER: u16 = 256;
    /// Logged in, waiting for the bus to grant the name (see [`super::Login`]).
    pub const LOGIN_PENDING: u16 = 512;
    /// Logged in and granted.
    pub const LOGIN_GRANTED: u16 = 1024;
}

/// A message arriving in fragments.
pub(super) struct Fragments {
    pub opcode: u8,
    pub data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (text messages).
    pub utf8_valid: usize,
}

/// What a connection holds of input it could not act on yet. Boxed in
/// [`Conn`]: most connections, most of the time, hold none.
#[derive(Default)]
pub(super) struct Partial {
    /// Received bytes not yet consumed: a partial HTTP head or frame.
    pub input: Vec<u8>,
    pub message: Option<Fragments>,
    /// When the connection started holding it (milliseconds on the
    /// reactor's wrapping clock; meaningful while `STALLED`).
    pub since: u32,
    /// Bytes of this counted in the node's `--max-partial-bytes` budget.
    pub held: usize,
    /// Payload bytes of the partial frame at the front of `input` already
    /// unmasked (in place) and checked as UTF-8, for a text frame.
    pub unmasked: usize,
    /// Of those, the bytes that end on a whole UTF-8 sequence.
    pub frame_valid: usize,
}

pub(super) struct Conn {
    pub socket: TcpStream,
    generation: u32,
    /// When the login's token expires, in Unix seconds (0: no token, open mode).
    expiry: u32,
    /// The source address key (`admission::source_key`): the peer's, or the
    /// client's behind a trusted proxy once the upgrade named it.
    pub source: u32,
    /// The message-rate bucket's theoretical arrival time (`rate`).
    pub tat: u32,
    pub phase: Phase,
    pub flags: u16,
    /// Logins tried on this connection (`--max-login-attempts`).
    pub logins: u8,
    /// The name of a pending or granted login (which of the two: `flags`).
    user: Option<CompactString>,
    pub output: Output,
    /// A partial frame or HTTP head, or a fragmented message: `None` while
    /// there is neither.
    pub partial: Option<Box<Partial>>,
}

impl Conn {
    pub fn new(socket: TcpStream, generation: u32, source: u32) -> Conn {
        Conn {
            socket,
            generation,
            expiry: 0,
            source,
            tat: 0,
            phase: Phase::Handshake,
            flags: 0,
            logins: 0,
            user: None,
            output: Output::default(),
            partial: None,
        }
    }

    /// Received bytes not yet consumed.
    pub fn input(&self) -> &[u8] {
        self.partial.as_ref().map_or(&[], |p| &p.input)
    }

    /// The fragmented message being reassembled, if any.
    pub fn message(&self) -> Option<&Fragments> {
        self.partial.as_ref().and_then(|p| p.message.as_ref())
    }

    /// The partial state, created when there is none.
    pub fn partial_mut(&mut self) -> &mut Partial {
        self.partial.get_or_insert_with(Box::default)
    }

    /// Drops the partial state once it holds nothing, handing its buffer to
    /// `give`; returns the bytes it had counted against the node's budget.
    pub fn trim_partial(&mut self, give: impl FnOnce(Vec<u8>)) -> usize {
        if self.partial.as_ref().is_some_and(|p| p.input.is_empty() && p.message.is_none()) {
            if let Some(p) = self.partial.take() {
                give(p.input);
                return p.held;
            }
        }
        0
    }

    pub fn token(&self, key: usize) -> Token {
        token_of(key, self.generation)
    }

    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Chat | Phase::Echo)
    }

    pub fn login(&self) -> Login<'_> {
        match self.user.as_deref() {
            Some(name) if self.has(flag::LOGIN_GRANTED) => Login::Granted(name),
            Some(name) if self.has(flag::LOGIN_PENDING) => Login::Pending(name),
            _ => Login::Anonymous,
        }
    }

    /// The name this connection may chat as: logged in and granted.
    pub fn speaker(&self) -> Option<&str> {
        match self.login() {
            Login::Granted(name) => Some(name),
            _ => None,
        }
    }

    pub fn is_pending(&self) -> bool {
        self.has(flag::LOGIN_PENDING)
    }

    /// Records a login, granted at once or waiting for the bus.
    pub fn log_in(&mut self, name: &str, granted: bool) {
        self.user = Some(name.into());
        self.flags &= !(flag::LOGIN_PENDING | flag::LOGIN_GRANTED);
        self.flags |= if granted { flag::LOGIN_GRANTED } else { flag::LOGIN_PENDING };
    }

    /// A pending login was granted; false when there was none.
    pub fn grant(&mut self) -> bool {
        let pending = self.is_pending();
        if pending {
            self.flags = self.flags & !flag::LOGIN_PENDING | flag::LOGIN_GRANTED;
        }
        pending
    }

    /// When the token of the login expires (Unix seconds; 0 when there is none).
    pub fn expiry(&self) -> u64 {
        u64::from(self.expiry)
    }

    /// Sets when the login's token expires (past 2106 counts as 2106).
    pub fn set_expiry(&mut self, at: u64) {
        self.expiry = u32::try_from(at).unwrap_or(u32::MAX);
    }

    /// Ends the login, whatever its state: the name, and whether it was granted.
    pub fn log_out(&mut self) -> Option<(CompactString, bool)> {
        let granted = self.has(flag::LOGIN_GRANTED);
        self.flags &= !(flag::LOGIN_PENDING | flag::LOGIN_GRANTED);
        self.user.take().map(|name| (name, granted))
    }
}

/// Tokens carry the slab key in the low 32 bits and a generation above it,
/// so an event for a closed connection never reaches its successor.
pub(super) fn token_of(key: usize, generation: u32) -> Token {
    Token((generation as usize) << 32 | key)
}

/// The slab key and generation inside a token.
pub(super) fn split_token(token: Token) -> (usize, u32) {
    (token.0 & 0xFFFF_FFFF, (token.0 >> 32) as u32)
}

/// Generations stay below 2^31 so no connection token meets a reserved one.
pub(super) fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1) & 0x7FFF_FFFF
}

/// The live connection behind `token` in `conns`, if it is still the same
/// connection and not removed (a free function, so callers can borrow other
/// fields of the reactor beside it).
pub(super) fn live(conns: &mut slab::Slab<Conn>, token: Token) -> Option<&mut Conn> {
    let (key, generation) = split_token(token);
    conns.get_mut(key).filter(|c| c.generation == generation && c.phase != Phase::Gone)
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
        // 88 bytes in release builds; mio's sockets carry a selector id in debug builds.
        assert!(std::mem::size_of::<Conn>() <= 112, "{}", std::mem::size_of::<Conn>());
        #[cfg(not(debug_assertions))]
        assert_eq!(std::mem::size_of::<Conn>(), 88);
    }

    fn conn() -> Conn {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        Conn::new(TcpStream::from_std(stream), 1, 0)
    }

    #[test]
    fn a_login_goes_from_pending_to_granted_to_anonymous() {
        let mut c = conn();
        assert_eq!(c.login(), Login::Anonymous);
        assert!(!c.grant());
        c.log_in("alice", false);
        assert_eq!((c.login(), c.speaker()), (Login::Pending("alice"), None));
        assert!(c.grant());
        assert_eq!((c.login(), c.speaker()), (Login::Granted("alice"), Some("alice")));
        assert_eq!(c.log_out(), Some(("alice".into(), true)));
        assert_eq!(c.login(), Login::Anonymous);
        assert_eq!(c.log_out(), None);
        c.log_in("bob", false);
        assert_eq!(c.log_out(), Some(("bob".into(), false)));
    }
}
