//! History and recovery against a real Redis: a client that reconnects
//! (to another node) with its last offset gets exactly what it missed, then
//! live traffic, with no gap and no duplicate at the seam; a message to a
//! user who is offline is kept, its sender told, and delivered at login;
//! an offset older than what is kept is a gap, another epoch a reset; rooms
//! recover on join; settings history cannot work with are refused.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::redis::{try_recv, RedisServer};
use common::{chat, connect, login, recv_text, send, wait_until, NodeProc, Ws};
use serde_json::Value;

fn node(redis: &RedisServer, extra: &[&str]) -> NodeProc {
    let url = redis.url();
    let mut args = vec!["--redis", &url, "--reactors", "2", "--history-users", "true", "--message-rate", "0"];
    args.extend_from_slice(extra);
    if !extra.contains(&"--history-size") {
        args.extend(["--history-size", "50"]);
    }
    let node = NodeProc::start(&args);
    assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_bus_connected") == 1));
    node
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

/// Reads until the `recoverymsg` of `channel`: (what came before it, it).
fn until_recovery(ws: &mut Ws, channel: &str) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    loop {
        let v = json(&recv_text(ws));
        if v["MessageType"] == "recoverymsg" && v["Reciever"] == channel {
            return (before, v);
        }
        assert!(v.is_object() && v["MessageType"] != "errormsg", "{v} after {before:?}");
        before.push(v);
    }
}

/// Logs in as `name` with `resume` fields (e.g. `,"Offset":"1-0"`): what was
/// replayed, and the `recoverymsg`.
fn log_in(node: &NodeProc, name: &str, resume: &str) -> (Ws, Vec<Value>, Value) {
    let mut ws = connect(&node.url("/ws"));
    send(&mut ws, &format!(r#"{{"MessageType":"loginmsg","Sender":"{name}"{resume}}}"#));
    let (replayed, recovery) = until_recovery(&mut ws, name);
    (ws, replayed, recovery)
}

fn data(v: &Value) -> String {
    v["Data"].as_str().unwrap().to_string()
}

#[test]
fn a_reconnect_on_another_node_gets_what_it_missed_once_then_live() {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let (mut bob, replayed, recovery) = log_in(&a, "bob", "");
    assert!(replayed.is_empty());
    assert_eq!((recovery["Data"].as_str(), recovery["Count"].as_u64()), (Some("fresh"), Some(0)), "{recovery}");
    let (mut alice, _, _) = log_in(&b, "alice", "");
    chat(&mut alice, "bob", "m0");
    let first = json(&recv_text(&mut bob));
    assert_eq!(data(&first), "m0");
    let (offset, epoch) = (first["Offset"].as_str().unwrap().to_string(), recovery["Epoch"].as_str().unwrap());
    let epoch = if epoch.is_empty() { String::new() } else { format!(",\"Epoch\":\"{epoch}\"") };
    drop(bob);
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:u:{bob}") == 0));
    // Missed: each kept for bob, alice told so.
    for i in 1..=5 {
        chat(&mut alice, "bob", &format!("m{i}"));
        let stored = json(&recv_text(&mut alice));
        assert_eq!((stored["MessageType"].as_str(), stored["Reciever"].as_str()), (Some("storedmsg"), Some("bob")));
        assert!(stored["Offset"].as_str().unwrap().contains('-'), "{stored}");
    }
    // Back on the other node, with live traffic racing the recovery.
    let sender = std::thread::spawn(move || {
        for i in 6..200 {
            chat(&mut alice, "bob", &format!("m{i}"));
            std::thread::sleep(Duration::from_micros(300));
        }
        alice
    });
    let resume = format!(",\"Offset\":\"{offset}\"{epoch}");
    let (mut bob, replayed, recovery) = log_in(&b, "bob", &resume);
    assert_eq!(recovery["Data"], "recovered", "{recovery}");
    assert_eq!(recovery["Count"].as_u64(), Some(replayed.len() as u64));
    assert!(replayed.len() >= 5, "{replayed:?}");
    let mut seen: Vec<String> = replayed.iter().map(data).collect();
    while seen.len() < 199 {
        let Some(text) = try_recv(&mut bob, Duration::from_secs(5)) else { break };
        seen.push(data(&json(&text)));
    }
    let _alice = sender.join().unwrap();
    assert_eq!(try_recv(&mut bob, Duration::from_millis(300)), None, "nothing more after {seen:?}");
    let want: Vec<String> = (1..200).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want, "every missed and live message once, in order");
}

#[test]
fn a_message_to_an_offline_user_is_kept_and_delivered_at_login() {
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    let (mut alice, _, _) = log_in(&a, "alice", "");
    let mut offsets = Vec::new();
    for i in 0..3 {
        chat(&mut alice, "carol", &format!("while away {i}"));
        let stored = json(&recv_text(&mut alice));
        assert_eq!(stored["MessageType"], "storedmsg", "{stored}");
        assert!(data(&stored).contains("not online"), "{stored}");
        offsets.push(stored["Offset"].as_str().unwrap().to_string());
    }
    let (_carol, replayed, recovery) = log_in(&a, "carol", "");
    let got: Vec<(String, String)> =
        replayed.iter().map(|v| (data(v), v["Offset"].as_str().unwrap().to_string())).collect();
    let want: Vec<(String, String)> = (0..3).map(|i| (format!("while away {i}"), offsets[i].clone())).collect();
    assert_eq!(got, want);
    assert_eq!(replayed[0]["Sender"], "alice");
    assert_eq!((recovery["Data"].as_str(), recovery["Count"].as_u64()), (Some("fresh"), Some(3)), "{recovery}");
    // Delivered once: the next login has nothing to catch up on.
    drop(_carol);
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:u:{carol}") == 0));
    let (_carol, replayed, recovery) = log_in(&a, "carol", "");
    assert!(replayed.is_empty(), "{replayed:?}");
    assert_eq!(recovery["Data"], "fresh");
}

#[test]
fn the_offset_of_an_empty_channel_recovers_what_came_after_it() {
    let redis = RedisServer::start();
    let a = node(&redis, &[]);
    let (bob, replayed, recovery) = log_in(&a, "bob", "");
    assert!(replayed.is_empty());
    assert_eq!((recovery["Data"].as_str(), recovery["Offset"].as_str()), (Some("fresh"), Some("0-0")), "{recovery}");
    drop(bob);
    // Back with the offset it was given, the channel still empty: nothing missed.
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:u:{bob}") == 0));
    let (bob, replayed, recovery) = log_in(&a, "bob", r#","Offset":"0-0""#);
    assert_eq!((recovery["Data"].as_str(), recovery["Count"].as_u64()), (Some("recovered"), Some(0)), "{recovery}");
    assert!(replayed.is_empty());
    drop(bob);
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:u:{bob}") == 0));
    // Messages came while it was away: all of them, after "0-0".
    let (mut alice, _, _) = log_in(&a, "alice", "");
    for i in 0..3 {
        chat(&mut alice, "bob", &format!("m{i}"));
        assert_eq!(json(&recv_text(&mut alice))["MessageType"], "storedmsg");
    }
    let (_bob, replayed, recovery) = log_in(&a, "bob", r#","Offset":"0-0""#);
    assert_eq!((recovery["Data"].as_str(), recovery["Count"].as_u64()), (Some("recovered"), Some(3)), "{recovery}");
    assert_eq!(replayed.iter().map(data).collect::<Vec<_>>(), ["m0", "m1", "m2"]);
}

#[test]
fn an_offset_older_than_the_history_is_a_gap_and_another_epoch_a_reset() {
    let redis = RedisServer::start();
    let a = node(&redis, &["--history-size", "10"]);
    let (mut alice, _, _) = log_in(&a, "alice", "");
    chat(&mut alice, "dave", "old");
    let old = json(&recv_text(&mut alice))["Offset"].as_str().unwrap().to_string();
    let epoch = redis.cli(&["GET", "sb:he:{dave}"]).trim().to_string();
    assert_eq!(epoch, old, "the epoch is the first entry's id");
    // Far more than the stream keeps (MAXLEN ~ trims whole nodes of 100).
    for i in 0..400 {
        chat(&mut alice, "dave", &format!("n{i}"));
    }
    for _ in 0..400 {
        recv_text(&mut alice);
    }
    let resume = format!(",\"Offset\":\"{old}\",\"Epoch\":\"{epoch}\"");
    let (dave, replayed, recovery) = log_in(&a, "dave", &resume);
    assert_eq!(recovery["Data"], "gap", "{recovery}");
    assert!(!replayed.is_empty() && replayed.len() < 400, "{}", replayed.len());
    assert_eq!(data(replayed.last().unwrap()), "n399");
    drop(dave);
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:u:{dave}") == 0));
    let (_dave, replayed, recovery) = log_in(&a, "dave", &format!(",\"Offset\":\"{old}\",\"Epoch\":\"other\""));
    assert_eq!((recovery["Data"].as_str(), recovery["Count"].as_u64()), (Some("reset"), Some(0)), "{recovery}");
    assert!(replayed.is_empty());
    assert_eq!(recovery["Epoch"].as_str(), Some(epoch.as_str()));
}

#[test]
fn a_room_with_history_recovers_on_join_on_another_node() {
    let redis = RedisServer::start();
    let extra = ["--history-room", "kept-*", "--join-notices", "false"];
    let (a, b) = (node(&redis, &extra), node(&redis, &extra));
    let join = |ws: &mut Ws, room: &str, resume: &str| {
        send(ws, &format!(r#"{{"MessageType":"joinmsg","Reciever":"{room}"{resume}}}"#));
        until_recovery(ws, room)
    };
    let (mut erin, _, _) = log_in(&a, "erin", "");
    let (mut fred, _, _) = log_in(&b, "fred", "");
    let (before, recovery) = join(&mut erin, "kept-1", "");
    assert_eq!(before.len(), 1, "the join's confirmation: {before:?}");
    assert_eq!(recovery["Data"], "fresh");
    join(&mut fred, "kept-1", "");
    let say = |ws: &mut Ws, text: &str| {
        send(ws, &format!(r#"{{"MessageType":"roommsg","Data":"{text}","Reciever":"kept-1"}}"#));
    };
    say(&mut fred, "r0");
    let r0 = json(&recv_text(&mut erin));
    assert_eq!((data(&r0), r0["Sender"].as_str()), ("r0".to_string(), Some("fred")));
    assert_eq!(data(&json(&recv_text(&mut fred))), "r0", "the sender's own copy, once");
    send(&mut erin, r#"{"MessageType":"leavemsg","Reciever":"kept-1"}"#);
    assert_eq!(json(&recv_text(&mut erin))["MessageType"], "leavemsg");
    for i in 1..=3 {
        say(&mut fred, &format!("r{i}"));
        assert_eq!(data(&json(&recv_text(&mut fred))), format!("r{i}"));
    }
    let resume = format!(",\"Offset\":\"{}\"", r0["Offset"].as_str().unwrap());
    let (mut gwen, _, _) = log_in(&b, "gwen", "");
    // erin comes back through another node; gwen joins fresh.
    drop(erin);
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:u:{erin}") == 0));
    let (mut erin, _, _) = log_in(&b, "erin", "");
    let (before, recovery) = join(&mut erin, "kept-1", &resume);
    let replayed: Vec<String> = before.iter().skip(1).map(data).collect();
    assert_eq!(replayed, ["r1", "r2", "r3"], "{before:?}");
    assert_eq!((recovery["Data"].as_str(), recovery["Count"].as_u64()), (Some("recovered"), Some(3)));
    let (before, recovery) = join(&mut gwen, "kept-1", "");
    assert_eq!((before.len(), recovery["Count"].as_u64()), (1, Some(0)), "fresh: nothing replayed");
    say(&mut fred, "live");
    for ws in [&mut erin, &mut gwen, &mut fred] {
        assert_eq!(data(&json(&recv_text(ws))), "live");
    }
    // A room without history is untouched: no Offset.
    send(&mut erin, r#"{"MessageType":"joinmsg","Reciever":"plain"}"#);
    recv_text(&mut erin);
    send(&mut erin, r#"{"MessageType":"roommsg","Data":"x","Reciever":"plain"}"#);
    assert!(json(&recv_text(&mut erin)).get("Offset").is_none());
    login(&mut gwen, "again");
}

#[test]
fn history_without_a_redis_it_can_use_is_refused_at_start() {
    for (args, says) in [
        (&["--history-size", "10", "--history-users", "true"][..], "--history-size needs --redis URL"),
        (&["--history-users", "true"][..], "--history-users needs --history-size N"),
        (&["--history-size", "10"][..], "--history-size needs channels to keep"),
        (
            &[
                "--history-size",
                "10",
                "--history-room",
                "a",
                "--redis",
                "redis://127.0.0.1:1",
                "--routing",
                "broadcast",
            ][..],
            "does not work with --routing broadcast",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
