//! Answers for callers that are no reactor: the server API (on the admin
//! listener's threads) asks the bus what reactors ask it (presence, members,
//! whether a message reached anyone), and the bus answers every caller the
//! same way, by the caller's [`ConnRef`]. A caller here has a `ConnRef`
//! whose reactor index is [`CALLER`] (past every real reactor) and whose
//! token is a number of its own; [`crate::hub::Hub::send`] hands what is
//! addressed to it to the waiting caller instead of a reactor's inbox.
//!
//! Nothing here is touched by a chat message between users: only what a
//! caller asked for is looked up, under one short lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mio::Token;
use parking_lot::Mutex;

use crate::directory::ConnRef;
use crate::inbox::Command;

/// The reactor index of a caller that is no reactor: never a real one.
pub const CALLER: usize = usize::MAX;

/// What a waiting caller gets.
pub enum Answer {
    /// What a reactor would have got (`Presence`, `Members`, `Undelivered`).
    Command(Command),
    /// Redis ran the caller's PUBLISH: `receivers` subscribers got it.
    Published { receivers: i64 },
}

/// Callers waiting for the bus, by the token of their `ConnRef`.
#[derive(Default)]
pub struct Answers {
    next: AtomicUsize,
    waiting: Mutex<HashMap<Token, mpsc::Sender<Answer>>>,
}

impl Answers {
    /// A new caller: the `ConnRef` to give the bus, and where its answers arrive.
    pub fn caller(&self) -> Caller<'_> {
        let token = Token(self.next.fetch_add(1, Ordering::Relaxed));
        let (sender, answers) = mpsc::channel();
        self.waiting.lock().insert(token, sender);
        Caller { table: self, at: ConnRef { reactor: CALLER, token }, answers }
    }

    /// Hands `answer` to the caller `token`, if it still waits.
    pub fn answer(&self, token: Token, answer: Answer) {
        if let Some(sender) = self.waiting.lock().get(&token) {
            // A caller that gave up meanwhile has dropped its receiver.
            let _ = sender.send(answer);
        }
    }
}

/// One caller waiting for answers; forgotten when dropped.
pub struct Caller<'a> {
    table: &'a Answers,
    pub at: ConnRef,
    answers: mpsc::Receiver<Answer>,
}

impl Caller<'_> {
    /// The next answer, or `None` once `deadline` has passed.
    pub fn wait(&self, deadline: Instant) -> Option<Answer> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.answers.recv_timeout(left.max(Duration::from_millis(1))).ok()
    }
}

impl Drop for Caller<'_> {
    fn drop(&mut self) {
        self.table.waiting.lock().remove(&self.at.token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_its_answers_and_none_once_gone() {
        let answers = Answers::default();
        let caller = answers.caller();
        assert_eq!(caller.at.reactor, CALLER);
        answers.answer(caller.at.token, Answer::Published { receivers: 2 });
        let soon = Instant::now() + Duration::from_millis(50);
        assert!(matches!(caller.wait(soon), Some(Answer::Published { receivers: 2 })));
        assert!(caller.wait(soon).is_none(), "nothing more came");
        let token = caller.at.token;
        drop(caller);
        assert!(answers.waiting.lock().is_empty());
        answers.answer(token, Answer::Published { receivers: 1 });
    }
}
