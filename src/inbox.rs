//! A reactor's inbox: what other threads (other reactors, the bus) send it.
//!
//! Producers push onto a lock-free queue and ring a [`Doorbell`], which wakes
//! the reactor only when its flag flips from false to true, so a burst of
//! messages costs one `wake()` syscall. The reactor clears the flag, then
//! drains the whole queue. The bus threads use the same doorbell.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crossbeam_queue::SegQueue;
use mio::{Registry, Token, Waker};

use crate::bus::Undelivered;

/// A command for one reactor.
pub enum Command {
    /// Write `payload` as one text message to the connection `token`, if it still
    /// holds a logged-in user.
    Deliver { token: Token, payload: Box<[u8]> },
    /// A message `token` sent through the bus did not reach its recipient:
    /// tell the sender why.
    Undelivered { token: Token, why: Undelivered },
    /// The bus has decided a pending login. `accepted: false` for a login
    /// already granted revokes it (another node proved to hold the name).
    LoginDecided { token: Token, accepted: bool },
    /// Take over a freshly accepted socket (accept mode `handoff`).
    Adopt(mio::net::TcpStream),
    /// Stop accepting, close every connection with 1001 spread evenly over
    /// `over`, and stop the loop once they are all gone.
    Drain { over: Duration },
    /// Close every connection with 1001 (going away) now and stop the loop.
    Shutdown,
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
}

impl Inbox {
    /// Creates the inbox of the reactor whose poll owns `registry`.
    ///
    /// # Errors
    /// When the eventfd behind the waker cannot be created.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Inbox> {
        Ok(Inbox { queue: SegQueue::new(), bell: Doorbell::new(registry, token)? })
    }

    /// Queues `command` and wakes the reactor unless a wake is already pending.
    pub fn push(&self, command: Command) {
        self.queue.push(command);
        self.bell.ring();
    }

    /// Takes every queued command. Clears the wake flag first, so a command
    /// pushed during the drain either is drained now or wakes the reactor again.
    pub fn drain(&self, mut each: impl FnMut(Command)) {
        self.bell.answer();
        while let Some(command) = self.queue.pop() {
            each(command);
        }
    }
}
