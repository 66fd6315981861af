//! A connection's life up to chat: TCP connect, (TLS and) WebSocket handshake, Socket.IO's
//! connect, login; and churn's polite close and reconnect under the same name.

use std::io;

use mio::{Interest, Token};

use super::conn::{Conn, State, Wait};
use super::dial::{dial, Dialed};
use super::Driver;
use crate::cause::Cause;
use crate::clock::monotonic_ns;
use crate::codec;
use crate::history;
use crate::message;
use crate::protocol::Protocol;
use crate::socketio;
use crate::stats::{self, Counter};

impl Driver {
    pub(super) fn start_connect(&mut self, slot: u32, now: u64) {
        let index = self.first + slot;
        let target = self.plan.target_of(index).addr;
        let bind = self.plan.sources.bind_of(index);
        if slot as usize == self.conns.len() {
            self.conns.push(Conn::idle());
        }
        let conn = &mut self.conns[slot as usize];
        conn.generation = conn.generation.wrapping_add(1);
        let generation = conn.generation;
        // Churn reconnects time the whole cycle from its intended start, recoveries from
        // the drop.
        if !conn.churning && !conn.recovering {
            conn.started_ns = now;
        }
        self.set_state(slot, State::Connecting);
        // The first connect starts at the home port, each reconnect one port further on.
        let attempt = generation.wrapping_sub(1);
        match dial(target, bind, self.plan.sources.mode, attempt) {
            Ok(Dialed { mut stream, skipped, fell_back }) => {
                self.shared.counters.add(Counter::PortsSkipped, skipped.into());
                self.shared.counters.add(Counter::PortsFallback, fell_back.into());
                let token = Token(((generation as usize) << 32) | slot as usize);
                if let Err(e) =
                    self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                {
                    self.fail(slot, Cause::kernel(&e), format!("epoll register: {e}"));
                    return;
                }
                self.conns[slot as usize].stream = Some(stream);
                self.deadlines.push_back((now + self.plan.connect_timeout_ns, slot, generation, Wait::Connect));
            }
            Err((e, skipped)) => {
                self.shared.counters.add(Counter::PortsSkipped, skipped.into());
                let from = bind.map(|b| format!(" from {}", b.addr)).unwrap_or_default();
                let tried = if skipped > 0 { format!(" ({skipped} ports in use skipped)") } else { String::new() };
                self.fail(slot, Cause::kernel(&e), format!("connect to {target}{from}: {e}{tried}"));
            }
        }
    }

    pub(super) fn finish_connect(&mut self, slot: u32) {
        let index = self.first + slot;
        let target = self.plan.target_of(index);
        let Some(stream) = self.conns[slot as usize].stream.as_ref() else {
            return;
        };
        let error = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        if let Some(e) = error {
            let detail = format!("connect to {} ({}): {e}", target.addr, target.url);
            self.fail(slot, Cause::kernel(&e), detail);
            return;
        }
        let key = codec::handshake_key(index, self.conns[slot as usize].generation, self.plan.seed);
        self.wbuf.clear();
        codec::write_upgrade_request(&mut self.wbuf, &target.host, &target.path, &key);
        // wss://: the session holds the request until its handshake is done.
        if !self.start_tls(slot, index as usize % self.plan.targets.len()) {
            return;
        }
        self.set_state(slot, State::Handshaking);
        self.send_wbuf(slot);
    }

    /// The 101 came: the connection is open, or for Socket.IO waits for Engine.IO's open
    /// packet and the namespace connect (`on_connected` once they are done).
    pub(super) fn on_handshake(&mut self, slot: u32) {
        if self.plan.protocol.sio().is_some() {
            self.set_state(slot, State::Joining);
        } else {
            self.on_connected(slot);
        }
    }

    /// The connection can log in: the connect phase's step is done (or a churn cycle's or
    /// a recovery's reconnect, which logs in at once).
    pub(super) fn on_connected(&mut self, slot: u32) {
        let now = monotonic_ns();
        let conn = &self.conns[slot as usize];
        let again = conn.churning || conn.recovering;
        if !again {
            stats::record_nanos(&mut self.connect_hist, now.saturating_sub(conn.started_ns));
        }
        self.set_state(slot, State::Open);
        if again {
            self.start_login(slot, now);
        } else {
            self.shared.counters.add(Counter::ConnectOk, 1);
        }
    }

    pub(super) fn start_login(&mut self, slot: u32, now: u64) {
        let index = self.first + slot;
        let plan = self.plan.clone();
        let prefix = &plan.name_prefix;
        self.wbuf.clear();
        self.json.clear();
        match &plan.protocol {
            // The login event's ack confirms it.
            Protocol::SocketIo(names) => socketio::write_login(&mut self.json, names, prefix, index),
            // Confirmed by the node's recoverymsg after the replay.
            Protocol::Seed if plan.recovery.recover => {
                history::write_login(&mut self.json, prefix, index, self.recover.position(slot));
            }
            Protocol::Seed => {
                message::write_login(&mut self.json, prefix, index);
                let mask = self.next_mask();
                codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
                // No reply to a login in the seed's protocol: a message to oneself confirms it.
                self.json.clear();
                message::write_chat(&mut self.json, prefix, index, index, message::LOGIN_MARKER.as_bytes());
            }
        }
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
        // A churn reconnect is timed as a whole, from its connect; a recovery from its drop.
        if !self.conns[slot as usize].churning && !self.conns[slot as usize].recovering {
            self.conns[slot as usize].started_ns = now;
        }
        self.set_state(slot, State::LoginPending);
        let generation = self.conns[slot as usize].generation;
        self.deadlines.push_back((now + self.plan.connect_timeout_ns, slot, generation, Wait::Login));
        self.send_wbuf(slot);
    }

    pub(super) fn on_login_confirmed(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.state != State::LoginPending {
            return;
        }
        let elapsed = monotonic_ns().saturating_sub(conn.started_ns);
        let histogram = if conn.churning { &mut self.churn_hist } else { &mut self.login_hist };
        stats::record_nanos(histogram, elapsed);
        let counter = if conn.churning {
            conn.churning = false;
            Counter::ChurnOk
        } else {
            Counter::LoginOk
        };
        self.shared.counters.add(counter, 1);
        self.set_state(slot, State::Ready);
    }

    pub(super) fn count_login_failure(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let counter = if conn.churning {
            conn.churning = false;
            Counter::ChurnFail
        } else {
            Counter::LoginFail
        };
        self.shared.counters.add(counter, 1);
    }

    /// Closes one logged-in connection (close frame, then the socket) and reconnects it,
    /// the cycle timed from `intended_ns`; false when no logged-in connection was found.
    pub(super) fn churn_one(&mut self, intended_ns: u64) -> bool {
        let count = self.conns.len() as u64;
        if count == 0 {
            return false;
        }
        let mut chosen = None;
        for _ in 0..8 {
            let slot = (self.next_random() % count) as u32;
            if self.conns[slot as usize].state == State::Ready {
                chosen = Some(slot);
                break;
            }
        }
        let Some(slot) = chosen else {
            return false;
        };
        // A polite client: close, wait for the server's close (it has logged the user
        // out by then), reconnect and log in again under the same name.
        let now = monotonic_ns();
        self.conns[slot as usize].churning = true;
        self.conns[slot as usize].started_ns = intended_ns.min(now);
        self.set_state(slot, State::Closing);
        let generation = self.conns[slot as usize].generation;
        self.deadlines.push_back((now + self.plan.connect_timeout_ns, slot, generation, Wait::Close));
        self.send_close(slot, 1000);
        true
    }

    /// Reconnects the connections whose churn close completed during this turn.
    pub(super) fn reconnect_closed(&mut self, now: u64) {
        for slot in std::mem::take(&mut self.reconnects) {
            let conn = &self.conns[slot as usize];
            if conn.state == State::Closed && conn.churning {
                self.start_connect(slot, now);
            }
        }
    }

    /// A churn close is over (close answer, EOF, reset or timeout): reconnect soon.
    pub(super) fn close_done(&mut self, slot: u32) {
        self.drop_conn(slot);
        self.reconnects.push(slot);
    }

    pub(super) fn send_close(&mut self, slot: u32, code: u16) {
        self.wbuf.clear();
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_CLOSE, &code.to_be_bytes(), mask);
        self.send_wbuf(slot);
    }
}
