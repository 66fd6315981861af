//! The server API on one node (no Redis): the key guards every route, the
//! routes are absent without a key, a publish reaches a user or a room's
//! members as from `--api-sender`, a disconnect closes the user's socket
//! with 4000, presence answers as `presencemsg`/`membersmsg` do, and bad
//! requests get a 400 (or 413) saying what is wrong.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::time::Duration;

use common::api::{call, close_of, get, post, KEY};
use common::redis::try_recv;
use common::{chat_bytes, connect, login_and_confirm, recv_text, send, NodeProc, Ws};
use serde_json::json;

fn node(extra: &[&str]) -> NodeProc {
    let mut args = vec!["--api-key", KEY, "--reactors", "2"];
    args.extend_from_slice(extra);
    NodeProc::start(&args)
}

fn user(node: &NodeProc, name: &str) -> Ws {
    let mut ws = connect(&node.url("/ws"));
    login_and_confirm(&mut ws, name);
    ws
}

#[test]
fn every_route_needs_the_key() {
    let node = node(&[]);
    for (method, path, body) in [
        ("POST", "/api/publish", Some(r#"{"Reciever":"bob","Data":"hi"}"#)),
        ("POST", "/api/disconnect", Some(r#"{"User":"bob"}"#)),
        ("GET", "/api/presence?users=bob", None),
        ("GET", "/api/history?user=bob", None),
    ] {
        for key in [None, Some("wrong-key-0123456789"), Some(&KEY[..KEY.len() - 1])] {
            let answer = call(&node, method, path, key, body);
            assert_eq!(answer.status, 401, "{method} {path} with {key:?}: {answer:?}");
            assert!(answer.body["Error"].as_str().unwrap().contains("API key"), "{answer:?}");
        }
    }
    assert_eq!(get(&node, "/api/presence?users=bob").status, 200);
}

#[test]
fn without_a_key_there_is_no_api() {
    let node = NodeProc::start(&[]);
    for key in [None, Some(KEY)] {
        let answer = call(&node, "POST", "/api/publish", key, Some(r#"{"Reciever":"bob","Data":"hi"}"#));
        assert_eq!(answer.status, 404, "{answer:?}");
    }
    assert_eq!(call(&node, "GET", "/api/presence?users=a", Some(KEY), None).status, 404);
    let logged = NodeProc::logged(&[], &[]);
    assert!(common::wait_until(Duration::from_secs(5), || logged.log().contains("server API off")), "{}", logged.log());
}

#[test]
fn a_short_key_is_refused_at_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0", "--api-key", "short"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-key must be at least 16 bytes"), "{out:?}");
}

#[test]
fn a_publish_reaches_the_user_from_the_api_sender() {
    let node = node(&["--api-sender", "notifications"]);
    let mut bob = user(&node, "bob");
    let answer = post(&node, "/api/publish", r#"{"Reciever":"bob","Data":"your order shipped"}"#);
    assert_eq!((answer.status, answer.body["Result"].as_str()), (200, Some("delivered")), "{answer:?}");
    assert_eq!(recv_text(&mut bob), chat_bytes("your order shipped", "bob", "notifications"));
    let answer = post(&node, "/api/publish", r#"{"Reciever":"nobody","Data":"hi"}"#);
    assert_eq!((answer.status, answer.body["Result"].as_str()), (200, Some("not online")), "{answer:?}");
}

#[test]
fn a_room_publish_reaches_every_member_once() {
    let node = node(&["--join-notices", "false"]);
    let mut members: Vec<Ws> = ["ann", "ben", "cat"].iter().map(|name| user(&node, name)).collect();
    for ws in &mut members {
        send(ws, r#"{"MessageType":"joinmsg","Reciever":"general"}"#);
        assert!(recv_text(ws).contains("joinmsg"));
    }
    let answer = post(&node, "/api/publish", r#"{"Room":"General","Data":"maintenance at noon"}"#);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["MembersHere"], 3);
    let expected = "{\"MessageType\":\"roommsg\",\"Data\":\"maintenance at noon\",\"Reciever\":\"general\",\"Sender\":\"server\"}\n";
    for ws in &mut members {
        assert_eq!(recv_text(ws), expected);
        assert_eq!(try_recv(ws, Duration::from_millis(300)), None, "exactly once");
    }
}

#[test]
fn a_disconnect_closes_the_socket_with_4000() {
    let node = node(&[]);
    let mut bob = user(&node, "bob");
    let answer = post(&node, "/api/disconnect", r#"{"User":"Bob"}"#);
    assert_eq!(answer.body, json!({"Result":"disconnected","User":"Bob","Found":"here"}), "{answer:?}");
    assert_eq!(close_of(&mut bob), (4000, "disconnected by the server".to_string()));
    let again = post(&node, "/api/disconnect", r#"{"User":"bob"}"#);
    assert_eq!(again.body["Result"], "not online", "{again:?}");
    assert!(
        node.admin_get("/metrics").contains("switchboard_closes_total{code=\"4000\",reason=\"api\"} 1"),
        "counted by its code"
    );
}

#[test]
fn presence_answers_like_presencemsg_and_membersmsg() {
    let node = node(&[]);
    let mut alice = user(&node, "alice");
    let _carol = user(&node, "carol");
    send(&mut alice, r#"{"MessageType":"joinmsg","Reciever":"general"}"#);
    assert!(recv_text(&mut alice).contains("joinmsg"));
    let online = get(&node, "/api/presence?users=alice,bob,carol");
    assert_eq!(online.body, json!({"Asked":["alice","bob","carol"],"Online":["alice","carol"]}), "{online:?}");
    let members = get(&node, "/api/presence?room=general");
    assert_eq!(members.body, json!({"Room":"general","Members":["alice"],"Count":1}), "{members:?}");
    let many = vec!["x"; 101].join(",");
    let refused = get(&node, &format!("/api/presence?users={many}"));
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["Error"], "users lists too many names: at most 100");
    assert_eq!(get(&node, "/api/presence").status, 400);
}

#[test]
fn bad_requests_get_400_saying_why() {
    let node = node(&["--max-message-size", "1000"]);
    let long = format!(r#"{{"Reciever":"bob","Data":"{}"}}"#, "a".repeat(1001));
    for (body, says) in [
        ("not json", "not the JSON"),
        (r#"{"Receiver":"bob","Data":"hi"}"#, "unknown field `Receiver`"),
        (r#"{"Reciever":"bob"}"#, "Data is missing"),
        (r#"{"Data":"hi"}"#, "name one recipient"),
        (r#"{"Reciever":"bob","Room":"general","Data":"hi"}"#, "name one recipient"),
        (r#"{"Reciever":"a,b","Data":"hi"}"#, "Reciever must not contain a comma"),
        (r#"{"Room":"","Data":"hi"}"#, "Room is empty"),
        (&long, "Data is 1001 bytes: at most 1000"),
    ] {
        let answer = post(&node, "/api/publish", body);
        assert_eq!(answer.status, 400, "{body}: {answer:?}");
        assert!(answer.body["Error"].as_str().unwrap().contains(says), "{body}: {answer:?}");
    }
    let disconnect = post(&node, "/api/disconnect", r#"{"Name":"bob"}"#);
    assert_eq!(disconnect.status, 400, "{disconnect:?}");
    let huge = format!(r#"{{"Reciever":"bob","Data":"{}"}}"#, "a".repeat(80 * 1024));
    assert_eq!(post(&node, "/api/publish", &huge).status, 413, "a body over the limit");
    let history = get(&node, "/api/history?user=bob");
    assert_eq!(
        (history.status, history.body["Error"].as_str()),
        (404, Some("history needs a node started with --redis"))
    );
}

#[test]
fn the_key_comes_from_the_environment_a_key_file_or_the_config_file() {
    let from_env = NodeProc::logged(&[], &[("SWITCHBOARD_API_KEY", KEY)]);
    assert_eq!(get(&from_env, "/api/presence?users=a").status, 200);
    let dir = std::env::temp_dir();
    let key_file = dir.join(format!("sb-api-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let from_key_file = NodeProc::start(&["--api-key-file", key_file.to_str().unwrap()]);
    assert_eq!(get(&from_key_file, "/api/presence?users=a").status, 200);
    let config = dir.join(format!("sb-api-{}.toml", std::process::id()));
    std::fs::write(&config, format!("api-key = \"{KEY}\"\napi-sender = \"ops\"\n")).unwrap();
    let from_file = NodeProc::start(&["--config", config.to_str().unwrap()]);
    let mut bob = user(&from_file, "bob");
    assert_eq!(post(&from_file, "/api/publish", r#"{"Reciever":"bob","Data":"x"}"#).status, 200);
    assert_eq!(recv_text(&mut bob), chat_bytes("x", "bob", "ops"));
    std::fs::remove_file(&key_file).unwrap();
    std::fs::remove_file(&config).unwrap();
}
