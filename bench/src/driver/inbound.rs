//! What the server sends: control frames, chat deliveries (timed, checked and recorded
//! for exact loss accounting), login confirmations and errors; Socket.IO's packets are
//! taken apart in `sio`, their chat messages handled here.

use super::conn::State;
use super::Driver;
use crate::cause::Cause;
use crate::clock::monotonic_ns;
use crate::codec;
use crate::message::{self, Incoming, Mark};
use crate::protocol::Protocol;
use crate::socketio;
use crate::stats::{self, Counter};

impl Driver {
    pub(super) fn on_frame(&mut self, slot: u32, frame: codec::Frame<'_>) {
        if !frame.fin || frame.opcode == codec::OP_CONTINUATION {
            let detail = format!("{} sent a fragmented message (not supported)", self.describe(slot));
            self.fail(slot, Cause::node_violation("fragmented message"), detail);
            return;
        }
        match frame.opcode {
            codec::OP_TEXT if self.conns[slot as usize].state == State::Closing => {}
            codec::OP_TEXT => self.on_text(slot, frame.payload),
            codec::OP_PING => {
                self.wbuf.clear();
                let mask = self.next_mask();
                codec::encode_client_frame(&mut self.wbuf, codec::OP_PONG, frame.payload, mask);
                self.send_wbuf(slot);
            }
            codec::OP_PONG => {}
            codec::OP_BINARY => {
                let detail = format!("{} sent a binary frame", self.describe(slot));
                self.fail(slot, Cause::node_violation("binary frame"), detail);
            }
            codec::OP_CLOSE if self.conns[slot as usize].state == State::Closing => self.close_done(slot),
            codec::OP_CLOSE => {
                let code = frame.payload.get(..2).map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                let reason = String::from_utf8_lossy(frame.payload.get(2..).unwrap_or_default());
                let detail = format!(
                    "{} sent close {code} {reason:?} while {:?}",
                    self.describe(slot),
                    self.conns[slot as usize].state
                );
                self.send_close(slot, code);
                self.fail(slot, Cause::closed_by_node(code, &reason), detail);
            }
            other => {
                let detail = format!("{} sent opcode {other:#x}", self.describe(slot));
                self.fail(slot, Cause::node_violation(&format!("opcode {other:#x}")), detail);
            }
        }
    }

    fn on_text(&mut self, slot: u32, payload: &[u8]) {
        match &self.plan.protocol {
            Protocol::SocketIo(names) => {
                let packet = socketio::parse(payload, names);
                self.on_packet(slot, packet, payload);
            }
            Protocol::Seed => self.on_seed_text(slot, payload),
        }
    }

    fn on_seed_text(&mut self, slot: u32, payload: &[u8]) {
        match message::parse_incoming(payload) {
            Incoming::Chat { data, reciever, sender, offset } => {
                if let Some(offset) = offset {
                    self.saw_offset(slot, offset);
                }
                self.on_chat(slot, &data, &reciever, &sender);
            }
            Incoming::Room { data, room, sender } => self.on_room_message(slot, &data, &room, &sender),
            Incoming::Joined { room, sender } => self.on_joined(slot, &room, &sender),
            Incoming::Recovery(recovery) => self.on_recovery(slot, recovery),
            // A notice that someone left (the plan never leaves a room); a message kept
            // for an offline recipient (its replay is what counts).
            Incoming::Left | Incoming::Stored => {}
            Incoming::UserExists => self.on_user_exists(slot),
            Incoming::ServerError(text) => {
                self.shared.counters.add(Counter::ErrServer, 1);
                let detail = format!("{} sent error {:?}", self.describe(slot), truncate(&text));
                self.sample(detail);
            }
            Incoming::Unexpected => self.on_unexpected(slot, "unexpected text", payload),
        }
    }

    /// A chat message delivered to `slot`: a login confirmation (the seed's), or a timed
    /// message, checked (right recipient, right sender), timed and recorded.
    pub(super) fn on_chat(&mut self, slot: u32, data: &str, reciever: &str, sender: &str) {
        let index = self.first + slot;
        match message::parse_mark(data) {
            Some(Mark::Login) => self.on_login_confirmed(slot),
            Some(Mark::Chat { intended_ns, lag_ns, sender: from, seq }) => {
                let prefix = &self.plan.name_prefix;
                let to_me = message::index_of_name(reciever, prefix) == Some(index);
                let from_sender = message::index_of_name(sender, prefix) == Some(from);
                if !(to_me && from_sender) {
                    self.shared.counters.add(Counter::Misrouted, 1);
                    self.sample(format!(
                        "connection {prefix}{index} got a message for {reciever:?} \
                         from {sender:?} (sent by index {from})"
                    ));
                    return;
                }
                let latency = monotonic_ns().saturating_sub(intended_ns);
                stats::record_nanos(&mut self.latency_hist, latency);
                stats::record_nanos(&mut self.interval_hist, latency);
                stats::record_nanos(&mut self.service_hist, latency.saturating_sub(lag_ns));
                self.receipts.record(from, seq);
                self.windows.delivered(from.wrapping_sub(self.first));
                self.shared.counters.add(Counter::Received, 1);
            }
            None => {
                let detail =
                    format!("{} delivered a chat message with unknown Data {:?}", self.describe(slot), truncate(data));
                self.shared.counters.add(Counter::ErrProtocol, 1);
                self.sample(detail);
            }
        }
    }

    /// The server refused the login: the name is taken.
    pub(super) fn on_user_exists(&mut self, slot: u32) {
        if self.retry_login(slot) {
            return;
        }
        let index = self.first + slot;
        let detail = format!("login as {}{index} rejected: \"User already exists\"", self.plan.name_prefix);
        self.shared.counters.add(Counter::ErrLoginRejected, 1);
        self.sample(detail);
        if self.conns[slot as usize].state == State::LoginPending {
            self.count_login_failure(slot);
            self.set_state(slot, State::Open);
        }
    }

    /// Something the load generator does not understand: counted and described, the
    /// connection kept.
    pub(super) fn on_unexpected(&mut self, slot: u32, what: &str, payload: &[u8]) {
        self.shared.counters.add(Counter::ErrProtocol, 1);
        let text = truncate(&String::from_utf8_lossy(payload));
        let detail = format!("{} sent {what}: {text:?}", self.describe(slot));
        self.sample(detail);
    }
}

pub(super) fn truncate(text: &str) -> String {
    text.chars().take(120).collect()
}
