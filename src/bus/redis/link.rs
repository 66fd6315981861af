//! One non-blocking connection to a Redis server, driven by a bus thread's
//! poll loop: connect without blocking, reconnect with backoff and jitter,
//! read into a reusable buffer, write queued commands in as few `write`s as
//! the kernel allows.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Down,
    Connecting,
    Up,
}

/// What one `read` call found.
pub enum Fill {
    /// This many new bytes are in [`Link::unparsed`].
    Data(usize),
    /// Nothing more to read now.
    Drained,
}

/// What [`Link::check_timers`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Timer {
    Quiet,
    /// The server has been silent for a while: send it a PING now.
    Ping,
    /// The connect or the PING took too long: the link must be given up.
    TimedOut(&'static str),
}

pub struct Link {
    pub addr: SocketAddr,
    /// Which thread's link this is, for the logs.
    role: &'static str,
    /// When a link that was up went down (for the "back after" log line).
    down_since: Option<Instant>,
    token: Token,
    stream: Option<TcpStream>,
    pub state: State,
    /// Queued commands; `out[out_pos..]` is still to be written.
    pub out: Vec<u8>,
    out_pos: usize,
    input: Vec<u8>,
    parsed: usize,
    filled: usize,
    failures: u32,
    pub retry_at: Instant,
    connect_deadline: Instant,
    last_read: Instant,
    ping_sent: Option<Instant>,
    ping: PingTimers,
}

impl Link {
    pub fn new(addr: SocketAddr, token: Token, role: &'static str, ping: PingTimers) -> Link {
        let now = Instant::now();
        Link {
            addr,
            role,
            down_since: None,
            token,
            stream: None,
            state: State::Down,
            out: Vec::new(),
            out_pos: 0,
            input: Vec::new(),
            parsed: 0,
            filled: 0,
            failures: 0,
            retry_at: now,
            connect_deadline: now,
            last_read: now,
            ping_sent: None,
            ping,
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == State::Up
    }

    /// Starts a non-blocking connect if the link is down and its retry time has come.
    ///
    /// # Errors
    /// The connect failed at once (the caller runs its on-down path, which
    /// calls [`Link::fail`]).
    pub fn try_connect(&mut self, registry: &Registry, now: Instant) -> Result<(), String> {
        if self.state != State::Down || now < self.retry_at {
            return Ok(());
        }
        let mut stream = TcpStream::connect(self.addr).map_err(|e| format!("cannot connect: {e}"))?;
        registry
            .register(&mut stream, self.token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("cannot register the connection: {e}"))?;
        self.stream = Some(stream);
        self.state = State::Connecting;
        self.connect_deadline = now + CONNECT_TIMEOUT;
        Ok(())
    }

    /// After a writable event on a connecting link: whether the connect finished.
    ///
    /// # Errors
    /// The connect failed (the caller passes the message to [`Link::fail`]).
    pub fn finish_connect(&mut self) -> Result<bool, String> {
        let Some(stream) = self.stream.as_ref() else {
            return Ok(false);
        };
        if let Ok(Some(e)) | Err(e) = stream.take_error() {
            return Err(format!("cannot connect: {e}"));
        }
        match stream.peer_addr() {
            Ok(_) => {
                let _ = stream.set_nodelay(true);
                self.state = State::Up;
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
                self.last_read = Instant::now();
                self.ping_sent = None;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(format!("cannot connect: {e}")),
        }
    }

    /// Drops the connection and schedules a retry with exponential backoff and
    /// jitter (so a fleet of nodes does not reconnect in lockstep).
    pub fn fail(&mut self, registry: &Registry, why: &str) {
        if let Some(mut stream) = self.stream.take() {
            let _ = registry.deregister(&mut stream);
        }
        let was_up = self.state == State::Up;
        self.state = State::Down;
        self.out.clear();
        self.out_pos = 0;
        self.parsed = 0;
        self.filled = 0;
        self.failures = self.failures.saturating_add(1);
        let exp = BACKOFF_FIRST.saturating_mul(1 << self.failures.min(10).saturating_sub(1));
        let delay = exp.min(BACKOFF_MAX);
        self.retry_at = Instant::now() + jitter(delay);
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
        match self.state {
            State::Connecting if now >= self.connect_deadline => Timer::TimedOut("connect timed out"),
            State::Up => match self.ping_sent {
                Some(sent) if now.duration_since(sent) >= self.ping.timeout => {
                    Timer::TimedOut("no reply to PING: the server is unreachable or hung")
                }
                None if now.duration_since(self.last_read) >= self.ping.idle => {
                    self.ping_sent = Some(now);
                    Timer::Ping
                }
                _ => Timer::Quiet,
            },
            _ => Timer::Quiet,
        }
    }

    /// The next moment [`Link::check_timers`] or [`Link::try_connect`] has work.
    pub fn next_timer(&self) -> Instant {
        match self.state {
            State::Down => self.retry_at,
            State::Connecting => self.connect_deadline,
            State::Up => match self.ping_sent {
                Some(sent) => sent + self.ping.timeout,
                None => self.last_read + self.ping.idle,
            },
        }
    }

    /// Reads once into the buffer.
    ///
    /// # Errors
    /// The socket failed or the server closed it.
    pub fn read_once(&mut self) -> io::Result<Fill> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Fill::Drained);
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
                return Err(io::Error::new(io::ErrorKind::InvalidData, "a reply larger than the read buffer limit"));
            }
        }
        loop {
            match stream.read(&mut self.input[self.filled..]) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")),
                Ok(n) => {
                    self.filled += n;
                    self.last_read = Instant::now();
                    self.ping_sent = None;
                    return Ok(Fill::Data(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Fill::Drained),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Bytes read but not yet consumed.
    pub fn unparsed(&self) -> &[u8] {
        &self.input[self.parsed..self.filled]
    }

    /// Marks `n` bytes of [`Link::unparsed`] as handled.
    pub fn consume(&mut self, n: usize) {
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
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        if self.state != State::Up {
            return Ok(());
        }
        while self.out_pos < self.out.len() {
            match stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
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
