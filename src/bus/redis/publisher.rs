//! The publisher thread: writes what reactors queued to Redis as pipelined
//! batches and reads the replies in bulk. It also runs the [`Registry`], whose
//! commands share the same connections (one per master).
//!
//! Each turn: poll, read every reply that arrived, drain the job queue into
//! per-master output buffers, let the registry renew its lease and re-assert
//! names, then write each buffer with as few `write`s as the kernel allows.
//! Replies come back in command order, so each connection keeps a queue of
//! what it awaits.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::cluster::{self, Topology};
use super::link::{Link, LinkError, Timer};
use super::registry::{Awaiting, Outgoing, Registry};
use super::resp::{self, Frame};
use super::{Job, Shared, WAKER};
use crate::bus::Undelivered;
use crate::config::Routing;
use crate::directory::ConnRef;
use crate::inbox::Command;

/// Output a connection may buffer before further jobs wait in its backlog:
/// a few milliseconds of Redis work, so the queue (not this buffer) is what
/// fills up and reports drops when Redis is slow or away.
const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Registry re-assertions in flight at once after a reconnect (the chunk size).
const REASSERT_WINDOW: usize = 2048;
/// Shortest pause between two fetches of the cluster's slot map.
const REFRESH_PAUSE: Duration = Duration::from_millis(100);
/// How long a shutting-down node waits to hand its last commands to Redis.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// What a sent command's reply is for.
enum Await {
    Hello,
    Ping,
    Publish { slot: u16, command: Box<[u8]>, from: ConnRef },
    Registry { slot: u16, command: Box<[u8]>, awaiting: Awaiting },
}

/// One master: its connection, what it awaits, and jobs waiting for it.
struct Route {
    link: Link,
    token: Token,
    awaiting: VecDeque<Await>,
    backlog: VecDeque<Job>,
    /// Logins and logouts in `backlog` (so a long backlog of publishes is not
    /// scanned on every turn while the link is down).
    parked_registry: usize,
}

struct Publisher {
    shared: Arc<Shared>,
    poll: Poll,
    topology: Topology,
    routes: Vec<Route>,
    next_token: usize,
    registry: Registry,
    /// Commands redirected by MOVED/ASK or sent to a master that was gone,
    /// re-routed after the slot map is fetched again.
    rerouted: Vec<Job>,
    rerouted_registry: Vec<Outgoing>,
    refresh_at: Option<Instant>,
    last_refresh: Instant,
}

pub(crate) fn run(shared: Arc<Shared>, poll: Poll) {
    let topology = initial_topology(&shared);
    let registry = Registry::new(shared.settings.node_id.clone(), shared.settings.lease);
    let mut publisher = Publisher {
        shared,
        poll,
        topology: topology.clone(),
        routes: Vec::new(),
        next_token: 0,
        registry,
        rerouted: Vec::new(),
        rerouted_registry: Vec::new(),
        refresh_at: None,
        last_refresh: Instant::now(),
    };
    publisher.rebuild_routes(topology);
    publisher.run();
}

/// The slot map to start with: in Redis Cluster, fetched now if reachable,
/// else the first seed (its MOVED replies then correct us).
pub(crate) fn initial_topology(shared: &Shared) -> Topology {
    let settings = &shared.settings;
    if !settings.cluster {
        return Topology::single(settings.seeds[0]);
    }
    match cluster::fetch(&settings.seeds, &settings.hello) {
        Ok(topology) => topology,
        Err(e) => {
            log::error!("cannot fetch the Redis Cluster slot map yet ({e}); retrying");
            Topology::single(settings.seeds[0])
        }
    }
}

impl Publisher {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("bus publisher: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            for event in events.iter() {
                if event.token() == WAKER {
                    continue;
                }
                let Some(i) = self.routes.iter().position(|r| r.token == event.token()) else {
                    continue;
                };
                if self.routes[i].link.is_connecting() {
                    match self.routes[i].link.finish_connect() {
                        Ok(true) => self.on_up(i),
                        Ok(false) => {}
                        Err(why) => self.on_down(i, &why),
                    }
                }
                if self.routes[i].link.is_up() && (event.is_readable() || event.is_read_closed()) {
                    self.read_replies(i);
                }
            }
            if self.shared.stop.load(Acquire) {
                return self.shut_down();
            }
            self.turn();
            if events.is_empty() && timeout >= super::IDLE_WAIT {
                self.trim_idle();
            }
        }
    }

    /// Everything after reading: new jobs, registry chores, writes, timers.
    fn turn(&mut self) {
        self.shared.pub_bell.answer();
        for i in 0..self.routes.len() {
            // Parked behind a full buffer; in order, before newer jobs.
            self.drain_backlog(i);
        }
        while let Some(job) = self.shared.pub_jobs.pop() {
            self.dispatch(job);
        }
        let now = Instant::now();
        let lease_up = self.is_up(self.registry.lease_slot());
        self.registry.renew_lease(now, lease_up);
        if self.registry.reassert_pending() {
            let in_flight: usize = self.routes.iter().map(|r| r.awaiting.len()).sum();
            let budget = REASSERT_WINDOW.saturating_sub(in_flight);
            let ups = self.ups();
            let topology = &self.topology;
            let up = |slot: u16| topology.master_of(slot).is_some_and(|i| ups[i]);
            self.registry.pump_reassert(budget, &up);
        }
        self.send_registry_commands();
        for i in 0..self.routes.len() {
            if let Err(why) = self.routes[i].link.flush() {
                self.on_down(i, &why);
            }
        }
        for i in 0..self.routes.len() {
            if let Err(why) = self.routes[i].link.try_connect(self.poll.registry(), now) {
                self.on_down(i, &why);
            }
            match self.routes[i].link.check_timers(now) {
                Timer::Quiet => {}
                Timer::Ping => {
                    let route = &mut self.routes[i];
                    resp::push_command(&mut route.link.out, &[b"PING"]);
                    route.awaiting.push_back(Await::Ping);
                }
                // The whole on-down path: what the dead connection awaited is settled.
                Timer::TimedOut(why) => self.on_down(i, &why),
            }
            let route = &self.routes[i];
            if route.link.is_down() && route.parked_registry > 0 {
                // Logins and logouts cannot wait for a link that is down.
                self.settle_backlog_while_down(i);
            }
        }
        if self.shared.settings.cluster && self.refresh_at.is_none() && self.routes.iter().any(|r| !r.link.is_up()) {
            // A master that stays down is replaced by its replica: only a new map names it.
            self.refresh_at = Some(self.last_refresh + super::subscriber::REFRESH_WHILE_DOWN);
        }
        if self.refresh_at.is_some_and(|at| now >= at) {
            self.refresh();
        }
        if self.shared.dropping.load(Relaxed) && self.shared.queued_bytes.load(Relaxed) < super::MAX_QUEUED_BYTES / 2 {
            self.shared.dropping.store(false, Relaxed);
            log::warn!("cross-node messages are accepted again (the Redis backlog drained)");
        }
        let connected = self.routes.iter().all(|r| r.link.is_up());
        self.shared.set_up(false, connected);
    }

    /// A turn without events: hand back what the last burst grew.
    fn trim_idle(&mut self) {
        for route in &mut self.routes {
            route.link.trim_idle();
            super::trim_if_empty!(route.awaiting, route.backlog);
        }
        super::trim_if_empty!(self.rerouted, self.rerouted_registry);
        self.registry.trim_idle();
    }

    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        if !self.shared.pub_jobs.is_empty() || self.registry.reassert_pending() {
            return Duration::ZERO;
        }
        if self.routes.iter().any(|r| r.link.is_up() && !r.backlog.is_empty()) {
            return Duration::from_millis(1);
        }
        let mut next = now + Duration::from_secs(1);
        for route in &self.routes {
            next = next.min(route.link.next_timer());
            if route.link.unsent() > 0 {
                // Output left over: WRITABLE will come, but re-check soon anyway.
                next = next.min(now + Duration::from_millis(5));
            }
        }
        next = next.min(self.registry.next_renewal());
        if let Some(at) = self.refresh_at {
            next = next.min(at);
        }
        next.saturating_duration_since(now)
    }

    fn ups(&self) -> Vec<bool> {
        self.routes.iter().map(|r| r.link.is_up()).collect()
    }

    fn is_up(&self, slot: u16) -> bool {
        self.topology.master_of(slot).is_some_and(|i| self.routes[i].link.is_up())
    }

    /// Sends a job to the master that serves it, or parks it in that master's backlog.
    fn dispatch(&mut self, job: Job) {
        let Some(i) = self.topology.master_of(slot_of_job(&job)) else {
            self.rerouted.push(job);
            self.schedule_refresh();
            return;
        };
        let ready = self.routes[i].backlog.is_empty() && self.has_room(i);
        self.place(i, job, ready);
    }

    /// Whether route `i` takes more output now.
    fn has_room(&self, i: usize) -> bool {
        let link = &self.routes[i].link;
        link.is_up() && link.unsent() < OUT_HIGH_WATER
    }

    /// Moves route `i`'s parked jobs on, oldest first, while its link has
    /// room: a turn costs what it sends, not the length of the backlog.
    fn drain_backlog(&mut self, i: usize) {
        while self.has_room(i) {
            let Some(job) = self.routes[i].backlog.pop_front() else {
                break;
            };
            if !matches!(job, Job::Publish { .. }) {
                self.routes[i].parked_registry = self.routes[i].parked_registry.saturating_sub(1);
            }
            if self.topology.master_of(slot_of_job(&job)) == Some(i) {
                self.place(i, job, true);
            } else {
                // Its slot moved to another master meanwhile.
                self.dispatch(job);
            }
        }
    }

    /// Sends `job` on route `i` when `ready`, else parks it at the back of its backlog.
    fn place(&mut self, i: usize, job: Job, ready: bool) {
        let route = &mut self.routes[i];
        match job {
            Job::Publish { slot, command, from } if ready => {
                self.shared.queued_bytes.fetch_sub(command.len(), Relaxed);
                route.link.out.extend_from_slice(&command);
                route.awaiting.push_back(Await::Publish { slot, command, from });
            }
            Job::Claim { name, at } if ready || route.link.is_down() => {
                let up = route.link.is_up();
                self.registry.claim(&self.shared, name, at, up);
            }
            Job::Release { name, at } if ready || route.link.is_down() => {
                let up = route.link.is_up();
                self.registry.release(name, at, up);
            }
            job => {
                if !matches!(job, Job::Publish { .. }) {
                    route.parked_registry += 1;
                }
                route.backlog.push_back(job);
            }
        }
    }

    /// Hands the registry's commands to their masters.
    fn send_registry_commands(&mut self) {
        while !self.registry.out.is_empty() {
            let out = std::mem::take(&mut self.registry.out);
            for Outgoing { slot, command, awaiting } in out {
                match self.topology.master_of(slot) {
                    Some(i) if self.routes[i].link.is_up() => {
                        let route = &mut self.routes[i];
                        route.link.out.extend_from_slice(&command);
                        route.awaiting.push_back(Await::Registry { slot, command, awaiting });
                    }
                    _ => {
                        let ups = self.ups();
                        let topology = &self.topology;
                        let up = |s: u16| topology.master_of(s).is_some_and(|i| ups[i]);
                        self.registry.on_lost(&self.shared, awaiting, &up);
                    }
                }
            }
        }
    }

    /// A link is down: logins and logouts parked for it are settled now (the
    /// outage rules of the registry); publishes stay parked, within the bound.
    fn settle_backlog_while_down(&mut self, i: usize) {
        self.routes[i].parked_registry = 0;
        let parked = std::mem::take(&mut self.routes[i].backlog);
        for job in parked {
            match job {
                Job::Claim { name, at } => self.registry.claim(&self.shared, name, at, false),
                Job::Release { name, at } => self.registry.release(name, at, false),
                publish => self.routes[i].backlog.push_back(publish),
            }
        }
    }

    fn on_up(&mut self, i: usize) {
        // Every path that drops a link settles what it awaited (`on_down`):
        // a stale entry here would pair every reply with the wrong command.
        debug_assert!(self.routes[i].awaiting.is_empty(), "replies awaited from a dropped connection");
        self.lose_awaiting(i);
        let shared = Arc::clone(&self.shared);
        let route = &mut self.routes[i];
        route.link.out.extend_from_slice(&shared.settings.hello);
        for _ in 0..shared.settings.hello_replies {
            route.awaiting.push_back(Await::Hello);
        }
        let topology = &self.topology;
        let serves = |slot: u16| topology.master_of(slot) == Some(i);
        self.registry.on_link_up(&serves);
        self.send_registry_commands();
        self.drain_backlog(i);
    }

    /// The one way a link is given up (a failed read or write, a timeout, a
    /// failed connect): settles everything sent on it, then what waits for it.
    fn on_down(&mut self, i: usize, why: &LinkError) {
        self.routes[i].link.fail(self.poll.registry(), why);
        self.lose_awaiting(i);
        self.settle_backlog_while_down(i);
        self.send_registry_commands();
        if self.shared.settings.cluster {
            self.schedule_refresh();
        }
    }

    /// Route `i`'s connection is gone with commands unanswered: claims in
    /// flight follow the outage rules, publishes count as lost (Redis may
    /// have run some of them; nobody will tell).
    fn lose_awaiting(&mut self, i: usize) {
        let lost = std::mem::take(&mut self.routes[i].awaiting);
        let mut publishes = 0u64;
        for awaiting in lost {
            match awaiting {
                Await::Registry { awaiting, .. } => {
                    let ups = self.ups();
                    let topology = &self.topology;
                    let up = |s: u16| topology.master_of(s).is_some_and(|i| ups[i]);
                    self.registry.on_lost(&self.shared, awaiting, &up);
                }
                Await::Publish { .. } => publishes += 1,
                Await::Hello | Await::Ping => {}
            }
        }
        if publishes > 0 {
            self.shared.hub.metrics.bus.publish_lost.fetch_add(publishes, Relaxed);
            log::warn!("{publishes} published messages were unconfirmed when the link went down: possibly lost");
        }
    }

    /// Reads and handles every reply that has arrived on route `i`.
    fn read_replies(&mut self, i: usize) {
        let targeted = self.shared.settings.routing == Routing::Targeted;
        let mut redirected = false;
        let ups = self.ups();
        let Publisher { shared, routes, registry, topology, rerouted, rerouted_registry, .. } = self;
        let up = |s: u16| topology.master_of(s).is_some_and(|m| ups[m]);
        let Route { link, awaiting, .. } = &mut routes[i];
        let bus = &shared.hub.metrics.bus;
        let round = link.read_frames(|frame| {
            match awaiting.pop_front().ok_or(LinkError::ReplyToNothing)? {
                Await::Hello => {
                    if let Frame::Error(e) = frame {
                        return Err(LinkError::HelloRefused(String::from_utf8_lossy(e).into()));
                    }
                }
                Await::Ping => {}
                Await::Publish { slot, command, from } => match frame {
                    Frame::Integer(receivers) => {
                        bus.published.fetch_add(1, Relaxed);
                        if receivers == 0 && targeted {
                            reply_offline(shared, &command, from);
                        }
                    }
                    Frame::Error(e) if is_redirect(e) => {
                        redirected = true;
                        // Queued again: counted again until it is re-sent.
                        shared.queued_bytes.fetch_add(command.len(), Relaxed);
                        rerouted.push(Job::Publish { slot, command, from });
                    }
                    Frame::Error(e) => {
                        log::warn!("PUBLISH failed: {}", String::from_utf8_lossy(e));
                    }
                    _ => {}
                },
                Await::Registry { slot, command, awaiting } => match frame {
                    Frame::Error(e) if is_redirect(e) => {
                        redirected = true;
                        rerouted_registry.push(Outgoing { slot, command, awaiting });
                    }
                    frame => registry.on_reply(shared, awaiting, &frame, &up),
                },
            }
            Ok(())
        });
        if let Some(why) = round.failure {
            self.on_down(i, &why);
        }
        if redirected {
            self.schedule_refresh();
        }
        self.send_registry_commands();
    }

    fn schedule_refresh(&mut self) {
        if self.shared.settings.cluster && self.refresh_at.is_none_or(|at| at > self.last_refresh + REFRESH_PAUSE) {
            let earliest = self.last_refresh + REFRESH_PAUSE;
            self.refresh_at = Some(earliest.max(Instant::now()));
        }
    }

    /// Fetches the slot map again; moves parked and redirected jobs to their masters.
    fn refresh(&mut self) {
        self.refresh_at = None;
        self.last_refresh = Instant::now();
        let seeds = cluster::seeds_to_ask(&self.topology.masters, &self.ups(), &self.shared.settings.seeds);
        match cluster::fetch(&seeds, &self.shared.settings.hello) {
            Ok(topology) => {
                if topology != self.topology {
                    log::info!("Redis Cluster slot map changed: masters {:?}", topology.masters);
                    self.rebuild_routes(topology);
                }
                let jobs = std::mem::take(&mut self.rerouted);
                for job in jobs {
                    self.dispatch(job);
                }
                let commands = std::mem::take(&mut self.rerouted_registry);
                self.registry.out.extend(commands);
                self.send_registry_commands();
            }
            Err(e) => {
                log::warn!("cannot fetch the Redis Cluster slot map: {e}");
                self.refresh_at = Some(Instant::now() + super::subscriber::REFRESH_WHILE_DOWN);
            }
        }
    }

    /// One route per master of `topology`, keeping the connections to masters
    /// that stay; parked jobs of the others are dispatched again.
    fn rebuild_routes(&mut self, topology: Topology) {
        let mut old: Vec<Route> = std::mem::take(&mut self.routes);
        let mut routes = Vec::with_capacity(topology.masters.len());
        for &addr in &topology.masters {
            match old.iter().position(|r| r.link.addr == addr) {
                Some(j) => routes.push(old.swap_remove(j)),
                None => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    routes.push(Route {
                        link: Link::new(addr, token, "publisher", self.shared.settings.ping),
                        token,
                        awaiting: VecDeque::new(),
                        backlog: VecDeque::new(),
                        parked_registry: 0,
                    });
                }
            }
        }
        self.topology = topology;
        self.routes = routes;
        for mut gone in old {
            gone.link.fail(self.poll.registry(), &LinkError::NoLongerMaster);
            for awaiting in gone.awaiting.drain(..) {
                match awaiting {
                    Await::Registry { slot, command, awaiting } => {
                        self.registry.out.push(Outgoing { slot, command, awaiting });
                    }
                    Await::Publish { .. } => {
                        self.shared.hub.metrics.bus.publish_lost.fetch_add(1, Relaxed);
                    }
                    Await::Hello | Await::Ping => {}
                }
            }
            self.rerouted.extend(gone.backlog.drain(..));
        }
        let jobs = std::mem::take(&mut self.rerouted);
        for job in jobs {
            self.dispatch(job);
        }
    }

    /// Gives the last logouts and the lease deletion a moment to reach Redis.
    fn shut_down(&mut self) {
        while let Some(job) = self.shared.pub_jobs.pop() {
            self.dispatch(job);
        }
        self.registry.drop_lease();
        self.send_registry_commands();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut events = Events::with_capacity(64);
        while Instant::now() < deadline {
            let mut unsent = 0;
            for i in 0..self.routes.len() {
                if self.routes[i].link.flush().is_ok() {
                    unsent += self.routes[i].link.unsent();
                }
            }
            if unsent == 0 {
                break;
            }
            let _ = self.poll.poll(&mut events, Some(Duration::from_millis(10)));
        }
    }
}

/// The slot a job's command lives in.
fn slot_of_job(job: &Job) -> u16 {
    match job {
        Job::Publish { slot, .. } => *slot,
        Job::Claim { name, .. } | Job::Release { name, .. } => Registry::slot_of_name(name),
    }
}

/// MOVED, ASK and friends: the command belongs on another master (or later).
fn is_redirect(error: &[u8]) -> bool {
    [&b"MOVED "[..], b"ASK ", b"TRYAGAIN", b"CLUSTERDOWN"].iter().any(|p| error.starts_with(p))
}

/// Tells the sender that nobody subscribes the recipient's channel.
fn reply_offline(shared: &Shared, command: &[u8], from: ConnRef) {
    let Some(name) = super::recipient_of_command(command) else {
        return;
    };
    shared.hub.metrics.reactors[from.reactor].undeliverable.fetch_add(1, Relaxed);
    let why = Undelivered::NotOnline(String::from_utf8_lossy(name).as_ref().into());
    shared.hub.send(from, Command::Undelivered { token: from.token, why });
}
