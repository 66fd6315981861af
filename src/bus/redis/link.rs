//! One non-blocking connection to a Redis server, driven by a bus thread's
//! poll loop: connect without blocking, reconnect with backoff and jitter,
//! read into a reusable buffer and parse frames in place, write queued
//! commands in as few `write`s as the kernel allows.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use thiserror::Error;

use super::resp::{self, Frame, ProtocolError};

/// First reconnect delay: short, since most outages on a LAN are a restart.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// Longest reconnect delay. Small enough that delivery resumes within about a
/// second of Redis coming back; one failed connect to a dead port costs microseconds.
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// How long a TCP connect may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(2000);
/// Read buffer to start with; it grows to hold the largest frame in flight.
const READ_BUFFER: usize = 256 * 1024;
/// Largest read buffer: far above any chat message (64 KiB by default), so
/// only a broken peer reaches it.
const READ_BUFFER_MAX: usize = 64 * 1024 * 1024;
/// Output buffer capacity kept by an idle link: a turn's worth of ordinary
/// traffic. A login burst grows it to megabytes (about 250 bytes of EVAL per
/// login), which an idle link hands back rather than keeping for good.
const OUT_KEEP: usize = 64 * 1024;
/// Silence after which a link is checked with PING, at most.
const IDLE_PING_MAX: Duration = Duration::from_secs(5);
/// Silence after a PING past which the server counts as gone (half-open TCP,
/// or a server that hangs), at most.
const PING_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// When a silent server is checked, and when it counts as gone.
#[derive(Clone, Copy, Debug)]
pub struct PingTimers {
    pub idle: Duration,
    pub timeout: Duration,
}

impl PingTimers {
    /// A third and two thirds of the name lease, capped at 5 s and 10 s (the
    /// default 15 s lease gives exactly those): a server silent for most of a
    /// lease is given up before the names this node holds could lapse there,
    /// and a short `--lease-secs` (tests use 3) detects a hung Redis quickly.
    pub fn for_lease(lease: Duration) -> PingTimers {
        PingTimers { idle: (lease / 3).min(IDLE_PING_MAX), timeout: (lease * 2 / 3).min(PING_TIMEOUT_MAX) }
    }
}

/// Why a link is given up. It is logged, and the link reconnects.
#[derive(Debug, Error)]
pub enum LinkError {
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    #[error("cannot register the connection: {0}")]
    Register(io::Error),
    #[error("connect timed out")]
    ConnectTimedOut,
    #[error("no reply to PING: the server is unreachable or hung")]
    PingTimedOut,
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
    #[error("Redis refused AUTH/SELECT: {0}")]
    HelloRefused(String),
    #[error("no longer a master")]
    NoLongerMaster,
}

/// A link's connection, and what each stage of it needs.
enum State {
    /// No connection; the next attempt is due at `retry_at`.
    Down { retry_at: Instant },
    /// A non-blocking connect in flight, given up at `deadline`.
    Connecting { stream: TcpStream, deadline: Instant },
    /// Connected. `ping_sent`: a PING has awaited its answer since then.
    Up { stream: TcpStream, last_read: Instant, ping_sent: Option<Instant> },
}

/// What [`Link::check_timers`] found.
#[derive(Debug)]
pub enum Timer {
    Quiet,
    /// The server has been silent for a while: send it a PING now.
    Ping,
    /// The connect or the PING took too long: the link must be given up.
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
    pub addr: SocketAddr,
    /// Which thread's link this is, for the logs.
    role: &'static str,
    /// When a link that was up went down (for the "back up after" log line).
    down_since: Option<Instant>,
    token: Token,
    state: State,
    /// Queued commands; `out[out_pos..]` is still to be written.
    pub out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    parsed: usize,
    filled: usize,
    /// Failed attempts since the link was last up: the backoff's exponent.
    failures: u32,
    ping: PingTimers,
}

impl Link {
    pub fn new(addr: SocketAddr, token: Token, role: &'static str, ping: PingTimers) -> Link {
        Link {
            addr,
            role,
            down_since: None,
            token,
            state: State::Down { retry_at: Instant::now() },
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            parsed: 0,
            filled: 0,
            failures: 0,
            ping,
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

    /// Starts a non-blocking connect if the link is down and its retry time has come.
    ///
    /// # Errors
    /// The connect failed at once (the caller runs its on-down path, which
    /// calls [`Link::fail`]).
    pub fn try_connect(&mut self, registry: &Registry, now: Instant) -> Result<(), LinkError> {
        match self.state {
            State::Down { retry_at } if now >= retry_at => {}
            _ => return Ok(()),
        }
        let mut stream = TcpStream::connect(self.addr).map_err(LinkError::Connect)?;
        registry
            .register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)
            .map_err(LinkError::Register)?;
        self.state = State::Connecting { stream, deadline: now + CONNECT_TIMEOUT };
        Ok(())
    }

    /// After an event on a connecting link: whether the connect finished.
    ///
    /// # Errors
    /// The connect failed (the caller passes the error to [`Link::fail`]).
    pub fn finish_connect(&mut self) -> Result<bool, LinkError> {
        let State::Connecting { stream, .. } = &self.state else {
            return Ok(false);
        };
        if let Ok(Some(e)) | Err(e) = stream.take_error() {
            return Err(LinkError::Connect(e));
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(LinkError::Connect(e)),
        }
        let now = Instant::now();
        let State::Connecting { stream, .. } = std::mem::replace(&mut self.state, State::Down { retry_at: now }) else {
            unreachable!("matched above");
        };
        let _ = stream.set_nodelay(true);
        self.state = State::Up { stream, last_read: now, ping_sent: None };
        if let Some(since) = self.down_since.take() {
            log::warn!(
                "redis {} ({}): link back up after {:.1?} and {} failed attempts",
                self.addr,
                self.role,
                since.elapsed(),
                self.failures.saturating_sub(1)
            );
        } else {
            log::info!("redis {} ({}): link up", self.addr, self.role);
        }
        self.failures = 0;
        Ok(true)
    }

    /// Drops the connection and schedules a retry with exponential backoff and
    /// jitter (so a fleet of nodes does not reconnect in lockstep).
    pub fn fail(&mut self, registry: &Registry, why: &LinkError) {
        self.failures = self.failures.saturating_add(1);
        let exp = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(10).saturating_sub(1));
        let retry_at = Instant::now() + jitter(exp.min(BACKOFF_MAX));
        let was_up = match std::mem::replace(&mut self.state, State::Down { retry_at }) {
            State::Down { .. } => false,
            State::Connecting { mut stream, .. } => {
                let _ = registry.deregister(&mut stream);
                false
            }
            State::Up { mut stream, .. } => {
                let _ = registry.deregister(&mut stream);
                true
            }
        };
        if was_up {
            self.down_since = Some(Instant::now());
        }
        self.out.clear();
        self.out_pos = 0;
        self.parsed = 0;
        self.filled = 0;
        if was_up || self.failures == 1 {
            log::warn!("redis {}: link down: {why}; reconnecting", self.addr);
        } else {
            log::debug!("redis {}: retry {} failed: {why}", self.addr, self.failures);
        }
    }

    /// Times out a connect that takes too long and a server that stopped
    /// answering PING. Never drops the link itself: the caller owns what
    /// was sent on it (replies awaited, claims in flight) and must run its
    /// whole on-down path on [`Timer::TimedOut`].
    pub fn check_timers(&mut self, now: Instant) -> Timer {
        match &mut self.state {
            State::Connecting { deadline, .. } if now >= *deadline => Timer::TimedOut(LinkError::ConnectTimedOut),
            State::Up { last_read, ping_sent, .. } => match *ping_sent {
                Some(sent) if now.duration_since(sent) >= self.ping.timeout => Timer::TimedOut(LinkError::PingTimedOut),
                None if now.duration_since(*last_read) >= self.ping.idle => {
                    *ping_sent = Some(now);
                    Timer::Ping
                }
                _ => Timer::Quiet,
            },
            _ => Timer::Quiet,
        }
    }

    /// The next moment [`Link::check_timers`] or [`Link::try_connect`] has work.
    pub fn next_timer(&self) -> Instant {
        match &self.state {
            State::Down { retry_at } => *retry_at,
            State::Connecting { deadline, .. } => *deadline,
            State::Up { last_read, ping_sent, .. } => match ping_sent {
                Some(sent) => *sent + self.ping.timeout,
                None => *last_read + self.ping.idle,
            },
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
        let State::Up { stream, last_read, ping_sent } = &mut self.state else {
            return Ok(0);
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
                    *last_read = Instant::now();
                    *ping_sent = None;
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

    /// Bytes queued but not written yet.
    pub fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes queued commands until done or the kernel buffer is full.
    ///
    /// # Errors
    /// The socket failed.
    pub fn flush(&mut self) -> Result<(), LinkError> {
        let State::Up { stream, .. } = &mut self.state else {
            return Ok(());
        };
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

/// A delay between half and all of `delay`, chosen at random.
pub fn jitter(delay: Duration) -> Duration {
    let half = delay / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(random() % nanos)
}

/// A random number from the standard library's per-process hash seed.
pub fn random() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_between_half_and_all() {
        for _ in 0..100 {
            let d = jitter(Duration::from_millis(800));
            assert!(d >= Duration::from_millis(400) && d <= Duration::from_millis(800));
        }
    }
}
