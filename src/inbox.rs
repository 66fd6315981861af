//! A reactor's inbox: what other threads (other reactors, the bus) send it.
//!
//! Producers push onto a lock-free queue and ring a [`Doorbell`], which wakes
//! the reactor only when its flag flips from false to true, so a burst of
//! messages costs one `wake()` syscall. The reactor clears the flag, then
//! drains the whole queue. The bus threads use the same doorbell.
//!
//! Chat messages are bounded: a reactor that is stuck (or far behind) would
//! otherwise let its inbox grow without limit. [`Inbox::try_deliver`] refuses
//! a message once the inbox holds `bound` commands, and the sender is told.
//! Control commands (logins decided, sockets handed over, shutdown) are never
//! refused: losing one would leave a connection in a wrong state.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;
use crossbeam_queue::SegQueue;
use mio::{Registry, Token, Waker};

use crate::bus::Undelivered;

/// A command for one reactor.
pub enum Command {
    /// Write `payload` as one text message to the connection `token`, if it still
    /// holds a logged-in user.
    Deliver { token: Token, payload: Box<[u8]> },
    /// A room message for every member of its room on this reactor.
    RoomDeliver(Arc<RoomMessage>),
    /// The bus's answer to a `presencemsg` of `token`.
    Presence { token: Token, answer: Box<PresenceAnswer> },
    /// The bus's answer to a `membersmsg` of `token`.
    Members { token: Token, answer: Box<MembersAnswer> },
    /// A message `token` sent through the bus did not reach its recipient:
    /// tell the sender why.
    Undelivered { token: Token, why: Undelivered },
    /// What the history of a channel of `token` holds after the offset it
    /// gave (a login's or a join's recovery).
    Recovered(Box<Recovered>),
    /// A message of `token` to a user who is offline was kept for them.
    Stored(Box<Stored>),
    /// The bus has decided a pending login. `accepted: false` for a login
    /// already granted revokes it (another node proved to hold the name).
    LoginDecided { token: Token, accepted: bool },
    /// Take over a freshly accepted socket (accept mode `handoff`), from the
    /// source address key `source` (`counted` if already counted per address).
    Adopt { stream: mio::net::TcpStream, source: u32, counted: bool },
    /// Stop accepting, close every connection with 1001 spread evenly over
    /// `over`, and stop the loop once they are all gone.
    Drain { over: Duration },
    /// Close every connection with 1001 (going away) now and stop the loop.
    Shutdown,
    /// Close the connection `token` (the server API asked): code
    /// [`crate::codec::close::DISCONNECTED`], reason [`crate::protocol::DISCONNECTED_REASON`].
    Disconnect { token: Token },
}

/// A room message as it travels to reactors: boxed behind one pointer, so
/// that it does not grow every `Command` (a chat message's queue entry).
pub struct RoomMessage {
    /// The room's key.
    pub room: CompactString,
    /// The whole frame, shared by every member's output.
    pub frame: Arc<[u8]>,
}

/// A recovery's answer: the messages to replay (each the JSON a live one
/// carries, `Offset` included), and how it went.
pub struct Recovered {
    pub token: Token,
    /// The room's key, or `None` for the user's own inbox.
    pub room: Option<CompactString>,
    /// `None`: the history could not be read (Redis is unreachable).
    pub outcome: Option<crate::protocol::Outcome>,
    pub epoch: String,
    /// The channel's last offset when it was read.
    pub last: String,
    pub entries: Vec<Box<[u8]>>,
}

/// A message to `to`, who was offline, kept at `offset`.
pub struct Stored {
    pub token: Token,
    pub to: CompactString,
    pub offset: String,
}

/// Which of the comma-separated names `asked` are online: `online[i]` for the i-th.
pub struct PresenceAnswer {
    pub asked: Box<str>,
    pub online: Box<[bool]>,
}

/// Up to the limit of members of `room` (its key), and how many there are in all.
pub struct MembersAnswer {
    pub room: CompactString,
    pub listed: Vec<CompactString>,
    pub count: u64,
}

/// A coalesced wake for a thread that sleeps in `mio::Poll`: any number of
/// `ring`s between two `answer`s cost one `wake()` syscall.
pub struct Doorbell {
    rung: AtomicBool,
    waker: Waker,
}

impl Doorbell {
    /// A doorbell that wakes the poll owning `registry` with `token`.
    ///
    /// # Errors
    /// When the eventfd behind the waker cannot be created.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Doorbell> {
        Ok(Doorbell { rung: AtomicBool::new(false), waker: Waker::new(registry, token)? })
    }

    /// Wakes the thread unless a wake is already pending.
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            // A failed wake leaves the work queued; the thread drains its queue
            // on every turn, at the latest when its poll timeout expires.
            let _ = self.waker.wake();
        }
    }

    /// Wakes the thread whatever the flag says (to make it see a stop request).
    pub fn wake_now(&self) {
        let _ = self.waker.wake();
    }

    /// Called by the woken thread before it drains its queue, so that work
    /// queued during the drain either is drained now or rings again.
    pub fn answer(&self) {
        self.rung.store(false, Ordering::Release);
    }
}

pub struct Inbox {
    queue: SegQueue<Command>,
    bell: Doorbell,
    /// Commands queued and not yet drained (approximate while producers race).
    len: AtomicUsize,
    /// Most commands [`Inbox::try_deliver`] lets the queue hold (`--inbox-size`).
    bound: usize,
}

impl Inbox {
    /// Creates the inbox of the reactor whose poll owns `registry`, holding
    /// at most `bound` chat messages.
    ///
    /// # Errors
    /// When the eventfd behind the waker cannot be created.
    pub fn new(registry: &Registry, token: Token, bound: usize) -> io::Result<Inbox> {
        Ok(Inbox { queue: SegQueue::new(), bell: Doorbell::new(registry, token)?, len: AtomicUsize::new(0), bound })
    }

    /// Queues `command` and wakes the reactor unless a wake is already pending.
    pub fn push(&self, command: Command) {
        self.len.fetch_add(1, Ordering::Relaxed);
        self.queue.push(command);
        self.bell.ring();
    }

    /// Queues a chat message unless the inbox is full; false when refused.
    /// Producers racing past the check overshoot the bound by at most one
    /// message each.
    #[inline]
    pub fn try_deliver(&self, token: Token, payload: &[u8]) -> bool {
        if self.len.load(Ordering::Relaxed) >= self.bound {
            return false;
        }
        self.push(Command::Deliver { token, payload: payload.into() });
        true
    }

    /// Takes every queued command. Clears the wake flag first, so a command
    /// pushed during the drain either is drained now or wakes the reactor again.
    pub fn drain(&self, mut each: impl FnMut(Command)) {
        self.bell.answer();
        let mut taken = 0;
        while let Some(command) = self.queue.pop() {
            taken += 1;
            each(command);
        }
        if taken > 0 {
            self.len.fetch_sub(taken, Ordering::Relaxed);
        }
    }
}
