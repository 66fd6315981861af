//! One reactor thread of a worker: a `mio::Poll` and a fixed range of connections that it
//! alone opens, logs in, chats on, churns and closes. Per connection it keeps only a
//! [`Conn`] (72 bytes); reads go through one thread-wide 64 KiB buffer.
//!
//! The loop: poll, dispatch events by token, take commands, expire deadlines, advance the
//! current activity (connect, login, chat or churn at its rate), publish interval stats.
//!
//! `Driver` is one type told in several files, one concern each:
//! - `lifecycle`: connect, handshake, login, and churn's close and reconnect
//! - `dial`: opening a socket from the source pair the plan gives the connection
//! - `schedule`: when each paced operation is meant to start
//! - `wire`: socket readiness, writes (queued when the socket would block) and reads
//! - `inbound`: frames and messages from the server; `sio`: Socket.IO's packets
//! - `tls`: `wss://` connections' rustls sessions
//! - `chat`: sending chat messages, open or closed loop; `window`: closed loop's windows
//! - `rooms`: joining rooms, sending room messages, counting what members receive
//! - `failure`: deadlines and errors, which close a connection
//! - `recover`: `--recover`'s reconnects after a drop, with the last history offset
//! - `conn`: the per-connection state; `shared`: what the worker sees of the thread

mod chat;
mod conn;
mod dial;
mod failure;
mod inbound;
mod lifecycle;
mod recover;
mod rooms;
mod schedule;
mod shared;
mod sio;
mod tls;
mod window;
mod wire;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::{Events, Poll, Token};

use crate::accounting::Receipts;
use crate::clock::monotonic_ns;
use crate::codec;
use crate::config::Plan;
use crate::ipc::Command;
use crate::stats::{self, Counter};

use self::conn::{Conn, Deadline, State};
use self::recover::Recover;
use self::rooms::RoomState;
use self::schedule::Schedule;
pub use self::shared::{lock, Final, RoomFinal, Shared};
use self::tls::Sessions;
use self::window::Windows;

/// The token of the thread's waker; connection tokens are `generation << 32 | slot`.
pub const WAKER: Token = Token(usize::MAX);
/// One read's worth; also the most a connection can hold as a partial frame plus this.
const READ_CHUNK: usize = 64 * 1024;
/// Connects or logins started per loop turn, so that a burst never starves reading.
const START_BATCH: u32 = 512;
/// Chat messages sent per loop turn at most, for the same reason.
const CHAT_BATCH: u64 = 4096;
/// How often interval latencies are handed to the worker's reporter.
const PUBLISH_EVERY_NS: u64 = 100_000_000;
/// Poll timeout while an activity waits for room (no sender free, a closed loop's
/// windows): how soon it looks again.
const ACTIVE_TICK: Duration = Duration::from_millis(1);
/// Longest poll timeout: deadlines and interval reports are looked at this often.
const IDLE_TICK: Duration = Duration::from_millis(100);
/// Error descriptions one thread keeps for the report.
const MAX_SAMPLES: usize = 20;

/// What the thread is doing; paced activities follow their schedule (the next slot to
/// connect or log in, the next chat message or churn cycle).
enum Activity {
    Idle,
    Connect(Schedule),
    Login(Schedule),
    /// Every logged-in connection joins its rooms, `--max-in-flight` at a time.
    Join(Schedule),
    /// Room messages: the run's one schedule (`total` messages), each sent by the thread
    /// that holds its sender.
    Rooms {
        schedule: Schedule,
        total: u64,
    },
    /// Open-loop chat at the thread's share of `--rate`, until `end_ns`.
    Chat {
        schedule: Schedule,
        end_ns: u64,
    },
    /// Closed-loop chat: deliveries refill the windows until `end_ns`.
    ClosedLoop {
        end_ns: u64,
    },
    Churn {
        schedule: Schedule,
        end_ns: u64,
    },
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
    /// Connections in a pending state (connecting, handshaking, awaiting login, closing).
    pending: u32,
    /// The thread's share of `--max-in-flight`: at most this many pending at once.
    max_pending: u32,
    /// Churned connections whose close is done, to reconnect at the end of the turn.
    reconnects: Vec<u32>,
    deadlines: VecDeque<Deadline>,
    /// TLS sessions of `wss://` connections.
    sessions: Sessions,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    json: Vec<u8>,
    data: Vec<u8>,
    rng: u64,
    connect_hist: Histogram<u64>,
    login_hist: Histogram<u64>,
    /// Churn reconnects: TCP connect to re-login confirmed.
    churn_hist: Histogram<u64>,
    /// Chat, from the intended send time (the headline figure).
    latency_hist: Histogram<u64>,
    /// Chat, from the actual send: the service time.
    service_hist: Histogram<u64>,
    /// Chat sends: how far behind its schedule the thread sent.
    lag_hist: Histogram<u64>,
    interval_hist: Histogram<u64>,
    interval_lag: Histogram<u64>,
    receipts: Receipts,
    windows: Windows,
    rooms: RoomState,
    recover: Recover,
    samples_taken: usize,
    last_publish_ns: u64,
}

impl Driver {
    /// A driver for connections `first .. first + count`.
    ///
    /// # Errors
    /// The poll instance cannot be created, or TLS cannot be set up.
    pub fn new(plan: Arc<Plan>, shared: Arc<Shared>, first: u32, count: u32) -> io::Result<Self> {
        let sessions = Sessions::new(&plan).map_err(io::Error::other)?;
        // Reserved, not touched: pages become resident as connections are started, so the
        // RSS growth the coordinator reports per connection includes this state.
        let conns = Vec::with_capacity(count as usize);
        let share = count as f64 / plan.connections.max(1) as f64;
        let max_pending = ((plan.max_in_flight as f64 * share).ceil() as u32).max(1);
        let rng = codec::splitmix64(plan.seed ^ (first as u64).wrapping_mul(0x9E37));
        let plan_room_size = plan.rooms.as_ref().map_or(0, |r| r.size);
        let recover = Recover::new(plan.recovery.recover, count);
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
            max_pending,
            reconnects: Vec::new(),
            deadlines: VecDeque::new(),
            sessions,
            rbuf: vec![0; READ_CHUNK],
            wbuf: Vec::with_capacity(4096),
            json: Vec::with_capacity(4096),
            data: Vec::with_capacity(4096),
            rng,
            connect_hist: stats::new_histogram(),
            login_hist: stats::new_histogram(),
            churn_hist: stats::new_histogram(),
            latency_hist: stats::new_histogram(),
            service_hist: stats::new_histogram(),
            lag_hist: stats::new_histogram(),
            interval_hist: stats::new_histogram(),
            interval_lag: stats::new_histogram(),
            receipts: Receipts::default(),
            windows: Windows::default(),
            rooms: RoomState::new(plan_room_size),
            recover,
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
            let timeout = self.poll_timeout(monotonic_ns());
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
            self.reconnect_due(now);
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
            service: self.service_hist,
            lag: self.lag_hist,
            recovery: self.recover.hist,
            tally: self.receipts.tally(),
            rooms: RoomFinal {
                join: self.rooms.join_hist,
                member: self.rooms.member_hist,
                lag: self.rooms.lag_hist,
                records: self.rooms.fanouts.records(),
            },
        }
    }

    fn take_commands(&mut self, now: u64) -> bool {
        let commands: Vec<Command> = std::mem::take(&mut *lock(&self.shared.commands));
        for command in commands {
            self.activity = match command {
                Command::Connect => Activity::Connect(Schedule::new(now, self.plan.connect_rate, self.share)),
                Command::Login => Activity::Login(Schedule::new(now, self.plan.login_rate, self.share)),
                Command::Join => Activity::Join(Schedule::new(now, 0, self.share)),
                Command::Chat => self.start_chat(now),
                Command::Rooms => {
                    // One schedule for the whole run, from the start every worker was given.
                    let start = self.shared.phase_start_ns.load(Ordering::Acquire);
                    let (rate, total) = self.plan.rooms.as_ref().map_or((0.0, 0), |r| (r.rate, r.messages));
                    Activity::Rooms { schedule: Schedule::at_rate(start, rate), total }
                }
                Command::Churn => Activity::Churn {
                    schedule: Schedule::new(now, self.plan.churn_rate, self.share),
                    end_ns: now + self.plan.churn_duration_ns,
                },
                Command::Finish => return true,
            };
        }
        false
    }

    /// The chat phase as `--rate` or `--closed-loop` asks for it.
    fn start_chat(&mut self, now: u64) -> Activity {
        let end_ns = now + self.plan.duration_ns;
        match self.plan.closed_loop {
            Some(size) => {
                self.windows = Windows::open(size, self.conns.len());
                Activity::ClosedLoop { end_ns }
            }
            None => Activity::Chat { schedule: Schedule::new(now, self.plan.rate, self.share), end_ns },
        }
    }

    /// Starts whatever the current activity has due by `now`.
    fn advance(&mut self, now: u64) {
        match self.activity {
            Activity::Idle => {}
            Activity::Connect(s) => {
                self.advance_wave(s, now, (Command::Connect, Activity::Connect), None, Self::start_connect);
            }
            Activity::Login(s) => {
                self.advance_wave(s, now, (Command::Login, Activity::Login), Some(State::Open), Self::start_login);
            }
            Activity::Join(s) => {
                self.advance_wave(s, now, (Command::Join, Activity::Join), Some(State::Ready), Self::start_join);
            }
            Activity::Rooms { mut schedule, total } => {
                if self.send_rooms_due(&mut schedule, total, now) {
                    self.finish_phase(Command::Rooms);
                    return;
                }
                self.activity = Activity::Rooms { schedule, total };
            }
            Activity::Chat { mut schedule, end_ns } => {
                // Everything meant to go before the end goes, even when this turn is after it.
                self.shared.counters.add(Counter::SendBehind, schedule.drop_late(now));
                self.send_due(&mut schedule, now.min(end_ns - 1), CHAT_BATCH);
                if now >= end_ns {
                    // What the schedule held and the thread never sent: asked, not generated.
                    self.shared.counters.add(Counter::SendBehind, schedule.missed(end_ns));
                    self.finish_phase(Command::Chat);
                    return;
                }
                self.activity = Activity::Chat { schedule, end_ns };
            }
            Activity::ClosedLoop { end_ns } => {
                if now >= end_ns {
                    // What is under way arrives during the coordinator's grace period.
                    self.windows = Windows::default();
                    self.finish_phase(Command::Chat);
                    return;
                }
                self.refill_windows(CHAT_BATCH);
            }
            Activity::Churn { mut schedule, end_ns } => self.advance_churn(&mut schedule, end_ns, now),
        }
    }

    /// A connect, login or join wave: `start`s what the schedule has due (connects every
    /// slot, the others the slots in state `from`), goes on as `activity`, and ends `phase`
    /// once every slot was started and none is pending.
    fn advance_wave(
        &mut self,
        mut schedule: Schedule,
        now: u64,
        (phase, activity): (Command, fn(Schedule) -> Activity),
        from: Option<State>,
        start: fn(&mut Self, u32, u64),
    ) {
        let end = self.startable(&schedule, now);
        for slot in schedule.next() as u32..end {
            if from.is_none_or(|state| self.conns.get(slot as usize).is_some_and(|c| c.state == state)) {
                start(self, slot, now);
            }
        }
        schedule.advance(end as u64 - schedule.next());
        self.activity = activity(schedule);
        if end == self.count && self.in_flight() == 0 {
            self.finish_phase(phase);
        }
    }

    /// Churn: cycles due by `now` while there is room in flight; at the end, waits for the
    /// reconnects under way to finish (or time out).
    fn advance_churn(&mut self, schedule: &mut Schedule, end_ns: u64, now: u64) {
        self.shared.counters.add(Counter::ChurnBehind, schedule.drop_late(now));
        let due = schedule.due(now.min(end_ns - 1), u64::MAX);
        while schedule.next() < due && self.pending < self.max_pending {
            if !self.churn_one(schedule.intended_ns(schedule.next())) {
                // No logged-in connection free: the cycle waits, its lag growing.
                break;
            }
            schedule.advance(1);
        }
        if now >= end_ns && self.in_flight() == 0 {
            self.shared.counters.add(Counter::ChurnBehind, schedule.missed(end_ns));
            self.finish_phase(Command::Churn);
            return;
        }
        self.activity = Activity::Churn { schedule: *schedule, end_ns };
    }

    /// How long the loop may sleep: until the schedule's next operation is due (a thread
    /// with 200 connects a second wakes 200 times, not 1,000), at once while work it could
    /// do now is left, a tick while it waits for room, or until events otherwise.
    fn poll_timeout(&self, now: u64) -> Duration {
        let activity = self.activity_timeout(now);
        // A reconnect due while the room in flight is taken waits for a pending one to
        // end, which is an event: no busy wait on it.
        let due = (self.pending < self.max_pending).then(|| self.recover.next_due_in(now)).flatten();
        due.map_or(activity, |due| due.min(activity))
    }

    fn activity_timeout(&self, now: u64) -> Duration {
        let until = |due_ns: u64| Duration::from_nanos(due_ns.saturating_sub(now)).min(IDLE_TICK);
        match &self.activity {
            Activity::Idle => IDLE_TICK,
            Activity::Rooms { schedule, .. } => until(schedule.intended_ns(schedule.next())),
            Activity::Connect(s) | Activity::Login(s) | Activity::Join(s) => {
                let waiting = s.next() >= self.count as u64 || self.pending >= self.max_pending;
                if waiting {
                    IDLE_TICK
                } else {
                    until(s.intended_ns(s.next()))
                }
            }
            Activity::Chat { schedule, end_ns } | Activity::Churn { schedule, end_ns } => {
                let due = schedule.intended_ns(schedule.next()).min(*end_ns);
                if due <= now {
                    // Overdue: what is left waits for a sender (or room in flight).
                    ACTIVE_TICK
                } else {
                    until(due)
                }
            }
            Activity::ClosedLoop { .. } => ACTIVE_TICK,
        }
    }

    /// The slot up to which a connect or login wave may start now: what its schedule has
    /// due, at most a batch per turn and no more than the room left in flight.
    fn startable(&self, schedule: &Schedule, now: u64) -> u32 {
        let next = schedule.next() as u32;
        let room = self.max_pending.saturating_sub(self.pending);
        (schedule.due(now, self.count as u64) as u32).min(next + START_BATCH.min(room))
    }

    fn finish_phase(&mut self, phase: Command) {
        self.activity = Activity::Idle;
        self.shared.done_phase.store(phase as u8, Ordering::Release);
    }

    fn in_flight(&self) -> u32 {
        self.pending
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
        if !self.interval_hist.is_empty() {
            stats::merge(&mut lock(&self.shared.interval_latency), &self.interval_hist);
            self.interval_hist.reset();
        }
        if !self.interval_lag.is_empty() {
            stats::merge(&mut lock(&self.shared.interval_lag), &self.interval_lag);
            self.interval_lag.reset();
        }
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
