//! Who is online and who is in a room: `presencemsg` and `membersmsg`.
//! An embedded node answers from what it holds; a cluster member asks the
//! bus, which answers later through the inbox ([`Command::Presence`],
//! [`Command::Members`]) and the answer is encoded here.
//!
//! [`Command::Presence`]: crate::inbox::Command::Presence
//! [`Command::Members`]: crate::inbox::Command::Members

use compact_str::CompactString;
use mio::Token;

use super::conn::Conn;
use super::context::{Context, Outcome};
use super::reply::{log_in_first, reply_failure, reply_with};
use crate::names;
use crate::protocol::{self, Failure};

/// A `presencemsg`: `asked` is the comma-separated names.
pub(super) fn presence(conn: &mut Conn, token: Token, cx: &mut Context, asked: &str) -> Outcome {
    if conn.speaker().is_none() {
        return log_in_first(conn, token, cx);
    }
    let max = cx.config.max_presence_names;
    if asked.split(',').count() > max {
        return reply_failure(conn, token, cx, Failure::TooManyNames(max));
    }
    let keys: Vec<CompactString> = asked.split(',').map(|name| CompactString::from(&*names::key(name))).collect();
    if cx.bus.ask_presence(asked, &keys, cx.conn_ref(token)) {
        return Ok(());
    }
    let online: Vec<bool> = keys.iter().map(|key| cx.hub.directory.lookup(key).is_some()).collect();
    answer_presence(conn, token, cx, asked, &online)
}

/// Answers a `presencemsg`: `online[i]` for the i-th name asked about.
pub(super) fn answer_presence(
    conn: &mut Conn,
    token: Token,
    cx: &mut Context,
    asked: &str,
    online: &[bool],
) -> Outcome {
    let listed = asked.split(',').zip(online).filter(|(_, &on)| on).map(|(name, _)| name);
    reply_with(conn, token, cx, |out| protocol::encode_presence(out, asked, listed))
}

/// A `membersmsg`.
pub(super) fn members(conn: &mut Conn, token: Token, cx: &mut Context, room: &str) -> Outcome {
    if conn.speaker().is_none() {
        return log_in_first(conn, token, cx);
    }
    let key = CompactString::from(&*names::key(room));
    let limit = cx.config.max_members_listed;
    if cx.bus.ask_members(&key, limit, cx.conn_ref(token)) {
        return Ok(());
    }
    let (listed, count) = cx.hub.rooms.members(&key, limit);
    answer_members(conn, token, cx, &key, &listed, count as u64)
}

/// Answers a `membersmsg` about room `key`.
pub(super) fn answer_members(
    conn: &mut Conn,
    token: Token,
    cx: &mut Context,
    key: &str,
    listed: &[CompactString],
    count: u64,
) -> Outcome {
    let names = listed.iter().map(CompactString::as_str);
    reply_with(conn, token, cx, |out| protocol::encode_members(out, key, names, count))
}
