//! Socket.IO (protocol v5) over Engine.IO v4 on a WebSocket, as much as a load generator
//! needs: every text frame is one Engine.IO packet, a digit then its data: `0` open (the
//! session's JSON with `pingInterval` and `pingTimeout`), `1` close, `2` ping (answered
//! with `3` pong), `4` message, which carries one Socket.IO packet: `0` connect (the
//! client sends `40`, the server answers `40{"sid":...}`), `1` disconnect, `2` event
//! (`42["name",{...}]`, `42N[...]` when it asks for ack `N`), `3` ack (`43N[...]`), `4`
//! connect error. Only the default namespace; binary packets are refused.
//!
//! Events carry the seed's fields under the names `SioNames` gives; chat events are read
//! without copying their strings (most of what the load generator receives).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::message::push_decimal;
use crate::protocol::SioNames;

/// Engine.IO message + Socket.IO connect, default namespace: sent once the server's open
/// packet arrives.
pub const CONNECT: &[u8] = b"40";
/// Engine.IO pong: the answer to the server's ping.
pub const PONG: &[u8] = b"3";
/// The ack id of the login event: the only ack a connection asks for, once per socket.
pub const LOGIN_ACK_ID: u64 = 0;

/// One server packet, as the load generator acts on it.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Engine.IO open: the session is up and these are its heartbeat settings.
    Open { ping_interval_ms: u64, ping_timeout_ms: u64 },
    /// Engine.IO ping: the server's heartbeat.
    Ping,
    /// Engine.IO close: the server ends the session.
    Close,
    /// Engine.IO pong or noop: nothing to do.
    Nothing,
    /// Socket.IO connect answer for the default namespace.
    Connected,
    /// Socket.IO connect error: why the server refused the namespace.
    ConnectError(String),
    /// Socket.IO disconnect: the server dropped the client from the namespace.
    Disconnect,
    /// A chat event delivered to this connection.
    Chat { data: Cow<'a, str>, reciever: Cow<'a, str>, sender: Cow<'a, str> },
    /// An event other than the chat event.
    OtherEvent(String),
    /// The answer to the event that asked for ack `id`.
    Ack { id: u64, reply: AckReply },
    /// Bytes that are not a packet the load generator understands, and why.
    Unexpected(&'static str),
}

/// What an ack says about the event it answers.
#[derive(Debug, PartialEq, Eq)]
pub enum AckReply {
    /// Done (any reply but a refusal).
    Ok,
    /// `{"ok":false,"error":"..."}`, or the seed's `"User already exists"` as a string.
    Refused(String),
}

/// Appends the login event, asking for ack [`LOGIN_ACK_ID`]:
/// `420["loginmsg",{"MessageType":"loginmsg","Sender":"u17"}]`.
pub fn write_login(out: &mut Vec<u8>, names: &SioNames, prefix: &str, index: u32) {
    out.extend_from_slice(b"42");
    push_decimal(out, LOGIN_ACK_ID);
    open_event(out, &names.login_event, &names.type_field, "loginmsg");
    push_key(out, &names.sender_field);
    push_name(out, prefix, index);
    out.extend_from_slice(b"\"}]");
}

/// Appends a chat event from `sender` to `recipient` carrying `data` (already JSON-safe),
/// asking for no ack (as the seed's protocol has no reply to a chat message):
/// `42["chatmsg",{"MessageType":"chatmsg","Data":"...","Reciever":"u9","Sender":"u42"}]`.
pub fn write_chat(out: &mut Vec<u8>, names: &SioNames, prefix: &str, sender: u32, recipient: u32, data: &[u8]) {
    out.extend_from_slice(b"42");
    open_event(out, &names.chat_event, &names.type_field, "chatmsg");
    push_key(out, &names.data_field);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\",");
    push_key(out, &names.recipient_field);
    push_name(out, prefix, recipient);
    out.extend_from_slice(b"\",");
    push_key(out, &names.sender_field);
    push_name(out, prefix, sender);
    out.extend_from_slice(b"\"}]");
}

/// `["event",{` and the type field when there is one.
fn open_event(out: &mut Vec<u8>, event: &str, type_field: &str, kind: &str) {
    out.extend_from_slice(b"[\"");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\",{");
    if !type_field.is_empty() {
        push_key(out, type_field);
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",");
    }
}

/// `"key":"` (the value and its closing quote follow).
fn push_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":\"");
}

fn push_name(out: &mut Vec<u8>, prefix: &str, index: u32) {
    out.extend_from_slice(prefix.as_bytes());
    push_decimal(out, index.into());
}

/// Reads one server text frame.
pub fn parse<'p>(text: &'p [u8], names: &SioNames) -> Packet<'p> {
    let Some((&kind, rest)) = text.split_first() else {
        return Packet::Unexpected("an empty frame is no Engine.IO packet");
    };
    match kind {
        b'0' => parse_open(rest),
        b'1' => Packet::Close,
        b'2' => Packet::Ping,
        b'3' | b'6' => Packet::Nothing,
        b'4' => parse_socket(rest, names),
        _ => Packet::Unexpected("not an Engine.IO packet (it starts with a digit 0-6)"),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenPacket {
    ping_interval: u64,
    ping_timeout: u64,
}

fn parse_open(json: &[u8]) -> Packet<'_> {
    match serde_json::from_slice::<OpenPacket>(json) {
        Ok(open) => Packet::Open { ping_interval_ms: open.ping_interval, ping_timeout_ms: open.ping_timeout },
        Err(_) => Packet::Unexpected("an Engine.IO open packet without pingInterval and pingTimeout"),
    }
}

/// A Socket.IO packet: its type, then `/namespace,` if not the default, then an ack id,
/// then its JSON.
fn parse_socket<'p>(packet: &'p [u8], names: &SioNames) -> Packet<'p> {
    let Some((&kind, mut rest)) = packet.split_first() else {
        return Packet::Unexpected("an empty Engine.IO message");
    };
    if rest.first() == Some(&b'/') {
        let end = rest.iter().position(|&b| b == b',').unwrap_or(rest.len());
        if &rest[..end] != b"/" {
            return Packet::Unexpected("a packet for a namespace other than the default one");
        }
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let ack_id = std::str::from_utf8(&rest[..digits]).ok().and_then(|d| d.parse::<u64>().ok());
    let json = &rest[digits..];
    match kind {
        b'0' => Packet::Connected,
        b'1' => Packet::Disconnect,
        b'2' => parse_event(json, names),
        b'3' => match ack_id {
            Some(id) => Packet::Ack { id, reply: parse_ack(json) },
            None => Packet::Unexpected("an ack without an ack id"),
        },
        b'4' => Packet::ConnectError(connect_error(json)),
        b'5' | b'6' => Packet::Unexpected("a binary Socket.IO packet (not supported)"),
        _ => Packet::Unexpected("not a Socket.IO packet (it starts with a digit 0-6)"),
    }
}

fn parse_event<'p>(json: &'p [u8], names: &SioNames) -> Packet<'p> {
    let mut reader = serde_json::Deserializer::from_slice(json);
    let seed = EventSeed { names };
    match seed.deserialize(&mut reader).and_then(|event| reader.end().map(|()| event)) {
        Ok(Event::Chat { data, reciever, sender }) => Packet::Chat { data, reciever, sender },
        Ok(Event::Other(name)) => Packet::OtherEvent(name.into_owned()),
        Err(_) => Packet::Unexpected("an event that is not a JSON array starting with its name"),
    }
}

fn parse_ack(json: &[u8]) -> AckReply {
    let args: Vec<serde_json::Value> = serde_json::from_slice(json).unwrap_or_default();
    match args.first() {
        Some(serde_json::Value::Object(reply)) if reply.get("ok") == Some(&serde_json::Value::Bool(false)) => {
            let error = reply.get("error").and_then(|e| e.as_str()).unwrap_or("refused without an error");
            AckReply::Refused(error.to_string())
        }
        Some(serde_json::Value::String(text)) if text == "User already exists" => AckReply::Refused(text.clone()),
        _ => AckReply::Ok,
    }
}

/// The message of a connect error, `{"message":"..."}`, or its raw text.
fn connect_error(json: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Refusal {
        message: String,
    }
    serde_json::from_slice::<Refusal>(json)
        .map(|r| r.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(json).chars().take(120).collect())
}

/// An event's array, read only as far as the load generator needs.
enum Event<'p> {
    Chat { data: Cow<'p, str>, reciever: Cow<'p, str>, sender: Cow<'p, str> },
    Other(Cow<'p, str>),
}

/// A JSON string, borrowed from the frame when it has no escapes.
struct Text<'p>(Cow<'p, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Reads `["name", {fields}, ...]`: the fields only when `name` is the chat event.
struct EventSeed<'n> {
    names: &'n SioNames,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = Event<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = Event<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Text(name) = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
        let event = if name == self.names.chat_event.as_str() {
            let fields = FieldsSeed { names: self.names };
            let (data, reciever, sender) =
                seq.next_element_seed(fields)?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
            Event::Chat { data, reciever, sender }
        } else {
            Event::Other(name)
        };
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(event)
    }
}

/// Reads a chat payload object: data, recipient and sender by their configured names;
/// others are skipped, missing ones are empty.
struct FieldsSeed<'n> {
    names: &'n SioNames,
}

type Fields<'p> = (Cow<'p, str>, Cow<'p, str>, Cow<'p, str>);

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_> {
    type Value = Fields<'de>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_> {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a chat message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut data, mut reciever, mut sender) = (Cow::Borrowed(""), Cow::Borrowed(""), Cow::Borrowed(""));
        while let Some(Text(key)) = map.next_key()? {
            let into = if key == self.names.data_field.as_str() {
                &mut data
            } else if key == self.names.recipient_field.as_str() {
                &mut reciever
            } else if key == self.names.sender_field.as_str() {
                &mut sender
            } else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            *into = map.next_value::<Text<'de>>()?.0;
        }
        Ok((data, reciever, sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> SioNames {
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
    fn login_and_chat_events_are_written_as_socketio_sends_them() {
        let mut out = Vec::new();
        write_login(&mut out, &names(), "u", 17);
        assert_eq!(out, br#"420["loginmsg",{"MessageType":"loginmsg","Sender":"u17"}]"#);
        out.clear();
        write_chat(&mut out, &names(), "u", 42, 9, b"t=1;");
        assert_eq!(out, br#"42["chatmsg",{"MessageType":"chatmsg","Data":"t=1;","Reciever":"u9","Sender":"u42"}]"#);
        let renamed =
            SioNames { chat_event: "say".into(), type_field: String::new(), data_field: "text".into(), ..names() };
        out.clear();
        write_chat(&mut out, &renamed, "u", 1, 2, b"x");
        assert_eq!(out, br#"42["say",{"text":"x","Reciever":"u2","Sender":"u1"}]"#);
        // What the load generator writes, it reads back.
        match parse(&out, &renamed) {
            Packet::Chat { data, reciever, sender } => assert_eq!((&*data, &*reciever, &*sender), ("x", "u2", "u1")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn engineio_packets_are_recognised() {
        let open = br#"0{"sid":"x","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(parse(open, &names()), Packet::Open { ping_interval_ms: 25_000, ping_timeout_ms: 20_000 });
        assert!(matches!(parse(br#"0{"sid":"x"}"#, &names()), Packet::Unexpected(_)));
        assert_eq!(parse(b"2", &names()), Packet::Ping);
        assert_eq!(parse(b"1", &names()), Packet::Close);
        assert_eq!(parse(b"6", &names()), Packet::Nothing);
        assert_eq!(parse(br#"40{"sid":"abc"}"#, &names()), Packet::Connected);
        assert_eq!(parse(br#"40/,{"sid":"abc"}"#, &names()), Packet::Connected);
        assert!(matches!(parse(br#"40/admin,{"sid":"abc"}"#, &names()), Packet::Unexpected(_)));
        assert_eq!(
            parse(br#"44{"message":"Invalid namespace"}"#, &names()),
            Packet::ConnectError("Invalid namespace".into())
        );
        assert_eq!(parse(b"41", &names()), Packet::Disconnect);
        assert!(matches!(parse(b"451-[\"x\",{\"_placeholder\":true,\"num\":0}]", &names()), Packet::Unexpected(_)));
        assert!(matches!(parse(b"", &names()), Packet::Unexpected(_)));
        assert!(matches!(parse(b"hello", &names()), Packet::Unexpected(_)));
    }

    #[test]
    fn chat_events_borrow_plain_strings_and_unescape_others() {
        let text = br#"42["chatmsg",{"MessageType":"chatmsg","Data":"t=1;l=0;s=2:3;","Reciever":"u9","Sender":"u2"}]"#;
        match parse(text, &names()) {
            Packet::Chat { data, reciever, sender } => {
                assert!(matches!(data, Cow::Borrowed("t=1;l=0;s=2:3;")));
                assert_eq!((&*reciever, &*sender), ("u9", "u2"));
            }
            other => panic!("{other:?}"),
        }
        let escaped = br#"42["chatmsg",{"Sender":"u\u0032","Data":"a\"b","Extra":[1,{"x":2}],"Reciever":"u9"},"more"]"#;
        match parse(escaped, &names()) {
            Packet::Chat { data, reciever, sender } => assert_eq!((&*data, &*reciever, &*sender), ("a\"b", "u9", "u2")),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse(br#"42["message",{"Data":"x"}]"#, &names()), Packet::OtherEvent("message".into()));
        assert!(matches!(parse(br#"42{"Data":"x"}"#, &names()), Packet::Unexpected(_)));
        assert!(matches!(parse(br#"42["chatmsg",{"Data":1}]"#, &names()), Packet::Unexpected(_)));
        assert!(matches!(parse(br#"42["chatmsg",{}]]"#, &names()), Packet::Unexpected(_)));
    }

    #[test]
    fn acks_confirm_unless_they_refuse() {
        assert_eq!(parse(br#"430[{"ok":true}]"#, &names()), Packet::Ack { id: 0, reply: AckReply::Ok });
        assert_eq!(parse(b"4312[]", &names()), Packet::Ack { id: 12, reply: AckReply::Ok });
        let exists = br#"430[{"ok":false,"error":"User already exists"}]"#;
        assert_eq!(
            parse(exists, &names()),
            Packet::Ack { id: 0, reply: AckReply::Refused("User already exists".into()) }
        );
        let seed_style = br#"430["User already exists"]"#;
        assert_eq!(
            parse(seed_style, &names()),
            Packet::Ack { id: 0, reply: AckReply::Refused("User already exists".into()) }
        );
        assert!(matches!(parse(br#"43[{"ok":true}]"#, &names()), Packet::Unexpected(_)));
    }
}
