//! `POST /api/disconnect` `{"User":"bob"}`: closes bob's connection with
//! 4000 "disconnected by the server" ([`crate::codec::close::DISCONNECTED`]).
//! Held here: its reactor is told through its inbox. Held elsewhere: a
//! control message on bob's own channel reaches the node that holds him
//! (`bus::redis::control`), and Redis's receiver count says whether one did.
//! With `--routing broadcast` there is no channel per user: only a
//! connection on this node can be closed.

use serde::Deserialize;
use serde_json::json;

use super::{answer, body, refuse, Api};
use crate::admin::router::{Request, Response};
use crate::answers::Answer;
use crate::bus::{Published, Undelivered};
use crate::config::Routing;
use crate::inbox::Command;
use crate::names;
use crate::protocol::{ApiError, ApiResult};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Disconnect {
    #[serde(rename = "User")]
    user: Option<String>,
}

/// Where the connection was: `"here"`, `"another node"`, or nowhere known.
pub(super) fn disconnect(api: &Api, request: &Request) -> Response {
    let disconnect: Disconnect = match body(request) {
        Ok(disconnect) => disconnect,
        Err(refusal) => return refusal,
    };
    let Some(user) = disconnect.user else {
        return refuse(400, &ApiError::Missing("User"));
    };
    let key = match names::check(&user, api.config.max_name_len) {
        Ok(key) => key,
        Err(why) => return refuse(400, &ApiError::BadName("User", why)),
    };
    let (result, found) = if api.hub.disconnect_local(&key) {
        (ApiResult::Disconnected, Some("here"))
    } else {
        let caller = api.hub.answers.caller();
        match api.bus.disconnect(&key, caller.at) {
            Published::Sent => match caller.wait(api.deadline()) {
                Some(Answer::Published { .. }) => (ApiResult::Disconnected, Some("another node")),
                Some(Answer::Command(Command::Undelivered { why: Undelivered::NotOnline(_), .. })) => {
                    (ApiResult::NotOnline, None)
                }
                Some(Answer::Command(Command::Undelivered { why: Undelivered::Lost(_), .. })) => {
                    (ApiResult::Lost, None)
                }
                Some(Answer::Command(_)) | None => (ApiResult::Unconfirmed, None),
            },
            Published::NoRecipient => (ApiResult::NotOnline, None),
            Published::Dropped => (ApiResult::Dropped, None),
        }
    };
    // Broadcast routing cannot look beyond this node.
    let beyond = api.clustered() && api.config.routing == Routing::Broadcast && found.is_none();
    let found =
        if beyond { "unknown: broadcast routing reaches no other node's users" } else { found.unwrap_or("nowhere") };
    answer(200, &json!({ "Result": result.as_str(), "User": user, "Found": found }))
}
