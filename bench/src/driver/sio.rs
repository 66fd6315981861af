//! What a Socket.IO server sends, acted on: Engine.IO's open packet (answered with the
//! namespace connect), the connect answer (the connection is up), pings (answered with
//! pongs), the login's ack, chat events (handed to `inbound`), and the ways a server ends
//! a session (Engine.IO close, Socket.IO disconnect or connect error).

use super::conn::State;
use super::inbound::truncate;
use super::Driver;
use crate::cause::Cause;
use crate::codec;
use crate::socketio::{self, AckReply, Packet};
use crate::stats::Counter;

impl Driver {
    pub(super) fn on_packet(&mut self, slot: u32, packet: Packet<'_>, payload: &[u8]) {
        let state = self.conns[slot as usize].state;
        match packet {
            Packet::Chat { data, reciever, sender } => self.on_chat(slot, &data, &reciever, &sender),
            Packet::Ping => self.send_text(slot, socketio::PONG),
            Packet::Nothing => {}
            Packet::Open { .. } if state == State::Joining => self.send_text(slot, socketio::CONNECT),
            Packet::Connected if state == State::Joining => self.on_connected(slot),
            Packet::Ack { id: socketio::LOGIN_ACK_ID, reply } if state == State::LoginPending => {
                self.on_login_ack(slot, reply);
            }
            Packet::Close => self.ended(slot, "Engine.IO close".into()),
            Packet::Disconnect => self.ended(slot, "Socket.IO disconnect".into()),
            Packet::ConnectError(why) => {
                self.ended(slot, format!("Socket.IO connect error \"{}\"", truncate(&why)));
            }
            Packet::OtherEvent(name) => {
                let chat = self.plan.protocol.sio().map_or("", |n| n.chat_event.as_str());
                let what = format!("event {name:?}, not the chat event {chat:?} (--sio-chat-event)");
                self.on_unexpected(slot, &what, payload);
            }
            Packet::Open { .. } | Packet::Connected | Packet::Ack { .. } => {
                self.on_unexpected(slot, &format!("a packet out of turn while {state:?}"), payload);
            }
            Packet::Unexpected(why) => self.on_unexpected(slot, why, payload),
        }
    }

    /// The login event's ack: the login is done, or refused as the seed refuses it.
    fn on_login_ack(&mut self, slot: u32, reply: AckReply) {
        match reply {
            AckReply::Ok => self.on_login_confirmed(slot),
            AckReply::Refused(why) if why == "User already exists" => self.on_user_exists(slot),
            AckReply::Refused(why) => {
                self.shared.counters.add(Counter::ErrServer, 1);
                let detail = format!("{} login refused: {:?}", self.describe(slot), truncate(&why));
                self.sample(detail);
                self.count_login_failure(slot);
                self.set_state(slot, State::Open);
            }
        }
    }

    /// The server ended the session: the connection is over.
    fn ended(&mut self, slot: u32, what: String) {
        let detail = format!("{} sent {what} while {:?}", self.describe(slot), self.conns[slot as usize].state);
        self.fail(slot, Cause::ended_by_node(what), detail);
    }

    /// One text frame of `text`.
    fn send_text(&mut self, slot: u32, text: &[u8]) {
        self.wbuf.clear();
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, text, mask);
        self.send_wbuf(slot);
    }
}
