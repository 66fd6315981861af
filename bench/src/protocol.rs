//! Which chat protocol the targets speak: the seed's JSON messages in WebSocket text
//! frames (`crate::message`), or Socket.IO (Engine.IO v4 over WebSocket,
//! `crate::socketio`) with events that carry the same fields. Either way the phases, the
//! loss accounting and the latency figures are the same; only the bytes differ.

use serde::{Deserialize, Serialize};

/// `--protocol`: how the load generator talks to the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolKind {
    /// The seed's protocol: `{"MessageType":"loginmsg",...}` and `chatmsg` text frames.
    Seed,
    /// Socket.IO v5 over Engine.IO v4 on a WebSocket: login an event with an ack, chat an
    /// event delivered to the recipient.
    Socketio,
}

/// What a Socket.IO server calls things: its event names and the payload's field names.
/// Defaults are the seed's names, so a server that keeps the seed's semantics needs no
/// flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SioNames {
    /// The event that logs a user in; answered with an ack.
    pub login_event: String,
    /// The event that carries a chat message, both ways.
    pub chat_event: String,
    /// The field that names the message's type (`loginmsg`, `chatmsg`); empty: none.
    pub type_field: String,
    pub data_field: String,
    pub recipient_field: String,
    pub sender_field: String,
}

impl SioNames {
    /// Refuses names that cannot be written into JSON as they are.
    ///
    /// # Errors
    /// An empty name (but the type field, which may be left out), or one with a quote,
    /// a backslash or a control character; the message names the flag.
    pub fn check(&self) -> Result<(), String> {
        let names = [
            ("--sio-login-event", &self.login_event, false),
            ("--sio-chat-event", &self.chat_event, false),
            ("--sio-type-field", &self.type_field, true),
            ("--sio-data-field", &self.data_field, false),
            ("--sio-recipient-field", &self.recipient_field, false),
            ("--sio-sender-field", &self.sender_field, false),
        ];
        for (flag, name, may_be_empty) in names {
            if name.is_empty() && !may_be_empty {
                return Err(format!("{flag} must not be empty"));
            }
            if name.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
                return Err(format!("{flag} {name:?}: quotes, backslashes and control characters are not allowed"));
            }
        }
        Ok(())
    }
}

/// The protocol of a run, with what it needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    Seed,
    SocketIo(SioNames),
}

impl Protocol {
    pub fn kind(&self) -> ProtocolKind {
        match self {
            Protocol::Seed => ProtocolKind::Seed,
            Protocol::SocketIo(_) => ProtocolKind::Socketio,
        }
    }

    /// The Socket.IO names, if that is the protocol.
    pub fn sio(&self) -> Option<&SioNames> {
        match self {
            Protocol::Seed => None,
            Protocol::SocketIo(names) => Some(names),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_names() -> SioNames {
        SioNames {
            login_event: "loginmsg".into(),
            chat_event: "chatmsg".into(),
            type_field: "MessageType".into(),
            data_field: "Data".into(),
            recipient_field: "Reciever".into(),
            sender_field: "Sender".into(),
        }
    }

    #[test]
    fn names_that_json_cannot_hold_verbatim_are_refused_by_flag() {
        assert_eq!(seed_names().check(), Ok(()));
        let no_type = SioNames { type_field: String::new(), ..seed_names() };
        assert_eq!(no_type.check(), Ok(()));
        let empty = SioNames { chat_event: String::new(), ..seed_names() };
        assert_eq!(empty.check().unwrap_err(), "--sio-chat-event must not be empty");
        let quoted = SioNames { data_field: "a\"b".into(), ..seed_names() };
        assert!(quoted.check().unwrap_err().starts_with("--sio-data-field"));
    }
}
