//! What every thread of a node shares: the reactors' inboxes, the directory
//! of who is logged in where, and the metrics.
//!
//! Reactors, the bus threads and the server reach each other only through
//! this: a reactor never touches another reactor's connections, it sends a
//! [`Command`] to that reactor's inbox.

use std::sync::Arc;

use crate::admission::Admission;
use crate::directory::{ConnRef, Directory};
use crate::inbox::{Command, Inbox};
use crate::metrics::{Limit, Metrics};
use crate::rooms::Rooms;

pub struct Hub {
    pub inboxes: Box<[Inbox]>,
    pub directory: Directory,
    pub metrics: Metrics,
    /// Node-wide admission: connections per source address, new connections per second.
    pub admission: Admission,
    /// Which rooms have members on this node, on which reactors.
    pub rooms: Rooms,
}

impl Hub {
    /// `connections` sizes the directory for that many names up front.
    pub fn new(inboxes: Vec<Inbox>, connections: usize) -> Arc<Hub> {
        let reactors = inboxes.len();
        Arc::new(Hub {
            inboxes: inboxes.into_boxed_slice(),
            directory: Directory::with_capacity(connections),
            metrics: Metrics::new(reactors),
            admission: Admission::new(),
            rooms: Rooms::new(reactors),
        })
    }

    /// Hands `payload` to the reactor that holds `name` on this node.
    /// Returns false when no connection here holds the name. A message for a
    /// reactor whose inbox is full is dropped and counted (its sender is on
    /// another node, out of reach).
    pub fn deliver_local(&self, name: &str, payload: &[u8]) -> bool {
        match self.directory.lookup(name) {
            Some(at) => {
                self.deliver(at, payload);
                true
            }
            None => false,
        }
    }

    /// Queues a chat message for the connection `at`; false (and counted)
    /// when its reactor's inbox is full.
    #[inline]
    pub fn deliver(&self, at: ConnRef, payload: &[u8]) -> bool {
        let queued = self.inboxes[at.reactor].try_deliver(at.token, payload);
        if !queued {
            self.metrics.reactors[at.reactor].limit_hit(Limit::InboxFull);
        }
        queued
    }

    /// Sends a command to the reactor that owns `at`.
    pub fn send(&self, at: ConnRef, command: Command) {
        self.inboxes[at.reactor].push(command);
    }
}
