//! Which of a reactor's connections is in which room, kept both ways: a
//! room's members here (iterated for every room message, so a dense set),
//! and a connection's rooms (for its limit and its leaving).

use std::collections::HashMap;

use compact_str::CompactString;
use indexmap::IndexSet;
use mio::Token;

/// The rooms of one reactor's connections.
#[derive(Default)]
pub(super) struct LocalRooms {
    /// Members on this reactor of each room (by key).
    members: HashMap<CompactString, IndexSet<Token>>,
    /// Rooms (keys) each connection is in, for its limit and its leaving.
    by_conn: HashMap<Token, Vec<CompactString>>,
}

impl LocalRooms {
    pub fn is_in(&self, token: Token, key: &str) -> bool {
        self.by_conn.get(&token).is_some_and(|rooms| rooms.iter().any(|r| r == key))
    }

    pub fn count(&self, token: Token) -> usize {
        self.by_conn.get(&token).map_or(0, Vec::len)
    }

    pub fn add(&mut self, token: Token, key: &str) {
        self.members.entry(CompactString::from(key)).or_default().insert(token);
        self.by_conn.entry(token).or_default().push(CompactString::from(key));
    }

    pub fn remove(&mut self, token: Token, key: &str) {
        if let Some(members) = self.members.get_mut(key) {
            members.swap_remove(&token);
            if members.is_empty() {
                self.members.remove(key);
            }
        }
        if let Some(rooms) = self.by_conn.get_mut(&token) {
            rooms.retain(|r| r != key);
            if rooms.is_empty() {
                self.by_conn.remove(&token);
            }
        }
    }

    /// The rooms (keys) `token` is in.
    pub fn rooms_of(&self, token: Token) -> Vec<CompactString> {
        self.by_conn.get(&token).cloned().unwrap_or_default()
    }

    /// Copies the members of room `key` on this reactor into `out`.
    pub fn members_into(&self, key: &str, out: &mut Vec<Token>) {
        out.clear();
        if let Some(members) = self.members.get(key) {
            out.extend(members.iter().copied());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_is_kept_both_ways() {
        let mut rooms = LocalRooms::default();
        rooms.add(Token(1), "a");
        rooms.add(Token(1), "b");
        rooms.add(Token(2), "a");
        assert!(rooms.is_in(Token(1), "b") && !rooms.is_in(Token(2), "b"));
        assert_eq!(rooms.count(Token(1)), 2);
        let mut out = Vec::new();
        rooms.members_into("a", &mut out);
        assert_eq!(out, [Token(1), Token(2)]);
        rooms.remove(Token(1), "a");
        rooms.remove(Token(1), "b");
        assert_eq!(rooms.count(Token(1)), 0);
        assert!(!rooms.members.contains_key("b"));
        rooms.members_into("a", &mut out);
        assert_eq!(out, [Token(2)]);
    }
}
