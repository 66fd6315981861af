//! The server API across nodes joined by a real Redis: a publish on one
//! node reaches a user or a room's members on others (exactly once), a
//! disconnect closes a user's socket on another node, presence and members
//! are the cluster's, and history is read from the streams of the contract.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::time::Duration;

use common::api::{close_of, get, post, KEY};
use common::redis::{cluster_login, try_recv, RedisServer};
use common::{chat_bytes, connect, recv_text, send, wait_until, NodeProc, Ws};
use serde_json::json;

fn nodes(redis: &RedisServer, n: usize) -> Vec<NodeProc> {
    let url = redis.url();
    let args = ["--redis", &url, "--reactors", "2", "--join-notices", "false", "--api-key", KEY];
    (0..n).map(|_| NodeProc::start(&args)).collect()
}

fn user(node: &NodeProc, name: &str) -> Ws {
    let mut ws = connect(&node.url("/ws"));
    assert!(cluster_login(&mut ws, name));
    ws
}

/// Waits until `n` nodes listen to `channel` in Redis: a login or a join is
/// confirmed to its client before Redis has confirmed the node's SUBSCRIBE,
/// and a test that publishes at once from elsewhere must not race it.
fn listened(redis: &RedisServer, channel: &str, n: u64) {
    let count = || redis.subscribers(channel);
    assert!(wait_until(Duration::from_secs(5), || count() == n), "{channel}: {} nodes listen, not {n}", count());
}

fn join(ws: &mut Ws, room: &str) {
    send(ws, &format!(r#"{{"MessageType":"joinmsg","Reciever":"{room}"}}"#));
    assert!(recv_text(ws).contains("joinmsg"));
}

#[test]
fn a_publish_reaches_a_user_on_another_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut bob = user(&nodes[1], "bob");
    let answer = post(&nodes[0], "/api/publish", r#"{"Reciever":"bob","Data":"hello from the backend"}"#);
    assert_eq!(answer.body, json!({"Result":"delivered","Reciever":"bob"}), "{answer:?}");
    assert_eq!(recv_text(&mut bob), chat_bytes("hello from the backend", "bob", "server"));
    let offline = post(&nodes[0], "/api/publish", r#"{"Reciever":"nobody","Data":"hi"}"#);
    assert_eq!(offline.body["Result"], "not online", "{offline:?}");
}

#[test]
fn a_room_publish_reaches_members_on_both_nodes_exactly_once() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3);
    let mut members = vec![user(&nodes[0], "ann"), user(&nodes[0], "ben"), user(&nodes[1], "cat")];
    for ws in &mut members {
        join(ws, "general");
    }
    listened(&redis, "sb:r:{general}", 2);
    // From a node with members, and from one without.
    for (via, data) in [(&nodes[0], "first"), (&nodes[2], "second")] {
        let answer = post(via, "/api/publish", &format!(r#"{{"Room":"general","Data":"{data}"}}"#));
        assert_eq!(answer.body["Result"], "sent", "{answer:?}");
        let expected = format!(
            "{{\"MessageType\":\"roommsg\",\"Data\":\"{data}\",\"Reciever\":\"general\",\"Sender\":\"server\"}}\n"
        );
        for ws in &mut members {
            assert_eq!(recv_text(ws), expected);
        }
    }
    for ws in &mut members {
        assert_eq!(try_recv(ws, Duration::from_millis(300)), None, "exactly once");
    }
}

#[test]
fn a_disconnect_closes_a_socket_on_another_node() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut bob = user(&nodes[1], "bob");
    listened(&redis, "sb:u:{bob}", 1);
    let answer = post(&nodes[0], "/api/disconnect", r#"{"User":"bob"}"#);
    assert_eq!(answer.body, json!({"Result":"disconnected","User":"bob","Found":"another node"}), "{answer:?}");
    assert_eq!(close_of(&mut bob), (4000, "disconnected by the server".to_string()));
    listened(&redis, "sb:u:{bob}", 0);
    let gone = post(&nodes[0], "/api/disconnect", r#"{"User":"bob"}"#);
    assert_eq!(gone.body["Result"], "not online", "{gone:?}");
    // The name is free again: bob may log in once more, on either node.
    let _again = user(&nodes[0], "bob");
}

#[test]
fn presence_and_members_are_the_clusters() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2);
    let mut alice = user(&nodes[0], "alice");
    let mut carol = user(&nodes[1], "carol");
    join(&mut alice, "general");
    join(&mut carol, "general");
    let online = get(&nodes[0], "/api/presence?users=carol,bob,alice");
    assert_eq!(online.body, json!({"Asked":["carol","bob","alice"],"Online":["carol","alice"]}), "{online:?}");
    let members = get(&nodes[1], "/api/presence?room=general");
    assert_eq!(members.body["Count"], 2, "{members:?}");
    let mut listed: Vec<&str> =
        members.body["Members"].as_array().unwrap().iter().map(|m| m.as_str().unwrap()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ["alice", "carol"]);
}

#[test]
fn history_is_read_from_the_streams() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 1);
    let empty = get(&nodes[0], "/api/history?user=bob");
    assert_eq!(empty.body, json!({"User":"bob","Epoch":null,"Entries":[]}), "{empty:?}");
    redis.command(&["SET", "sb:he:{bob}", "e1"]).unwrap();
    let payload = chat_bytes("stored", "bob", "alice");
    for id in ["1-1", "1-2", "1-3"] {
        redis.command(&["XADD", "sb:h:{bob}", id, "p", &payload]).unwrap();
    }
    let after = get(&nodes[0], "/api/history?user=Bob&since=1-1&limit=1");
    let message: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(after.body, json!({"User":"bob","Epoch":"e1","Entries":[{"Offset":"1-2","Message":message}]}));
    redis.command(&["XADD", "sb:hr:{general}", "5-0", "p", "x"]).unwrap();
    let room = get(&nodes[0], "/api/history?room=general");
    assert_eq!(room.body["Entries"], json!([{"Offset":"5-0","Message":"x"}]), "{room:?}");
    assert_eq!(get(&nodes[0], "/api/history?user=bob&since=soon").status, 400);
    assert_eq!(get(&nodes[0], "/api/history?user=bob&limit=0").status, 400);
}

#[test]
fn a_publish_while_redis_is_down_says_it_is_unconfirmed() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 1);
    redis.kill9();
    assert!(common::wait_until(Duration::from_secs(10), || nodes[0].metric("switchboard_bus_connected") == 0));
    let answer = post(&nodes[0], "/api/publish", r#"{"Reciever":"bob","Data":"hi"}"#);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body["Result"].as_str().unwrap().starts_with("unconfirmed"), "{answer:?}");
    // Presence answers as presencemsg does while Redis is away: nobody beyond this node.
    let presence = get(&nodes[0], "/api/presence?users=bob");
    assert_eq!(presence.body, json!({"Asked":["bob"],"Online":[]}), "{presence:?}");
}

#[test]
fn with_history_a_publish_to_an_offline_user_is_stored_and_delivered_at_login() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--redis", &url, "--api-key", KEY, "--history-size", "50", "--history-users", "true"];
    let node = NodeProc::start(&args);
    let answer = post(&node, "/api/publish", r#"{"Reciever":"dora","Data":"while you were away"}"#);
    assert_eq!(answer.body, json!({"Result":"stored","Reciever":"dora"}), "{answer:?}");
    let mut dora = connect(&node.url("/ws"));
    send(&mut dora, r#"{"MessageType":"loginmsg","Sender":"dora"}"#);
    let replayed: serde_json::Value = serde_json::from_str(&recv_text(&mut dora)).unwrap();
    assert_eq!((replayed["Data"].as_str(), replayed["Sender"].as_str()), (Some("while you were away"), Some("server")));
    assert!(replayed["Offset"].as_str().is_some_and(|o| o.contains('-')), "{replayed}");
    let recovery: serde_json::Value = serde_json::from_str(&recv_text(&mut dora)).unwrap();
    assert_eq!((recovery["MessageType"].as_str(), recovery["Count"].as_u64()), (Some("recoverymsg"), Some(1)));
    // Online now: the next one is delivered live, with its offset.
    let live = post(&node, "/api/publish", r#"{"Reciever":"dora","Data":"now"}"#);
    assert_eq!(live.body["Result"], "delivered", "{live:?}");
    let now: serde_json::Value = serde_json::from_str(&recv_text(&mut dora)).unwrap();
    assert_eq!(now["Data"], "now");
    assert!(now["Offset"].as_str().is_some(), "{now}");
}
