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
//! pattern of [`crate::inbox`]).
//!
//! One exception blocks a bus thread: in Redis Cluster, fetching the slot map
//! again (`CLUSTER SLOTS`, on MOVED, a migrated slot, or every 500 ms while a
//! master is down) is a short blocking exchange, bounded by
//! [`cluster::FETCH_BUDGET`] (300 ms in all, 200 ms per node asked). Live
//! masters are asked first and answer in well under a millisecond, so healthy
//! shards see a pause of that order; the whole budget is spent only when no
//! live master answers, and then delivery waits at most that long per fetch.
//! A non-blocking fetch on the poll loop would remove even that; it is not
//! worth its state machine while failovers are rare.
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
//! A Redis that hangs instead of dying (a stopped process, a frozen VM)
//! is found by PING: after a third of the lease of silence (5 s at most) a
//! link sends PING, and a PING unanswered for two thirds of the lease (10 s
//! at most) drops the link through the same path as a failed read, so the
//! claims it carried follow the outage rules and nothing awaited from the
//! dead connection is paired with replies on the next one.
//!
//! Delivery between nodes is **at most once**: a PUBLISH written to a link
//! that drops before Redis confirms it is not sent again (Redis may or may
//! not have run it); such messages are counted in
//! `switchboard_bus_publish_lost_total` and logged, and their senders are
//! not told.
//!
//! If Redis cannot be reached when the node starts, it starts anyway, logs
//! loudly, and keeps retrying: a cluster member that boots before Redis is a
//! working single node until Redis comes up.

mod cluster;
mod link;
mod logins;
mod publisher;
mod registry;
mod resp;
mod subscriber;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use compact_str::CompactString;
use crossbeam_queue::SegQueue;
use mio::{Poll, Token};
use parking_lot::Mutex;
use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::bus::{Bus, Claim, Published};
use crate::config::{Config, Routing};
use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::inbox::Doorbell;

use self::logins::PendingLogins;

/// Bytes of PUBLISH commands that may wait for Redis. 32 MiB holds about
/// 200,000 chat messages: a Redis restart's worth at full speed, and bounded
/// so an outage cannot eat the node's memory.
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// The channel of the seed's broadcast scheme.
const BROADCAST_CHANNEL: &[u8] = b"msg";
/// Per-user channels are `sb:u:{NAME}`: the braces make NAME the hash tag,
/// so in Redis Cluster a user's channel and registry key share a slot.
const USER_CHANNEL_PREFIX: &[u8] = b"sb:u:{";
const USER_CHANNEL_SUFFIX: &[u8] = b"}";

/// Entries an idle bus thread's empty queue or map may keep allocated; a
/// login burst grows them to its peak in flight (tens of bytes per entry),
/// which steady state does not need.
const IDLE_KEEP: usize = 1024;

/// A poll that waited this long and got nothing finds its thread idle: the
/// time to trim, never on a busy path.
const IDLE_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Shrinks an empty collection that a burst grew past [`IDLE_KEEP`].
macro_rules! trim_if_empty {
    ($($c:expr),+ $(,)?) => {$(
        if $c.is_empty() && $c.capacity() > $crate::bus::redis::IDLE_KEEP {
            $c.shrink_to_fit();
        }
    )+};
}
pub(crate) use trim_if_empty;

/// The poll token of a bus thread's waker.
const WAKER: Token = Token(usize::MAX);

/// Work for the subscriber thread, in the order reactors asked for it.
pub(crate) enum SubJob {
    Subscribe { name: CompactString },
    Unsubscribe { name: CompactString, at: ConnRef },
}

/// Work for the publisher thread.
pub(crate) enum Job {
    /// A whole PUBLISH/SPUBLISH command, encoded by the reactor.
    Publish {
        slot: u16,
        command: Box<[u8]>,
        from: ConnRef,
    },
    Claim {
        name: CompactString,
        at: ConnRef,
    },
    Release {
        name: CompactString,
        at: ConnRef,
    },
}

/// How to reach Redis, resolved from `--redis` and friends.
pub(crate) struct Settings {
    pub seeds: Vec<SocketAddr>,
    pub cluster: bool,
    pub routing: Routing,
    /// AUTH / SELECT commands every new connection sends first.
    pub hello: Vec<u8>,
    pub hello_replies: usize,
    pub node_id: CompactString,
    pub lease: std::time::Duration,
    /// Derived from the lease: see [`link::PingTimers::for_lease`].
    pub ping: link::PingTimers,
}

impl Settings {
    fn from_config(config: &Config) -> Result<Settings, String> {
        let urls = config.redis.as_deref().unwrap_or_default();
        let mut cluster = config.redis_cluster;
        let mut seeds = Vec::new();
        let mut hello = Vec::new();
        let mut hello_replies = 0;
        for (i, url) in urls.split(',').map(str::trim).enumerate() {
            let url = if let Some(rest) = url.strip_prefix("redis+cluster://") {
                cluster = true;
                format!("redis://{rest}")
            } else if url.contains("://") {
                url.to_string()
            } else {
                format!("redis://{url}")
            };
            let info = url.as_str().into_connection_info().map_err(|e| format!("--redis {url:?}: {e}"))?;
            let ConnectionAddr::Tcp(host, port) = info.addr() else {
                return Err(format!("--redis {url:?}: only redis://host:port (plain TCP) is supported"));
            };
            let addr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| format!("--redis {url:?}: cannot resolve {host}: {e}"))?
                .next()
                .ok_or_else(|| format!("--redis {url:?}: {host} has no address"))?;
            seeds.push(addr);
            if i > 0 {
                continue;
            }
            let settings = info.redis_settings();
            if let Some(password) = settings.password() {
                let mut args: Vec<&[u8]> = vec![b"AUTH"];
                if let Some(user) = settings.username() {
                    args.push(user.as_bytes());
                }
                args.push(password.as_bytes());
                resp::push_command(&mut hello, &args);
                hello_replies += 1;
            }
            if settings.db() != 0 {
                if cluster {
                    return Err(format!("--redis {url:?}: Redis Cluster has only database 0; drop the /DB part"));
                }
                let db = settings.db().to_string();
                resp::push_command(&mut hello, &[b"SELECT", db.as_bytes()]);
                hello_replies += 1;
            }
        }
        let node_id = match &config.node_id {
            Some(id) if !id.is_empty() => CompactString::from(id.as_str()),
            _ => {
                CompactString::from(format!("{}-{}-{:06x}", hostname(), std::process::id(), link::random() & 0xFF_FFFF))
            }
        };
        Ok(Settings {
            seeds,
            cluster,
            routing: config.routing,
            hello,
            hello_replies,
            node_id,
            lease: std::time::Duration::from_secs(config.lease_secs),
            ping: link::PingTimers::for_lease(std::time::Duration::from_secs(config.lease_secs)),
        })
    }
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its whole length; gethostname writes at
    // most that many bytes and we read only up to the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "node".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// What the bus facade and its threads share.
pub(crate) struct Shared {
    pub hub: Arc<Hub>,
    pub settings: Settings,
    pub sub_jobs: SegQueue<SubJob>,
    pub sub_bell: Doorbell,
    pub pub_jobs: SegQueue<Job>,
    pub pub_bell: Doorbell,
    /// Bytes of PUBLISH commands queued and not yet written to Redis.
    pub queued_bytes: AtomicUsize,
    /// Set while publishes are being dropped, so the drop is logged once per episode.
    pub dropping: AtomicBool,
    pub logins: PendingLogins,
    pub stop: AtomicBool,
    /// Every publisher / subscriber link is up; both make `bus_connected`.
    pub publisher_up: AtomicBool,
    pub subscriber_up: AtomicBool,
}

impl Shared {
    /// Records one thread's link state in the `bus_connected` gauge.
    pub(crate) fn set_up(&self, subscriber: bool, up: bool) {
        let (mine, other) = if subscriber {
            (&self.subscriber_up, &self.publisher_up)
        } else {
            (&self.publisher_up, &self.subscriber_up)
        };
        if mine.swap(up, Ordering::Relaxed) != up {
            let both = up && other.load(Ordering::Relaxed);
            self.hub.metrics.bus.connected.store(u64::from(both), Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
impl Shared {
    /// A bus's shared state over one reactor inbox, with no threads and no
    /// Redis: for driving the state machines directly. Keep `poll` alive.
    pub(crate) fn for_tests(routing: Routing) -> (Arc<Shared>, Poll) {
        let poll = Poll::new().expect("poll");
        let inbox = crate::inbox::Inbox::new(poll.registry(), Token(0)).expect("inbox");
        let settings = Settings {
            seeds: vec![SocketAddr::from(([127, 0, 0, 1], 6379))],
            cluster: false,
            routing,
            hello: Vec::new(),
            hello_replies: 0,
            node_id: "me".into(),
            lease: std::time::Duration::from_secs(15),
            ping: link::PingTimers::for_lease(std::time::Duration::from_secs(15)),
        };
        let shared = Arc::new(Shared {
            hub: Hub::new(vec![inbox], 16),
            settings,
            sub_jobs: SegQueue::new(),
            sub_bell: Doorbell::new(poll.registry(), Token(1)).expect("bell"),
            pub_jobs: SegQueue::new(),
            pub_bell: Doorbell::new(poll.registry(), Token(2)).expect("bell"),
            queued_bytes: AtomicUsize::new(0),
            dropping: AtomicBool::new(false),
            logins: PendingLogins::new(routing == Routing::Broadcast),
            stop: AtomicBool::new(false),
            publisher_up: AtomicBool::new(false),
            subscriber_up: AtomicBool::new(false),
        });
        (shared, poll)
    }

    /// The logins decided so far, as (token, accepted), oldest first.
    pub(crate) fn decisions(&self) -> Vec<(usize, bool)> {
        let mut decided = Vec::new();
        self.hub.inboxes[0].drain(|command| {
            if let crate::inbox::Command::LoginDecided { token, accepted } = command {
                decided.push((token.0, accepted));
            }
        });
        decided
    }
}

/// The Redis bus as reactors see it.
pub struct RedisBus {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Resolves the Redis address(es), starts the subscriber and publisher
/// threads and returns at once: the links come up in the background, and a
/// Redis that is down at start is retried like one that went away.
///
/// # Errors
/// A message saying which setting is wrong (an unparsable URL, an unknown host).
pub fn start(hub: Arc<Hub>, config: &Config) -> Result<Arc<dyn Bus>, String> {
    let settings = Settings::from_config(config)?;
    let sub_poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    let pub_poll = Poll::new().map_err(|e| format!("cannot create a poll: {e}"))?;
    let sub_bell = Doorbell::new(sub_poll.registry(), WAKER).map_err(|e| format!("cannot create a waker: {e}"))?;
    let pub_bell = Doorbell::new(pub_poll.registry(), WAKER).map_err(|e| format!("cannot create a waker: {e}"))?;
    log::info!(
        "joining the cluster through Redis {:?} as node {:?}: routing {:?}{}, name lease {:?}",
        settings.seeds,
        settings.node_id,
        settings.routing,
        if settings.cluster { ", Redis Cluster (sharded pub/sub)" } else { "" },
        settings.lease,
    );
    let settings_broadcast = settings.routing == Routing::Broadcast;
    let shared = Arc::new(Shared {
        hub,
        settings,
        sub_jobs: SegQueue::new(),
        sub_bell,
        pub_jobs: SegQueue::new(),
        pub_bell,
        queued_bytes: AtomicUsize::new(0),
        dropping: AtomicBool::new(false),
        logins: PendingLogins::new(settings_broadcast),
        stop: AtomicBool::new(false),
        publisher_up: AtomicBool::new(false),
        subscriber_up: AtomicBool::new(false),
    });
    let spawn = |name: &str, run: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(run)
            .map_err(|e| format!("cannot start the {name} thread: {e}"))
    };
    let sub = {
        let shared = Arc::clone(&shared);
        spawn("bus-subscriber", Box::new(move || subscriber::run(shared, sub_poll)))?
    };
    let publ = {
        let shared = Arc::clone(&shared);
        spawn("bus-publisher", Box::new(move || publisher::run(shared, pub_poll)))?
    };
    Ok(Arc::new(RedisBus { shared, threads: Mutex::new(vec![sub, publ]) }))
}

impl RedisBus {
    fn targeted(&self) -> bool {
        self.shared.settings.routing == Routing::Targeted
    }

    fn push_job(&self, job: Job) {
        self.shared.pub_jobs.push(job);
        self.shared.pub_bell.ring();
    }

    fn push_sub(&self, job: SubJob) {
        self.shared.sub_jobs.push(job);
        self.shared.sub_bell.ring();
    }
}

impl Bus for RedisBus {
    fn claim(&self, name: &str, at: ConnRef) -> Claim {
        let targeted = self.targeted();
        self.shared.logins.begin(name, at, targeted);
        if targeted {
            self.push_sub(SubJob::Subscribe { name: name.into() });
        }
        self.push_job(Job::Claim { name: name.into(), at });
        Claim::Pending
    }

    fn release(&self, name: &str, at: ConnRef) {
        self.shared.logins.cancel(name, at);
        if self.targeted() {
            self.push_sub(SubJob::Unsubscribe { name: name.into(), at });
        }
        self.push_job(Job::Release { name: name.into(), at });
    }

    fn publish(&self, recipient: &str, payload: &[u8], from: ConnRef) -> Published {
        let cluster = self.shared.settings.cluster;
        let (command, slot) = if self.targeted() {
            encode_user_publish(recipient.as_bytes(), payload, cluster)
        } else {
            let json = payload.strip_suffix(b"\n").unwrap_or(payload);
            let mut command = Vec::with_capacity(
                resp::header_len(3) + resp::bulk_len(7) + resp::bulk_len(3) + resp::bulk_len(json.len()),
            );
            resp::push_command(&mut command, &[b"PUBLISH", BROADCAST_CHANNEL, json]);
            let slot = if cluster { cluster::slot(BROADCAST_CHANNEL) } else { 0 };
            (command.into_boxed_slice(), slot)
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
        self.push_job(Job::Publish { slot, command, from });
        Published::Sent
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

/// `PUBLISH sb:u:{NAME} PAYLOAD` (SPUBLISH in Redis Cluster), sized exactly,
/// and the channel's slot (0 outside Redis Cluster).
fn encode_user_publish(name: &[u8], payload: &[u8], cluster: bool) -> (Box<[u8]>, u16) {
    let verb: &[u8] = if cluster { b"SPUBLISH" } else { b"PUBLISH" };
    let channel_len = USER_CHANNEL_PREFIX.len() + name.len() + USER_CHANNEL_SUFFIX.len();
    let mut command = Vec::with_capacity(
        resp::header_len(3) + resp::bulk_len(verb.len()) + resp::bulk_len(channel_len) + resp::bulk_len(payload.len()),
    );
    resp::push_header(&mut command, b'*', 3);
    resp::push_bulk(&mut command, verb);
    resp::push_header(&mut command, b'$', channel_len);
    let channel_at = command.len();
    command.extend_from_slice(USER_CHANNEL_PREFIX);
    command.extend_from_slice(name);
    command.extend_from_slice(USER_CHANNEL_SUFFIX);
    let slot = if cluster { cluster::slot(&command[channel_at..]) } else { 0 };
    command.extend_from_slice(b"\r\n");
    resp::push_bulk(&mut command, payload);
    (command.into_boxed_slice(), slot)
}

/// `sb:u:{NAME}` for `name`.
pub(crate) fn user_channel(name: &[u8]) -> Vec<u8> {
    let mut channel = Vec::with_capacity(USER_CHANNEL_PREFIX.len() + name.len() + 1);
    channel.extend_from_slice(USER_CHANNEL_PREFIX);
    channel.extend_from_slice(name);
    channel.extend_from_slice(USER_CHANNEL_SUFFIX);
    channel
}

/// NAME from `sb:u:{NAME}`.
pub(crate) fn user_of_channel(channel: &[u8]) -> Option<&[u8]> {
    channel.strip_prefix(USER_CHANNEL_PREFIX)?.strip_suffix(USER_CHANNEL_SUFFIX)
}

/// The user name inside a PUBLISH/SPUBLISH command this bus encoded.
pub(crate) fn recipient_of_command(command: &[u8]) -> Option<&[u8]> {
    let (frame, _) = resp::parse(command).ok()??;
    let channel = frame.items()?.get(1)?.bytes()?;
    user_of_channel(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_publish_is_exact_resp_with_its_slot() {
        let payload = b"{\"MessageType\":\"chatmsg\"}\n";
        let (command, slot) = encode_user_publish(b"bob", payload, false);
        let mut expected = Vec::new();
        resp::push_command(&mut expected, &[b"PUBLISH", b"sb:u:{bob}", payload]);
        assert_eq!(&command[..], &expected[..]);
        assert_eq!(command.len(), expected.len());
        assert_eq!(slot, 0);
        let (command, slot) = encode_user_publish(b"bob", payload, true);
        assert!(command.starts_with(b"*3\r\n$8\r\nSPUBLISH\r\n"));
        assert_eq!(slot, cluster::slot(b"bob"));
        assert_eq!(recipient_of_command(&command), Some(&b"bob"[..]));
        assert_eq!(user_of_channel(&user_channel(b"a}b")), Some(&b"a}b"[..]));
    }
}
