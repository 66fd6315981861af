//! One poll loop: accept, handshake, read, dispatch, flush, reap.
//!
//! A reactor owns a `mio::Poll` and a slab of connections; a connection lives
//! and dies on one reactor and nothing else touches it. Other threads reach a
//! reactor only through its [`Inbox`](crate::inbox::Inbox).
//!
//! The read path is in [`inbound`](crate::inbound), the write path in
//! [`outbound`](crate::outbound), what frames and messages mean in `chat`.

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::bus::Bus;
use crate::codec::{self, close};
use crate::config::{AcceptMode, Config};
use crate::conn::{flag, next_generation, split_token, token_of, Conn, Phase};
use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::inbox::Command;
use crate::metrics::ReactorStats;

pub const LISTENER: Token = Token(usize::MAX);
pub const WAKER: Token = Token(usize::MAX - 1);

/// How long a closing connection may take to send its EOF after our close frame.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long to stop accepting after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Longest sleep in poll with nothing scheduled: bounds how late timers fire.
const MAX_POLL_WAIT: Duration = Duration::from_secs(1);

pub struct Reactor {
    pub(crate) id: usize,
    pub(crate) poll: Poll,
    listener: Option<TcpListener>,
    pub(crate) conns: Slab<Conn>,
    next_gen: u32,
    pub(crate) hub: Arc<Hub>,
    pub(crate) bus: Arc<dyn Bus>,
    pub(crate) config: Arc<Config>,
    pub(crate) scratch: Vec<u8>,
    /// Where replies are encoded before they are queued.
    pub(crate) encode: Vec<u8>,
    pub(crate) dirty: Vec<Token>,
    pub(crate) still_readable: Vec<(Token, bool)>,
    reap: Vec<usize>,
    handshake_deadlines: VecDeque<(Instant, Token)>,
    /// Connections holding an unfinished message, at most one entry each.
    pub(crate) stalled_deadlines: VecDeque<(Instant, Token)>,
    /// The reactor's clock for `Conn::stalled_since`.
    pub(crate) started: Instant,
    pub(crate) closing_deadlines: VecDeque<(Instant, Token)>,
    pub(crate) pool: Vec<Vec<u8>>,
    accept_paused_until: Option<Instant>,
    stopping: bool,
}

impl Reactor {
    pub fn new(
        id: usize,
        poll: Poll,
        mut listener: Option<TcpListener>,
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        config: Arc<Config>,
    ) -> io::Result<Reactor> {
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        Ok(Reactor {
            id,
            poll,
            listener,
            conns: Slab::new(),
            next_gen: 0,
            hub,
            bus,
            config,
            scratch: vec![0; crate::inbound::SCRATCH_SIZE],
            encode: Vec::with_capacity(1024),
            dirty: Vec::new(),
            still_readable: Vec::new(),
            reap: Vec::new(),
            handshake_deadlines: VecDeque::new(),
            stalled_deadlines: VecDeque::new(),
            started: Instant::now(),
            closing_deadlines: VecDeque::new(),
            pool: Vec::new(),
            accept_paused_until: None,
            stopping: false,
        })
    }

    /// Reserves slab room for `connections` up front (see `server::start`).
    pub fn with_slab_capacity(mut self, connections: usize) -> Reactor {
        self.conns.reserve(connections);
        self
    }

    pub(crate) fn stats(&self) -> &ReactorStats {
        &self.hub.metrics.reactors[self.id]
    }

    /// Runs until a [`Command::Shutdown`] arrives. Each turn: wait for events,
    /// dispatch them by token, drain the inbox, finish capped reads, write
    /// queued output, remove closed connections, fire timers.
    ///
    /// # Errors
    /// Only when polling itself fails.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stopping {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {} // The inbox is drained below on every turn.
                    token => {
                        // Every readable event reports WRITABLE too: only output
                        // left over from a full socket needs the nudge.
                        if event.is_writable() && self.conn(token).is_some_and(|c| c.unsent() > 0) {
                            self.mark_dirty(token);
                        }
                        if event.is_read_closed() || event.is_error() {
                            self.read_from(token, true);
                        } else if event.is_readable() {
                            self.read_from(token, false);
                        }
                    }
                }
            }
            self.process_inbox();
            self.read_still_readable();
            self.flush_dirty();
            self.reap_closed();
            self.fire_timers();
        }
        self.close_all();
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        if !self.still_readable.is_empty() || !self.dirty.is_empty() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        [
            self.handshake_deadlines.front().map(|d| d.0),
            self.stalled_deadlines.front().map(|d| d.0),
            self.closing_deadlines.front().map(|d| d.0),
            self.accept_paused_until,
        ]
        .into_iter()
        .flatten()
        .map(|at| at.saturating_duration_since(now))
        .fold(MAX_POLL_WAIT, Duration::min)
    }

    /// The live connection behind `token`, if it is still the same connection.
    pub(crate) fn conn_mut(&mut self, token: Token) -> Option<&mut Conn> {
        live(&mut self.conns, token)
    }

    /// Shared access to the live connection behind `token`.
    pub(crate) fn conn(&self, token: Token) -> Option<&Conn> {
        let (key, generation) = split_token(token);
        self.conns.get(key).filter(|c| c.generation == generation && !c.has(flag::GONE))
    }

    pub(crate) fn token_for(&self, key: usize) -> Token {
        token_of(key, self.conns[key].generation)
    }

    pub(crate) fn conn_ref(&self, key: usize) -> ConnRef {
        ConnRef { reactor: self.id, token: self.token_for(key) }
    }

    fn accept_all(&mut self) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, _)) => {
                    self.stats().accepted.fetch_add(1, Relaxed);
                    let target = match self.config.accept {
                        AcceptMode::Handoff => self.least_loaded(),
                        AcceptMode::Reuseport => self.id,
                    };
                    // Counted for its reactor now, before it is adopted, so the
                    // rest of this burst sees it when choosing the least loaded.
                    self.hub.metrics.reactors[target].connections.fetch_add(1, Relaxed);
                    if target == self.id {
                        self.adopt(stream);
                    } else {
                        self.hub.inboxes[target].push(Command::Adopt(stream));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // EMFILE/ENFILE: the backlog stays queued and no new edge comes
                    // for it, so retry on a timer instead of waiting for an event.
                    log::warn!("reactor {}: accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?}", self.id);
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    fn least_loaded(&self) -> usize {
        let reactors = &self.hub.metrics.reactors;
        (0..reactors.len()).min_by_key(|&r| reactors[r].connections.load(Relaxed)).unwrap_or(self.id)
    }

    /// Takes an accepted socket (already counted in this reactor's gauge).
    fn adopt(&mut self, mut stream: TcpStream) {
        // TCP_NODELAY and keepalive come from the listener (see server.rs).
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.next_gen = next_generation(self.next_gen);
        let token = token_of(key, self.next_gen);
        let registered = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE);
        if key > 0xFFFF_FFFF || registered.is_err() {
            log::warn!("reactor {}: cannot take a connection: {registered:?}", self.id);
            self.stats().connections.fetch_sub(1, Relaxed);
            return;
        }
        entry.insert(Conn::new(stream, self.next_gen));
        let deadline = Instant::now() + self.config.handshake_timeout();
        self.handshake_deadlines.push_back((deadline, token));
    }

    /// Closes after a protocol error: counted, then the close handshake.
    pub(crate) fn fail(&mut self, token: Token, code: u16, reason: &str) {
        self.stats().protocol_errors.fetch_add(1, Relaxed);
        self.begin_close(token, code, reason);
    }

    /// Starts the close handshake: the user leaves now, our close frame is
    /// queued, our side is shut once it is written, and the connection is
    /// removed at the peer's EOF or after [`CLOSE_GRACE`].
    pub(crate) fn begin_close(&mut self, token: Token, code: u16, reason: &str) {
        self.logout(token);
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let was_open = matches!(conn.phase, Phase::Open(_));
        conn.phase = Phase::Closing;
        conn.flags |= flag::SHUTDOWN_AFTER_FLUSH;
        let (input, message) = (mem::take(&mut conn.input), conn.message.take());
        if was_open {
            codec::write_close(&mut conn.output, code, reason);
        }
        self.give_buffer(input);
        if let Some(m) = message {
            self.give_buffer(m.data);
        }
        self.mark_dirty(token);
        self.closing_deadlines.push_back((Instant::now() + CLOSE_GRACE, token));
    }

    /// Takes the user name off this node and the cluster.
    pub(crate) fn logout(&mut self, token: Token) {
        let (key, _) = split_token(token);
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let Some(name) = conn.user.take() else { return };
        let was_granted = !conn.has(flag::LOGIN_PENDING);
        conn.flags &= !flag::LOGIN_PENDING;
        let at = self.conn_ref(key);
        self.hub.directory.remove(&name, at);
        self.bus.release(&name, at);
        if was_granted {
            self.stats().users.fetch_sub(1, Relaxed);
        }
    }

    /// Removes a connection at the end of this turn (the peer is gone).
    pub(crate) fn drop_conn(&mut self, token: Token) {
        self.logout(token);
        if let Some(conn) = self.conn_mut(token) {
            conn.flags |= flag::GONE;
            self.reap.push(split_token(token).0);
        }
    }

    fn reap_closed(&mut self) {
        for key in mem::take(&mut self.reap) {
            if !self.conns.get(key).is_some_and(|c| c.has(flag::GONE)) {
                continue;
            }
            let conn = self.conns.remove(key);
            self.stats().connections.fetch_sub(1, Relaxed);
            // Dropping the socket closes it, which also takes it out of epoll.
            let Conn { input, output, message, .. } = conn;
            self.give_buffer(input);
            self.give_buffer(output);
            if let Some(m) = message {
                self.give_buffer(m.data);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.accept_paused_until.is_some_and(|t| t <= now) {
            self.accept_paused_until = None;
            self.accept_all();
        }
        while let Some(&(at, token)) = self.handshake_deadlines.front() {
            if at > now {
                break;
            }
            self.handshake_deadlines.pop_front();
            if self.conn_mut(token).is_some_and(|c| c.phase == Phase::Handshake) {
                self.drop_conn(token);
            }
        }
        while let Some(&(at, token)) = self.stalled_deadlines.front() {
            if at > now {
                break;
            }
            self.stalled_deadlines.pop_front();
            self.check_stalled(token, now);
        }
        while let Some(&(at, token)) = self.closing_deadlines.front() {
            if at > now {
                break;
            }
            self.closing_deadlines.pop_front();
            self.drop_conn(token);
        }
        self.reap_closed();
    }

    fn process_inbox(&mut self) {
        let hub = Arc::clone(&self.hub);
        hub.inboxes[self.id].drain(|command| match command {
            Command::Deliver { token, payload } => self.deliver(token, &payload),
            Command::Undelivered { token, why } => self.undelivered(token, &why),
            Command::LoginDecided { token, accepted } => self.login_decided(token, accepted),
            Command::Adopt(stream) => self.adopt(stream),
            Command::Shutdown => self.stopping = true,
        });
    }

    /// On shutdown: every open WebSocket gets 1001, then one last flush.
    fn close_all(&mut self) {
        let tokens: Vec<Token> = self.conns.iter().map(|(key, c)| token_of(key, c.generation)).collect();
        for token in tokens {
            self.begin_close(token, close::GOING_AWAY, "server shutting down");
        }
        self.flush_dirty();
    }
}

/// The live connection behind `token` in `conns` (a free function, so callers
/// can borrow other fields of the reactor beside it).
pub(crate) fn live(conns: &mut Slab<Conn>, token: Token) -> Option<&mut Conn> {
    let (key, generation) = split_token(token);
    conns.get_mut(key).filter(|c| c.generation == generation && !c.has(flag::GONE))
}
