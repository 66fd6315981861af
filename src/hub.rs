//! What every thread of a node shares: the reactors' inboxes, the directory
//! of who is logged in where, the metrics, and the callers that are no
//! reactor (the server API) waiting for the bus.
//!
//! Reactors, the bus threads and the server reach each other only through
//! this: a reactor never touches another reactor's connections, it sends a
//! [`Command`] to that reactor's inbox.

use std::sync::Arc;

use crate::admission::Admission;
use crate::answers::{Answer, Answers};
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
    /// Callers that are no reactor (the server API), waiting for the bus.
    pub answers: Answers,
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
            answers: Answers::default(),
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

    /// Sends a command to the reactor that owns `at`, or to the caller
    /// that is no reactor (see [`crate::answers`]).
    pub fn send(&self, at: ConnRef, command: Command) {
        match self.inboxes.get(at.reactor) {
            Some(inbox) => inbox.push(command),
            None => self.answers.answer(at.token, Answer::Command(command)),
        }
    }

    /// Redis ran a PUBLISH of `from` and `receivers` got it: a caller that
    /// is no reactor waits to know; a reactor is told only of failures.
    #[inline]
    pub fn published(&self, from: ConnRef, receivers: i64) {
        if from.reactor >= self.inboxes.len() {
            self.answers.answer(from.token, Answer::Published { receivers });
        }
    }

    /// Closes the connection that holds `name` on this node (code
    /// [`crate::codec::close::DISCONNECTED`]); false when none does.
    pub fn disconnect_local(&self, name: &str) -> bool {
        match self.directory.lookup(name) {
            Some(at) => {
                self.send(at, Command::Disconnect { token: at.token });
                true
            }
            None => false,
        }
    }
}
