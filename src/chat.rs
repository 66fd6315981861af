//! What a reactor does with complete frames and messages: control frames,
//! fragment reassembly, the echo endpoint, and the chat protocol (login,
//! routing, delivery).

use std::mem;
use std::sync::atomic::Ordering::Relaxed;

use mio::Token;

use crate::bus::{Claim, Published, Undelivered};
use crate::codec::{self, close, op, FrameHead};
use crate::conn::{flag, split_token, Fragments, Phase};
use crate::handshake::Endpoint;
use crate::inbox::Command;
use crate::protocol::{self, Failure, Request};
use crate::reactor::Reactor;

impl Reactor {
    /// Handles one complete, unmasked frame.
    pub(crate) fn on_frame(&mut self, token: Token, head: FrameHead, payload: &[u8]) {
        match head.opcode {
            op::PING => self.queue_frame(token, op::PONG, payload),
            op::PONG => {}
            op::CLOSE => self.on_close_frame(token, payload),
            op::TEXT | op::BINARY => {
                let Some(conn) = self.conn_mut(token) else {
                    return;
                };
                if conn.message.is_some() {
                    self.fail(token, close::PROTOCOL, "new message before the fragmented one finished");
                } else if head.fin {
                    self.on_message(token, head.opcode, payload);
                } else {
                    let mut data = self.take_buffer();
                    data.extend_from_slice(payload);
                    let conn = self.conn_mut(token).expect("checked above");
                    conn.message = Some(Box::new(Fragments { opcode: head.opcode, data, utf8_valid: 0 }));
                    self.check_fragment_utf8(token);
                }
            }
            _ => {
                let Some(conn) = self.conn_mut(token) else {
                    return;
                };
                let Some(message) = conn.message.as_mut() else {
                    self.fail(token, close::PROTOCOL, "continuation frame without a message to continue");
                    return;
                };
                message.data.extend_from_slice(payload);
                if !self.check_fragment_utf8(token) || !head.fin {
                    return;
                }
                let conn = self.conn_mut(token).expect("checked above");
                let message = conn.message.take().expect("checked above");
                let Fragments { opcode, data, utf8_valid } = *message;
                if opcode == op::TEXT && utf8_valid != data.len() {
                    self.give_buffer(data);
                    return self.fail(token, close::INVALID_PAYLOAD, "text message ends inside a UTF-8 sequence");
                }
                self.on_message(token, opcode, &data);
                self.give_buffer(data);
            }
        }
    }

    /// Checks the UTF-8 of a text message so far, failing fast (1007) on a bad byte.
    fn check_fragment_utf8(&mut self, token: Token) -> bool {
        let Some(message) = self.conn_mut(token).and_then(|c| c.message.as_mut()) else {
            return false;
        };
        if message.opcode != op::TEXT {
            return true;
        }
        match codec::check_utf8_prefix(&message.data, message.utf8_valid) {
            Some(valid) => {
                message.utf8_valid = valid;
                true
            }
            None => {
                self.fail(token, close::INVALID_PAYLOAD, "text message is not valid UTF-8");
                false
            }
        }
    }

    /// The peer's close frame: validate it, answer it, and wait for its EOF.
    fn on_close_frame(&mut self, token: Token, payload: &[u8]) {
        let (code, reason) = match payload.len() {
            0 => (close::NORMAL, ""),
            1 => return self.fail(token, close::PROTOCOL, "close frame with a 1-byte payload"),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !codec::is_valid_close_code(code) {
                    return self.fail(token, close::PROTOCOL, "invalid close code");
                }
                if std::str::from_utf8(&payload[2..]).is_err() {
                    return self.fail(token, close::INVALID_PAYLOAD, "close reason is not valid UTF-8");
                }
                (code, "")
            }
        };
        self.begin_close(token, code, reason);
    }

    /// A whole message.
    fn on_message(&mut self, token: Token, opcode: u8, payload: &[u8]) {
        self.stats().messages_in.fetch_add(1, Relaxed);
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let Phase::Open(endpoint) = conn.phase else {
            return;
        };
        if opcode == op::BINARY {
            return match endpoint {
                Endpoint::Echo => self.queue_frame(token, opcode, payload),
                Endpoint::Chat => {
                    self.fail(token, close::UNSUPPORTED_DATA, "binary messages are not accepted: send JSON text")
                }
            };
        }
        // Checked whole even when its fragments were (rare): one check, then
        // the JSON parser takes it as `&str` and checks no string again.
        let Ok(text) = std::str::from_utf8(payload) else {
            return self.fail(token, close::INVALID_PAYLOAD, "text message is not valid UTF-8");
        };
        match endpoint {
            Endpoint::Echo => self.queue_frame(token, opcode, payload),
            Endpoint::Chat => self.on_chat(token, text),
        }
    }

    fn on_chat(&mut self, token: Token, text: &str) {
        let request = match protocol::parse(text, self.config.max_name_len) {
            Ok(request) => request,
            Err(e) => return self.reply_error(token, &e.to_string()),
        };
        match request {
            Request::Login { name } => self.login(token, &name),
            Request::Chat { to, data } => {
                // Never a pending login here: input waits until the bus decides.
                // The sender's name is encoded straight from the connection.
                let mut encoded = mem::take(&mut self.encode);
                encoded.clear();
                let speaker = self.conn(token).and_then(|c| c.speaker());
                if let Some(from) = speaker {
                    protocol::encode_chat(&mut encoded, &data, &to, from);
                    self.route(token, &to, &encoded);
                }
                let logged_in = !encoded.is_empty();
                self.encode = encoded;
                if !logged_in {
                    self.reply_failure(token, Failure::LogInFirst);
                }
            }
        }
    }

    fn login(&mut self, token: Token, name: &str) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if let Some(current) = conn.user.as_deref() {
            let why = Failure::AlreadyLoggedIn(current).to_string();
            return self.reply_error(token, &why);
        }
        let at = self.conn_ref(split_token(token).0);
        if !self.hub.directory.insert_if_absent(name, at) {
            return self.queue_frame(token, op::TEXT, protocol::USER_EXISTS);
        }
        match self.bus.claim(name, at) {
            Claim::Granted => {
                self.conn_mut(token).expect("checked above").user = Some(name.into());
                self.stats().users.fetch_add(1, Relaxed);
            }
            Claim::Pending => {
                let conn = self.conn_mut(token).expect("checked above");
                conn.user = Some(name.into());
                conn.flags |= flag::LOGIN_PENDING;
            }
            Claim::Refused => {
                self.hub.directory.remove(name, at);
                self.queue_frame(token, op::TEXT, protocol::USER_EXISTS);
            }
        }
    }

    /// The bus decided a login that was pending, or (`accepted` false on a
    /// granted login) revoked one: after a Redis outage another node proved
    /// to hold the name, and the user here gets the seed's refusal.
    pub(crate) fn login_decided(&mut self, token: Token, accepted: bool) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if !conn.has(flag::LOGIN_PENDING) {
            if accepted || conn.user.is_none() {
                return;
            }
            self.stats().users.fetch_sub(1, Relaxed);
        }
        let conn = self.conn_mut(token).expect("checked above");
        let was_pending = conn.has(flag::LOGIN_PENDING);
        conn.flags &= !flag::LOGIN_PENDING;
        if accepted {
            self.stats().users.fetch_add(1, Relaxed);
        } else if let Some(name) = conn.user.take() {
            let at = self.conn_ref(split_token(token).0);
            self.hub.directory.remove(&name, at);
            self.queue_frame(token, op::TEXT, protocol::USER_EXISTS);
        }
        if was_pending {
            self.resume_input(token);
        }
    }

    /// Sends an encoded chat message to `to`: on this reactor directly, on
    /// another reactor through its inbox, elsewhere through the bus.
    fn route(&mut self, from: Token, to: &str, payload: &[u8]) {
        match self.hub.directory.lookup(to) {
            Some(at) if at.reactor == self.id => self.deliver(at.token, payload),
            Some(at) => self.hub.send(at, Command::Deliver { token: at.token, payload: payload.into() }),
            None => {
                let at = self.conn_ref(split_token(from).0);
                match self.bus.publish(to, payload, at) {
                    Published::Sent => {}
                    Published::NoRecipient => {
                        self.stats().undeliverable.fetch_add(1, Relaxed);
                        self.reply_failure(from, Failure::NotOnline(to));
                    }
                    Published::Dropped => self.reply_failure(from, Failure::LinkDown),
                }
            }
        }
    }

    /// Writes a chat message to a logged-in connection of this reactor.
    pub(crate) fn deliver(&mut self, token: Token, payload: &[u8]) {
        if self.conn_mut(token).is_some_and(|c| c.speaker().is_some()) {
            self.queue_frame(token, op::TEXT, payload);
        } else {
            self.stats().undeliverable.fetch_add(1, Relaxed);
        }
    }

    /// Tells a sender what became of a message the bus took and could not deliver.
    pub(crate) fn undelivered(&mut self, token: Token, why: &Undelivered) {
        match why {
            Undelivered::NotOnline(name) => self.reply_failure(token, Failure::NotOnline(name)),
        }
    }

    fn reply_failure(&mut self, token: Token, failure: Failure<'_>) {
        self.reply_error(token, &failure.to_string());
    }

    fn reply_error(&mut self, token: Token, message: &str) {
        let mut encoded = mem::take(&mut self.encode);
        encoded.clear();
        protocol::encode_error(&mut encoded, message);
        self.queue_frame(token, op::TEXT, &encoded);
        self.encode = encoded;
    }
}
