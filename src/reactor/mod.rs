//! One poll loop: accept, handshake, read, dispatch, flush, reap.
//!
//! A reactor owns a `mio::Poll` and a slab of connections; a connection lives
//! and dies on one reactor and nothing else touches it. Other threads reach a
//! reactor only through its [`Inbox`](crate::inbox::Inbox).
//!
//! An event's connection is looked up once; the handler gets it beside the
//! rest of the reactor (its [`Context`]) and returns an [`Outcome`]: go on,
//! or a [`Stop`] (close with a code, or drop), which the loop then carries
//! out ([`close::settle`]). What a handler sends to a neighbour on this
//! reactor is queued ([`local`]) and written when the handler returns.
//!
//! - `accept`: new sockets, and which reactor takes each.
//! - `read`: edge-triggered reads, HTTP heads and frames parsed in place.
//! - `frames`: control frames, fragments, whole messages to their endpoint.
//! - `chat`: the chat protocol: chat, whoami, routing.
//! - `login`: logins (open mode, or signed tokens), refreshes, token expiry.
//! - `reply`: error replies to a connection's client.
//! - `rooms`: joins, leaves and room messages; which connection is in which room.
//! - `presence`: who is online, who is in a room.
//! - `membership`: which connection is in which room.
//! - `local`: messages for other connections of this reactor.
//! - `write`: output queued per turn and written once.
//! - `output`: a connection's pending output, the buffer pool.
//! - `context`: the reactor's state but its connections; the handlers' outcome.
//! - `timers`: deadlines (upgrade and login, stalled message, close), a FIFO per timeout.
//! - `expiry`: tokens' deadlines, which vary: a wheel of one-second slots.
//! - `liveness`: the upgrade and login deadlines, pings to quiet connections.
//! - `rate`: messages per second and logins per connection.
//! - `admit`: whether an upgrade is taken (connections in all, per address, per second).
//! - `stalled`: the `--message-timeout` rule, and the node's budget for unfinished messages.
//! - `close`: what a [`Stop`] does.
//! - `drain`: closing every connection, spread over the drain period, when the node stops.
//! - `conn`: per-connection state.

mod accept;
mod admit;
mod chat;
mod close;
mod conn;
mod context;
mod drain;
mod expiry;
mod frames;
mod keep;
mod liveness;
mod local;
mod login;
mod membership;
mod output;
mod presence;
mod rate;
mod read;
mod recovery;
mod reply;
mod rooms;
mod stalled;
mod timers;
mod write;

use std::io;
use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use self::accept::Accepted;
use self::admit::Source;
use self::conn::{flag, live, next_generation, token_of, Conn, Login, Phase};
use self::context::{Context, MessageRate, Outcome, Stop};
use self::drain::Drain;
use self::liveness::Sweep;
use self::local::{LocalDeliveries, Queued};
use self::membership::LocalRooms;
use self::output::BufferPool;
use self::timers::Timers;
use crate::auth::{self, Auth};
use crate::bus::Bus;
use crate::codec::close::GOING_AWAY;
use crate::config::Config;
use crate::hub::Hub;
use crate::inbox::Command;
use crate::metrics::CloseReason;

pub(crate) const LISTENER: Token = Token(usize::MAX);
pub(crate) const WAKER: Token = Token(usize::MAX - 1);

pub(crate) struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    conns: Slab<Conn>,
    next_gen: u32,
    /// Bytes read per `read` call, shared by all connections.
    scratch: Vec<u8>,
    cx: Context,
    sweep: Sweep,
    /// The members of a room on this reactor, copied out for one fan-out.
    room_members: Vec<Token>,
    /// Set once the node stops: no listener, connections closing over time.
    drain: Option<Drain>,
    stopping: bool,
}

impl Reactor {
    pub(crate) fn new(
        id: usize,
        poll: Poll,
        mut listener: Option<TcpListener>,
        hub: Arc<Hub>,
        bus: Arc<dyn Bus>,
        config: Arc<Config>,
        auth: Arc<Auth>,
    ) -> io::Result<Reactor> {
        if let Some(l) = listener.as_mut() {
            poll.registry().register(l, LISTENER, Interest::READABLE)?;
        }
        let cx = Context {
            id,
            hub,
            bus,
            rate: MessageRate::new(&config),
            max_connections: admit::max_connections(&config),
            keep: keep::Keep::new(&config),
            clock: 0,
            config,
            auth,
            encode: Vec::with_capacity(1024),
            pool: BufferPool::default(),
            dirty: Vec::new(),
            still_readable: Vec::new(),
            reap: Vec::new(),
            timers: Timers::new(),
            local: LocalDeliveries::default(),
            rooms: LocalRooms::default(),
            recovering: keep::Recovering::default(),
        };
        let scratch = vec![0; read::SCRATCH_SIZE];
        Ok(Reactor {
            poll,
            listener,
            conns: Slab::new(),
            next_gen: 0,
            scratch,
            cx,
            sweep: Sweep::new(),
            room_members: Vec::new(),
            drain: None,
            stopping: false,
        })
    }

    /// Reserves slab room for `connections` up front (see `server::start`).
    pub(crate) fn with_slab_capacity(mut self, connections: usize) -> Reactor {
        self.conns.reserve(connections);
        self
    }

    /// Runs until a [`Command::Shutdown`] arrives, or a [`Command::Drain`]
    /// has closed every connection. Each turn: wait for events, dispatch them
    /// by token, drain the inbox, finish capped reads, write queued output,
    /// remove closed connections, fire timers, close those due in a drain.
    ///
    /// # Errors
    /// Only when polling itself fails.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stopping {
            if let Err(e) = self.poll.poll(&mut events, Some(self.poll_timeout())) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.cx.clock = self.cx.timers.micros_at(Instant::now());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {} // The inbox is drained below on every turn.
                    token => self.on_socket_event(token, event),
                }
            }
            self.process_inbox();
            self.deliver_local();
            self.read_still_readable();
            self.flush_dirty();
            self.reap_closed();
            self.fire_timers();
            self.drain_due();
            // What timers closed may have left rooms, whose members are told.
            self.deliver_local();
        }
        self.close_all();
        Ok(())
    }

    fn poll_timeout(&self) -> Duration {
        if !self.cx.still_readable.is_empty() || !self.cx.dirty.is_empty() {
            return Duration::ZERO;
        }
        let timers = self.cx.timers.poll_timeout();
        match self.drain.as_ref().and_then(Drain::next_at) {
            Some(at) => timers.min(at.saturating_duration_since(Instant::now())),
            None => timers,
        }
    }

    fn on_socket_event(&mut self, token: Token, event: &Event) {
        let Some(conn) = live(&mut self.conns, token) else {
            return;
        };
        // Every readable event reports WRITABLE too: only output left over
        // from a full socket needs the nudge.
        if event.is_writable() && conn.output.unsent() > 0 {
            write::mark_dirty(conn, token, &mut self.cx.dirty);
        }
        let to_eof = event.is_read_closed() || event.is_error();
        if to_eof || event.is_readable() {
            self.read_from(token, to_eof);
        }
    }

    /// Reads what a connection sent and acts on it, then writes what it sent
    /// to its neighbours on this reactor.
    fn read_from(&mut self, token: Token, to_eof: bool) {
        let Some(conn) = live(&mut self.conns, token) else {
            return;
        };
        let outcome = read::read(conn, token, &mut self.cx, &mut self.scratch, to_eof);
        close::settle(conn, token, &mut self.cx, outcome);
        self.deliver_local();
    }

    fn read_still_readable(&mut self) {
        for (token, to_eof) in mem::take(&mut self.cx.still_readable) {
            self.read_from(token, to_eof);
        }
    }

    fn deliver_local(&mut self) {
        // A delivery may close a slow consumer, whose leaving its rooms
        // queues more: deliver until nothing is left.
        while !self.cx.local.is_empty() {
            let mut local = mem::take(&mut self.cx.local);
            local.drain(|queued| match queued {
                Queued::Chat(token, payload) => {
                    self.with_conn(token, |conn, cx| chat::deliver(conn, token, cx, payload))
                }
                Queued::Room(key, frame) => self.deliver_room(key, frame),
            });
            if self.cx.local.is_empty() {
                // Keep what the queue grew to for the next turn.
                self.cx.local = local;
            }
        }
    }

    /// Writes a room message to every member of the room on this reactor.
    fn deliver_room(&mut self, key: &str, frame: &Arc<[u8]>) {
        let mut members = mem::take(&mut self.room_members);
        self.cx.rooms.members_into(key, &mut members);
        for &token in &members {
            self.with_conn(token, |conn, cx| chat::deliver_shared(conn, token, cx, key, frame));
        }
        self.room_members = members;
    }

    /// Runs `handler` on the live connection behind `token` (if any) and acts
    /// on its outcome.
    fn with_conn(&mut self, token: Token, handler: impl FnOnce(&mut Conn, &mut Context) -> Outcome) {
        if let Some(conn) = live(&mut self.conns, token) {
            let outcome = handler(conn, &mut self.cx);
            close::settle(conn, token, &mut self.cx, outcome);
        }
    }

    fn flush_dirty(&mut self) {
        let mut dirty = mem::take(&mut self.cx.dirty);
        for token in dirty.drain(..) {
            self.with_conn(token, |conn, cx| {
                conn.flags &= !conn::flag::DIRTY;
                match write::flush(conn, token, cx) {
                    write::Flushed::Gone => Err(Stop::Drop),
                    _ => Ok(()),
                }
            });
        }
        if self.cx.dirty.is_empty() {
            self.cx.dirty = dirty;
        }
    }

    fn accept_all(&mut self) {
        if self.cx.timers.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match accept::accept_one(listener, self.cx.id, &self.cx.hub, &self.cx.config) {
                Accepted::Socket { stream, target, source } if target == self.cx.id => self.adopt(stream, source),
                Accepted::Socket { stream, target, source } => {
                    let adopt = Command::Adopt { stream, source: source.key, counted: source.counted };
                    self.cx.hub.inboxes[target].push(adopt);
                }
                Accepted::Empty => return,
                Accepted::Paused { until } => {
                    self.cx.timers.accept_paused_until = Some(until);
                    return;
                }
            }
        }
    }

    /// Takes an accepted socket (already counted in this reactor's gauge).
    /// TCP_NODELAY, keepalive and the send buffer come from the listener (see server.rs).
    fn adopt(&mut self, mut stream: TcpStream, source: Source) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.next_gen = next_generation(self.next_gen);
        let token = token_of(key, self.next_gen);
        let registered = self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE);
        if key > 0xFFFF_FFFF || registered.is_err() {
            crate::warn_limited!(
                Duration::from_secs(10),
                "reactor {}: cannot take a connection: {registered:?}",
                self.cx.id
            );
            self.cx.stats().connections.fetch_sub(1, Relaxed);
            if source.counted {
                self.cx.hub.admission.remove_source(source.key);
            }
            return;
        }
        let conn = entry.insert(Conn::new(stream, self.next_gen, source.key));
        if source.counted {
            conn.flags |= flag::COUNTED;
        }
        conn.tat = self.cx.clock;
        self.sweep.bound = self.sweep.bound.max(key + 1);
        let config = &self.cx.config;
        let first = config.handshake_timeout.min(config.login_timeout);
        self.cx.timers.arrival.push(Instant::now() + Duration::from_secs(first), token);
    }

    fn reap_closed(&mut self) {
        for key in mem::take(&mut self.cx.reap) {
            if !self.conns.get(key).is_some_and(|c| c.phase == Phase::Gone) {
                continue;
            }
            let mut conn = self.conns.remove(key);
            self.cx.stats().connections.fetch_sub(1, Relaxed);
            if conn.has(flag::COUNTED) {
                self.cx.hub.admission.remove_source(conn.source);
            }
            // Dropping the socket closes it, which also takes it out of epoll.
            close::give_partial(&mut conn, &mut self.cx);
            self.cx.pool.give(conn.output.take());
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        if self.cx.timers.accept_paused_until.is_some_and(|t| t <= now) {
            self.cx.timers.accept_paused_until = None;
            self.accept_all();
        }
        while let Some((at, token)) = self.cx.timers.arrival.pop_expired(now) {
            self.with_conn(token, |conn, cx| liveness::on_arrival(conn, token, cx, at, false));
        }
        while let Some((at, token)) = self.cx.timers.arrival_late.pop_expired(now) {
            self.with_conn(token, |conn, cx| liveness::on_arrival(conn, token, cx, at, true));
        }
        while let Some((_, token)) = self.cx.timers.stalled.pop_expired(now) {
            self.with_conn(token, |conn, cx| stalled::check_stalled(conn, token, cx, now));
        }
        while let Some((_, token)) = self.cx.timers.closing.pop_expired(now) {
            self.with_conn(token, |conn, cx| {
                close::reset(conn, cx);
                Err(Stop::Drop)
            });
        }
        if now >= self.cx.timers.sweep_at {
            self.cx.timers.sweep_at = now + Duration::from_secs(1);
            self.cx.clock = self.cx.timers.micros_at(now);
            liveness::tick(&mut self.conns, &mut self.cx, &mut self.sweep, now);
            self.deliver_local();
        }
        if !self.cx.timers.tokens.is_empty() {
            let unix = auth::unix_now();
            while let Some(token) = self.cx.timers.tokens.pop_due(unix) {
                self.with_conn(token, |conn, cx| login::check_expiry(conn, token, cx, unix));
            }
        }
        self.reap_closed();
    }

    fn process_inbox(&mut self) {
        let hub = Arc::clone(&self.cx.hub);
        hub.inboxes[self.cx.id].drain(|command| match command {
            Command::Deliver { token, payload } => {
                self.with_conn(token, |conn, cx| chat::deliver(conn, token, cx, &payload))
            }
            Command::RoomDeliver(message) => self.deliver_room(&message.room, &message.frame),
            Command::Presence { token, answer } => self
                .with_conn(token, |conn, cx| presence::answer_presence(conn, token, cx, &answer.asked, &answer.online)),
            Command::Members { token, answer } => self.with_conn(token, |conn, cx| {
                presence::answer_members(conn, token, cx, &answer.room, &answer.listed, answer.count)
            }),
            Command::Recovered(answer) => {
                let token = answer.token;
                self.with_conn(token, |conn, cx| recovery::replayed(conn, token, cx, &answer));
            }
            Command::Stored(stored) => {
                self.with_conn(stored.token, |conn, cx| chat::stored(conn, stored.token, cx, &stored))
            }
            Command::Undelivered { token, why } => {
                self.with_conn(token, |conn, cx| chat::undelivered(conn, token, cx, &why))
            }
            Command::LoginDecided { token, accepted } => {
                self.with_conn(token, |conn, cx| {
                    // Input waited while the login was pending: take it up now.
                    let was_pending = conn.is_pending();
                    login::login_decided(conn, token, cx, accepted)?;
                    if conn.has(flag::LOGIN_DUE) {
                        if conn.login() == Login::Anonymous {
                            // Refused after its login deadline: no time left for another try.
                            return liveness::login_timeout(conn, token, cx);
                        }
                        conn.flags &= !flag::LOGIN_DUE;
                    }
                    if was_pending {
                        read::resume(conn, token, cx)?;
                    }
                    Ok(())
                });
                self.deliver_local();
            }
            Command::Adopt { .. } if self.drain.is_some() => {
                // Handed over before the drain began: refused like the rest.
                self.cx.stats().connections.fetch_sub(1, Relaxed);
            }
            Command::Adopt { stream, source, counted } => self.adopt(stream, Source { key: source, counted }),
            Command::Drain { over } => self.start_drain(over),
            Command::Shutdown => self.stopping = true,
            Command::Disconnect { token } => self.with_conn(token, |conn, cx| {
                let (code, reason) = (crate::codec::close::DISCONNECTED, crate::protocol::DISCONNECTED_REASON);
                close::begin(conn, token, cx, code, reason, CloseReason::Api);
                Ok(())
            }),
        });
    }

    /// Stops accepting (the listener is closed, so a load balancer or the
    /// kernel's SO_REUSEPORT group sends new clients elsewhere) and lists the
    /// connections to close over `over`.
    fn start_drain(&mut self, over: Duration) {
        if self.drain.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let order = self.conns.iter().map(|(key, conn)| conn.token(key)).collect();
        self.drain = Some(Drain::new(order, over, Instant::now()));
    }

    /// Closes the connections whose turn has come; stops the loop once every
    /// one is gone (the peer's EOF, or the close grace period).
    fn drain_due(&mut self) {
        let now = Instant::now();
        while let Some(token) = self.drain.as_mut().and_then(|d| d.next_due(now)) {
            self.with_conn(token, |conn, cx| {
                close::begin(conn, token, cx, GOING_AWAY, "server shutting down", CloseReason::Shutdown);
                Ok(())
            });
        }
        if self.drain.as_ref().is_some_and(Drain::all_told) && self.conns.is_empty() {
            self.stopping = true;
        }
    }

    /// On shutdown: every open WebSocket gets 1001, then one last flush.
    fn close_all(&mut self) {
        for (key, conn) in self.conns.iter_mut() {
            let token = conn.token(key);
            close::begin(conn, token, &mut self.cx, GOING_AWAY, "server shutting down", CloseReason::Shutdown);
        }
        self.flush_dirty();
    }
}
