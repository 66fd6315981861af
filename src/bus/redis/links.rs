//! The loop both bus threads run: one [`Link`] per master of the slot map
//! (a plain Redis is one master), driven by one `mio::Poll`.
//!
//! Each turn: poll; on each link's event finish its connect, read the
//! greeting's replies (the link is up, and the thread told, only once Redis
//! answered them) or read what arrived; then the thread's own work (jobs
//! from reactors, chores); then for every link connect when due, check its
//! timers (PING, the reply deadline) and write what is queued; then fetch
//! the slot map if that is due. A link is given up
//! in one place ([`Loop::drop_link`]) whatever failed, so the thread settles
//! what it sent on it exactly once.
//!
//! What differs between the threads is behind [`BusThread`]: what to send on
//! connect, what a frame means, what to settle when a link drops, which jobs
//! to drain, how to follow a new slot map.

use std::sync::atomic::Ordering::Acquire;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Poll, Token};

use super::cluster::{self, RefreshSchedule, Topology};
use super::link::{Link, LinkError, Timer};
use super::resp;
use super::shared::{Role, Shared};

/// The poll token of a bus thread's waker (links count up from 0).
pub const WAKER: Token = Token(usize::MAX);
/// A poll that waited this long and got nothing finds its thread idle: the
/// time to trim, never on a busy path.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// Longest sleep with nothing scheduled: the stop flag and queues are looked
/// at again at least this often, should a wake be lost.
const MAX_SLEEP: Duration = Duration::from_secs(1);
/// Output left in a link's buffer is written on its WRITABLE edge; this soon
/// it is tried again anyway.
const UNSENT_RECHECK: Duration = Duration::from_millis(5);

/// What one bus thread does with its links, beyond the shared loop.
pub(crate) trait BusThread {
    /// What the thread keeps per link (replies awaited, channels to subscribe again).
    type State: Default;
    const ROLE: Role;

    /// Jobs from reactors and the thread's own chores, first in each turn.
    fn work(&mut self, links: &mut LinkSet<Self::State>, now: Instant);
    /// Link `i` is up (Redis answered its greeting): queue what the thread
    /// sends on a new connection.
    fn on_up(&mut self, links: &mut LinkSet<Self::State>, i: usize);
    /// Link `i` was given up: settle what was sent on it and what waits for it.
    fn on_down(&mut self, links: &mut LinkSet<Self::State>, i: usize);
    /// Link `i` has bytes: handle every frame ([`Link::read_frames`]).
    ///
    /// # Errors
    /// Why the link must be given up.
    fn read(&mut self, links: &mut LinkSet<Self::State>, i: usize) -> Result<(), LinkError>;
    /// A slot map was fetched (Redis Cluster): rebuild the links if it
    /// changed ([`LinkSet::rebuild`]) and move work to where it lives now.
    fn on_topology(&mut self, links: &mut LinkSet<Self::State>, topology: Topology);
    /// The earliest moment the thread has work of its own, if any.
    fn next_wake(&self, links: &LinkSet<Self::State>, now: Instant) -> Option<Instant>;
    /// A PING was queued on a link.
    fn pinged(state: &mut Self::State);
    /// Whether a command sent on the link awaits its reply (the reply
    /// deadline runs meanwhile).
    fn awaits_reply(state: &Self::State) -> bool;
    /// An idle turn: hand back what a burst grew.
    fn trim_idle(&mut self, _links: &mut LinkSet<Self::State>) {}
    /// The node is stopping: the last turn.
    fn shut_down(&mut self, _links: &mut LinkSet<Self::State>) {}
}

/// One master of the slot map, as a bus thread sees it.
pub(crate) struct Master<S> {
    pub link: Link,
    token: Token,
    /// The thread's own state for this link.
    pub state: S,
}

/// A bus thread's links, in the order of the slot map's masters.
pub(crate) struct LinkSet<S> {
    shared: Arc<Shared>,
    poll: Poll,
    role: Role,
    topology: Topology,
    masters: Vec<Master<S>>,
    next_token: usize,
    refresh: RefreshSchedule,
}

/// Which slots a link that is up serves, as of when it was taken.
pub(crate) struct Reach<'a> {
    topology: &'a Topology,
    ups: Vec<bool>,
}

impl Reach<'_> {
    pub fn up(&self, slot: u16) -> bool {
        self.topology.master_of(slot).is_some_and(|i| self.ups[i])
    }
}

impl<S: Default> LinkSet<S> {
    /// Links to the masters of the slot map at start (fetched now in Redis
    /// Cluster, if it answers); none is connected yet.
    pub fn new(shared: Arc<Shared>, poll: Poll, role: Role) -> LinkSet<S> {
        let settings = &shared.settings;
        let topology = cluster::initial(&settings.seeds, &settings.link, settings.cluster);
        let mut links = LinkSet {
            topology: topology.clone(),
            shared,
            poll,
            role,
            masters: Vec::new(),
            next_token: 0,
            refresh: RefreshSchedule::new(),
        };
        links.rebuild(topology);
        links
    }

    /// One link per master of `topology`, keeping the links to masters that
    /// stay. Returns the masters that are gone, their links dropped.
    pub fn rebuild(&mut self, topology: Topology) -> Vec<Master<S>> {
        let mut old = std::mem::take(&mut self.masters);
        let mut masters = Vec::with_capacity(topology.masters.len());
        for server in &topology.masters {
            match old.iter().position(|m| m.link.endpoint == *server) {
                Some(j) => masters.push(old.swap_remove(j)),
                None => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    let config = Arc::clone(&self.shared.settings.link);
                    let link = Link::new(server.clone(), token, self.role.name(), config);
                    masters.push(Master { link, token, state: S::default() });
                }
            }
        }
        for gone in &mut old {
            gone.link.fail(self.poll.registry(), &LinkError::NoLongerMaster);
        }
        self.topology = topology;
        self.masters = masters;
        old
    }
}

impl<S> LinkSet<S> {
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    pub fn len(&self) -> usize {
        self.masters.len()
    }

    pub fn get(&self, i: usize) -> &Master<S> {
        &self.masters[i]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Master<S> {
        &mut self.masters[i]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Master<S>> {
        self.masters.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Master<S>> {
        self.masters.iter_mut()
    }

    /// The index of the master that serves `slot`, if any does.
    pub fn master_of(&self, slot: u16) -> Option<usize> {
        self.topology.master_of(slot)
    }

    /// Whether the link that serves `slot` is up.
    pub fn is_up(&self, slot: u16) -> bool {
        self.master_of(slot).is_some_and(|i| self.masters[i].link.is_up())
    }

    /// Which slots are in reach now.
    pub fn reach(&self) -> Reach<'_> {
        Reach { topology: &self.topology, ups: self.masters.iter().map(|m| m.link.is_up()).collect() }
    }

    /// Master `i` to work on, and which slots are in reach meanwhile.
    pub fn master_and_reach(&mut self, i: usize) -> (&mut Master<S>, Reach<'_>) {
        let ups = self.masters.iter().map(|m| m.link.is_up()).collect();
        (&mut self.masters[i], Reach { topology: &self.topology, ups })
    }

    /// Fetches the slot map soon (Redis Cluster only): a reply or a push
    /// said it changed, or a link dropped.
    pub fn schedule_refresh(&mut self) {
        if self.shared.settings.cluster {
            self.refresh.soon();
        }
    }

    /// Waits up to `timeout` for any link to become ready (a shutdown's
    /// last writes).
    pub fn wait(&mut self, timeout: Duration) {
        let mut events = Events::with_capacity(64);
        let _ = self.poll.poll(&mut events, Some(timeout));
    }

    fn index_of(&self, token: Token) -> Option<usize> {
        self.masters.iter().position(|m| m.token == token)
    }

    fn all_up(&self) -> bool {
        self.masters.iter().all(|m| m.link.is_up())
    }
}

/// Runs a bus thread until the node stops.
pub(crate) fn run<T: BusThread>(thread: T, links: LinkSet<T::State>) {
    Loop { thread, links }.run();
}

struct Loop<T: BusThread> {
    thread: T,
    links: LinkSet<T::State>,
}

impl<T: BusThread> Loop<T> {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.links.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("bus {}: poll failed: {e}", T::ROLE.name());
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            for event in events.iter() {
                self.on_event(event);
            }
            if self.links.shared.stop.load(Acquire) {
                return self.thread.shut_down(&mut self.links);
            }
            self.turn();
            if events.is_empty() && timeout >= IDLE_WAIT {
                self.links.iter_mut().for_each(|m| m.link.trim_idle());
                self.thread.trim_idle(&mut self.links);
            }
        }
    }

    fn on_event(&mut self, event: &Event) {
        if event.token() == WAKER {
            return;
        }
        let Some(i) = self.links.index_of(event.token()) else {
            return;
        };
        let link = &mut self.links.masters[i].link;
        if link.is_connecting() {
            if let Err(why) = link.finish_connect() {
                return self.drop_link(i, &why);
            }
        }
        let link = &mut self.links.masters[i].link;
        if link.is_greeting() && (event.is_readable() || event.is_read_closed()) {
            match link.read_greeting() {
                Ok(true) => self.thread.on_up(&mut self.links, i),
                Ok(false) => {}
                Err(why) => return self.drop_link(i, &why),
            }
        }
        if self.links.masters[i].link.is_up() && (event.is_readable() || event.is_read_closed()) {
            if let Err(why) = self.thread.read(&mut self.links, i) {
                self.drop_link(i, &why);
            }
        }
    }

    /// Everything after reading: the thread's work, then connects, timers
    /// and writes on every link, then the slot map if a fetch is due.
    fn turn(&mut self) {
        let now = Instant::now();
        self.thread.work(&mut self.links, now);
        for i in 0..self.links.len() {
            let LinkSet { poll, masters, .. } = &mut self.links;
            if let Err(why) = masters[i].link.try_connect(poll.registry(), now) {
                self.drop_link(i, &why);
            }
            let master = &mut self.links.masters[i];
            match master.link.check_timers(now, T::awaits_reply(&master.state)) {
                Timer::Quiet => {}
                Timer::Ping => {
                    resp::push_command(&mut master.link.out, &[b"PING"]);
                    T::pinged(&mut master.state);
                }
                // The whole on-down path: what the dead connection awaited is settled.
                Timer::TimedOut(why) => self.drop_link(i, &why),
            }
            if let Err(why) = self.links.masters[i].link.flush() {
                self.drop_link(i, &why);
            }
        }
        let all_up = self.links.all_up();
        if self.links.shared.settings.cluster && !all_up {
            // A master that stays down is replaced by its replica: only a new map names it.
            self.links.refresh.while_down();
        }
        if self.links.refresh.start_if_due(now) {
            self.refresh();
        }
        self.links.shared.set_up(T::ROLE, all_up);
    }

    /// The one way a link is given up (a failed connect, read or write, a
    /// timeout): the thread settles everything sent on it, then what waits for it.
    fn drop_link(&mut self, i: usize, why: &LinkError) {
        let LinkSet { poll, masters, .. } = &mut self.links;
        masters[i].link.fail(poll.registry(), why);
        self.thread.on_down(&mut self.links, i);
        self.links.schedule_refresh();
    }

    /// Fetches the slot map; the thread follows it.
    fn refresh(&mut self) {
        let links = &self.links;
        let ups: Vec<bool> = links.iter().map(|m| m.link.is_up()).collect();
        let settings = &links.shared.settings;
        let seeds = cluster::seeds_to_ask(&links.topology.masters, &ups, &settings.seeds);
        match cluster::fetch(&seeds, &settings.link) {
            Ok(topology) => self.thread.on_topology(&mut self.links, topology),
            Err(e) => {
                log::warn!("cannot fetch the Redis Cluster slot map: {e}");
                self.links.refresh.failed();
            }
        }
    }

    /// How long the poll may sleep: until the first timer, the thread's own
    /// next work, or the next slot map fetch.
    fn poll_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut next = now + MAX_SLEEP;
        if let Some(at) = self.thread.next_wake(&self.links, now) {
            next = next.min(at);
        }
        for master in self.links.iter() {
            next = next.min(master.link.next_timer());
            if master.link.unsent() > 0 {
                next = next.min(now + UNSENT_RECHECK);
            }
        }
        if let Some(at) = self.links.refresh.next() {
            next = next.min(at);
        }
        next.saturating_duration_since(now)
    }
}
