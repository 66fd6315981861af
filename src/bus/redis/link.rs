//! One non-blocking connection to a Redis server, driven by a bus thread's
//! poll loop: look the host up and connect without blocking, greet the
//! server (AUTH, SELECT, PING: the link is up only once it answered),
//! reconnect with backoff and jitter, read into a reusable buffer and parse
//! frames in place, write queued commands in as few `write`s as the kernel
//! allows, and give the server up when it stops answering.

use std::io;
use std::mem::{self, Discriminant};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use thiserror::Error;

use super::backoff::Outage;
use super::endpoint::{Endpoint, Lookup};
use super::resp::{self, Frame, ProtocolError};
use super::settings::LinkConfig;
use super::stream::Stream;
use super::tls;

/// How often a host name lookup in flight is looked at.
const LOOKUP_POLL: Duration = Duration::from_millis(5);
/// Read buffer to start with; it grows to hold the largest frame in flight.
const READ_BUFFER: usize = 256 * 1024;
/// Largest read buffer: far above any chat message (64 KiB by default), so
/// only a broken peer reaches it.
const READ_BUFFER_MAX: usize = 64 * 1024 * 1024;
/// Output buffer capacity kept by an idle link: a turn's worth of ordinary
/// traffic. A login burst grows it to megabytes (about 250 bytes of EVAL per
/// login), which an idle link hands back rather than keeping for good.
const OUT_KEEP: usize = 64 * 1024;

/// Why a link is given up. It is logged, and the link reconnects.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot resolve the host: {0}")]
    Resolve(io::Error),
    #[error("the host name lookup timed out")]
    ResolveTimedOut,
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("cannot register the connection: {0}")]
    Register(io::Error),
    #[error("cannot start TLS: {0}")]
    Tls(String),
    #[error("connect timed out")]
    ConnectTimedOut,
    #[error("no answer to AUTH/SELECT/PING in time: the server is hung or not Redis")]
    GreetingTimedOut,
    #[error("no reply in time: the server is unreachable or hung")]
    ReplyTimedOut,
    #[error("the server closed the connection")]
    Closed,
    #[error("read failed: {0}")]
    Read(io::Error),
    #[error("write failed: {0}")]
    Write(io::Error),
    #[error("a reply larger than the read buffer limit ({READ_BUFFER_MAX} bytes)")]
    ReplyTooLarge,
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("a reply to no command")]
    ReplyToNothing,
    #[error("Redis refused the connection: {0} (check the user and password in --redis URL and its ACL rights)")]
    Refused(String),
    #[error("no longer a master")]
    NoLongerMaster,
}

impl LinkError {
    /// Redis refused us (credentials, rights): retrying soon will not help.
    pub fn is_refusal(&self) -> bool {
        matches!(self, LinkError::Refused(_))
    }
}

/// A link's connection, and what each stage of it needs.
enum State {
    /// No connection; the next attempt is due at `retry_at`.
    Down { retry_at: Instant },
    /// The host name is being looked up, given up at `deadline`.
    Resolving { lookup: Lookup, deadline: Instant },
    /// A non-blocking connect in flight, given up at `deadline`.
    Connecting { stream: TcpStream, deadline: Instant },
    /// Connected (and TLS under way, if any); the greeting is sent and
    /// `replies_left` of its replies are awaited until `deadline`.
    Greeting { stream: Stream, deadline: Instant, replies_left: usize },
    /// The server answered the greeting. `ping_sent`: a PING awaits its
    /// answer; `due_since`: replies have been awaited since then.
    Up { stream: Stream, last_read: Instant, ping_sent: bool, due_since: Option<Instant> },
}

/// What [`Link::check_timers`] found.
#[derive(Debug)]
pub enum Timer {
    Quiet,
    /// The server has been silent for a while: send it a PING now.
    Ping,
    /// A lookup, connect, greeting or reply took too long: give the link up.
    TimedOut(LinkError),
}

/// What one [`Link::read_frames`] call did.
pub struct ReadRound {
    /// Bytes read from the socket.
    pub bytes: u64,
    /// Why the link must be given up, if it must.
    pub failure: Option<LinkError>,
}

pub struct Link {
    pub endpoint: Endpoint,
    /// Which thread's link this is, for the logs.
    role: &'static str,
    config: Arc<LinkConfig>,
    /// Failed attempts since the link was last up, and what was logged.
    outage: Outage<Discriminant<LinkError>>,
    token: Token,
    state: State,
    /// Queued commands; `out[out_pos..]` is still to be written.
    pub out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    parsed: usize,
    filled: usize,
}

impl Link {
    pub fn new(endpoint: Endpoint, token: Token, role: &'static str, config: Arc<LinkConfig>) -> Link {
        Link {
            endpoint,
            role,
            config,
            outage: Outage::new(),
            token,
            state: State::Down { retry_at: Instant::now() },
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            parsed: 0,
            filled: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        matches!(self.state, State::Up { .. })
    }

    pub fn is_down(&self) -> bool {
        matches!(self.state, State::Down { .. })
    }

    pub fn is_connecting(&self) -> bool {
        matches!(self.state, State::Connecting { .. })
    }

    pub fn is_greeting(&self) -> bool {
        matches!(self.state, State::Greeting { .. })
    }

    /// Starts an attempt if the link is down and its retry time has come:
    /// a connect to an IP address at once, a host name lookup first; and
    /// connects once a lookup in flight found the host.
    ///
    /// # Errors
    /// The lookup or connect failed at once (the caller runs its on-down
    /// path, which calls [`Link::fail`]).
    pub fn try_connect(&mut self, registry: &Registry, now: Instant) -> Result<(), LinkError> {
        let addr = match &self.state {
            State::Down { retry_at } if now >= *retry_at => match self.endpoint.literal() {
                Some(addr) => addr,
                None => {
                    let lookup = Lookup::start(&self.endpoint).map_err(LinkError::Resolve)?;
                    self.state = State::Resolving { lookup, deadline: now + self.config.reply_timeout };
                    return Ok(());
                }
            },
            State::Resolving { lookup, .. } => match lookup.poll() {
                None => return Ok(()),
                Some(found) => self.pick(found.map_err(LinkError::Resolve)?),
            },
            _ => return Ok(()),
        };
        let mut stream = TcpStream::connect(addr).map_err(LinkError::Connect)?;
        registry
            .register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)
            .map_err(LinkError::Register)?;
        self.state = State::Connecting { stream, deadline: now + self.config.reply_timeout };
        Ok(())
    }

    /// The address this attempt tries: the next one after each failure, so
    /// a host with an address that does not answer is reached on another.
    fn pick(&self, addrs: Vec<SocketAddr>) -> SocketAddr {
        addrs[self.outage.failures() as usize % addrs.len()]
    }

    /// After an event on a connecting link: once the connect is done, the
    /// greeting is queued (and TLS started).
    ///
    /// # Errors
    /// The connect failed (the caller passes the error to [`Link::fail`]).
    pub fn finish_connect(&mut self) -> Result<(), LinkError> {
        let State::Connecting { stream, .. } = &self.state else {
            return Ok(());
        };
        if let Ok(Some(e)) | Err(e) = stream.take_error() {
            return Err(LinkError::Connect(e));
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(LinkError::Connect(e)),
        }
        let now = Instant::now();
        let State::Connecting { stream, .. } = std::mem::replace(&mut self.state, State::Down { retry_at: now }) else {
            unreachable!("matched above");
        };
        let _ = stream.set_nodelay(true);
        let tls = match &self.config.tls {
            Some(config) => {
                Some((config, tls::server_name(&self.endpoint.host).map_err(|e| LinkError::Tls(e.to_string()))?))
            }
            None => None,
        };
        let stream = Stream::new(stream, tls).map_err(|e| LinkError::Tls(e.to_string()))?;
        self.out.extend_from_slice(&self.config.greeting);
        let replies_left = self.config.greeting_replies;
        self.state = State::Greeting { stream, deadline: now + self.config.reply_timeout, replies_left };
        Ok(())
    }

    /// Reads the greeting's replies: true once all came and the link is up.
    ///
    /// # Errors
    /// The read failed, or Redis refused the greeting (a wrong password,
    /// missing rights: [`LinkError::Refused`]).
    pub fn read_greeting(&mut self) -> Result<bool, LinkError> {
        loop {
            if self.read_once()? == 0 {
                return Ok(false);
            }
            let mut used = 0;
            let mut done = false;
            while !done {
                let Some((frame, n)) = resp::parse(&self.input[self.parsed + used..self.filled])? else {
                    break;
                };
                used += n;
                if let Frame::Error(e) = frame {
                    return Err(LinkError::Refused(String::from_utf8_lossy(e).into_owned()));
                }
                let State::Greeting { replies_left, .. } = &mut self.state else {
                    unreachable!("read_greeting runs while greeting");
                };
                *replies_left -= 1;
                done = *replies_left == 0;
            }
            self.consume(used);
            if done {
                self.now_up();
                return Ok(true);
            }
        }
    }

    fn now_up(&mut self) {
        let now = Instant::now();
        let State::Greeting { stream, .. } = std::mem::replace(&mut self.state, State::Down { retry_at: now }) else {
            unreachable!("up after the greeting");
        };
        self.state = State::Up { stream, last_read: now, ping_sent: false, due_since: None };
        self.outage.recovered(&self.endpoint, self.role, now);
    }

    /// Drops the connection and schedules a retry with exponential backoff and
    /// jitter (so a fleet of nodes does not reconnect in lockstep).
    pub fn fail(&mut self, registry: &Registry, why: &LinkError) {
        let now = Instant::now();
        let retry_at = now + self.outage.retry_delay(why.is_refusal());
        let was_up = match std::mem::replace(&mut self.state, State::Down { retry_at }) {
            State::Down { .. } | State::Resolving { .. } => false,
            State::Connecting { mut stream, .. } => {
                let _ = registry.deregister(&mut stream);
                false
            }
            State::Greeting { mut stream, .. } => {
                let _ = registry.deregister(stream.tcp());
                false
            }
            State::Up { mut stream, .. } => {
                let _ = registry.deregister(stream.tcp());
                true
            }
        };
        self.out.clear();
        self.out_pos = 0;
        self.parsed = 0;
        self.filled = 0;
        self.outage.failed(&self.endpoint, self.role, why, mem::discriminant(why), was_up, now);
    }

    /// Times out a lookup, connect or greeting that takes too long, and a
    /// server that leaves a command unanswered past the reply timeout
    /// (`awaiting`: the thread awaits a reply on this link; the clock runs
    /// from the later of when it began to wait and the last bytes read).
    /// Never drops the link itself: the caller owns what was sent on it
    /// (replies awaited, claims in flight) and must run its whole on-down
    /// path on [`Timer::TimedOut`].
    pub fn check_timers(&mut self, now: Instant, awaiting: bool) -> Timer {
        let timeout = self.config.reply_timeout;
        match &mut self.state {
            State::Resolving { deadline, .. } if now >= *deadline => Timer::TimedOut(LinkError::ResolveTimedOut),
            State::Connecting { deadline, .. } if now >= *deadline => Timer::TimedOut(LinkError::ConnectTimedOut),
            State::Greeting { deadline, .. } if now >= *deadline => Timer::TimedOut(LinkError::GreetingTimedOut),
            State::Up { last_read, ping_sent, due_since, .. } => {
                if !awaiting {
                    *due_since = None;
                } else if due_since.is_none() {
                    *due_since = Some(now);
                }
                match *due_since {
                    Some(since) if now.duration_since(since.max(*last_read)) >= timeout => {
                        Timer::TimedOut(LinkError::ReplyTimedOut)
                    }
                    None if !*ping_sent && now.duration_since(*last_read) >= self.config.idle_ping => {
                        *ping_sent = true;
                        Timer::Ping
                    }
                    _ => Timer::Quiet,
                }
            }
            _ => Timer::Quiet,
        }
    }

    /// The next moment [`Link::check_timers`] or [`Link::try_connect`] has work.
    pub fn next_timer(&self) -> Instant {
        match &self.state {
            State::Down { retry_at } => *retry_at,
            State::Resolving { deadline, .. } => (*deadline).min(Instant::now() + LOOKUP_POLL),
            State::Connecting { deadline, .. } | State::Greeting { deadline, .. } => *deadline,
            State::Up { last_read, due_since: Some(since), .. } => (*since).max(*last_read) + self.config.reply_timeout,
            State::Up { last_read, .. } => *last_read + self.config.idle_ping,
        }
    }

    /// Reads what the socket holds and hands each complete frame to `each`,
    /// in order, until the socket would block. Frames borrow from the read
    /// buffer; a frame cut by the end of a read waits there for the rest.
    ///
    /// Stops at the first failure: a read that fails, a frame that breaks
    /// RESP, or an error from `each`. The link must then be given up.
    pub fn read_frames(&mut self, mut each: impl FnMut(Frame<'_>) -> Result<(), LinkError>) -> ReadRound {
        let mut round = ReadRound { bytes: 0, failure: None };
        loop {
            match self.read_once() {
                Ok(0) => return round,
                Ok(n) => round.bytes += n as u64,
                Err(e) => {
                    round.failure = Some(e);
                    return round;
                }
            }
            let mut used = 0;
            let input = &self.input[self.parsed..self.filled];
            loop {
                let (frame, n) = match resp::parse(&input[used..]) {
                    Ok(Some(parsed)) => parsed,
                    Ok(None) => break,
                    Err(e) => {
                        round.failure = Some(e.into());
                        return round;
                    }
                };
                used += n;
                if let Err(e) = each(frame) {
                    round.failure = Some(e);
                    return round;
                }
            }
            self.consume(used);
        }
    }

    /// Reads once into the buffer: the bytes read, 0 when the socket would block.
    fn read_once(&mut self) -> Result<usize, LinkError> {
        let (stream, mut seen) = match &mut self.state {
            State::Up { stream, last_read, ping_sent, .. } => (stream, Some((last_read, ping_sent))),
            State::Greeting { stream, .. } => (stream, None),
            _ => return Ok(0),
        };
        if self.input.is_empty() {
            self.input = vec![0; READ_BUFFER];
        }
        if self.filled == self.input.len() {
            if self.parsed > 0 {
                self.input.copy_within(self.parsed..self.filled, 0);
                self.filled -= self.parsed;
                self.parsed = 0;
            } else if self.input.len() < READ_BUFFER_MAX {
                let bigger = (self.input.len() * 2).min(READ_BUFFER_MAX);
                self.input.resize(bigger, 0);
            } else {
                return Err(LinkError::ReplyTooLarge);
            }
        }
        loop {
            match stream.read(&mut self.input[self.filled..]) {
                Ok(0) => return Err(LinkError::Closed),
                Ok(n) => {
                    self.filled += n;
                    if let Some((last_read, ping_sent)) = seen.as_mut() {
                        **last_read = Instant::now();
                        **ping_sent = false;
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Read(e)),
            }
        }
    }

    /// Marks `n` bytes of the read buffer as handled.
    fn consume(&mut self, n: usize) {
        self.parsed += n;
        if self.parsed == self.filled {
            self.parsed = 0;
            self.filled = 0;
        }
    }

    /// Hands back an output buffer grown by a burst, once all of it is written.
    pub fn trim_idle(&mut self) {
        if self.out.is_empty() && self.out.capacity() > OUT_KEEP {
            self.out = Vec::new();
        }
    }

    /// Bytes queued but not written yet (TLS records held back count as one).
    pub fn unsent(&self) -> usize {
        let held = match &self.state {
            State::Up { stream, .. } | State::Greeting { stream, .. } => usize::from(stream.has_pending()),
            _ => 0,
        };
        self.out.len() - self.out_pos + held
    }

    /// Writes queued commands until done or the kernel buffer is full.
    ///
    /// # Errors
    /// The socket failed.
    pub fn flush(&mut self) -> Result<(), LinkError> {
        let (State::Up { stream, .. } | State::Greeting { stream, .. }) = &mut self.state else {
            return Ok(());
        };
        stream.push_pending().map_err(LinkError::Write)?;
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(LinkError::Write(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(LinkError::Write(e)),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
