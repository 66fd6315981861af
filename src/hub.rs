//! What every thread of a node shares: the reactors' inboxes, the directory
//! of who is logged in where, and the metrics.
//!
//! Reactors, the bus threads and the server reach each other only through
//! this: a reactor never touches another reactor's connections, it sends a
//! [`Command`] to that reactor's inbox.

use std::sync::Arc;

use crate::directory::{ConnRef, Directory};
use crate::inbox::{Command, Inbox};
use crate::metrics::Metrics;

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
                self.send(at, Command::Deliver { token: at.token, payload: payload.into() });
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
