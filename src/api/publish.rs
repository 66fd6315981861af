//! `POST /api/publish`: `{"Reciever":"bob","Data":"hi"}` sends bob a
//! `chatmsg`, `{"Room":"general","Data":"hi"}` sends every member of the
//! room a `roommsg`, both from `--api-sender`. They take the way a client's
//! message takes: the recipient's reactor here, else the bus (Redis, which
//! says whether anyone holds the user); a room's members here through their
//! reactors' inboxes and the other nodes' through the room's channel.

use std::sync::Arc;

use compact_str::CompactString;
use serde::Deserialize;
use serde_json::json;

use super::{answer, body, refuse, Api};
use crate::admin::router::{Request, Response};
use crate::answers::Answer;
use crate::bus::{Kept, Published, Undelivered};
use crate::codec::{self, op};
use crate::config::Routing;
use crate::inbox::{Command, RoomMessage};
use crate::names;
use crate::protocol::{self, ApiError, ApiResult};

/// The body of a publish.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    /// A user (the seed's spelling of the field).
    #[serde(rename = "Reciever")]
    reciever: Option<String>,
    /// A room.
    #[serde(rename = "Room")]
    room: Option<String>,
    #[serde(rename = "Data")]
    data: Option<String>,
}

pub(super) fn publish(api: &Api, request: &Request) -> Response {
    let publish: Publish = match body(request) {
        Ok(publish) => publish,
        Err(refusal) => return refusal,
    };
    let Some(data) = publish.data else {
        return refuse(400, &ApiError::Missing("Data"));
    };
    let max = api.config.max_message_size;
    if data.len() > max {
        return refuse(400, &ApiError::DataTooLong { len: data.len(), max });
    }
    match (publish.reciever, publish.room) {
        (Some(to), None) => to_user(api, &to, &data),
        (None, Some(room)) => to_room(api, &room, &data),
        _ => refuse(400, &ApiError::OneTarget),
    }
}

/// A `chatmsg` to the user `to` (as written; looked up by its key).
fn to_user(api: &Api, to: &str, data: &str) -> Response {
    let key = match names::check(to, api.config.max_name_len) {
        Ok(key) => key,
        Err(why) => return refuse(400, &ApiError::BadName("Reciever", why)),
    };
    let mut payload = Vec::with_capacity(data.len() + to.len() + 64);
    protocol::encode_chat(&mut payload, data, to, &api.config.api_sender);
    if api.config.history.keeps_users() {
        return kept_to_user(api, &key, to, &payload);
    }
    let result = match api.hub.directory.lookup(&key) {
        Some(at) if api.hub.deliver(at, &payload) => ApiResult::Delivered,
        Some(_) => ApiResult::Busy,
        None => {
            let caller = api.hub.answers.caller();
            match api.bus.publish(&key, &payload, caller.at) {
                Published::Sent => confirmed(api, caller.wait(api.deadline())),
                Published::NoRecipient => ApiResult::NotOnline,
                Published::Dropped => ApiResult::Dropped,
            }
        }
    };
    answer(200, &json!({ "Result": result.as_str(), "Reciever": to }))
}

/// A `chatmsg` to a user whose inbox keeps history: as a client's, always
/// through the bus, which keeps it (for later, when the user is offline)
/// and delivers it, this node's connections included, with its `Offset`.
fn kept_to_user(api: &Api, key: &str, to: &str, payload: &[u8]) -> Response {
    let max = api.config.history.history_entry_bytes;
    if payload.len() > max {
        return refuse(400, &ApiError::DataTooLong { len: payload.len(), max });
    }
    let caller = api.hub.answers.caller();
    let result = match api.bus.publish_kept(Kept::User(key), payload, caller.at) {
        Published::Sent => match caller.wait(api.deadline()) {
            Some(Answer::Command(Command::Stored(_))) => ApiResult::Stored,
            said => confirmed(api, said),
        },
        Published::NoRecipient => ApiResult::NotOnline,
        Published::Dropped => ApiResult::Dropped,
    };
    answer(200, &json!({ "Result": result.as_str(), "Reciever": to }))
}

/// What the bus said of a message it took.
fn confirmed(api: &Api, said: Option<Answer>) -> ApiResult {
    match said {
        // Broadcast routing: every node got it, none says whether it held the user.
        Some(Answer::Published { .. }) if api.config.routing == Routing::Broadcast => ApiResult::Sent,
        Some(Answer::Published { .. }) => ApiResult::Delivered,
        Some(Answer::Command(Command::Undelivered { why: Undelivered::NotOnline(_), .. })) => ApiResult::NotOnline,
        Some(Answer::Command(Command::Undelivered { why: Undelivered::Lost(_), .. })) => ApiResult::Lost,
        Some(Answer::Command(_)) | None => ApiResult::Unconfirmed,
    }
}

/// A `roommsg` to every member of `room`, on every node.
fn to_room(api: &Api, room: &str, data: &str) -> Response {
    let key = match names::check(room, api.config.max_name_len) {
        Ok(key) => CompactString::from(&*key),
        Err(why) => return refuse(400, &ApiError::BadName("Room", why)),
    };
    let mut json = Vec::with_capacity(data.len() + key.len() + 64);
    protocol::encode_room(&mut json, protocol::ROOM, data, &key, &api.config.api_sender);
    if api.config.history.keeps_room(&key) {
        return kept_to_room(api, &key, &json);
    }
    let mut frame = Vec::with_capacity(json.len() + codec::MAX_HEADER_LEN);
    codec::write_frame(&mut frame, op::TEXT, &json);
    let message = Arc::new(RoomMessage { room: key.clone(), frame: Arc::from(frame) });
    let hub = &api.hub;
    hub.rooms.for_each_reactor(&key, |reactor| hub.inboxes[reactor].push(Command::RoomDeliver(Arc::clone(&message))));
    api.bus.publish_room(&key, &json);
    let (_, here) = hub.rooms.members(&key, 0);
    answer(200, &json!({ "Result": ApiResult::Sent.as_str(), "Room": key.as_str(), "MembersHere": here }))
}

/// A `roommsg` to a room that keeps history: through the bus only, which
/// keeps it and delivers it to every member, here too, with its `Offset`.
fn kept_to_room(api: &Api, key: &str, json: &[u8]) -> Response {
    let max = api.config.history.history_entry_bytes;
    if json.len() > max {
        return refuse(400, &ApiError::DataTooLong { len: json.len(), max });
    }
    let caller = api.hub.answers.caller();
    let result = match api.bus.publish_kept(Kept::Room(key), json, caller.at) {
        Published::Dropped => ApiResult::Dropped,
        Published::Sent | Published::NoRecipient => ApiResult::Sent,
    };
    let (_, here) = api.hub.rooms.members(key, 0);
    answer(200, &json!({ "Result": result.as_str(), "Room": key, "MembersHere": here }))
}
