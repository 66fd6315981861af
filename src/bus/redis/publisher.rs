//! The publisher thread: writes what reactors queued to Redis as pipelined
//! batches and reads the replies in bulk. It also runs the [`Registry`], whose
//! commands share the same connections (one per master).
//!
//! Each turn (the loop is [`links`]): read every reply that arrived, drain
//! the job queue into per-master output buffers, let the registry renew its
//! lease and re-assert names, then write each buffer with as few `write`s as
//! the kernel allows. Replies come back in command order, so each connection
//! keeps a queue of what it awaits.
//!
//! With one master (a plain Redis), one batch is in flight at a time: while
//! Redis has not answered any of it, the thread leaves the job queue (and its
//! doorbell) alone, so reactors queue without waking it, and it wakes once,
//! for the replies, to write everything queued meanwhile in one batch. Each
//! batch costs this thread one wake instead of two and Redis one read; a job
//! waits at most for the batch before it, which Redis answers before it would
//! have read the job anyway.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Poll;

use super::cluster::Topology;
use super::history;
use super::link::LinkError;
use super::links::{self, BusThread, LinkSet, Master};
use super::ratelog::Every;
use super::registry::{Awaiting, Outgoing, Registry};
use super::resp::Frame;
use super::rooms::{RoomReply, Rooms};
use super::shared::{Job, Role, Shared, MAX_QUEUED_BYTES};
use super::trim::trim_if_empty;
use super::undelivered::{reply_lost, reply_offline};
use crate::config::Routing;
use crate::directory::ConnRef;

/// Output a connection may buffer before further jobs wait in its backlog:
/// a few milliseconds of Redis work, so the queue (not this buffer) is what
/// fills up and reports drops when Redis is slow or away.
const OUT_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Registry re-assertions in flight at once after a reconnect (the chunk size).
const REASSERT_WINDOW: usize = 2048;
/// How soon a backlog parked behind a full buffer is looked at again.
const BACKLOG_RECHECK: Duration = Duration::from_millis(1);
/// How long a shutting-down node waits to hand its last commands to Redis.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// What a sent command's reply is for.
enum Await {
    Ping,
    Room(RoomReply),
    Publish { slot: u16, command: Box<[u8]>, from: ConnRef },
    Registry { slot: u16, command: Box<[u8]>, awaiting: Awaiting },
}

/// What the publisher keeps per master: what its connection awaits, and
/// jobs waiting for it.
#[derive(Default)]
pub(crate) struct Route {
    awaiting: VecDeque<Await>,
    backlog: VecDeque<Job>,
    /// Logins and logouts in `backlog` (so a long backlog of publishes is not
    /// scanned on every turn while the link is down).
    parked_registry: usize,
}

struct Publisher {
    shared: Arc<Shared>,
    registry: Registry,
    rooms: Rooms,
    /// Commands redirected by MOVED/ASK or sent to a master that was gone,
    /// re-routed after the slot map is fetched again.
    rerouted: Vec<Job>,
    rerouted_registry: Vec<Outgoing>,
    /// PUBLISH refused by Redis, logged once a minute at most.
    refused_log: Every,
    /// Replies were read since the last turn's work: the batch in flight is answered.
    answered: bool,
}

pub(crate) fn run(shared: Arc<Shared>, poll: Poll) {
    let links = LinkSet::new(Arc::clone(&shared), poll, Role::Publisher);
    let settings = &shared.settings;
    let registry = Registry::new(settings.node_id.clone(), settings.lease, settings.cluster);
    let rooms = Rooms::new(&shared);
    let publisher = Publisher {
        shared,
        registry,
        rooms,
        rerouted: Vec::new(),
        rerouted_registry: Vec::new(),
        refused_log: Every::minute(),
        answered: false,
    };
    links::run(publisher, links);
}

impl BusThread for Publisher {
    type State = Route;
    const ROLE: Role = Role::Publisher;

    /// New jobs (after those parked behind a full buffer), then registry
    /// chores; nothing while a batch awaits its replies ([`Publisher::holding`]).
    fn work(&mut self, links: &mut LinkSet<Route>, now: Instant) {
        if self.holding(links) {
            return;
        }
        self.answered = false;
        self.shared.pub_bell.answer();
        for i in 0..links.len() {
            let master = links.get(i);
            if master.link.is_down() && master.state.parked_registry > 0 {
                // Logins and logouts cannot wait for a link that is down.
                self.settle_backlog_while_down(links, i);
            }
            // Parked behind a full buffer; in order, before newer jobs.
            self.drain_backlog(links, i);
        }
        while let Some(job) = self.shared.pub_jobs.pop() {
            self.dispatch(links, job);
        }
        self.registry.renew_lease(now, links.is_up(self.registry.lease_slot()));
        if self.registry.reassert_pending() {
            let in_flight: usize = links.iter().map(|m| m.state.awaiting.len()).sum();
            let reach = links.reach();
            self.registry.pump_reassert(REASSERT_WINDOW.saturating_sub(in_flight), &|s| reach.up(s));
        }
        self.send_registry_commands(links);
        self.rooms.renew(&self.shared.hub, now);
        self.send_room_commands(links);
        if self.shared.dropping.load(Relaxed) && self.shared.queued_bytes.load(Relaxed) < MAX_QUEUED_BYTES / 2 {
            self.shared.dropping.store(false, Relaxed);
            log::warn!("cross-node messages are accepted again (the Redis backlog drained)");
        }
    }

    fn on_up(&mut self, links: &mut LinkSet<Route>, i: usize) {
        // Every path that drops a link settles what it awaited (`on_down`):
        // a stale entry here would pair every reply with the wrong command.
        debug_assert!(links.get(i).state.awaiting.is_empty(), "replies awaited from a dropped connection");
        self.lose_awaiting(links, i);
        let topology = links.topology();
        self.registry.on_link_up(&|slot| topology.master_of(slot) == Some(i));
        self.rooms.reassert(&self.shared.hub, &|slot| topology.master_of(slot) == Some(i));
        self.send_registry_commands(links);
        self.send_room_commands(links);
        self.drain_backlog(links, i);
        history::on_publisher_up(&self.shared);
    }

    fn on_down(&mut self, links: &mut LinkSet<Route>, i: usize) {
        self.lose_awaiting(links, i);
        self.settle_backlog_while_down(links, i);
        self.send_registry_commands(links);
    }

    /// Reads and handles every reply that has arrived on link `i`.
    fn read(&mut self, links: &mut LinkSet<Route>, i: usize) -> Result<(), LinkError> {
        let targeted = self.shared.settings.routing == Routing::Targeted;
        let mut redirected = false;
        let Publisher { shared, registry, rooms, rerouted, rerouted_registry, refused_log, answered } = self;
        let (Master { link, state, .. }, reach) = links.master_and_reach(i);
        let up = |slot: u16| reach.up(slot);
        let bus = &shared.hub.metrics.bus;
        let round = link.read_frames(|frame| {
            *answered = true;
            match state.awaiting.pop_front().ok_or(LinkError::ReplyToNothing)? {
                Await::Ping => {}
                Await::Room(reply) => rooms.on_reply(shared, reply, &frame),
                Await::Publish { slot, command, from } => match frame {
                    // A kept message's script: {id, receivers}.
                    Frame::Array(Some(items)) => history::on_published(shared, &command, from, &items),
                    Frame::Integer(receivers) => {
                        bus.published.fetch_add(1, Relaxed);
                        if receivers == 0 && targeted {
                            reply_offline(shared, &command, from);
                        } else {
                            shared.hub.published(from, receivers);
                        }
                    }
                    Frame::Error(e) if is_redirect(e) => {
                        redirected = true;
                        // Queued again: counted again until it is re-sent.
                        shared.queued_bytes.fetch_add(command.len(), Relaxed);
                        rerouted.push(Job::Publish { slot, command, from });
                    }
                    Frame::Error(e) => {
                        // Refused (NOPERM: an ACL without the channel, OOM...): never delivered.
                        bus.publish_lost.fetch_add(1, Relaxed);
                        refused_log
                            .note(|n| log::warn!("PUBLISH refused ({n} in all): {}", String::from_utf8_lossy(e)));
                        reply_lost(shared, &command, from);
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
        if redirected {
            links.schedule_refresh();
        }
        self.send_registry_commands(links);
        round.failure.map_or(Ok(()), Err)
    }

    /// Keeps the connections to masters that stay; what was sent to or
    /// parked for the others is sent again where it lives now.
    fn on_topology(&mut self, links: &mut LinkSet<Route>, topology: Topology) {
        if topology != *links.topology() {
            log::info!("Redis Cluster slot map changed: masters {:?}", topology.masters);
            for gone in links.rebuild(topology) {
                let Route { awaiting, backlog, .. } = gone.state;
                for sent in awaiting {
                    match sent {
                        Await::Registry { slot, command, awaiting } => {
                            self.registry.out.push(Outgoing { slot, command, awaiting });
                        }
                        Await::Publish { command, from, .. } => {
                            self.shared.hub.metrics.bus.publish_lost.fetch_add(1, Relaxed);
                            reply_lost(&self.shared, &command, from);
                        }
                        Await::Room(reply) => self.rooms.on_lost(&self.shared, reply),
                        Await::Ping => {}
                    }
                }
                self.rerouted.extend(backlog);
            }
        }
        for job in std::mem::take(&mut self.rerouted) {
            self.dispatch(links, job);
        }
        let commands = std::mem::take(&mut self.rerouted_registry);
        self.registry.out.extend(commands);
        self.send_registry_commands(links);
    }

    fn next_wake(&self, links: &LinkSet<Route>, now: Instant) -> Option<Instant> {
        if self.holding(links) {
            // The replies wake the thread; the reply deadline bounds the wait.
            return None;
        }
        if !self.shared.pub_jobs.is_empty() || self.registry.reassert_pending() {
            return Some(now);
        }
        if links.iter().any(|m| m.link.is_up() && !m.state.backlog.is_empty()) {
            return Some(now + BACKLOG_RECHECK);
        }
        let renewal = self.registry.next_renewal().min(self.rooms.next_renewal());
        Some(self.rooms.parked_until().map_or(renewal, |until| until.min(renewal)))
    }

    fn pinged(state: &mut Route) {
        state.awaiting.push_back(Await::Ping);
    }

    fn awaits_reply(state: &Route) -> bool {
        !state.awaiting.is_empty()
    }

    fn trim_idle(&mut self, links: &mut LinkSet<Route>) {
        for master in links.iter_mut() {
            trim_if_empty!(master.state.awaiting, master.state.backlog);
        }
        trim_if_empty!(self.rerouted, self.rerouted_registry);
        self.registry.trim_idle();
    }

    /// Gives the last logouts and the lease deletion a moment to reach Redis.
    fn shut_down(&mut self, links: &mut LinkSet<Route>) {
        while let Some(job) = self.shared.pub_jobs.pop() {
            self.dispatch(links, job);
        }
        self.registry.drop_lease();
        self.send_registry_commands(links);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline {
            let mut unsent = 0;
            for master in links.iter_mut() {
                if master.link.flush().is_ok() {
                    unsent += master.link.unsent();
                }
            }
            if unsent == 0 {
                break;
            }
            links.wait(Duration::from_millis(10));
        }
    }
}

impl Publisher {
    /// One master, up, with a batch in flight and no reply read since the
    /// last turn: jobs wait for the replies (the module's notes say why).
    fn holding(&self, links: &LinkSet<Route>) -> bool {
        !self.answered && links.len() == 1 && {
            let master = links.get(0);
            master.link.is_up() && !master.state.awaiting.is_empty()
        }
    }

    /// Sends a job to the master that serves it, or parks it in that master's backlog.
    fn dispatch(&mut self, links: &mut LinkSet<Route>, job: Job) {
        let job = match job {
            Job::Room(room) => return self.rooms.job(&self.shared.hub, room),
            job => job,
        };
        let Some(i) = links.master_of(slot_of_job(&job)) else {
            self.rerouted.push(job);
            links.schedule_refresh();
            return;
        };
        let ready = links.get(i).state.backlog.is_empty() && has_room(links.get(i));
        self.place(links.get_mut(i), job, ready);
    }

    /// Moves link `i`'s parked jobs on, oldest first, while it has room: a
    /// turn costs what it sends, not the length of the backlog.
    fn drain_backlog(&mut self, links: &mut LinkSet<Route>, i: usize) {
        while has_room(links.get(i)) {
            let master = links.get_mut(i);
            let Some(job) = master.state.backlog.pop_front() else {
                break;
            };
            if !matches!(job, Job::Publish { .. }) {
                master.state.parked_registry = master.state.parked_registry.saturating_sub(1);
            }
            if links.master_of(slot_of_job(&job)) == Some(i) {
                self.place(links.get_mut(i), job, true);
            } else {
                // Its slot moved to another master meanwhile.
                self.dispatch(links, job);
            }
        }
    }

    /// Sends `job` on `master` when `ready`, else parks it at the back of its backlog.
    fn place(&mut self, master: &mut Master<Route>, job: Job, ready: bool) {
        let Master { link, state, .. } = master;
        match job {
            Job::Publish { slot, command, from } if ready => {
                self.shared.queued_bytes.fetch_sub(command.len(), Relaxed);
                link.out.extend_from_slice(&command);
                state.awaiting.push_back(Await::Publish { slot, command, from });
            }
            Job::Claim { name, at } if ready || link.is_down() => {
                self.registry.claim(&self.shared, name, at, link.is_up());
            }
            Job::Release { name, at } if ready || link.is_down() => {
                self.registry.release(name, at, link.is_up());
            }
            job => {
                if !matches!(job, Job::Publish { .. }) {
                    state.parked_registry += 1;
                }
                state.backlog.push_back(job);
            }
        }
    }

    /// Hands the registry's commands to their masters.
    fn send_registry_commands(&mut self, links: &mut LinkSet<Route>) {
        loop {
            self.registry.flush();
            if self.registry.out.is_empty() {
                return;
            }
            for Outgoing { slot, command, awaiting } in std::mem::take(&mut self.registry.out) {
                match links.master_of(slot) {
                    Some(i) if links.get(i).link.is_up() => {
                        let Master { link, state, .. } = links.get_mut(i);
                        link.out.extend_from_slice(&command);
                        state.awaiting.push_back(Await::Registry { slot, command, awaiting });
                    }
                    _ => {
                        let reach = links.reach();
                        self.registry.on_lost(&self.shared, awaiting, &|s| reach.up(s));
                    }
                }
            }
        }
    }

    /// Hands the room commands to their masters; one whose master is down
    /// is dropped (membership is written again when the link is up), a
    /// history read parked until it is.
    fn send_room_commands(&mut self, links: &mut LinkSet<Route>) {
        if self.rooms.parked_until().is_some() {
            // Only then: `reach` allocates, and this runs every turn.
            let reach = links.reach();
            self.rooms.unpark(&self.shared, Instant::now(), &|s| reach.up(s));
        }
        for (slot, command, reply) in std::mem::take(&mut self.rooms.out) {
            match links.master_of(slot) {
                Some(i) if links.get(i).link.is_up() => {
                    let Master { link, state, .. } = links.get_mut(i);
                    link.out.extend_from_slice(&command);
                    state.awaiting.push_back(Await::Room(reply));
                }
                _ => self.rooms.on_unsent(&self.shared, slot, command, reply),
            }
        }
    }

    /// Link `i` is down: logins and logouts parked for it are settled now (the
    /// outage rules of the registry); publishes stay parked, within the bound.
    fn settle_backlog_while_down(&mut self, links: &mut LinkSet<Route>, i: usize) {
        let state = &mut links.get_mut(i).state;
        state.parked_registry = 0;
        for job in std::mem::take(&mut state.backlog) {
            match job {
                Job::Claim { name, at } => self.registry.claim(&self.shared, name, at, false),
                Job::Release { name, at } => self.registry.release(name, at, false),
                publish => state.backlog.push_back(publish),
            }
        }
    }

    /// Link `i`'s connection is gone with commands unanswered: claims in
    /// flight follow the outage rules, plain publishes count as lost (Redis
    /// may have run some of them; nobody will tell) and each sender is told;
    /// a kept message's publish goes again, first in the link's backlog, as a
    /// retry that the script writes only if the first attempt was not.
    fn lose_awaiting(&mut self, links: &mut LinkSet<Route>, i: usize) {
        let lost = std::mem::take(&mut links.get_mut(i).state.awaiting);
        let reach = links.reach();
        let mut publishes = 0u64;
        let mut retries = Vec::new();
        for awaiting in lost {
            match awaiting {
                Await::Registry { awaiting, .. } => self.registry.on_lost(&self.shared, awaiting, &|s| reach.up(s)),
                Await::Publish { slot, command, from } => {
                    match self.shared.history.as_ref().and_then(|h| h.as_retry(&command)) {
                        Some(command) => {
                            self.shared.hub.metrics.bus.publish_retried.fetch_add(1, Relaxed);
                            self.shared.queued_bytes.fetch_add(command.len(), Relaxed);
                            retries.push(Job::Publish { slot, command, from });
                        }
                        None => {
                            publishes += 1;
                            reply_lost(&self.shared, &command, from);
                        }
                    }
                }
                Await::Room(reply) => self.rooms.on_lost(&self.shared, reply),
                Await::Ping => {}
            }
        }
        let backlog = &mut links.get_mut(i).state.backlog;
        for job in retries.into_iter().rev() {
            backlog.push_front(job);
        }
        if publishes > 0 {
            self.shared.hub.metrics.bus.publish_lost.fetch_add(publishes, Relaxed);
            log::warn!(
                "{publishes} published messages were unconfirmed when the link went down: possibly lost, senders told"
            );
        }
    }
}

/// Whether `master` takes more output now.
fn has_room(master: &Master<Route>) -> bool {
    master.link.is_up() && master.link.unsent() < OUT_HIGH_WATER
}

/// The slot a job's command lives in.
fn slot_of_job(job: &Job) -> u16 {
    match job {
        Job::Publish { slot, .. } => *slot,
        Job::Claim { name, .. } | Job::Release { name, .. } => Registry::slot_of_name(name),
        // Rooms' jobs become commands of their own slots (`rooms`).
        Job::Room(_) => 0,
    }
}

/// MOVED, ASK and friends: the command belongs on another master (or later).
fn is_redirect(error: &[u8]) -> bool {
    [&b"MOVED "[..], b"ASK ", b"TRYAGAIN", b"CLUSTERDOWN"].iter().any(|p| error.starts_with(p))
}
