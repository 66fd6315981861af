//! Control messages on a user's channel: what the server API sends the node
//! that holds a user, through the same channel (and the same PUBLISH path)
//! as the user's chat messages, so it reaches that node wherever it is and
//! Redis's receiver count says whether any node holds the user.
//!
//! One shape so far, `{"Control":"disconnect","User":"KEY"}` + "\n": close
//! the user's connection (the node closes it with
//! [`crate::codec::close::DISCONNECTED`]). No chat message starts with
//! `{"Control"`, so it is only looked at once the chat check failed: chat
//! delivery pays nothing for it. Like chat messages it is trusted as far as
//! Redis is private to the cluster.

const DISCONNECT_HEAD: &[u8] = b"{\"Control\":\"disconnect\",\"User\":";

/// The disconnect message for the user whose key is `key`.
pub fn encode_disconnect(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(DISCONNECT_HEAD.len() + key.len() + 4);
    out.extend_from_slice(DISCONNECT_HEAD);
    crate::protocol::push_json_string(&mut out, key);
    out.extend_from_slice(b"}\n");
    out
}

/// Whether `payload` is the disconnect message for `name` (a channel's key).
pub fn is_disconnect_for(payload: &[u8], name: &str) -> bool {
    payload.starts_with(DISCONNECT_HEAD) && payload == encode_disconnect(name).as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disconnect_names_its_user_only() {
        let message = encode_disconnect("bob");
        assert_eq!(message, b"{\"Control\":\"disconnect\",\"User\":\"bob\"}\n");
        assert!(is_disconnect_for(&message, "bob"));
        assert!(!is_disconnect_for(&message, "alice"));
        assert!(!is_disconnect_for(&message[..message.len() - 1], "bob"));
        assert!(is_disconnect_for(&encode_disconnect("a\"b"), "a\"b"));
        let mut chat = Vec::new();
        crate::protocol::encode_chat(&mut chat, "hi", "bob", "alice");
        assert!(!is_disconnect_for(&chat, "bob"));
    }
}
