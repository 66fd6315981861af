//! A reactor's inbox: what other threads (other reactors, the bus) send it.
//!
//! Producers push onto a lock-free queue and wake the reactor only when the
//! `awake` flag flips from false to true, so a burst of messages costs one
//! `wake()` syscall. The reactor clears the flag, then drains the whole queue.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::SegQueue;
use mio::{Registry, Token, Waker};

/// A command for one reactor.
pub enum Command {
    /// Write `payload` as one text message to the connection `token`, if it still
    /// holds a logged-in user.
    Deliver { token: Token, payload: Box<[u8]> },
    /// Write `payload` as one text message to `token`, logged in or not (replies
    /// that another thread decided, such as a refused login).
    Reply { token: Token, payload: Box<[u8]> },
    /// The bus has decided a pending login. `accepted: false` for a login
    /// already granted revokes it (another node proved to hold the name).
    LoginDecided { token: Token, accepted: bool },
    /// Take over a freshly accepted socket (accept mode `handoff`).
    Adopt(mio::net::TcpStream),
    /// Close every connection with 1001 (going away) and stop the loop.
    Shutdown,
}

pub struct Inbox {
    queue: SegQueue<Command>,
    awake: AtomicBool,
    waker: Waker,
}

impl Inbox {
    /// Creates the inbox of the reactor whose poll owns `registry`.
    ///
    /// # Errors
    /// When the eventfd behind the waker cannot be created.
    pub fn new(registry: &Registry, token: Token) -> io::Result<Inbox> {
        Ok(Inbox { queue: SegQueue::new(), awake: AtomicBool::new(false), waker: Waker::new(registry, token)? })
    }

    /// Queues `command` and wakes the reactor unless a wake is already pending.
    pub fn push(&self, command: Command) {
        self.queue.push(command);
        if !self.awake.swap(true, Ordering::AcqRel) {
            // A failed wake leaves the command queued; the reactor drains its
            // inbox on every turn, at the latest when its poll timeout expires.
            let _ = self.waker.wake();
        }
    }

    /// Takes every queued command. Clears the wake flag first, so a command
    /// pushed during the drain either is drained now or wakes the reactor again.
    pub fn drain(&self, mut each: impl FnMut(Command)) {
        self.awake.store(false, Ordering::Release);
        while let Some(command) = self.queue.pop() {
            each(command);
        }
    }
}
