//! Starting and stopping a node: open-file limit, listeners, the admin
//! listener, reactors, bus, and the signals that drain it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpListener;
use mio::Poll;
use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use thiserror::Error;

use crate::api::{Api, ApiKeyError};
use crate::auth::{Auth, AuthError};
use crate::bus::local::LocalBus;
use crate::bus::Bus;
use crate::config::{AcceptMode, Config, ConfigError};
use crate::hub::Hub;
use crate::inbox::{Command, Inbox};
use crate::limits;
use crate::reactor::{Reactor, WAKER};
use crate::signals::{self, Signal};

/// Pending connections the kernel may queue per listener; the kernel caps it
/// at `net.core.somaxconn` (4096 by default), which `scripts/tune-kernel.sh` raises.
const LISTEN_BACKLOG: i32 = 65_535;

/// The most connections whose tables are sized at start (4M: about 420 MB of
/// address space for the slabs); past it they grow as connections come.
const MAX_PRESIZED_CONNECTIONS: u64 = 4 << 20;

/// TCP keepalive probes after `--keepalive` seconds of silence: 3, 10 s apart.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;

/// How often the main thread looks at its reactors between signals: a
/// reactor that ended on its own is found within this.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}{hint}")]
    Listen { addr: SocketAddr, source: io::Error, hint: &'static str },
    #[error("cannot listen on --admin-addr {addr}: {source}")]
    Admin { addr: SocketAddr, source: io::Error },
    #[error("cannot set up reactor {reactor}: {source}")]
    Reactor { reactor: usize, source: io::Error },
    #[error("cannot join the cluster: {0}")]
    Bus(crate::bus::redis::StartError),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    ApiKey(#[from] ApiKeyError),
    #[error("reactor {reactor} stopped on its own ({why}): the node stops rather than serve part of its clients")]
    ReactorDied { reactor: usize, why: String },
}

/// A running node.
pub struct Node {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    hub: Arc<Hub>,
    bus: Arc<dyn Bus>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    drain_period: Duration,
}

impl Node {
    /// The address the node listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the admin listener (/metrics, /healthz, /readyz).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Starts the drain: `/readyz` answers 503, every reactor stops accepting
    /// and closes its connections with 1001, spread over `--drain-secs`.
    pub fn drain(&self) {
        self.hub.metrics.node.draining.store(1, Relaxed);
        for inbox in self.hub.inboxes.iter() {
            inbox.push(Command::Drain { over: self.drain_period });
        }
    }

    /// Closes every remaining connection with 1001 now.
    pub fn stop_now(&self) {
        self.hub.metrics.node.draining.store(1, Relaxed);
        for inbox in self.hub.inboxes.iter() {
            inbox.push(Command::Shutdown);
        }
    }

    /// The first reactor whose thread has ended.
    fn ended_reactor(&self) -> Option<usize> {
        self.threads.iter().position(JoinHandle::is_finished)
    }

    /// Waits for the reactors, then stops the bus (which gives the names of
    /// this node's users back to the cluster registry).
    pub fn join(self) {
        for (reactor, thread) in self.threads.into_iter().enumerate() {
            match thread.join() {
                Ok(Err(e)) => log::error!("reactor {reactor} stopped with an error: {e}"),
                Err(_) => log::error!("reactor {reactor} panicked"),
                Ok(Ok(())) => {}
            }
        }
        self.bus.shutdown();
    }

    /// Closes every connection with 1001 (going away) and waits for the reactors.
    pub fn shutdown(self) {
        self.stop_now();
        self.join();
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
    let capacity = usize::try_from(room.min(MAX_PRESIZED_CONNECTIONS)).unwrap_or(usize::MAX);
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
    let api = Api::from_config(&config, &hub, &bus)?;
    let admin_addr = crate::admin::start(config.admin_addr, Arc::clone(&hub), api)
        .map_err(|source| StartError::Admin { addr: config.admin_addr, source })?;

    let mut listeners = listeners.into_iter();
    let mut threads = Vec::with_capacity(reactors);
    for (id, poll) in polls.into_iter().enumerate() {
        let listener = listeners.next();
        // The kernel spreads connections over reactors evenly on average; a
        // reactor that gets more grows its slab past this.
        let slab_capacity = capacity.div_ceil(reactors) + capacity / reactors / 8;
        let shared = (Arc::clone(&hub), Arc::clone(&bus), Arc::clone(&config), Arc::clone(&auth));
        let reactor = Reactor::new(id, poll, listener, shared.0, shared.1, shared.2, shared.3)
            .map(|r| r.with_slab_capacity(slab_capacity))
            .map_err(|source| StartError::Reactor { reactor: id, source })?;
        // The last reactor, so that with several the others keep serving.
        let fault = config.fault_panic_after.filter(|_| id + 1 == reactors).map(Duration::from_secs);
        let thread = std::thread::Builder::new()
            .name(format!("reactor-{id}"))
            .spawn(move || {
                if let Some(after) = fault {
                    std::thread::sleep(after);
                    panic!("reactor {id}: panic injected by --fault-panic-after");
                }
                reactor.run()
            })
            .map_err(|source| StartError::Reactor { reactor: id, source })?;
        threads.push(thread);
    }
    log::info!(
        "chat on {local_addr}: {reactors} reactors, accept {}{}, chat at {}{}; admin on {admin_addr}: /metrics /healthz /readyz",
        format!("{:?}", config.accept).to_lowercase(),
        if config.reuse_port { " (port shared: --reuse-port)" } else { "" },
        config.ws_path,
        config.echo_path.as_deref().map(|p| format!(", echo at {p}")).unwrap_or_default()
    );
    Ok(Node { local_addr, admin_addr, hub, bus, threads, drain_period: config.drain_period() })
}

/// The listening sockets, one per reactor that accepts. With --reuse-port,
/// SO_REUSEPORT sockets that other node processes may join; without, one
/// socket this node holds alone (every reactor gets a descriptor of it, and
/// whichever is free first accepts).
fn bind_listeners(config: &Config, reactors: usize) -> Result<Vec<TcpListener>, StartError> {
    let err = |addr, source: io::Error| {
        let hint = if source.kind() == io::ErrorKind::AddrInUse && !config.reuse_port {
            " (another process holds the port; nodes that share a port all need --reuse-port)"
        } else {
            ""
        };
        StartError::Listen { addr, source, hint }
    };
    let mut addr = config.listen;
    let count = if config.accept == AcceptMode::Handoff { 1 } else { reactors };
    let mut listeners = Vec::with_capacity(count);
    if config.reuse_port {
        for _ in 0..count {
            let listener = listen(addr, config).map_err(|e| err(addr, e))?;
            // With port 0 the first bind picks the port; the others join it.
            addr = listener.local_addr().map_err(|e| err(addr, e))?;
            listeners.push(TcpListener::from_std(listener));
        }
    } else {
        let listener = listen(addr, config).map_err(|e| err(addr, e))?;
        for _ in 1..count {
            listeners.push(TcpListener::from_std(listener.try_clone().map_err(|e| err(addr, e))?));
        }
        listeners.push(TcpListener::from_std(listener));
    }
    Ok(listeners)
}

/// A non-blocking listening socket; SO_REUSEPORT only with --reuse-port.
/// Options set here are inherited by every accepted socket (Linux copies them
/// at accept), which saves a `setsockopt` per connection.
fn listen(addr: SocketAddr, config: &Config) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Rebinding over the TIME_WAIT sockets of a previous run; on Linux it
    // never lets two sockets listen on one port.
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(config.reuse_port)?;
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
    Ok(socket.into())
}

/// Runs a node until a stop signal, then drains it (see `signals.rs`).
/// Prints the chat address, then the admin address, one line each on stdout.
///
/// # Errors
/// A [`StartError`] when the node cannot start or a reactor ends on its own.
pub fn run(config: Config) -> Result<(), StartError> {
    let signals = signals::block();
    let node = start(config)?;
    println!("switchboard listening on {}", node.local_addr());
    println!("switchboard admin on {}", node.admin_addr());
    let mut draining = false;
    loop {
        match signals.wait(WATCH_INTERVAL) {
            Some(Signal::Reload) => {
                log::info!("SIGHUP: nothing to reload (settings are read at start); restart the node to change them")
            }
            Some(Signal::Stop(name)) if !draining => {
                log::info!(
                    "{name}: draining: not ready, no new connections, closing every client with 1001 over {:?}",
                    node.drain_period
                );
                node.drain();
                draining = true;
            }
            Some(Signal::Stop(name)) => {
                log::info!("{name} again: closing the remaining connections now");
                node.stop_now();
            }
            None => {}
        }
        if draining {
            if node.threads.iter().all(JoinHandle::is_finished) {
                break;
            }
        } else if let Some(reactor) = node.ended_reactor() {
            node.stop_now();
            node.join();
            return Err(StartError::ReactorDied { reactor, why: "its poll loop failed".into() });
        }
    }
    node.join();
    log::info!("drained: every connection closed, names released; exiting");
    Ok(())
}
