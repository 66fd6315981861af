//! The per-connection state a driver thread keeps.
//!
//! [`Conn`] is 72 bytes in release builds: the socket, a state, a generation, a sequence
//! number, a count of room joins awaiting confirmation, a timestamp, and two buffers that are empty (no heap) unless a partial frame
//! came in or output is waiting for the socket.

use mio::net::TcpStream;

/// Where a connection is in its life; the pending ones wait for the peer under a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Idle,
    Connecting,
    /// The upgrade request is sent (through TLS for wss://, queued until its handshake is
    /// done), waiting for the 101.
    Handshaking,
    /// Socket.IO: the WebSocket is up, waiting for the Engine.IO open packet and then the
    /// answer to the namespace connect.
    Joining,
    Open,
    LoginPending,
    /// Logged in, its `joinmsg`s sent, waiting for their confirmations (`Conn::joins`).
    RoomJoining,
    Ready,
    /// Churn: our close frame is sent, waiting for the server's close (or EOF).
    Closing,
    Closed,
}

impl State {
    /// Waiting for the peer, under a deadline.
    pub(super) fn is_pending(self) -> bool {
        matches!(
            self,
            State::Connecting
                | State::Handshaking
                | State::Joining
                | State::LoginPending
                | State::RoomJoining
                | State::Closing
        )
    }

    /// The step a failure in this state interrupted, as failure causes name it.
    pub(super) fn step(self) -> &'static str {
        match self {
            State::Connecting => "connect",
            State::Handshaking => "handshake",
            State::Joining => "socket.io connect",
            State::LoginPending => "login",
            State::RoomJoining => "room join",
            State::Open | State::Ready => "open",
            State::Closing => "close",
            State::Idle | State::Closed => "idle",
        }
    }

    /// WebSocket open.
    pub(super) fn is_open(self) -> bool {
        matches!(self, State::Open | State::LoginPending | State::RoomJoining | State::Ready)
    }
}

/// What a deadline waits for; it expires a connection only while that wait lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// TCP connect, the TLS and WebSocket handshakes, and Socket.IO's connect.
    Connect,
    /// The login's confirmation.
    Login,
    /// The confirmations of the connection's room joins.
    Join,
    /// The server's answer to our close (churn).
    Close,
}

impl Wait {
    pub(super) fn covers(self, state: State) -> bool {
        match self {
            Wait::Connect => matches!(state, State::Connecting | State::Handshaking | State::Joining),
            Wait::Login => state == State::LoginPending,
            Wait::Join => state == State::RoomJoining,
            Wait::Close => state == State::Closing,
        }
    }
}

/// A deadline: when, for which slot and generation, waiting for what.
pub(super) type Deadline = (u64, u32, u16, Wait);

/// One connection as its driver thread keeps it; see the size test below.
pub(super) struct Conn {
    pub(super) stream: Option<TcpStream>,
    /// Pending output; empty (no heap) unless the socket would block.
    pub(super) out: Vec<u8>,
    /// A partial incoming frame or handshake answer; empty unless one is split.
    pub(super) inp: Vec<u8>,
    /// When the current step (connect or login) began; for a churn cycle, when its
    /// schedule meant it to begin (the whole cycle is timed from there).
    pub(super) started_ns: u64,
    /// Next chat sequence number.
    pub(super) seq: u32,
    /// Bumped on every reconnect so stale events and deadlines are recognised.
    pub(super) generation: u16,
    pub(super) state: State,
    /// Reconnecting as part of churn: log in right after the handshake.
    pub(super) churning: bool,
    /// Room joins sent and not confirmed yet (in what was padding: still 72 bytes).
    pub(super) joins: u16,
    /// `--recover`: dropped after its login, coming back (also in padding).
    pub(super) recovering: bool,
}

impl Conn {
    /// A connection not started yet: no socket, no buffers.
    pub(super) fn idle() -> Self {
        Conn {
            stream: None,
            out: Vec::new(),
            inp: Vec::new(),
            started_ns: 0,
            seq: 0,
            generation: 0,
            state: State::Idle,
            churning: false,
            joins: 0,
            recovering: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_state_is_small() {
        // 72 bytes in release; debug builds of mio add a selector id. The budget is 512 bytes
        // per connection in all; the rest is kernel socket memory
        // (not counted) and allocator slack.
        assert!(std::mem::size_of::<Conn>() <= 80, "{}", std::mem::size_of::<Conn>());
        // The room join count lives in what was padding.
        #[cfg(not(debug_assertions))]
        assert_eq!(std::mem::size_of::<Conn>(), 72);
    }
}
