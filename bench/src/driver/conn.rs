//! The per-connection state a driver thread keeps, and opening its socket.
//!
//! [`Conn`] is 72 bytes in release builds: the socket, a state, a generation, a sequence
//! number, a timestamp, and two buffers that are empty (no heap) unless a partial frame
//! came in or output is waiting for the socket.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;

use mio::net::TcpStream;

use crate::stats::Counter;

/// Where a connection is in its life; the pending ones wait for the peer under a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Idle,
    Connecting,
    Handshaking,
    Open,
    LoginPending,
    Ready,
    /// Churn: our close frame is sent, waiting for the server's close (or EOF).
    Closing,
    Closed,
}

impl State {
    /// Waiting for the peer, under a deadline.
    pub(super) fn is_pending(self) -> bool {
        matches!(self, State::Connecting | State::Handshaking | State::LoginPending | State::Closing)
    }

    /// WebSocket open.
    pub(super) fn is_open(self) -> bool {
        matches!(self, State::Open | State::LoginPending | State::Ready)
    }
}

/// One connection as its driver thread keeps it; see the size test below.
pub(super) struct Conn {
    pub(super) stream: Option<TcpStream>,
    /// Pending output; empty (no heap) unless the socket would block.
    pub(super) out: Vec<u8>,
    /// A partial incoming frame or handshake answer; empty unless one is split.
    pub(super) inp: Vec<u8>,
    /// When the current pending step (connect or login) began.
    pub(super) started_ns: u64,
    /// Next chat sequence number.
    pub(super) seq: u32,
    /// Bumped on every reconnect so stale events and deadlines are recognised.
    pub(super) generation: u16,
    pub(super) state: State,
    /// Reconnecting as part of churn: log in right after the handshake.
    pub(super) churning: bool,
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
        }
    }
}

/// Opens a non-blocking TCP socket to `target`, bound to `source` if given.
pub(super) fn open_socket(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(target), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    if let Some(source) = source {
        // Let connect() pick the port, so one source address serves ~28k connections per
        // target rather than ~28k in all (ports are then unique per 4-tuple).
        let one: libc::c_int = 1;
        // SAFETY: valid socket fd, option value points to a live c_int of the given size.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        socket.bind(&SocketAddr::new(source, 0).into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// The error counter an I/O error belongs to.
pub(super) fn error_counter(e: &io::Error) -> Counter {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Counter::ErrRefused,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => Counter::ErrReset,
        TimedOut => Counter::ErrTimeout,
        _ => Counter::ErrOther,
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
    }
}
