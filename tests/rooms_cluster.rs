//! Rooms and presence across nodes joined by a real Redis: room messages
//! reach every member on every node exactly once, a node with no member
//! hears none of a room's traffic, presence and member lists are right after
//! joins, leaves, disconnects, a node killed with -9 and a Redis restart.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::redis::{cluster_login, try_recv, RedisServer};
use common::{connect, recv_text, send, wait_until, NodeProc, Ws};

fn nodes(redis: &RedisServer, n: usize, extra: &[&str]) -> Vec<NodeProc> {
    let url = redis.url();
    let mut args = vec!["--redis", &url, "--reactors", "2", "--join-notices", "false"];
    args.extend_from_slice(extra);
    (0..n).map(|_| NodeProc::start(&args)).collect()
}

/// A client of `node` logged in as `name` and in `room` (its join read).
fn member(node: &NodeProc, name: &str, room: &str) -> Ws {
    let mut ws = connect(&node.url("/ws"));
    assert!(cluster_login(&mut ws, name));
    send(&mut ws, &format!(r#"{{"MessageType":"joinmsg","Reciever":"{room}"}}"#));
    let joined = recv_text(&mut ws);
    assert!(joined.contains("\"joinmsg\"") && joined.contains(name), "{joined}");
    ws
}

fn say(ws: &mut Ws, room: &str, data: &str) {
    send(ws, &format!(r#"{{"MessageType":"roommsg","Data":"{data}","Reciever":"{room}"}}"#));
}

fn room_bytes(data: &str, room: &str, from: &str) -> String {
    format!("{{\"MessageType\":\"roommsg\",\"Data\":\"{data}\",\"Reciever\":\"{room}\",\"Sender\":\"{from}\"}}\n")
}

/// Asks through `ws` who is in `room`: (count, names listed).
fn members(ws: &mut Ws, room: &str) -> (u64, Vec<String>) {
    send(ws, &format!(r#"{{"MessageType":"membersmsg","Reciever":"{room}"}}"#));
    let v: serde_json::Value = serde_json::from_str(&recv_text(ws)).unwrap();
    assert_eq!(v["MessageType"], "membersmsg", "{v}");
    let data = v["Data"].as_str().unwrap();
    let names = if data.is_empty() { vec![] } else { data.split(',').map(String::from).collect() };
    (v["Count"].as_u64().unwrap(), names)
}

fn presence(ws: &mut Ws, names: &str) -> String {
    send(ws, &format!(r#"{{"MessageType":"presencemsg","Reciever":"{names}"}}"#));
    let v: serde_json::Value = serde_json::from_str(&recv_text(ws)).unwrap();
    v["Data"].as_str().unwrap().to_string()
}

#[test]
fn room_messages_reach_every_member_on_every_node_once() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3, &[]);
    let mut members: Vec<(String, Ws)> = (0..12)
        .map(|i| {
            let name = format!("m{i}");
            let ws = member(&nodes[i % 3], &name, "lobby");
            (name, ws)
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:r:{lobby}") == 3));
    for round in 0..4 {
        let from = round * 5 % members.len();
        say(&mut members[from].1, "lobby", &format!("round {round}"));
        let want = room_bytes(&format!("round {round}"), "lobby", &members[from].0);
        for (name, ws) in members.iter_mut() {
            assert_eq!(recv_text(ws), want, "{name}, round {round}");
        }
    }
    for (name, ws) in members.iter_mut() {
        assert_eq!(try_recv(ws, Duration::from_millis(300)), None, "{name} got a duplicate");
    }
}

#[test]
fn a_node_without_members_hears_none_of_the_rooms_traffic() {
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 3, &[]);
    let mut a = member(&nodes[0], "alice", "lobby");
    let mut b = member(&nodes[1], "bob", "lobby");
    // The third node has a user, but no member of the room.
    let mut carol = connect(&nodes[2].url("/ws"));
    assert!(cluster_login(&mut carol, "carol"));
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:r:{lobby}") == 2));
    let before = nodes[2].metric("switchboard_bus_received_total");
    for i in 0..20 {
        say(&mut a, "lobby", &format!("m{i}"));
        assert_eq!(recv_text(&mut b), room_bytes(&format!("m{i}"), "lobby", "alice"));
        assert_eq!(recv_text(&mut a), room_bytes(&format!("m{i}"), "lobby", "alice"));
    }
    assert_eq!(nodes[2].metric("switchboard_bus_received_total"), before);
    // The last member of a node leaves: the node lets go of the channel.
    send(&mut b, r#"{"MessageType":"leavemsg","Reciever":"lobby"}"#);
    let _ = recv_text(&mut b);
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:r:{lobby}") == 1));
}

#[test]
fn presence_and_members_are_right_across_nodes_and_after_a_node_dies() {
    let redis = RedisServer::start();
    let mut nodes = nodes(&redis, 3, &["--lease-secs", "3"]);
    let mut alice = member(&nodes[0], "alice", "lobby");
    let bob = member(&nodes[1], "bob", "lobby");
    let _dave = member(&nodes[2], "dave", "lobby");
    assert_eq!(presence(&mut alice, "bob,nobody,dave"), "bob,dave");
    // Each node writes its joins to Redis as they come: the list catches up.
    let all = |alice: &mut Ws| {
        let (count, mut listed) = members(alice, "lobby");
        listed.sort();
        (count, listed)
    };
    assert!(wait_until(Duration::from_secs(3), || all(&mut alice)
        == (3, vec!["alice".into(), "bob".into(), "dave".into()])));
    drop(bob);
    assert!(wait_until(Duration::from_secs(5), || presence(&mut alice, "bob,dave") == "dave"));
    assert!(wait_until(Duration::from_secs(5), || members(&mut alice, "lobby").0 == 2));
    // dave's node dies: his membership goes within the lease, his presence at once.
    nodes[2].child.kill().unwrap();
    assert!(wait_until(Duration::from_secs(5), || presence(&mut alice, "dave").is_empty()));
    assert!(wait_until(Duration::from_secs(8), || members(&mut alice, "lobby") == (1, vec!["alice".into()])));
}

#[test]
fn after_a_redis_restart_rooms_and_members_come_back() {
    let mut redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &[]);
    let mut alice = member(&nodes[0], "alice", "lobby");
    let mut bob = member(&nodes[1], "bob", "lobby");
    redis.restart();
    assert!(wait_until(Duration::from_secs(15), || nodes.iter().all(|n| n.metric("switchboard_bus_connected") == 1)));
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:r:{lobby}") == 2));
    say(&mut alice, "lobby", "after");
    assert_eq!(recv_text(&mut bob), room_bytes("after", "lobby", "alice"));
    assert_eq!(recv_text(&mut alice), room_bytes("after", "lobby", "alice"));
    assert!(wait_until(Duration::from_secs(5), || members(&mut alice, "lobby").0 == 2));
}

#[test]
fn joins_and_leaves_are_announced_on_every_node() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--redis", &url];
    let nodes: Vec<NodeProc> = (0..2).map(|_| NodeProc::start(&args)).collect();
    let mut alice = member(&nodes[0], "alice", "lobby");
    assert!(wait_until(Duration::from_secs(5), || redis.subscribers("sb:r:{lobby}") == 1));
    let bob = member(&nodes[1], "bob", "lobby");
    let mut seen: HashMap<String, usize> = HashMap::new();
    *seen.entry(recv_text(&mut alice)).or_default() += 1;
    drop(bob);
    *seen.entry(recv_text(&mut alice)).or_default() += 1;
    let notice = |kind: &str| {
        format!("{{\"MessageType\":\"{kind}\",\"Data\":\"\",\"Reciever\":\"lobby\",\"Sender\":\"bob\"}}\n")
    };
    assert_eq!(seen, HashMap::from([(notice("joinmsg"), 1), (notice("leavemsg"), 1)]));
}

/// Calls of `command` in Redis's command statistics.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let stats = redis.cli(&["info", "commandstats"]);
    let line = stats.lines().find(|l| l.starts_with(&format!("cmdstat_{command}:"))).unwrap_or("");
    line.split(['=', ',']).nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn a_burst_of_joins_subscribes_the_rooms_in_a_few_commands() {
    const CLIENTS: usize = 5;
    const ROOMS_EACH: usize = 100;
    let redis = RedisServer::start();
    let nodes = nodes(&redis, 2, &[]);
    let mut joiners: Vec<Ws> = (0..CLIENTS)
        .map(|c| {
            let mut ws = connect(&nodes[0].url("/ws"));
            assert!(cluster_login(&mut ws, &format!("j{c}")));
            ws
        })
        .collect();
    redis.cli(&["config", "resetstat"]);
    // Redis stalls as the joins arrive: the node has hundreds of rooms to subscribe at once.
    redis.pause();
    for (c, ws) in joiners.iter_mut().enumerate() {
        for r in 0..ROOMS_EACH {
            send(ws, &format!(r#"{{"MessageType":"joinmsg","Reciever":"b{c}-{r}"}}"#));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    redis.resume();
    for ws in joiners.iter_mut() {
        for _ in 0..ROOMS_EACH {
            assert!(recv_text(ws).contains("\"joinmsg\""));
        }
    }
    let rooms = CLIENTS * ROOMS_EACH;
    let subscribed = || redis.cli(&["pubsub", "channels", "sb:r:*"]).lines().count();
    assert!(wait_until(Duration::from_secs(5), || subscribed() == rooms), "{} of {rooms} rooms", subscribed());
    let subscribes = calls(&redis, "subscribe");
    eprintln!("{rooms} rooms joined: {subscribes} SUBSCRIBEs");
    assert!(subscribes * 20 < rooms as u64, "{subscribes} SUBSCRIBEs for {rooms} rooms");
    // The batched subscriptions carry the rooms' traffic.
    let mut other = member(&nodes[1], "other", "b3-42");
    say(&mut other, "b3-42", "hello");
    assert_eq!(recv_text(&mut joiners[3]), room_bytes("hello", "b3-42", "other"));
}
