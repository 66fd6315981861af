//! `GET /api/history?user=bob` or `?room=general`, with `&since=OFFSET`
//! (the last offset already seen; default: from the oldest held) and
//! `&limit=N` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]): a
//! channel's stored messages, oldest first, each with its offset, and the
//! stream's epoch, read straight from Redis (`bus::redis::history_read`).
//! A node without --redis has no history: 404 with the reason.

use serde_json::{json, Value};

use super::{answer, from_json, query_value, refuse, Api};
use crate::admin::router::{Request, Response};
use crate::bus::redis::history_read;
use crate::names;
use crate::protocol::ApiError;

/// Entries per answer unless `limit` says otherwise: a page's worth.
const DEFAULT_LIMIT: usize = 100;
/// Most entries per answer: bounds what one request makes the node hold.
const MAX_LIMIT: usize = 1000;
const TAKES: &str = "?user=NAME or ?room=NAME, and optionally &since=OFFSET (like 1764632400000-3) and &limit=1..1000";

pub(super) fn history(api: &Api, request: &Request) -> Response {
    if !api.clustered() {
        return refuse(404, &ApiError::NeedsRedis("history"));
    }
    let (field, name, room) = match (query_value(request, "user"), query_value(request, "room")) {
        (Some(user), None) => ("user", user, false),
        (None, Some(room)) => ("room", room, true),
        _ => return refuse(400, &ApiError::BadQuery(TAKES)),
    };
    let key = match names::check(&name, api.config.max_name_len) {
        Ok(key) => key,
        Err(why) => return refuse(400, &ApiError::BadName(field, why)),
    };
    let since = query_value(request, "since");
    if since.as_deref().is_some_and(|s| !is_offset(s)) {
        return refuse(400, &ApiError::BadQuery(TAKES));
    }
    let limit = match query_value(request, "limit").map(|l| l.parse::<usize>()) {
        None => DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => return refuse(400, &ApiError::BadQuery(TAKES)),
    };
    let read = match history_read::read(&api.config, room, &key, since.as_deref(), limit) {
        Ok(read) => read,
        Err(why) => return refuse(502, &ApiError::Redis(&why)),
    };
    let entries: Vec<Value> = read
        .entries
        .into_iter()
        .map(|e| {
            let message = from_json::<Value>(e.payload.as_bytes()).unwrap_or(Value::String(e.payload));
            json!({ "Offset": e.offset, "Message": message })
        })
        .collect();
    let channel = if room { "Room" } else { "User" };
    answer(200, &json!({ channel: &*key, "Epoch": read.epoch, "Entries": entries }))
}

/// A Redis stream ID: `MILLIS` or `MILLIS-SEQ`.
fn is_offset(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    match s.split_once('-') {
        Some((ms, seq)) => digits(ms) && digits(seq),
        None => digits(s),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_are_stream_ids() {
        for (offset, ok) in [("1764632400000-3", true), ("17", true), ("1-", false), ("a-1", false), ("", false)] {
            assert_eq!(super::is_offset(offset), ok, "{offset}");
        }
    }
}
