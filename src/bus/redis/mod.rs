//! The Redis bus: nodes joined through Redis pub/sub, with a registry that
//! keeps each user name in one place.
//!
//! # Threads
//!
//! Reactors never wait on Redis. Two threads per node do the talking:
//!
//! - the **subscriber** ([`subscriber`]) holds the subscriptions on its own
//!   connection(s), reads in bulk and routes each message into the inbox of
//!   the reactor that holds the recipient;
//! - the **publisher** ([`publisher`]) writes what reactors queued (PUBLISH
//!   commands they encoded themselves, and registry work) as pipelined
//!   batches, one `write` per batch, and reads the replies in bulk.
//!
//! Reactors reach both through lock-free queues with a coalesced wake (the
//! pattern of [`crate::inbox`]). Both threads run one loop
//! ([`links`]) over one link per Redis master.
//!
//! One exception blocks a bus thread: in Redis Cluster, fetching the slot map
//! again (`CLUSTER SLOTS`, on MOVED, a migrated slot, or every 500 ms while a
//! master is down) is a short blocking exchange, bounded by
//! [`cluster::FETCH_BUDGET`] (300 ms in all, 200 ms per node asked). Live
//! masters are asked first and answer in well under a millisecond, so healthy
//! shards see a pause of that order; the whole budget is spent only when no
//! live master answers, and then delivery waits at most that long per fetch.
//! A non-blocking fetch on the poll loop would remove even that; it is not
//! worth its state machine while failovers are rare. (A seed given by host
//! name is looked up inside the fetch, which a DNS server that does not
//! answer stretches; links look their hosts up off the thread.)
//!
//! # Routing
//!
//! - **targeted** (default): a node subscribes `sb:u:{NAME}` while `NAME` is
//!   logged in there; a chat message is published to its recipient's channel
//!   only, as the exact bytes the recipient gets (the chat JSON with gorilla's
//!   trailing newline), so nothing is re-encoded on the way. A PUBLISH that
//!   reaches nobody (0 receivers) means the recipient is offline everywhere:
//!   the sender gets the same `errormsg` as for an unknown local recipient.
//! - **broadcast** (`--routing broadcast`): the seed's scheme, for
//!   compatibility with its Go nodes: every chat message is published to
//!   channel `msg` as the seed's `json.Marshal` bytes (no newline); every node
//!   receives all of them and delivers those whose recipient it holds. A
//!   login is decided only once Redis has confirmed the node's `msg`
//!   subscription, as a targeted login waits for its user's channel.
//! - **Redis Cluster** (`--redis-cluster` or a `redis+cluster://` URL):
//!   targeted routing uses sharded pub/sub (SSUBSCRIBE/SPUBLISH) so channels
//!   spread over the shards; the slot map is fetched again on MOVED, when a
//!   shard unsubscribes us (slot migrated) and when a master fails.
//!
//! # Registry: one name, one place
//!
//! See [`registry`]: a per-node lease key plus one key per user naming its
//! node; the lease costs O(nodes) writes, not O(users).
//!
//! # While Redis is unreachable
//!
//! A link is **up** only once Redis has answered its greeting (AUTH and
//! SELECT from the URL, then PING): a TCP connect to a stopped Redis (the
//! kernel still accepts) or one that refuses our password is not a link,
//! and `switchboard_bus_connected` says 0.
//!
//! The node keeps serving: local chat works, and logins are **granted
//! locally** (availability over strict uniqueness) and marked unconfirmed.
//! Publishes queue up to [`MAX_QUEUED_BYTES`], past which they are dropped,
//! counted in `switchboard_bus_publish_dropped_total`, logged, and the sender
//! gets an `errormsg`. Each link reconnects with backoff and jitter, then the
//! node subscribes every channel it holds again (in chunks) and re-asserts
//! every name it holds. A name that another live node claimed meanwhile is
//! taken from the local user, who gets the seed's `"User already exists"` and
//! may log in under another name: the first node to re-assert wins.
//!
//! A Redis that hangs instead of dying (a stopped process, a frozen VM) is
//! found by the **reply deadline** (`--redis-timeout-ms`, 2 s): when the
//! oldest command a link awaits a reply to has waited that long (counted
//! from when it was sent, or from the last bytes read if later), the link
//! is dropped through the same path as a failed read, so the claims it
//! carried follow the outage rules (a pending login is granted locally
//! within the deadline) and nothing awaited from the dead connection is
//! paired with replies on the next one. A quiet link is checked with PING
//! after a third of the lease (5 s at most), which the same deadline covers.
//! A connect and the greeting have the same deadline.
//!
//! Delivery between nodes is **at most once**: a PUBLISH written to a link
//! that drops before Redis confirms it is not sent again (Redis may or may
//! not have run it); such messages are counted in
//! `switchboard_bus_publish_lost_total`, and each sender gets an `errormsg`
//! saying the message may not have been delivered. A PUBLISH that Redis
//! refuses (an ACL without the channel) is counted and told the same way.
//!
//! If Redis cannot be reached when the node starts, it starts anyway, logs
//! loudly, and keeps retrying: a cluster member that boots before Redis is a
//! working single node until Redis comes up. If Redis can be reached and
//! refuses the node (a wrong or missing password, an ACL user without a
//! right the bus needs, a certificate the node does not trust), the node
//! does not start: [`preflight`] says what to fix in `--redis`. A refusal
//! later (Redis restarted with a new password) takes the links down, with
//! a backoff growing to 10 s and a log line when it starts, when its reason
//! changes and once a minute.
//!
//! # Trust
//!
//! Any client of the Redis server can publish to a user's channel and
//! write the registry, so Redis must be private to the cluster (bind,
//! `requirepass` or ACL users, TLS: README's checklist). What arrives is
//! still checked ([`inbound`]): only a chat message in the exact shape a
//! node publishes is delivered, anything else is dropped and counted in
//! `switchboard_bus_rejected_total`. A well-formed message with a forged
//! `Sender` cannot be told from a node's.
//!
//! # Layout
//!
//! - `mod.rs`: the bus as reactors see it ([`RedisBus`]) and [`start`].
//! - [`settings`]: `--redis` URLs and friends, checked at start.
//! - [`preflight`]: Redis accepts this node's credentials and rights, or it does not start.
//! - [`shared`]: what the facade and both threads share: job queues, bounds, flags.
//! - [`links`]: the loop both threads run over their links, one per master.
//! - [`publisher`], [`subscriber`]: the two threads, as [`links::BusThread`]s.
//! - [`subscriptions`]: the subscriber's (un)subscriptions, many channels to a command.
//! - [`link`]: one non-blocking connection: connect, greet, read, write, deadlines.
//! - [`backoff`]: how a link that is down retries and says so.
//! - [`endpoint`]: a server's host and port, looked up again on every connect.
//! - [`stream`]: a link's socket, plain or TLS; [`tls`]: the rustls config.
//! - [`exchange`]: a short blocking exchange (slot map fetch, preflight, history reads).
//! - [`history_read`]: a channel's stored messages, read for the server API.
//! - [`cluster`]: hash slots, the slot map and when to fetch it again.
//! - [`registry`]: the cluster-wide name registry's state machine.
//! - [`logins`]: logins waiting for the registry and their subscription.
//! - [`rooms`]: room members and presence in Redis, room messages' channels.
//! - [`streams`]: channels' history in Redis Streams: scripts, keys, commands;
//!   [`history`]: their publishes, reads and replies.
//! - [`channels`]: channel names and the PUBLISH commands reactors encode.
//! - [`control`]: control messages on a user's channel (the server API's disconnect).
//! - [`inbound`]: what arrives from Redis, checked before delivery.
//! - [`resp`]: the Redis wire format, parsed in place.
//! - [`ratelog`]: log lines for what can repeat thousands of times a second.
//! - [`trim`]: what an idle thread hands back.

mod backoff;
mod channels;
mod cluster;
mod control;
mod endpoint;
mod exchange;
mod history;
pub mod history_read;
mod inbound;
mod link;
mod links;
mod logins;
mod preflight;
mod publisher;
mod ratelog;
mod registry;
mod resp;
mod rooms;
mod settings;
mod shared;
mod stream;
mod streams;
mod subscriber;
mod subscriptions;
mod tls;
mod trim;
mod undelivered;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use compact_str::CompactString;
use mio::Poll;
use parking_lot::Mutex;
use thiserror::Error;

use self::links::WAKER;
use self::settings::Settings;
use self::shared::{Job, Role, RoomJob, Shared, SubJob, MAX_QUEUED_BYTES};
use crate::bus::{Bus, Claim, Kept, Published};
use crate::config::{Config, Routing};
use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::inbox::Doorbell;
use crate::protocol::Resume;

pub use self::preflight::PreflightError;
pub use self::settings::SettingsError;

/// Why the Redis bus could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Refused(#[from] PreflightError),
    #[error("cannot set up the bus {thread} thread's poll: {source}")]
    Poll { thread: &'static str, source: io::Error },
    #[error("cannot start the bus {thread} thread: {source}")]
    Thread { thread: &'static str, source: io::Error },
}

/// The Redis bus as reactors see it.
pub struct RedisBus {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Resolves the Redis address(es), checks that Redis accepts this node's
/// credentials and rights ([`preflight`]), starts the subscriber and
/// publisher threads and returns: the links come up in the background, and
/// a Redis that is down at start is retried like one that went away.
///
/// # Errors
/// Which setting is wrong (an unparsable URL, an unknown host, a CA file),
/// what Redis refused (a password, an ACL right, a certificate), or what
/// the system refused (a poll, a thread).
pub fn start(hub: Arc<Hub>, config: &Config) -> Result<Arc<dyn Bus>, StartError> {
    let settings = Settings::from_config(config)?;
    let reached = preflight::check(&settings)?;
    let (sub_poll, sub_bell) = thread_poll(Role::Subscriber)?;
    let (pub_poll, pub_bell) = thread_poll(Role::Publisher)?;
    log::info!(
        "joining the cluster through Redis {}{} as node {:?}: routing {:?}{}, name lease {:?}",
        settings.shown_url,
        if settings.link.tls.is_some() { " (TLS)" } else { "" },
        settings.node_id,
        settings.routing,
        if settings.cluster { ", Redis Cluster (sharded pub/sub)" } else { "" },
        settings.lease,
    );
    let mut shared = Shared::new(hub, settings, sub_bell, pub_bell);
    shared.history = streams::History::from_config(config, &shared.settings.node_id, shared.settings.cluster);
    let shared = Arc::new(shared);
    let spawn = |role: Role, run: fn(Arc<Shared>, Poll), poll: Poll| {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("bus-{}", role.name()))
            .spawn(move || run(shared, poll))
            .map_err(|source| StartError::Thread { thread: role.name(), source })
    };
    let sub = spawn(Role::Subscriber, subscriber::run, sub_poll)?;
    let publ = spawn(Role::Publisher, publisher::run, pub_poll)?;
    if reached {
        wait_for_links(&shared);
    }
    Ok(Arc::new(RedisBus { shared, threads: Mutex::new(vec![sub, publ]) }))
}

/// Redis answered the check at start, so the links come up in milliseconds:
/// the reactors start after them (clients wait in the accept queue), so that
/// no first login is decided by the outage rules, granted locally and then
/// taken back when the link finds the name held by a node that just died.
/// Bounded by the reply timeout; past it the node serves as in an outage.
fn wait_for_links(shared: &Shared) {
    let bound = shared.settings.link.reply_timeout;
    let deadline = std::time::Instant::now() + bound;
    while shared.hub.metrics.bus.connected.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        if std::time::Instant::now() >= deadline {
            log::warn!("the Redis links were not up {bound:?} after start: serving by the outage rules until they are");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// A bus thread's poll, and the doorbell that wakes it.
fn thread_poll(role: Role) -> Result<(Poll, Doorbell), StartError> {
    let error = |source| StartError::Poll { thread: role.name(), source };
    let poll = Poll::new().map_err(error)?;
    let bell = Doorbell::new(poll.registry(), WAKER).map_err(error)?;
    Ok((poll, bell))
}

impl RedisBus {
    fn targeted(&self) -> bool {
        self.shared.settings.routing == Routing::Targeted
    }
}

impl Bus for RedisBus {
    fn claim(&self, name: &str, at: ConnRef) -> Claim {
        let targeted = self.targeted();
        self.shared.logins.begin(name, at, targeted);
        if targeted {
            self.shared.push_sub(SubJob::Subscribe { name: name.into() });
        }
        self.shared.push_pub(Job::Claim { name: name.into(), at });
        Claim::Pending
    }

    fn release(&self, name: &str, at: ConnRef) {
        self.shared.logins.cancel(name, at);
        if self.targeted() {
            self.shared.push_sub(SubJob::Unsubscribe { name: name.into(), at });
        }
        self.shared.push_pub(Job::Release { name: name.into(), at });
    }

    fn publish(&self, recipient: &str, payload: &[u8], from: ConnRef) -> Published {
        let cluster = self.shared.settings.cluster;
        let (command, slot) = if self.targeted() {
            channels::encode_user_publish(recipient.as_bytes(), payload, cluster)
        } else {
            channels::encode_broadcast_publish(payload, cluster)
        };
        let size = command.len();
        let queued = self.shared.queued_bytes.fetch_add(size, Ordering::Relaxed);
        if queued + size > MAX_QUEUED_BYTES {
            self.shared.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.shared.hub.metrics.bus.publish_dropped.fetch_add(1, Ordering::Relaxed);
            if !self.shared.dropping.swap(true, Ordering::Relaxed) {
                log::error!("dropping cross-node messages: over {MAX_QUEUED_BYTES} bytes wait for Redis (is it down?)");
            }
            return Published::Dropped;
        }
        self.shared.push_pub(Job::Publish { slot, command, from });
        Published::Sent
    }

    fn disconnect(&self, key: &str, from: ConnRef) -> Published {
        if !self.targeted() {
            // Broadcast routing has no channel per user to reach its node by.
            return Published::NoRecipient;
        }
        self.publish(key, &control::encode_disconnect(key), from)
    }

    fn join_room(&self, key: &str, member: &str, first: bool) {
        if first {
            self.shared.push_sub(SubJob::SubscribeRoom { key: key.into() });
        }
        self.shared.push_pub(Job::Room(RoomJob::Join { key: key.into(), member: member.into(), first }));
    }

    fn leave_room(&self, key: &str, member: &str, last: bool) {
        if last {
            self.shared.push_sub(SubJob::UnsubscribeRoom { key: key.into() });
        }
        self.shared.push_pub(Job::Room(RoomJob::Leave { key: key.into(), member: member.into(), last }));
    }

    fn publish_room(&self, key: &str, payload: &[u8]) {
        let settings = &self.shared.settings;
        let (command, slot) = channels::encode_room_publish(key, &settings.node_id, payload, settings.cluster);
        self.shared.push_pub(Job::Room(RoomJob::Publish { slot, command }));
    }

    fn ask_presence(&self, asked: &str, keys: &[CompactString], from: ConnRef) -> bool {
        let job = RoomJob::Presence { asked: asked.into(), keys: keys.to_vec(), from };
        self.shared.push_pub(Job::Room(job));
        true
    }

    fn ask_members(&self, key: &str, limit: usize, from: ConnRef) -> bool {
        self.shared.push_pub(Job::Room(RoomJob::Members { key: key.into(), limit, from }));
        true
    }

    fn publish_kept(&self, channel: Kept<'_>, payload: &[u8], from: ConnRef) -> Published {
        history::publish(&self.shared, channel, payload, from)
    }

    fn recover(&self, channel: Kept<'_>, resume: &Resume<'_>, from: ConnRef) {
        history::recover(&self.shared, channel, resume, from);
    }

    fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.sub_bell.wake_now();
        self.shared.pub_bell.wake_now();
        for thread in self.threads.lock().drain(..) {
            if thread.join().is_err() {
                log::error!("a bus thread panicked");
            }
        }
    }
}
