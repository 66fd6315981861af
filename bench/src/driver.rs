//! One reactor thread of a worker: a `mio::Poll` and a fixed range of connections that it
//! alone opens, logs in, chats on, churns and closes.
//!
//! Per connection it keeps only [`Conn`] (72 bytes): the socket, a state, a generation, a
//! sequence number, a timestamp, and two buffers that are empty (no heap) unless a
//! partial frame came in or output is waiting for the socket. Reads go through one
//! thread-wide 64 KiB buffer.
//!
//! The loop: poll, dispatch events by token, take commands, expire deadlines, advance the
//! current activity (connect, login, chat or churn at its rate), publish interval stats.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::accounting::{Receipts, Tally};
use crate::clock::monotonic_ns;
use crate::codec::{self, ProtocolError};
use crate::config::Plan;
use crate::ipc::Command;
use crate::message::{self, Incoming, Mark};
use crate::stats::{self, Counter, Counters};

/// The token of the thread's waker; connection tokens are `generation << 32 | slot`.
pub const WAKER: Token = Token(usize::MAX);
/// Output a connection may have waiting before chat sends pass it by: a server that stops
/// reading must not make the load generator grow without bound.
const OUTPUT_LIMIT: usize = 256 * 1024;
/// One read's worth; also the most a connection can hold as a partial frame plus this.
const READ_CHUNK: usize = 64 * 1024;
/// Connects or logins started per loop turn, so that a burst never starves reading.
const START_BATCH: u32 = 512;
/// Chat messages sent per loop turn at most, for the same reason.
const CHAT_BATCH: u64 = 4096;
/// How often interval latencies are handed to the worker's reporter.
const PUBLISH_EVERY_NS: u64 = 100_000_000;
/// Poll timeout while an activity runs: its pacing granularity.
const ACTIVE_TICK: Duration = Duration::from_millis(1);
/// Poll timeout while idle.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// Error descriptions one thread keeps for the report.
const MAX_SAMPLES: usize = 20;

/// What a driver thread shares with its worker's reporter.
pub struct Shared {
    pub counters: Counters,
    /// Chat latencies since the reporter last took them.
    pub interval_latency: Mutex<Histogram<u64>>,
    /// Error descriptions not yet reported.
    pub samples: Mutex<Vec<String>>,
    pub commands: Mutex<Vec<Command>>,
    /// The last phase this thread finished.
    pub done_phase: AtomicU8,
}

impl Default for Shared {
    fn default() -> Self {
        Self {
            counters: Counters::default(),
            interval_latency: Mutex::new(stats::new_histogram()),
            samples: Mutex::default(),
            commands: Mutex::default(),
            done_phase: AtomicU8::new(0),
        }
    }
}

/// What a thread hands back when told to finish.
pub struct Final {
    pub connect: Histogram<u64>,
    pub login: Histogram<u64>,
    pub churn: Histogram<u64>,
    pub latency: Histogram<u64>,
    pub tally: Tally,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
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
    fn is_pending(self) -> bool {
        matches!(self, State::Connecting | State::Handshaking | State::LoginPending | State::Closing)
    }

    /// WebSocket open.
    fn is_open(self) -> bool {
        matches!(self, State::Open | State::LoginPending | State::Ready)
    }
}

struct Conn {
    stream: Option<TcpStream>,
    /// Pending output; empty (no heap) unless the socket would block.
    out: Vec<u8>,
    /// A partial incoming frame or handshake answer; empty unless one is split.
    inp: Vec<u8>,
    /// When the current pending step (connect or login) began.
    started_ns: u64,
    /// Next chat sequence number.
    seq: u32,
    /// Bumped on every reconnect so stale events and deadlines are recognised.
    generation: u16,
    state: State,
    /// Reconnecting as part of churn: log in right after the handshake.
    churning: bool,
}

enum Activity {
    Idle,
    Connect { start_ns: u64, next: u32 },
    Login { start_ns: u64, next: u32 },
    Chat { start_ns: u64, end_ns: u64, scheduled: u64 },
    Churn { start_ns: u64, end_ns: u64, scheduled: u64 },
}

pub struct Driver {
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    first: u32,
    /// Connection state, pushed in slot order as the connect phase starts each one.
    conns: Vec<Conn>,
    /// Connections this thread is responsible for.
    count: u32,
    poll: Poll,
    activity: Activity,
    /// Fraction of all connections this thread holds: its share of every rate.
    share: f64,
    /// Connections in a pending state (connecting, handshaking, awaiting login).
    pending: u32,
    /// Churned connections whose close is done, to reconnect at the end of the turn.
    reconnects: Vec<u32>,
    deadlines: VecDeque<(u64, u32, u16)>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    json: Vec<u8>,
    data: Vec<u8>,
    rng: u64,
    connect_hist: Histogram<u64>,
    login_hist: Histogram<u64>,
    /// Churn reconnects: TCP connect to re-login confirmed.
    churn_hist: Histogram<u64>,
    latency_hist: Histogram<u64>,
    interval_hist: Histogram<u64>,
    receipts: Receipts,
    samples_taken: usize,
    last_publish_ns: u64,
}

impl Driver {
    /// A driver for connections `first .. first + count`.
    ///
    /// # Errors
    /// The poll instance cannot be created.
    pub fn new(plan: Arc<Plan>, shared: Arc<Shared>, first: u32, count: u32) -> io::Result<Self> {
        // Reserved, not touched: pages become resident as connections are started, so the
        // RSS growth the coordinator reports per connection includes this state.
        let conns = Vec::with_capacity(count as usize);
        let share = count as f64 / plan.connections.max(1) as f64;
        let rng = codec::splitmix64(plan.seed ^ (first as u64).wrapping_mul(0x9E37));
        Ok(Self {
            plan,
            shared,
            first,
            conns,
            count,
            poll: Poll::new()?,
            activity: Activity::Idle,
            share,
            pending: 0,
            reconnects: Vec::new(),
            deadlines: VecDeque::new(),
            rbuf: vec![0; READ_CHUNK],
            wbuf: Vec::with_capacity(4096),
            json: Vec::with_capacity(4096),
            data: Vec::with_capacity(4096),
            rng,
            connect_hist: stats::new_histogram(),
            login_hist: stats::new_histogram(),
            churn_hist: stats::new_histogram(),
            latency_hist: stats::new_histogram(),
            interval_hist: stats::new_histogram(),
            receipts: Receipts::default(),
            samples_taken: 0,
            last_publish_ns: 0,
        })
    }

    /// The poll's registry, to make the worker's waker for this thread.
    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Runs until told to finish; returns the thread's histograms and receipts.
    pub fn run(mut self) -> Final {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = match self.activity {
                Activity::Idle => IDLE_TICK,
                _ => ACTIVE_TICK,
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.sample(format!("poll failed: {e}"));
                    break;
                }
            }
            for event in events.iter() {
                if event.token() != WAKER {
                    self.on_event(event);
                }
            }
            let now = monotonic_ns();
            if self.take_commands(now) {
                break;
            }
            self.expire_deadlines(now);
            self.reconnect_closed(now);
            self.advance(now);
            if now.saturating_sub(self.last_publish_ns) >= PUBLISH_EVERY_NS {
                self.publish(now);
            }
        }
        self.publish(monotonic_ns());
        Final {
            connect: self.connect_hist,
            login: self.login_hist,
            churn: self.churn_hist,
            latency: self.latency_hist,
            tally: self.receipts.tally(),
        }
    }

    fn take_commands(&mut self, now: u64) -> bool {
        let commands: Vec<Command> = std::mem::take(&mut *lock(&self.shared.commands));
        for command in commands {
            self.activity = match command {
                Command::Connect => Activity::Connect { start_ns: now, next: 0 },
                Command::Login => Activity::Login { start_ns: now, next: 0 },
                Command::Chat => Activity::Chat { start_ns: now, end_ns: now + self.plan.duration_ns, scheduled: 0 },
                Command::Churn => {
                    Activity::Churn { start_ns: now, end_ns: now + self.plan.churn_duration_ns, scheduled: 0 }
                }
                Command::Finish => return true,
            };
        }
        false
    }

    /// Starts whatever the current activity has due by `now`.
    fn advance(&mut self, now: u64) {
        let count = self.count;
        match self.activity {
            Activity::Idle => {}
            Activity::Connect { start_ns, next } => {
                let due = self.due(start_ns, now, self.plan.connect_rate, count as u64) as u32;
                let end = due.min(next + START_BATCH);
                for slot in next..end {
                    self.start_connect(slot, now);
                }
                self.activity = Activity::Connect { start_ns, next: end };
                if end == count && self.in_flight() == 0 {
                    self.finish_phase(Command::Connect);
                }
            }
            Activity::Login { start_ns, next } => {
                let due = self.due(start_ns, now, self.plan.login_rate, count as u64) as u32;
                let end = due.min(next + START_BATCH);
                for slot in next..end {
                    if self.conns.get(slot as usize).is_some_and(|c| c.state == State::Open) {
                        self.start_login(slot, now);
                    }
                }
                self.activity = Activity::Login { start_ns, next: end };
                if end == count && self.in_flight() == 0 {
                    self.finish_phase(Command::Login);
                }
            }
            Activity::Chat { start_ns, end_ns, scheduled } => {
                if now >= end_ns {
                    self.finish_phase(Command::Chat);
                    return;
                }
                let scheduled = self.catch_up(start_ns, now, self.plan.rate, scheduled);
                let due = self.due(start_ns, now, self.plan.rate, u64::MAX);
                let n = due.saturating_sub(scheduled).min(CHAT_BATCH);
                for _ in 0..n {
                    self.send_chat();
                }
                self.activity = Activity::Chat { start_ns, end_ns, scheduled: scheduled + n };
            }
            Activity::Churn { start_ns, end_ns, scheduled } => {
                if now >= end_ns {
                    // Reconnects still under way finish (or time out) first.
                    if self.in_flight() == 0 {
                        self.finish_phase(Command::Churn);
                    }
                    return;
                }
                let scheduled = self.catch_up(start_ns, now, self.plan.churn_rate, scheduled);
                let due = self.due(start_ns, now, self.plan.churn_rate, u64::MAX);
                let n = due.saturating_sub(scheduled).min(START_BATCH as u64);
                for _ in 0..n {
                    self.churn_one(now);
                }
                self.activity = Activity::Churn { start_ns, end_ns, scheduled: scheduled + n };
            }
        }
    }

    /// How many operations this thread's share of `rate` allows since `start_ns`
    /// (`rate` 0: all of `limit` at once).
    fn due(&self, start_ns: u64, now: u64, rate: u32, limit: u64) -> u64 {
        if rate == 0 {
            return limit;
        }
        let elapsed = now.saturating_sub(start_ns) as f64 / 1e9;
        let due = (elapsed * rate as f64 * self.share) as u64 + 1;
        due.min(limit)
    }

    /// Drops what is more than one second behind schedule, counting it, so a saturated
    /// load generator reports the shortfall instead of bursting later.
    fn catch_up(&mut self, start_ns: u64, now: u64, rate: u32, scheduled: u64) -> u64 {
        let due = self.due(start_ns, now, rate, u64::MAX);
        let per_second = ((rate as f64 * self.share) as u64).max(1);
        let behind = due.saturating_sub(scheduled);
        if behind > per_second {
            let dropped = behind - per_second;
            self.shared.counters.add(Counter::SendBehind, dropped);
            return scheduled + dropped;
        }
        scheduled
    }

    fn finish_phase(&mut self, phase: Command) {
        self.activity = Activity::Idle;
        self.shared.done_phase.store(phase as u8, Ordering::Release);
    }

    fn in_flight(&self) -> u32 {
        self.pending
    }

    fn start_connect(&mut self, slot: u32, now: u64) {
        let index = self.first + slot;
        let target = self.plan.target_of(index).addr;
        let source = self.plan.source_of(index);
        if slot as usize == self.conns.len() {
            self.conns.push(Conn {
                stream: None,
                out: Vec::new(),
                inp: Vec::new(),
                started_ns: 0,
                seq: 0,
                generation: 0,
                state: State::Idle,
                churning: false,
            });
        }
        let conn = &mut self.conns[slot as usize];
        conn.generation = conn.generation.wrapping_add(1);
        let generation = conn.generation;
        conn.started_ns = now;
        self.set_state(slot, State::Connecting);
        match open_socket(target, source) {
            Ok(mut stream) => {
                let token = Token(((generation as usize) << 32) | slot as usize);
                if let Err(e) =
                    self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                {
                    self.fail(slot, Counter::ErrOther, format!("epoll register: {e}"));
                    return;
                }
                self.conns[slot as usize].stream = Some(stream);
                self.deadlines.push_back((now + self.plan.connect_timeout_ns, slot, generation));
            }
            Err(e) => {
                let from = source.map(|s| format!(" from {s}")).unwrap_or_default();
                self.fail(slot, error_counter(&e), format!("connect to {target}{from}: {e}"));
            }
        }
    }

    fn start_login(&mut self, slot: u32, now: u64) {
        let index = self.first + slot;
        let plan = self.plan.clone();
        let prefix = &plan.name_prefix;
        self.wbuf.clear();
        self.json.clear();
        message::write_login(&mut self.json, prefix, index);
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
        self.json.clear();
        message::write_chat(&mut self.json, prefix, index, index, message::LOGIN_MARKER.as_bytes());
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
        // A churn reconnect is timed as a whole, from its connect.
        if !self.conns[slot as usize].churning {
            self.conns[slot as usize].started_ns = now;
        }
        self.set_state(slot, State::LoginPending);
        let generation = self.conns[slot as usize].generation;
        self.deadlines.push_back((now + self.plan.connect_timeout_ns, slot, generation));
        self.send_wbuf(slot);
    }

    fn send_chat(&mut self) {
        let count = self.conns.len() as u64;
        if count == 0 {
            return;
        }
        let mut chosen = None;
        for _ in 0..8 {
            let slot = (self.next_random() % count) as usize;
            let conn = &self.conns[slot];
            if conn.state == State::Ready && conn.out.len() < OUTPUT_LIMIT {
                chosen = Some(slot);
                break;
            }
        }
        let Some(slot) = chosen else {
            self.shared.counters.add(Counter::SendSkipped, 1);
            return;
        };
        let sender = self.first + slot as u32;
        let random = self.next_random();
        let recipient =
            self.plan.pattern.pick_recipient(sender, self.plan.connections, self.plan.targets.len() as u32, random);
        let seq = self.conns[slot].seq;
        self.conns[slot].seq += 1;
        self.data.clear();
        message::write_chat_data(&mut self.data, monotonic_ns(), sender, seq, self.plan.payload);
        self.json.clear();
        message::write_chat(&mut self.json, &self.plan.name_prefix, sender, recipient, &self.data);
        self.wbuf.clear();
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
        if self.send_wbuf(slot as u32) {
            self.shared.counters.add(Counter::Sent, 1);
        }
    }

    /// Closes one logged-in connection (close frame, then the socket) and reconnects it.
    fn churn_one(&mut self, now: u64) {
        let count = self.conns.len() as u64;
        if count == 0 {
            return;
        }
        let mut chosen = None;
        for _ in 0..8 {
            let slot = (self.next_random() % count) as u32;
            if self.conns[slot as usize].state == State::Ready {
                chosen = Some(slot);
                break;
            }
        }
        let Some(slot) = chosen else {
            self.shared.counters.add(Counter::SendSkipped, 1);
            return;
        };
        // A polite client: close, wait for the server's close (it has logged the user
        // out by then), reconnect and log in again under the same name.
        self.conns[slot as usize].churning = true;
        self.conns[slot as usize].started_ns = now;
        self.set_state(slot, State::Closing);
        let generation = self.conns[slot as usize].generation;
        self.deadlines.push_back((now + self.plan.connect_timeout_ns, slot, generation));
        self.send_close(slot, 1000);
    }

    /// Reconnects the connections whose churn close completed during this turn.
    fn reconnect_closed(&mut self, now: u64) {
        for slot in std::mem::take(&mut self.reconnects) {
            let conn = &self.conns[slot as usize];
            if conn.state == State::Closed && conn.churning {
                self.start_connect(slot, now);
            }
        }
    }

    fn on_event(&mut self, event: &Event) {
        let slot = (event.token().0 & 0xFFFF_FFFF) as u32;
        let generation = (event.token().0 >> 32) as u16;
        let Some(conn) = self.conns.get(slot as usize) else {
            return;
        };
        if conn.generation != generation || conn.stream.is_none() {
            return;
        }
        if conn.state == State::Connecting {
            if event.is_writable() || event.is_error() || event.is_write_closed() {
                self.finish_connect(slot);
            }
            return;
        }
        if event.is_writable() {
            self.flush(slot);
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            // After a FIN or an error no new edge will come: read until EOF/WouldBlock.
            self.read(slot, event.is_read_closed() || event.is_error());
        }
    }

    fn finish_connect(&mut self, slot: u32) {
        let index = self.first + slot;
        let target = self.plan.target_of(index);
        let Some(stream) = self.conns[slot as usize].stream.as_ref() else {
            return;
        };
        let error = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = error {
            let detail = format!("connect to {} ({}): {e}", target.addr, target.url);
            self.fail(slot, error_counter(&e), detail);
            return;
        }
        let key = codec::handshake_key(index, self.conns[slot as usize].generation, self.plan.seed);
        self.wbuf.clear();
        codec::write_upgrade_request(&mut self.wbuf, &target.host, &target.path, &key);
        self.set_state(slot, State::Handshaking);
        self.send_wbuf(slot);
    }

    /// Writes `self.wbuf` to a connection (or queues what the socket does not take).
    fn send_wbuf(&mut self, slot: u32) -> bool {
        let buf = std::mem::take(&mut self.wbuf);
        let ok = self.send(slot, &buf);
        self.wbuf = buf;
        ok
    }

    fn send(&mut self, slot: u32, bytes: &[u8]) -> bool {
        let conn = &mut self.conns[slot as usize];
        let Some(stream) = conn.stream.as_mut() else {
            return false;
        };
        if !conn.out.is_empty() {
            conn.out.extend_from_slice(bytes);
            return true;
        }
        let mut written = 0;
        while written < bytes.len() {
            match stream.write(&bytes[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let detail = format!("write to {}: {e}", self.describe(slot));
                    self.fail(slot, error_counter(&e), detail);
                    return false;
                }
            }
        }
        if written < bytes.len() {
            self.conns[slot as usize].out.extend_from_slice(&bytes[written..]);
        }
        true
    }

    fn flush(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let mut written = 0;
        while written < conn.out.len() {
            match stream.write(&conn.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let detail = format!("write to {}: {e}", self.describe(slot));
                    self.fail(slot, error_counter(&e), detail);
                    return;
                }
            }
        }
        if written == conn.out.len() {
            // Free the buffer: idle connections own no heap.
            conn.out = Vec::new();
        } else {
            conn.out.drain(..written);
        }
    }

    fn read(&mut self, slot: u32, until_would_block: bool) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        while let Some(stream) = self.conns[slot as usize].stream.as_mut() {
            match stream.read(&mut rbuf) {
                Ok(0) => {
                    let state = self.conns[slot as usize].state;
                    let detail = format!("{} closed the TCP connection ({:?})", self.describe(slot), state);
                    self.fail(slot, Counter::ErrReset, detail);
                    break;
                }
                Ok(n) => {
                    self.take_input(slot, &rbuf[..n]);
                    // A short read emptied the socket's receive queue. Linux re-arms an
                    // edge-triggered EPOLLIN on every arrival after this, so the read that
                    // would only say WouldBlock is skipped: one syscall less per message.
                    if n < rbuf.len() && !until_would_block {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let detail = format!("read from {}: {e}", self.describe(slot));
                    self.fail(slot, error_counter(&e), detail);
                    break;
                }
            }
        }
        self.rbuf = rbuf;
    }

    /// Processes freshly read bytes, keeping any incomplete tail in the connection.
    fn take_input(&mut self, slot: u32, fresh: &[u8]) {
        if self.conns[slot as usize].inp.is_empty() {
            let used = self.process(slot, fresh);
            let conn = &mut self.conns[slot as usize];
            if conn.stream.is_some() && used < fresh.len() {
                conn.inp.extend_from_slice(&fresh[used..]);
            }
        } else {
            let mut input = std::mem::take(&mut self.conns[slot as usize].inp);
            input.extend_from_slice(fresh);
            let used = self.process(slot, &input);
            let conn = &mut self.conns[slot as usize];
            if conn.stream.is_some() && used < input.len() {
                input.drain(..used);
                conn.inp = input;
            }
        }
    }

    /// Consumes complete handshake answers and frames from `bytes`; returns bytes used.
    fn process(&mut self, slot: u32, bytes: &[u8]) -> usize {
        let mut used = 0;
        if self.conns[slot as usize].state == State::Handshaking {
            let index = self.first + slot;
            let key = codec::handshake_key(index, self.conns[slot as usize].generation, self.plan.seed);
            match codec::parse_upgrade_response(bytes, &key) {
                Ok(None) => return 0,
                Ok(Some(n)) => {
                    used = n;
                    self.on_handshake(slot);
                }
                Err(e) => {
                    self.fail_protocol(slot, e);
                    return bytes.len();
                }
            }
        }
        while matches!(
            self.conns[slot as usize].state,
            State::Open | State::LoginPending | State::Ready | State::Closing
        ) {
            match codec::decode_server_frame(&bytes[used..]) {
                Ok(None) => break,
                Ok(Some((frame, n))) => {
                    used += n;
                    self.on_frame(slot, frame);
                }
                Err(e) => {
                    self.fail_protocol(slot, e);
                    return bytes.len();
                }
            }
        }
        used
    }

    fn on_handshake(&mut self, slot: u32) {
        let now = monotonic_ns();
        let conn = &self.conns[slot as usize];
        let churning = conn.churning;
        if !churning {
            stats::record_nanos(&mut self.connect_hist, now.saturating_sub(conn.started_ns));
        }
        self.set_state(slot, State::Open);
        if churning {
            self.start_login(slot, now);
        } else {
            self.shared.counters.add(Counter::ConnectOk, 1);
        }
    }

    fn on_frame(&mut self, slot: u32, frame: codec::Frame<'_>) {
        if !frame.fin || frame.opcode == codec::OP_CONTINUATION {
            let detail = format!("{} sent a fragmented message (not supported)", self.describe(slot));
            self.fail(slot, Counter::ErrProtocol, detail);
            return;
        }
        match frame.opcode {
            codec::OP_TEXT if self.conns[slot as usize].state == State::Closing => {}
            codec::OP_TEXT => self.on_text(slot, frame.payload),
            codec::OP_PING => {
                self.wbuf.clear();
                let mask = self.next_mask();
                codec::encode_client_frame(&mut self.wbuf, codec::OP_PONG, frame.payload, mask);
                self.send_wbuf(slot);
            }
            codec::OP_PONG => {}
            codec::OP_BINARY => {
                let detail = format!("{} sent a binary frame", self.describe(slot));
                self.fail(slot, Counter::ErrProtocol, detail);
            }
            codec::OP_CLOSE if self.conns[slot as usize].state == State::Closing => self.close_done(slot),
            codec::OP_CLOSE => {
                let code = frame.payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                let reason = String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default());
                let detail = format!(
                    "{} sent close {code} {reason:?} while {:?}",
                    self.describe(slot),
                    self.conns[slot as usize].state
                );
                self.send_close(slot, code);
                self.fail(slot, Counter::ErrClosed, detail);
            }
            other => {
                let detail = format!("{} sent opcode {other:#x}", self.describe(slot));
                self.fail(slot, Counter::ErrProtocol, detail);
            }
        }
    }

    fn on_text(&mut self, slot: u32, payload: &[u8]) {
        let index = self.first + slot;
        match message::parse_incoming(payload) {
            Incoming::Chat { data, reciever, sender } => match message::parse_mark(&data) {
                Some(Mark::Login) => self.on_login_confirmed(slot),
                Some(Mark::Chat { sent_ns, sender: from, seq }) => {
                    let prefix = &self.plan.name_prefix;
                    let to_me = message::index_of_name(&reciever, prefix) == Some(index);
                    let from_sender = message::index_of_name(&sender, prefix) == Some(from);
                    if !(to_me && from_sender) {
                        self.shared.counters.add(Counter::Misrouted, 1);
                        self.sample(format!(
                            "connection {prefix}{index} got a message for {reciever:?} \
                             from {sender:?} (sent by index {from})"
                        ));
                        return;
                    }
                    let latency = monotonic_ns().saturating_sub(sent_ns);
                    stats::record_nanos(&mut self.latency_hist, latency);
                    stats::record_nanos(&mut self.interval_hist, latency);
                    self.receipts.record(from, seq);
                    self.shared.counters.add(Counter::Received, 1);
                }
                None => {
                    let detail = format!(
                        "{} delivered a chat message with unknown Data {:?}",
                        self.describe(slot),
                        truncate(&data)
                    );
                    self.shared.counters.add(Counter::ErrProtocol, 1);
                    self.sample(detail);
                }
            },
            Incoming::UserExists => {
                let detail = format!("login as {}{index} rejected: \"User already exists\"", self.plan.name_prefix);
                self.shared.counters.add(Counter::ErrLoginRejected, 1);
                self.sample(detail);
                if self.conns[slot as usize].state == State::LoginPending {
                    self.count_login_failure(slot);
                    self.set_state(slot, State::Open);
                }
            }
            Incoming::ServerError(text) => {
                self.shared.counters.add(Counter::ErrServer, 1);
                let detail = format!("{} sent error {:?}", self.describe(slot), truncate(&text));
                self.sample(detail);
            }
            Incoming::Unexpected => {
                self.shared.counters.add(Counter::ErrProtocol, 1);
                let detail = format!(
                    "{} sent unexpected text {:?}",
                    self.describe(slot),
                    truncate(&String::from_utf8_lossy(payload))
                );
                self.sample(detail);
            }
        }
    }

    fn on_login_confirmed(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.state != State::LoginPending {
            return;
        }
        let elapsed = monotonic_ns().saturating_sub(conn.started_ns);
        let histogram = if conn.churning { &mut self.churn_hist } else { &mut self.login_hist };
        stats::record_nanos(histogram, elapsed);
        let counter = if conn.churning {
            conn.churning = false;
            Counter::ChurnOk
        } else {
            Counter::LoginOk
        };
        self.shared.counters.add(counter, 1);
        self.set_state(slot, State::Ready);
    }

    fn count_login_failure(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let counter = if conn.churning {
            conn.churning = false;
            Counter::ChurnFail
        } else {
            Counter::LoginFail
        };
        self.shared.counters.add(counter, 1);
    }

    fn expire_deadlines(&mut self, now: u64) {
        // Give back the queue's memory once a connect or login wave has passed.
        if self.deadlines.is_empty() && self.deadlines.capacity() > 1024 {
            self.deadlines = VecDeque::new();
        }
        while let Some(&(deadline, slot, generation)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let conn = &self.conns[slot as usize];
            let expired = conn.generation == generation
                && conn.state.is_pending()
                && conn.started_ns + self.plan.connect_timeout_ns <= now;
            if !expired {
                continue;
            }
            let what = match conn.state {
                State::Connecting => "TCP connect",
                State::Handshaking => "WebSocket handshake answer",
                State::Closing => "close answer",
                _ => "login confirmation",
            };
            let detail = format!(
                "{} timed out waiting for the {what} after {:.1} s",
                self.describe(slot),
                self.plan.connect_timeout_ns as f64 / 1e9
            );
            self.fail(slot, Counter::ErrTimeout, detail);
        }
    }

    fn fail_protocol(&mut self, slot: u32, error: ProtocolError) {
        let detail = format!("{}: {error}", self.describe(slot));
        self.fail(slot, Counter::ErrProtocol, detail);
    }

    /// A churn close is over (close answer, EOF, reset or timeout): reconnect soon.
    fn close_done(&mut self, slot: u32) {
        self.drop_conn(slot);
        self.reconnects.push(slot);
    }

    /// Closes a connection because of an error, counting the error and the failed step.
    fn fail(&mut self, slot: u32, kind: Counter, detail: String) {
        let conn = &self.conns[slot as usize];
        match conn.state {
            State::Idle | State::Closed => return,
            // The end of a close we asked for is not an error.
            State::Closing => return self.close_done(slot),
            State::Connecting | State::Handshaking => {
                let counter = if conn.churning { Counter::ChurnFail } else { Counter::ConnectFail };
                self.shared.counters.add(counter, 1);
                self.conns[slot as usize].churning = false;
            }
            State::LoginPending => self.count_login_failure(slot),
            State::Open | State::Ready => {}
        }
        self.shared.counters.add(kind, 1);
        self.sample(detail);
        self.drop_conn(slot);
    }

    /// Closes the socket and frees the connection's buffers.
    fn drop_conn(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.out = Vec::new();
        conn.inp = Vec::new();
        self.set_state(slot, State::Closed);
    }

    fn send_close(&mut self, slot: u32, code: u16) {
        self.wbuf.clear();
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_CLOSE, &code.to_be_bytes(), mask);
        self.send_wbuf(slot);
    }

    fn set_state(&mut self, slot: u32, state: State) {
        let conn = &mut self.conns[slot as usize];
        let was_open = conn.state.is_open();
        if conn.state.is_pending() {
            self.pending -= 1;
        }
        if state.is_pending() {
            self.pending += 1;
        }
        conn.state = state;
        match (was_open, state.is_open()) {
            (false, true) => self.shared.counters.add(Counter::Open, 1),
            (true, false) => self.shared.counters.sub(Counter::Open, 1),
            _ => {}
        }
    }

    fn publish(&mut self, now: u64) {
        self.last_publish_ns = now;
        if self.interval_hist.is_empty() {
            return;
        }
        stats::merge(&mut lock(&self.shared.interval_latency), &self.interval_hist);
        self.interval_hist.reset();
    }

    fn sample(&mut self, detail: String) {
        if self.samples_taken < MAX_SAMPLES {
            self.samples_taken += 1;
            lock(&self.shared.samples).push(detail);
        }
    }

    fn describe(&self, slot: u32) -> String {
        let index = self.first + slot;
        format!("{}{index} on {}", self.plan.name_prefix, self.plan.target_of(index).url)
    }

    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(1);
        codec::splitmix64(self.rng)
    }

    fn next_mask(&mut self) -> [u8; 4] {
        (self.next_random() as u32).to_le_bytes()
    }
}

/// Opens a non-blocking TCP socket to `target`, bound to `source` if given.
fn open_socket(target: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
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
fn error_counter(e: &io::Error) -> Counter {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Counter::ErrRefused,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => Counter::ErrReset,
        TimedOut => Counter::ErrTimeout,
        _ => Counter::ErrOther,
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}

/// Locks a mutex, ignoring poisoning: the data are counters and samples, still usable.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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
