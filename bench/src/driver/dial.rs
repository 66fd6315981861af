//! Opening a connection's socket from the (address, port) pair the source plan gives it
//! (`crate::sources`), so `connect()` never searches the ephemeral range: a port the kernel
//! reports in use (EADDRINUSE from `bind`, EADDRNOTAVAIL from `connect`) is skipped for
//! the connection's next spare, on a fresh socket.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::sources::{Bind, PortMode};

/// `IP_LOCAL_PORT_RANGE` (linux/in.h, Linux 6.3+; not in the libc crate yet): the
/// per-socket ephemeral range, `hi << 16 | lo`.
const IP_LOCAL_PORT_RANGE: libc::c_int = 51;

/// A socket under way, the ports skipped because they were in use, and whether the
/// kernel had to choose the port after all.
pub(super) struct Dialed {
    pub(super) stream: TcpStream,
    pub(super) skipped: u32,
    pub(super) fell_back: bool,
}

/// Opens a non-blocking TCP socket to `target` from `bind` (the kernel chooses when
/// `None`) and starts connecting; `attempt` picks where among its ports to start. When
/// every port the connection owns is in use (another run from the same addresses), the
/// kernel picks one from its ephemeral range instead.
///
/// # Errors
/// Any error other than a port in use, or the kernel's own error once it had to choose;
/// either way with the ports skipped before it.
pub(super) fn dial(
    target: SocketAddr,
    bind: Option<Bind>,
    mode: PortMode,
    attempt: u16,
) -> Result<Dialed, (io::Error, u32)> {
    let (from, mode) = match bind {
        None => (None, mode),
        Some(bind) if mode == PortMode::Kernel => (Some((bind, 0)), mode),
        Some(bind) => return dial_planned(target, bind, mode, attempt),
    };
    start(target, from, mode).map(|stream| Dialed { stream, skipped: 0, fell_back: false }).map_err(|e| (e, 0))
}

fn dial_planned(target: SocketAddr, bind: Bind, mode: PortMode, attempt: u16) -> Result<Dialed, (io::Error, u32)> {
    let mut skipped = 0;
    for port in bind.candidates(attempt) {
        match start(target, Some((bind, port)), mode) {
            Ok(stream) => return Ok(Dialed { stream, skipped, fell_back: false }),
            Err(e) if in_use(&e) => skipped += 1,
            Err(e) => return Err((e, skipped)),
        }
    }
    match start(target, Some((bind, 0)), PortMode::Kernel) {
        Ok(stream) => Ok(Dialed { stream, skipped, fell_back: true }),
        Err(e) => Err((e, skipped)),
    }
}

/// The kernel says this pair is taken: try another port.
fn in_use(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EADDRINUSE | libc::EADDRNOTAVAIL))
}

/// One socket, bound as `from` says, connecting.
fn start(target: SocketAddr, from: Option<(Bind, u16)>, mode: PortMode) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(target), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    if let Some((bind, port)) = from {
        // A port this address's earlier connection left in TIME_WAIT is free to bind again
        // when both sockets allow it; connect() then takes over the TIME_WAIT
        // (tcp_tw_reuse, on for loopback by default) or says EADDRNOTAVAIL, and the next
        // spare is tried. Listeners still refuse the bind with EADDRINUSE. Set in every
        // mode, so that no run leaves TIME_WAITs that block the next one.
        socket.set_reuse_address(true)?;
        let local = match mode {
            PortMode::Explicit => SocketAddr::new(bind.addr, port),
            PortMode::Range => {
                // The port is taken at connect(), per destination, from a range of one.
                set_int(&socket, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
                set_int(&socket, IP_LOCAL_PORT_RANGE, (i32::from(port) << 16) | i32::from(port))?;
                SocketAddr::new(bind.addr, 0)
            }
            PortMode::Kernel => {
                // The port is chosen at connect() per 4-tuple: the kernel's search.
                set_int(&socket, libc::IP_BIND_ADDRESS_NO_PORT, 1)?;
                SocketAddr::new(bind.addr, 0)
            }
        };
        socket.bind(&local.into())?;
    }
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn set_int(socket: &Socket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid socket fd; the value points to a live c_int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, TcpListener};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::sources::PortRange;

    fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        (l, addr)
    }

    /// Two ports of `range` that differ from run to run (and from test to test). Not
    /// probed by binding them: a port bound and closed a moment ago may be refused for a
    /// while to `connect()`'s own choice (range mode).
    fn fresh_pair(range: PortRange) -> u16 {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let pairs = (range.len() / 2 - 1) as u64;
        let seed = std::process::id() as u64 ^ crate::clock::monotonic_ns();
        let k = u64::from(NEXT.fetch_add(1, Ordering::Relaxed));
        range.lo + 2 * ((seed + 7919 * k) % pairs) as u16
    }

    /// Below the kernel's ephemeral range: nothing else picks these by itself.
    const BELOW: PortRange = PortRange { lo: 20_000, hi: 27_999 };

    /// A connection owning `home` and the port after it, in `ports`.
    fn bind_at_in(addr: IpAddr, home: u16, ports: PortRange) -> Bind {
        Bind { addr, position: u32::from(home - ports.lo), stride: 2, ports }
    }

    fn bind_at(addr: IpAddr, home: u16) -> Bind {
        if home == 0 {
            return Bind { addr, position: 0, stride: 1, ports: BELOW };
        }
        bind_at_in(addr, home, BELOW)
    }

    fn local_of(d: &Dialed) -> SocketAddr {
        // Connected or connecting: the local address is already fixed.
        d.stream.local_addr().unwrap()
    }

    #[test]
    fn explicit_binds_take_exactly_the_planned_pair() {
        let (_l, target) = listener();
        let addr: IpAddr = "127.0.0.21".parse().unwrap();
        let home = fresh_pair(BELOW);
        let d = dial(target, Some(bind_at(addr, home)), PortMode::Explicit, 0).unwrap();
        assert_eq!((local_of(&d), d.skipped, d.fell_back), (SocketAddr::new(addr, home), 0, false));
    }

    #[test]
    fn a_port_in_use_is_skipped_for_the_next_spare() {
        let (_l, target) = listener();
        let addr: IpAddr = "127.0.0.22".parse().unwrap();
        let home = fresh_pair(BELOW);
        // Occupy the home port first, as another process would.
        let _squatter = std::net::TcpListener::bind((addr, home)).unwrap();
        let d = dial(target, Some(bind_at(addr, home)), PortMode::Explicit, 0).unwrap();
        assert_eq!((local_of(&d), d.skipped, d.fell_back), (SocketAddr::new(addr, home + 1), 1, false));
        // The spare is now this connection's: with no port left, the kernel chooses (and
        // the choice is counted).
        let again = dial(target, Some(bind_at(addr, home)), PortMode::Explicit, 0).unwrap();
        assert_eq!((again.skipped, again.fell_back), (2, true));
        let local = local_of(&again);
        assert!(local.ip() == addr && local.port() != home && local.port() != home + 1, "{local}");
    }

    #[test]
    fn a_one_port_range_is_taken_per_destination() {
        let (_a, target_a) = listener();
        let (_b, target_b) = listener();
        let addr: IpAddr = "127.0.0.23".parse().unwrap();
        // A per-socket range only counts inside the kernel's own.
        let home = fresh_pair(PortRange::of_kernel());
        let bind = bind_at_in(addr, home, PortRange::of_kernel());
        let first = dial(target_a, Some(bind), PortMode::Range, 0).unwrap();
        // Another destination may share the pair; the same one takes the spare.
        let other = dial(target_b, Some(bind), PortMode::Range, 0).unwrap();
        let again = dial(target_a, Some(bind), PortMode::Range, 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(local_of(&first), SocketAddr::new(addr, home));
        assert_eq!(local_of(&other), SocketAddr::new(addr, home));
        assert_eq!((local_of(&again), again.skipped), (SocketAddr::new(addr, home + 1), 1));
    }

    #[test]
    fn the_kernel_mode_leaves_the_port_to_connect() {
        let (_l, target) = listener();
        let addr: IpAddr = "127.0.0.24".parse().unwrap();
        let d = dial(target, Some(bind_at(addr, 0)), PortMode::Kernel, 0).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let local = local_of(&d);
        assert_eq!(local.ip(), addr);
        assert_ne!(local.port(), 0);
    }
}
