//! `GET /api/presence?users=alice,bob` (who of them is online anywhere in
//! the cluster) and `GET /api/presence?room=general` (who is in the room):
//! the answers of `presencemsg` and `membersmsg`, asked of the bus as a
//! reactor asks it, or of this node's own tables when it runs alone.

use compact_str::CompactString;
use serde_json::json;

use super::{answer, query_value, refuse, Api};
use crate::admin::router::{Request, Response};
use crate::answers::Answer;
use crate::inbox::Command;
use crate::names;
use crate::protocol::ApiError;

const TAKES: &str = "?users=NAME,NAME... or ?room=NAME";

pub(super) fn presence(api: &Api, request: &Request) -> Response {
    match (query_value(request, "users"), query_value(request, "room")) {
        (Some(users), None) if !users.is_empty() => users_online(api, &users),
        (None, Some(room)) if !room.is_empty() => room_members(api, &room),
        _ => refuse(400, &ApiError::BadQuery(TAKES)),
    }
}

/// `{"Asked":[...],"Online":[...]}`, both in the order asked.
fn users_online(api: &Api, asked: &str) -> Response {
    let max = api.config.max_presence_names;
    if asked.split(',').count() > max {
        return refuse(400, &ApiError::TooManyNames(max));
    }
    let keys: Vec<CompactString> = asked.split(',').map(|name| CompactString::from(&*names::key(name))).collect();
    let caller = api.hub.answers.caller();
    let online: Vec<bool> = if api.bus.ask_presence(asked, &keys, caller.at) {
        match caller.wait(api.deadline()) {
            Some(Answer::Command(Command::Presence { answer, .. })) => answer.online.into_vec(),
            _ => return no_answer(api),
        }
    } else {
        keys.iter().map(|key| api.hub.directory.lookup(key).is_some()).collect()
    };
    let names: Vec<&str> = asked.split(',').collect();
    let listed: Vec<&str> = names.iter().zip(&online).filter(|(_, &on)| on).map(|(name, _)| *name).collect();
    answer(200, &json!({ "Asked": names, "Online": listed }))
}

/// `{"Room":"general","Members":[...],"Count":N}` (`Count` the whole number,
/// `Members` up to `--max-members-listed` of them).
fn room_members(api: &Api, room: &str) -> Response {
    let key = CompactString::from(&*names::key(room));
    let limit = api.config.max_members_listed;
    let caller = api.hub.answers.caller();
    let (listed, count) = if api.bus.ask_members(&key, limit, caller.at) {
        match caller.wait(api.deadline()) {
            Some(Answer::Command(Command::Members { answer, .. })) => (answer.listed, answer.count),
            _ => return no_answer(api),
        }
    } else {
        let (listed, count) = api.hub.rooms.members(&key, limit);
        (listed, count as u64)
    };
    let members: Vec<&str> = listed.iter().map(CompactString::as_str).collect();
    answer(200, &json!({ "Room": key.as_str(), "Members": members, "Count": count }))
}

fn no_answer(api: &Api) -> Response {
    let ms = u64::try_from(api.patience().as_millis()).unwrap_or(u64::MAX);
    refuse(504, &ApiError::NoAnswer(ms))
}
