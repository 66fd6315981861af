//! Starting and stopping a node: open-file limit, listeners, reactors, bus.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpListener;
use mio::Poll;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use thiserror::Error;

use crate::auth::{Auth, AuthError};
use crate::bus::local::LocalBus;
use crate::bus::Bus;
use crate::config::{AcceptMode, Config, ConfigError};
use crate::hub::Hub;
use crate::inbox::{Command, Inbox};
use crate::limits;
use crate::reactor::{Reactor, WAKER};

/// Pending connections the kernel may queue per listener; the kernel caps it
/// at `net.core.somaxconn` (4096 by default), which `scripts/tune-kernel.sh` raises.
const LISTEN_BACKLOG: i32 = 65_535;

/// The most connections whose tables are sized at start (4M: about 420 MB of
/// address space for the slabs); past it they grow as connections come.
const MAX_PRESIZED_CONNECTIONS: u64 = 4 << 20;

/// TCP keepalive probes after `--keepalive` seconds of silence: 3, 10 s apart.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

#[derive(Debug, Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen { addr: SocketAddr, source: io::Error, hint: &'static str },
    #[error("cannot set up reactor {reactor}: {source}")]
    Reactor { reactor: usize, source: io::Error },
    #[error("cannot join the cluster: {0}")]
    Bus(crate::bus::redis::StartError),
    #[error("{0}")]
    Auth(#[from] AuthError),
}

/// A running node.
pub struct Node {
    local_addr: SocketAddr,
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Node {
    /// The address the node listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Closes every connection with 1001 (going away) and waits for the reactors.
    pub fn shutdown(self) {
        for inbox in self.hub.inboxes.iter() {
            inbox.push(Command::Shutdown);
        }
        for thread in self.threads {
            match thread.join() {
                Ok(Err(e)) => log::error!("reactor stopped with an error: {e}"),
                Err(_) => log::error!("reactor panicked"),
                Ok(Ok(())) => {}
            }
        }
        self.bus.shutdown();
    }
}

/// Starts a node and returns once it listens.
///
/// # Errors
/// A [`StartError`] saying what to change: bad config, port in use, no bus.
pub fn start(config: Config) -> Result<Node, StartError> {
    config.validate()?;
    let auth = Arc::new(Auth::from_config(&config)?);
    auth.announce();
    let config = Arc::new(config);
    let room = match limits::raise_nofile() {
        Ok(n) => {
            let room = n.saturating_sub(limits::RESERVED_FDS);
            log::info!(
                "open-file limit {n}: room for about {room} connections (raise LimitNOFILE / ulimit -n for more)"
            );
            room
        }
        Err(e) => {
            log::warn!("cannot read or raise the open-file limit: {e}");
            0
        }
    };
    // Tables sized once for every connection the limit allows, so they never
    // double (and never sit half empty). Address space, not memory: pages are
    // resident only once connections fill them.
    let capacity = room.min(MAX_PRESIZED_CONNECTIONS) as usize;
    let reactors = config.reactor_count();
    let listeners = bind_listeners(&config, reactors)?;
    let local_addr =
        listeners[0].local_addr().map_err(|source| StartError::Listen { addr: config.listen, source, hint: "" })?;

    let mut polls = Vec::with_capacity(reactors);
    let mut inboxes = Vec::with_capacity(reactors);
    for reactor in 0..reactors {
        let poll = Poll::new().map_err(|source| StartError::Reactor { reactor, source })?;
        inboxes.push(
            Inbox::new(poll.registry(), WAKER, config.inbox_size)
                .map_err(|source| StartError::Reactor { reactor, source })?,
        );
        polls.push(poll);
    }
    let hub = Hub::new(inboxes, capacity);
    let bus: Arc<dyn Bus> = match &config.redis {
        None => Arc::new(LocalBus),
        Some(_) => crate::bus::redis::start(Arc::clone(&hub), &config).map_err(StartError::Bus)?,
    };

    let mut listeners = listeners.into_iter();
    let mut threads = Vec::with_capacity(reactors);
    for (id, poll) in polls.into_iter().enumerate() {
        let listener = listeners.next();
        // The kernel spreads connections over reactors evenly on average; a
        // reactor that gets more grows its slab past this.
        let slab_capacity = capacity.div_ceil(reactors) + capacity / reactors / 8;
        let (hub, bus, config, auth) = (Arc::clone(&hub), Arc::clone(&bus), Arc::clone(&config), Arc::clone(&auth));
        let reactor = Reactor::new(id, poll, listener, hub, bus, config, auth)
            .map(|r| r.with_slab_capacity(slab_capacity))
            .map_err(|source| StartError::Reactor { reactor: id, source })?;
        let thread = std::thread::Builder::new()
            .name(format!("reactor-{id}"))
            .spawn(move || reactor.run())
            .map_err(|source| StartError::Reactor { reactor: id, source })?;
        threads.push(thread);
    }
    log::info!(
        "listening on {local_addr}: {reactors} reactors, accept {:?}, chat at {}{}",
        config.accept,
        config.ws_path,
        config.echo_path.as_deref().map(|p| format!(", echo at {p}")).unwrap_or_default()
    );
    Ok(Node { local_addr, hub, bus, threads })
}

/// One SO_REUSEPORT listener per reactor, or one listener for handoff mode.
/// Without `--reuse-port`, a probe bind without SO_REUSEPORT first makes sure
/// no other process holds the port, so two nodes never share it by accident.
fn bind_listeners(config: &Config, reactors: usize) -> Result<Vec<TcpListener>, StartError> {
    let err = |addr, source: io::Error| {
        let hint = if source.kind() == io::ErrorKind::AddrInUse && !config.reuse_port {
            " (another process holds the port; pass --reuse-port to share it between nodes)"
        } else {
            ""
        };
        StartError::Listen { addr, source, hint }
    };
    let mut addr = config.listen;
    if !config.reuse_port {
        let probe = std::net::TcpListener::bind(addr).map_err(|e| err(addr, e))?;
        addr = probe.local_addr().map_err(|e| err(addr, e))?;
    }
    let count = if config.accept == AcceptMode::Handoff { 1 } else { reactors };
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = listen_reuseport(addr, config).map_err(|e| err(addr, e))?;
        // With port 0 the first bind picks the port; the others join it.
        addr = listener.local_addr().map_err(|e| err(addr, e))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Options set here are inherited by every accepted socket (Linux copies them
/// at accept), which saves a `setsockopt` per connection.
fn listen_reuseport(addr: SocketAddr, config: &Config) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Chat lines are small and latency matters more than packet count.
    socket.set_tcp_nodelay(true)?;
    if config.send_buffer > 0 {
        socket.set_send_buffer_size(config.send_buffer)?;
    }
    if config.keepalive > 0 {
        let probes = TcpKeepalive::new()
            .with_time(Duration::from_secs(config.keepalive))
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES);
        socket.set_tcp_keepalive(&probes)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Runs a node until SIGINT or SIGTERM, then closes every connection with 1001.
///
/// # Errors
/// A [`StartError`] when the node cannot start.
pub fn run(config: Config) -> Result<(), StartError> {
    let signals = block_stop_signals();
    let node = start(config)?;
    println!("switchboard listening on {}", node.local_addr());
    let mut signal = 0;
    // SAFETY: `signals` is an initialised set; sigwait writes the signal number.
    unsafe { libc::sigwait(&signals, &mut signal) };
    log::info!("signal {signal}: closing every connection and stopping");
    node.shutdown();
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread and the threads it starts, so that
/// `sigwait` in [`run`] receives them.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset and
    // pthread_sigmask read it; all of them only touch the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}
