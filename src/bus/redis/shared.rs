//! What the bus facade (called by reactors) and its two threads share: the
//! settings, a job queue and doorbell per thread, the bound on queued
//! publishes, the pending logins, and the link state behind the
//! `bus_connected` gauge.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use compact_str::CompactString;
use crossbeam_queue::SegQueue;

use super::logins::PendingLogins;
use super::settings::Settings;
use super::streams::{History, Read};
use crate::directory::ConnRef;
use crate::hub::Hub;
use crate::inbox::Doorbell;

/// Bytes of PUBLISH commands that may wait for Redis. 32 MiB holds about
/// 200,000 chat messages: a Redis restart's worth at full speed, and bounded
/// so an outage cannot eat the node's memory.
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// The two bus threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Publisher,
    Subscriber,
}

impl Role {
    /// The thread's name in logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
        }
    }
}

/// Work for the subscriber thread, in the order reactors asked for it.
pub(crate) enum SubJob {
    Subscribe {
        name: CompactString,
    },
    Unsubscribe {
        name: CompactString,
        at: ConnRef,
    },
    /// A room (by key) has its first member on this node: listen to its channel.
    SubscribeRoom {
        key: CompactString,
    },
    /// Its last member here left.
    UnsubscribeRoom {
        key: CompactString,
    },
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
    /// Rooms and presence (`rooms`).
    Room(RoomJob),
}

/// Work for Redis about rooms and presence, queued by reactors.
pub(crate) enum RoomJob {
    /// A room message's PUBLISH, encoded by the reactor.
    Publish { slot: u16, command: Box<[u8]> },
    /// `member` joined room `key` on this node (`first`: its first member here).
    Join { key: CompactString, member: CompactString, first: bool },
    /// `member` left (`last`: the room has nobody here any more).
    Leave { key: CompactString, member: CompactString, last: bool },
    /// Which of `keys` (the names in `asked`) are online.
    Presence { asked: Box<str>, keys: Vec<CompactString>, from: ConnRef },
    /// Who is in room `key`, up to `limit` names.
    Members { key: CompactString, limit: usize, from: ConnRef },
    /// A channel's history after a client's offset (`history`).
    Recover { command: Vec<u8>, read: Box<Read> },
}

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
    /// Channels with history (`history`), when any keeps it.
    pub history: Option<History>,
    pub stop: AtomicBool,
    /// Every publisher / subscriber link is up; both make `bus_connected`.
    publisher_up: AtomicBool,
    subscriber_up: AtomicBool,
}

impl Shared {
    pub fn new(hub: Arc<Hub>, settings: Settings, sub_bell: Doorbell, pub_bell: Doorbell) -> Shared {
        let broadcast = settings.routing == crate::config::Routing::Broadcast;
        Shared {
            hub,
            settings,
            sub_jobs: SegQueue::new(),
            sub_bell,
            pub_jobs: SegQueue::new(),
            pub_bell,
            queued_bytes: AtomicUsize::new(0),
            dropping: AtomicBool::new(false),
            logins: PendingLogins::new(broadcast),
            history: None,
            stop: AtomicBool::new(false),
            publisher_up: AtomicBool::new(false),
            subscriber_up: AtomicBool::new(false),
        }
    }

    /// Queues work for the subscriber thread and wakes it.
    pub fn push_sub(&self, job: SubJob) {
        self.sub_jobs.push(job);
        self.sub_bell.ring();
    }

    /// Queues work for the publisher thread and wakes it.
    pub fn push_pub(&self, job: Job) {
        self.pub_jobs.push(job);
        self.pub_bell.ring();
    }

    /// Records one thread's link state in the `bus_connected` gauge.
    pub fn set_up(&self, role: Role, up: bool) {
        let (mine, other) = match role {
            Role::Subscriber => (&self.subscriber_up, &self.publisher_up),
            Role::Publisher => (&self.publisher_up, &self.subscriber_up),
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
    /// Redis: for driving the state machines directly. Keep the polls alive.
    pub(crate) fn for_tests(routing: crate::config::Routing) -> (Arc<Shared>, [mio::Poll; 3]) {
        use mio::Token;
        // One waker per poll (mio checks it in debug builds).
        let polls = [(); 3].map(|()| mio::Poll::new().expect("poll"));
        let inbox = crate::inbox::Inbox::new(polls[0].registry(), Token(0), 1024).expect("inbox");
        let lease = std::time::Duration::from_secs(15);
        let settings = Settings {
            seeds: vec![super::endpoint::Endpoint::new("127.0.0.1", 6379)],
            cluster: false,
            routing,
            link: Arc::new(super::settings::LinkConfig {
                greeting: Vec::new(),
                greeting_replies: 0,
                tls: None,
                idle_ping: std::time::Duration::from_secs(5),
                reply_timeout: std::time::Duration::from_secs(2),
            }),
            shown_url: "redis://127.0.0.1:6379".into(),
            node_id: "me".into(),
            lease,
        };
        let sub_bell = Doorbell::new(polls[1].registry(), Token(1)).expect("bell");
        let pub_bell = Doorbell::new(polls[2].registry(), Token(2)).expect("bell");
        (Arc::new(Shared::new(Hub::new(vec![inbox], 16), settings, sub_bell, pub_bell)), polls)
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
