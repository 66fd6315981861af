//! Node-to-node delivery.
//!
//! A reactor first looks a recipient up in this node's [`Directory`]; only a
//! recipient held elsewhere goes to the [`Bus`]. The embedded default
//! ([`local::LocalBus`]) has no elsewhere; the Redis bus publishes to the node
//! that holds the recipient and routes what it receives into reactor inboxes.
//!
//! [`Directory`]: crate::directory::Directory

pub mod local;
pub mod redis;

use std::sync::Arc;

use crate::directory::{ConnRef, Directory};
use crate::inbox::{Command, Inbox};
use crate::metrics::Metrics;

/// The outcome of claiming a user name for the whole cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The name is ours; the user is logged in.
    Granted,
    /// Another node holds the name.
    Refused,
    /// The bus will decide and send [`Command::LoginDecided`] to the reactor.
    Pending,
}

/// The outcome of publishing to a recipient that this node does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Handed to the cluster; delivery is up to the node that holds the recipient.
    Sent,
    /// Nobody in reach holds the recipient (always the case for the embedded bus).
    NoRecipient,
}

/// What a reactor needs from the cluster. Implementations never block the
/// caller on the network: work that needs a round trip is queued and its result
/// comes back through the reactor's inbox.
pub trait Bus: Send + Sync {
    /// Claims `name` (already held locally by `at`) for the whole cluster.
    fn claim(&self, name: &str, at: ConnRef) -> Claim;
    /// Gives up `name`, held by `at` until now, cluster-wide.
    fn release(&self, name: &str, at: ConnRef);
    /// Sends one chat message (the exact text frame payload the recipient gets)
    /// to `recipient`, who is not held on this node.
    fn publish(&self, recipient: &str, payload: &[u8], from: ConnRef) -> Published;
    /// Stops background threads; called once when the node shuts down.
    fn shutdown(&self) {}
}

/// What every thread of a node shares: reactor inboxes, the directory, metrics.
pub struct Hub {
    pub inboxes: Box<[Inbox]>,
    pub directory: Directory,
    pub metrics: Metrics,
}

impl Hub {
    /// `connections` sizes the directory for that many names up front.
    pub fn new(inboxes: Vec<Inbox>, connections: usize) -> Arc<Hub> {
        let reactors = inboxes.len();
        Arc::new(Hub {
            inboxes: inboxes.into_boxed_slice(),
            directory: Directory::with_capacity(connections),
            metrics: Metrics::new(reactors),
        })
    }

    /// Hands `payload` to the reactor that holds `name` on this node.
    /// Returns false when no connection here holds the name.
    pub fn deliver_local(&self, name: &str, payload: &[u8]) -> bool {
        match self.directory.lookup(name) {
            Some(at) => {
                self.inboxes[at.reactor].push(Command::Deliver { token: at.token, payload: payload.into() });
                true
            }
            None => false,
        }
    }

    /// Sends a command to the reactor that owns `at`.
    pub fn send(&self, at: ConnRef, command: Command) {
        self.inboxes[at.reactor].push(command);
    }
}
