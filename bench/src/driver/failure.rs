//! How a connection ends when something goes wrong: its deadline passes or an error
//! closes it; either way the failed step is counted, and the failure by its cause (who
//! acted: the node, the kernel or the load generator, see `crate::cause`).

use std::collections::VecDeque;

use super::conn::State;
use super::{lock, Driver};
use crate::cause::Cause;
use crate::codec::ProtocolError;
use crate::stats::Counter;

impl Driver {
    pub(super) fn expire_deadlines(&mut self, now: u64) {
        // Give back the queue's memory once a connect or login wave has passed.
        if self.deadlines.is_empty() && self.deadlines.capacity() > 1024 {
            self.deadlines = VecDeque::new();
        }
        while let Some(&(deadline, slot, generation, wait)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let conn = &self.conns[slot as usize];
            if conn.generation != generation || !wait.covers(conn.state) {
                continue;
            }
            let seconds = self.plan.connect_timeout_ns as f64 / 1e9;
            let sio = self.plan.protocol.sio();
            let cause = match (conn.state, sio) {
                // Socket.IO ignores an event it has no handler for: no ack, no error.
                (State::LoginPending, Some(names)) => Cause::no_ack(&names.login_event, seconds, "login"),
                (State::LoginPending, None) if self.plan.recovery.recover => {
                    Cause::gave_up("recoverymsg that confirms a login (--recover: the node needs --history-users)")
                }
                (State::Connecting, _) => Cause::gave_up("TCP connect"),
                (State::Handshaking, _) => Cause::gave_up("WebSocket handshake answer"),
                (State::Joining, _) => Cause::gave_up("Engine.IO open packet and Socket.IO connect answer"),
                (State::Closing, _) => Cause::gave_up("close answer"),
                (State::RoomJoining, _) => Cause::gave_up("room join confirmations"),
                _ => Cause::gave_up("login confirmation"),
            };
            let detail = format!("{}: {} (after {seconds:.1} s)", self.describe(slot), cause.what);
            self.fail(slot, cause, detail);
        }
    }

    pub(super) fn fail_protocol(&mut self, slot: u32, error: ProtocolError) {
        let detail = format!("{}: {error}", self.describe(slot));
        self.fail(slot, Cause::node_protocol(&error), detail);
    }

    /// Closes a connection because of `cause`, counting the error, its cause and the
    /// failed step.
    pub(super) fn fail(&mut self, slot: u32, cause: Cause, detail: String) {
        if self.recover_from(slot, &cause) {
            return;
        }
        let conn = &self.conns[slot as usize];
        let step = conn.state.step();
        let churning = conn.churning;
        match conn.state {
            State::Idle | State::Closed => return,
            // The end of a close we asked for is not an error.
            State::Closing => return self.close_done(slot),
            State::Connecting | State::Handshaking | State::Joining => {
                let counter = if churning { Counter::ChurnFail } else { Counter::ConnectFail };
                self.shared.counters.add(counter, 1);
                self.conns[slot as usize].churning = false;
            }
            State::LoginPending => self.count_login_failure(slot),
            State::RoomJoining => self.shared.counters.add(Counter::RoomJoinFail, 1),
            State::Open | State::Ready => {}
        }
        self.shared.counters.add(cause.kind, 1);
        let step = if churning { format!("churn {step}") } else { step.to_string() };
        lock(&self.shared.causes).count(&cause, &step);
        self.sample(detail);
        self.drop_conn(slot);
    }

    /// Closes the socket and frees the connection's buffers.
    pub(super) fn drop_conn(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.out = Vec::new();
        conn.inp = Vec::new();
        self.sessions.end(slot);
        self.set_state(slot, State::Closed);
    }
}
