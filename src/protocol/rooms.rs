//! What members of a room receive, and the answers about who is where, in
//! the seed's shape: `MessageType`, `Data`, `Reciever` (the room, or the
//! names asked about), `Sender`, with an extra `Count` where a list may be
//! cut short. Lists of names are comma-separated in `Data` (the name profile
//! refuses commas in names, so a list reads back unambiguously).

use super::push_json_string;

/// The `MessageType`s a room's members receive: a message, a join, a leave.
pub const ROOM_KINDS: [&str; 3] = [super::ROOM, super::JOIN, super::LEAVE];

/// Appends what every member of `room` receives: a `roommsg` (a message in
/// `data`), or a `joinmsg`/`leavemsg` notice (`data` empty), from `from`.
pub fn encode_room(out: &mut Vec<u8>, kind: &str, data: &str, room: &str, from: &str) {
    out.extend_from_slice(b"{\"MessageType\":");
    push_json_string(out, kind);
    out.extend_from_slice(b",\"Data\":");
    push_json_string(out, data);
    out.extend_from_slice(b",\"Reciever\":");
    push_json_string(out, room);
    out.extend_from_slice(b",\"Sender\":");
    push_json_string(out, from);
    out.extend_from_slice(b"}\n");
}

/// Appends the answer to a `presencemsg` that asked about `asked`: `Data`
/// lists those of them online anywhere in the cluster, in the order asked.
pub fn encode_presence<'a>(out: &mut Vec<u8>, asked: &str, online: impl IntoIterator<Item = &'a str>) {
    out.extend_from_slice(b"{\"MessageType\":\"presencemsg\",\"Data\":");
    push_list(out, online);
    out.extend_from_slice(b",\"Reciever\":");
    push_json_string(out, asked);
    out.extend_from_slice(b"}\n");
}

/// Appends the answer to a `membersmsg`: `Data` lists members of `room`
/// (all of them, or as many as a reply holds), `Count` how many there are.
pub fn encode_members<'a>(out: &mut Vec<u8>, room: &str, listed: impl IntoIterator<Item = &'a str>, count: u64) {
    out.extend_from_slice(b"{\"MessageType\":\"membersmsg\",\"Data\":");
    push_list(out, listed);
    out.extend_from_slice(b",\"Reciever\":");
    push_json_string(out, room);
    out.extend_from_slice(b",\"Count\":");
    out.extend_from_slice(count.to_string().as_bytes());
    out.extend_from_slice(b"}\n");
}

/// Names joined by commas, as one JSON string.
fn push_list<'a>(out: &mut Vec<u8>, names: impl IntoIterator<Item = &'a str>) {
    let mut joined = String::new();
    for name in names {
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(name);
    }
    push_json_string(out, &joined);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(encode: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        encode(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn room_messages_have_the_seeds_shape() {
        assert_eq!(
            text(|o| encode_room(o, "roommsg", "hi <all>", "lobby", "alice")),
            "{\"MessageType\":\"roommsg\",\"Data\":\"hi \\u003call\\u003e\",\"Reciever\":\"lobby\",\"Sender\":\"alice\"}\n"
        );
        assert_eq!(
            text(|o| encode_room(o, "joinmsg", "", "lobby", "bob")),
            "{\"MessageType\":\"joinmsg\",\"Data\":\"\",\"Reciever\":\"lobby\",\"Sender\":\"bob\"}\n"
        );
    }

    #[test]
    fn lists_are_comma_separated() {
        assert_eq!(
            text(|o| encode_presence(o, "alice,bob,carol", ["alice", "carol"])),
            "{\"MessageType\":\"presencemsg\",\"Data\":\"alice,carol\",\"Reciever\":\"alice,bob,carol\"}\n"
        );
        assert_eq!(
            text(|o| encode_members(o, "lobby", [], 0)),
            "{\"MessageType\":\"membersmsg\",\"Data\":\"\",\"Reciever\":\"lobby\",\"Count\":0}\n"
        );
        let v: serde_json::Value = serde_json::from_str(&text(|o| encode_members(o, "l", ["a", "b"], 7))).unwrap();
        assert_eq!((v["Data"].as_str(), v["Count"].as_u64()), (Some("a,b"), Some(7)));
    }
}
