//! The bus's pub/sub channels, and the PUBLISH commands reactors encode for
//! them: whole commands sized exactly, so the publisher thread only copies
//! bytes.

use compact_str::CompactString;

use super::cluster;
use super::resp;
use crate::protocol;

/// The channel of the seed's broadcast scheme.
pub const BROADCAST_CHANNEL: &[u8] = b"msg";
/// Per-user channels are `sb:u:{NAME}`: the braces make NAME the hash tag,
/// so in Redis Cluster a user's channel and registry key share a slot.
const USER_CHANNEL_PREFIX: &[u8] = b"sb:u:{";
const USER_CHANNEL_SUFFIX: &[u8] = b"}";
/// Room channels are `sb:r:{KEY}` (the room's key as the hash tag: its
/// channel and its member sets share a slot).
const ROOM_CHANNEL_PREFIX: &[u8] = b"sb:r:{";

/// `PUBLISH sb:u:{NAME} PAYLOAD` (SPUBLISH in Redis Cluster), sized exactly,
/// and the channel's slot (0 outside Redis Cluster).
pub fn encode_user_publish(name: &[u8], payload: &[u8], cluster: bool) -> (Box<[u8]>, u16) {
    let verb: &[u8] = if cluster { b"SPUBLISH" } else { b"PUBLISH" };
    let channel_len = USER_CHANNEL_PREFIX.len() + name.len() + USER_CHANNEL_SUFFIX.len();
    let mut command = Vec::with_capacity(
        resp::header_len(3) + resp::bulk_len(verb.len()) + resp::bulk_len(channel_len) + resp::bulk_len(payload.len()),
    );
    resp::push_header(&mut command, b'*', 3);
    resp::push_bulk(&mut command, verb);
    resp::push_header(&mut command, b'$', channel_len);
    let channel_at = command.len();
    command.extend_from_slice(USER_CHANNEL_PREFIX);
    command.extend_from_slice(name);
    command.extend_from_slice(USER_CHANNEL_SUFFIX);
    let slot = if cluster { cluster::slot(&command[channel_at..]) } else { 0 };
    command.extend_from_slice(b"\r\n");
    resp::push_bulk(&mut command, payload);
    (command.into_boxed_slice(), slot)
}

/// `PUBLISH msg JSON`: the seed's bytes, without the trailing newline a
/// recipient gets, and the channel's slot (0 outside Redis Cluster).
pub fn encode_broadcast_publish(payload: &[u8], cluster: bool) -> (Box<[u8]>, u16) {
    let json = payload.strip_suffix(b"\n").unwrap_or(payload);
    let mut command = Vec::with_capacity(
        resp::header_len(3) + resp::bulk_len(7) + resp::bulk_len(BROADCAST_CHANNEL.len()) + resp::bulk_len(json.len()),
    );
    resp::push_command(&mut command, &[b"PUBLISH", BROADCAST_CHANNEL, json]);
    let slot = if cluster { cluster::slot(BROADCAST_CHANNEL) } else { 0 };
    (command.into_boxed_slice(), slot)
}

/// The length of `sb:u:{NAME}` for a name of `name_len` bytes.
pub fn user_channel_len(name_len: usize) -> usize {
    USER_CHANNEL_PREFIX.len() + name_len + USER_CHANNEL_SUFFIX.len()
}

/// Appends `sb:u:{NAME}` for `name` as a bulk string, with no copy on the way.
pub fn push_user_channel(out: &mut Vec<u8>, name: &[u8]) {
    push_tagged_channel(out, USER_CHANNEL_PREFIX, name);
}

/// The length of `sb:r:{KEY}` for a key of `key_len` bytes.
pub fn room_channel_len(key_len: usize) -> usize {
    ROOM_CHANNEL_PREFIX.len() + key_len + USER_CHANNEL_SUFFIX.len()
}

/// Appends `sb:r:{KEY}` for `key` as a bulk string, with no copy on the way.
pub fn push_room_channel(out: &mut Vec<u8>, key: &[u8]) {
    push_tagged_channel(out, ROOM_CHANNEL_PREFIX, key);
}

/// Appends `PREFIX TAG }` as a bulk string.
fn push_tagged_channel(out: &mut Vec<u8>, prefix: &[u8], tag: &[u8]) {
    resp::push_header(out, b'$', prefix.len() + tag.len() + USER_CHANNEL_SUFFIX.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(tag);
    out.extend_from_slice(USER_CHANNEL_SUFFIX);
    out.extend_from_slice(b"\r\n");
}

/// `PUBLISH sb:r:{KEY} ENVELOPE` (SPUBLISH in Redis Cluster) for a room
/// message: the publishing node's id, a newline, then the JSON its members
/// get, so that the node does not deliver its own message twice. With the
/// channel's slot.
pub fn encode_room_publish(key: &str, node: &str, payload: &[u8], cluster: bool) -> (Box<[u8]>, u16) {
    let verb: &[u8] = if cluster { b"SPUBLISH" } else { b"PUBLISH" };
    let channel = room_channel(key);
    let mut envelope = Vec::with_capacity(node.len() + 1 + payload.len());
    envelope.extend_from_slice(node.as_bytes());
    envelope.push(b'\n');
    envelope.extend_from_slice(payload);
    let mut command = Vec::with_capacity(
        resp::header_len(3)
            + resp::bulk_len(verb.len())
            + resp::bulk_len(channel.len())
            + resp::bulk_len(envelope.len()),
    );
    resp::push_command(&mut command, &[verb, &channel, &envelope]);
    let slot = if cluster { cluster::slot(&channel) } else { 0 };
    (command.into_boxed_slice(), slot)
}

/// `sb:r:{KEY}` for room `key`.
pub fn room_channel(key: &str) -> Vec<u8> {
    let mut channel = Vec::with_capacity(ROOM_CHANNEL_PREFIX.len() + key.len() + USER_CHANNEL_SUFFIX.len());
    channel.extend_from_slice(ROOM_CHANNEL_PREFIX);
    channel.extend_from_slice(key.as_bytes());
    channel.extend_from_slice(USER_CHANNEL_SUFFIX);
    channel
}

/// The room KEY of `sb:r:{KEY}`, when it is a room channel and UTF-8.
pub fn room_of_channel(channel: &[u8]) -> Option<&str> {
    let key = channel.strip_prefix(ROOM_CHANNEL_PREFIX)?.strip_suffix(USER_CHANNEL_SUFFIX)?;
    std::str::from_utf8(key).ok()
}

/// A room message's envelope split: the publishing node, and the JSON.
pub fn open_envelope(payload: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = payload.iter().position(|&b| b == b'\n')?;
    Some((&payload[..at], &payload[at + 1..]))
}

/// `sb:u:{NAME}` for `name`.
pub fn user_channel(name: &[u8]) -> Vec<u8> {
    let mut channel = Vec::with_capacity(USER_CHANNEL_PREFIX.len() + name.len() + USER_CHANNEL_SUFFIX.len());
    channel.extend_from_slice(USER_CHANNEL_PREFIX);
    channel.extend_from_slice(name);
    channel.extend_from_slice(USER_CHANNEL_SUFFIX);
    channel
}

/// NAME from `sb:u:{NAME}`.
pub fn user_of_channel(channel: &[u8]) -> Option<&[u8]> {
    channel.strip_prefix(USER_CHANNEL_PREFIX)?.strip_suffix(USER_CHANNEL_SUFFIX)
}

/// The user NAME of `sb:u:{NAME}`, when it is a user channel and UTF-8.
pub fn user_name_of_channel(channel: &[u8]) -> Option<&str> {
    user_of_channel(channel).and_then(|name| std::str::from_utf8(name).ok())
}

/// The channel a PUBLISH/SPUBLISH command names, or the history script's
/// (EVALSHA SHA NUMKEYS KEYS... SIZE TTL CHANNEL ...).
fn channel_of<'a>(items: &[resp::Frame<'a>]) -> Option<&'a [u8]> {
    if items.first()?.bytes()? == b"EVALSHA" {
        let keys = usize::try_from(std::str::from_utf8(items.get(2)?.bytes()?).ok()?.parse::<u32>().ok()?).ok()?;
        return items.get(3 + keys + 2)?.bytes();
    }
    items.get(1)?.bytes()
}

/// The user name inside a PUBLISH/SPUBLISH command this bus encoded.
pub fn recipient_of_command(command: &[u8]) -> Option<&[u8]> {
    let (frame, _) = resp::parse(command).ok()??;
    user_of_channel(channel_of(frame.items()?)?)
}

/// The recipient of the chat message inside a PUBLISH/SPUBLISH command this
/// bus encoded, either routing: from the channel, or from the payload on `msg`
/// (a failure path: the payload is parsed).
pub fn recipient_of_any_command(command: &[u8]) -> Option<CompactString> {
    let (frame, _) = resp::parse(command).ok()??;
    let items = frame.items()?;
    let channel = channel_of(items)?;
    if channel == BROADCAST_CHANNEL {
        return protocol::recipient_of(items.get(2)?.bytes()?).map(CompactString::from);
    }
    match room_of_channel(channel) {
        Some(room) => Some(CompactString::from(room)),
        None => user_of_channel(channel).map(CompactString::from_utf8_lossy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_publish_is_exact_resp_with_its_slot() {
        let payload = b"{\"MessageType\":\"chatmsg\"}\n";
        let (command, slot) = encode_user_publish(b"bob", payload, false);
        let mut expected = Vec::new();
        resp::push_command(&mut expected, &[b"PUBLISH", b"sb:u:{bob}", payload]);
        assert_eq!(&command[..], &expected[..]);
        assert_eq!(command.len(), expected.len());
        assert_eq!(slot, 0);
        let (command, slot) = encode_user_publish(b"bob", payload, true);
        assert!(command.starts_with(b"*3\r\n$8\r\nSPUBLISH\r\n"));
        assert_eq!(slot, cluster::slot(b"bob"));
        assert_eq!(recipient_of_command(&command), Some(&b"bob"[..]));
        assert_eq!(recipient_of_any_command(&command).as_deref(), Some("bob"));
        assert_eq!(user_of_channel(&user_channel(b"a}b")), Some(&b"a}b"[..]));
        assert_eq!(user_name_of_channel(b"sb:u:{bob}"), Some("bob"));
        assert_eq!(user_name_of_channel(b"msg"), None);
    }

    #[test]
    fn a_room_publish_carries_its_node_and_the_members_json() {
        let (command, slot) = encode_room_publish("lobby", "node-1", b"{\"x\":1}\n", false);
        assert_eq!(&command[..], b"*3\r\n$7\r\nPUBLISH\r\n$12\r\nsb:r:{lobby}\r\n$15\r\nnode-1\n{\"x\":1}\n\r\n");
        assert_eq!(slot, 0);
        let (_, slot) = encode_room_publish("lobby", "n", b"{}", true);
        assert_eq!(slot, cluster::slot(b"lobby"));
        assert_eq!(room_of_channel(b"sb:r:{lobby}"), Some("lobby"));
        assert_eq!(room_of_channel(b"sb:u:{lobby}"), None);
        assert_eq!(open_envelope(b"node-1\n{\"x\":1}\n"), Some((&b"node-1"[..], &b"{\"x\":1}\n"[..])));
        assert_eq!(open_envelope(b"no newline"), None);
    }

    #[test]
    fn a_broadcast_publish_carries_the_seed_bytes() {
        let (command, slot) = encode_broadcast_publish(b"{\"a\":1}\n", false);
        assert_eq!(&command[..], b"*3\r\n$7\r\nPUBLISH\r\n$3\r\nmsg\r\n$7\r\n{\"a\":1}\r\n");
        assert_eq!(slot, 0);
        let mut chat = Vec::new();
        protocol::encode_chat(&mut chat, "hi", "bob", "alice");
        let (command, _) = encode_broadcast_publish(&chat, false);
        assert_eq!(recipient_of_any_command(&command).as_deref(), Some("bob"));
        let (_, slot) = encode_broadcast_publish(b"{}", true);
        assert_eq!(slot, cluster::slot(BROADCAST_CHANNEL));
    }
}
