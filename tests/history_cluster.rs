//! History over a real Redis Cluster of three masters: each channel's
//! stream, epoch and marker share its hash tag, so the publish script runs
//! on the channel's master and publishes with SPUBLISH there. Users on every
//! master get their messages with offsets, what was kept while they were
//! offline at their next login, and what they missed after an offset when
//! they come back on another node; a room with history recovers on join.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::time::Duration;

use common::redis::{RedisCluster, RedisServer};
use common::{chat, connect, recv_text, send, wait_until, NodeProc, Ws};
use serde_json::Value;

fn node(cluster: &RedisCluster) -> NodeProc {
    let url = cluster.url();
    let args = ["--redis", &url, "--reactors", "1", "--history-size", "100", "--history-users", "true"];
    let node = NodeProc::start(&[&args[..], &["--history-room", "kept-*", "--message-rate", "0"]].concat());
    assert!(wait_until(Duration::from_secs(10), || node.metric("switchboard_bus_connected") == 1));
    node
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

/// Logs in (or joins, with `kind` "joinmsg") with `resume` fields: what came before the
/// channel's `recoverymsg`, and it.
fn enter(ws: &mut Ws, kind: &str, field: &str, channel: &str, resume: &str) -> (Vec<Value>, Value) {
    send(ws, &format!(r#"{{"MessageType":"{kind}","{field}":"{channel}"{resume}}}"#));
    let mut before = Vec::new();
    loop {
        let v = json(&recv_text(ws));
        if v["MessageType"] == "recoverymsg" && v["Reciever"] == channel {
            return (before, v);
        }
        assert_ne!(v["MessageType"], "errormsg", "{v}");
        before.push(v);
    }
}

fn log_in(node: &NodeProc, name: &str, resume: &str) -> (Ws, Vec<Value>, Value) {
    let mut ws = connect(&node.url("/ws"));
    let (replayed, recovery) = enter(&mut ws, "loginmsg", "Sender", name, resume);
    (ws, replayed, recovery)
}

/// Waits until `n` nodes listen to `channel` on `master` (sharded pub/sub).
fn listened(master: &RedisServer, channel: &str, n: u64) {
    let count = || master.shard_subscribers(channel);
    assert!(wait_until(Duration::from_secs(5), || count() == n), "{channel}: {} nodes listen, not {n}", count());
}

#[test]
fn users_on_every_master_recover_what_they_missed_on_another_node() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (node(&cluster), node(&cluster));
    let names = cluster.names_on_every_master(1);
    let (mut alice, _, _) = log_in(&a, "alice", "");
    for name in &names {
        // Live, with its offset, from the stream on the name's own master.
        let (ws, _, _) = log_in(&b, name, "");
        let mut ws = ws;
        let master = cluster.node(cluster.master_port_of(&format!("sb:h:{{{name}}}")));
        // A login is confirmed before Redis confirms the node's SSUBSCRIBE, and a logout
        // before its SUNSUBSCRIBE: publishing in between reaches the wrong side.
        let channel = format!("sb:u:{{{name}}}");
        listened(master, &channel, 1);
        chat(&mut alice, name, "live");
        let got = json(&recv_text(&mut ws));
        assert_eq!(got["Data"], "live", "{got}");
        let offset = got["Offset"].as_str().unwrap().to_string();
        assert_eq!(master.cli(&["XLEN", &format!("sb:h:{{{name}}}")]).trim(), "1", "{name}'s stream is on its master");
        drop(ws);
        assert!(wait_until(Duration::from_secs(5), || b.metric("switchboard_connections") <= 1));
        listened(master, &channel, 0);
        // Offline: kept, the sender told.
        for i in 0..2 {
            chat(&mut alice, name, &format!("missed {i}"));
            assert_eq!(json(&recv_text(&mut alice))["MessageType"], "storedmsg");
        }
        // Back on the other node with the offset it saw: exactly what it missed.
        let (_ws, replayed, recovery) = log_in(&a, name, &format!(r#","Offset":"{offset}""#));
        let data: Vec<&str> = replayed.iter().map(|v| v["Data"].as_str().unwrap()).collect();
        assert_eq!(data, ["missed 0", "missed 1"], "{name}");
        assert_eq!((recovery["Data"].as_str(), recovery["Count"].as_u64()), (Some("recovered"), Some(2)), "{recovery}");
    }
}

#[test]
fn a_room_with_history_recovers_on_join_over_the_cluster() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (node(&cluster), node(&cluster));
    let (mut alice, _, _) = log_in(&a, "alice", "");
    let (mut bob, _, _) = log_in(&b, "bob", "");
    enter(&mut alice, "joinmsg", "Reciever", "kept-room", "");
    enter(&mut bob, "joinmsg", "Reciever", "kept-room", "");
    // Both nodes listen before "one" is sent (a join is confirmed before its SSUBSCRIBE).
    listened(cluster.node(cluster.master_port_of("sb:r:{kept-room}")), "sb:r:{kept-room}", 2);
    send(&mut alice, r#"{"MessageType":"roommsg","Data":"one","Reciever":"kept-room"}"#);
    let seen = loop {
        let v = json(&recv_text(&mut bob));
        if v["MessageType"] == "roommsg" {
            break v;
        }
    };
    let offset = seen["Offset"].as_str().unwrap().to_string();
    send(&mut bob, r#"{"MessageType":"leavemsg","Reciever":"kept-room"}"#);
    std::thread::sleep(Duration::from_millis(300));
    send(&mut alice, r#"{"MessageType":"roommsg","Data":"two","Reciever":"kept-room"}"#);
    // Back to its sender (a member too): the script ran, "two" is in the stream.
    while json(&recv_text(&mut alice))["Data"] != "two" {}
    let (replayed, recovery) = enter(&mut bob, "joinmsg", "Reciever", "kept-room", &format!(r#","Offset":"{offset}""#));
    let data: Vec<&str> =
        replayed.iter().filter(|v| v["MessageType"] == "roommsg").map(|v| v["Data"].as_str().unwrap()).collect();
    assert_eq!(data, ["two"]);
    assert_eq!(recovery["Data"], "recovered", "{recovery}");
}
