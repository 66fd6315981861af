//! Redis is not trusted blindly. What any Redis client PUBLISHes to a user's
//! channel reaches the user only if it is a chat message in the exact shape
//! a node publishes; anything else is dropped and counted. The registry's
//! keys of a node killed with -9 expire by themselves, and live nodes renew
//! theirs. A host name in `--redis` is looked up again on every connect.

#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::time::{Duration, Instant};

use common::redis::{cluster_login, try_recv, RedisServer};
use common::*;

#[test]
fn what_no_node_published_never_reaches_a_user() {
    let redis = RedisServer::start();
    let a = NodeProc::start(&["--redis", &redis.url()]);
    let b = NodeProc::start(&["--redis", &redis.url()]);
    let mut alice = connect(&a.url("/ws"));
    let mut bob = connect(&b.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    assert!(cluster_login(&mut bob, "bob"));

    let forged: [&[u8]; 6] = [
        b"hello bob",
        b"{\"MessageType\":\"chatmsg\",\"Data\":\"\xff\xfe\",\"Reciever\":\"bob\",\"Sender\":\"alice\"}\n",
        b"{\"MessageType\":\"chatmsg\",\"Data\":\"no sender\",\"Reciever\":\"bob\"}\n",
        b"{\"MessageType\":\"chatmsg\",\"Data\":\"for carol\",\"Reciever\":\"carol\",\"Sender\":\"alice\"}\n",
        b"{\"MessageType\":\"errormsg\",\"Data\":\"fake\",\"Reciever\":\"bob\",\"Sender\":\"alice\"}\n",
        b"{\"MessageType\":\"chatmsg\",\"Data\":\"x\",\"Reciever\":\"bob\",\"Sender\":\"alice\",\"Admin\":true}\n",
    ];
    for payload in forged {
        let reply = redis.command_bytes(&[b"PUBLISH", b"sb:u:{bob}", payload]).expect("Redis answers");
        assert_eq!(reply, ":1\r\n", "bob's node subscribes his channel");
    }
    assert!(wait_until(Duration::from_secs(5), || b.metric("switchboard_bus_rejected_total") == forged.len() as u64));
    assert_eq!(try_recv(&mut bob, Duration::from_millis(300)), None, "bob got a forged message");

    // What a node publishes still arrives, and the forgeries did not stop it.
    chat(&mut alice, "bob", "genuine");
    assert_eq!(recv_text(&mut bob), chat_bytes("genuine", "bob", "alice"));
    assert_eq!(b.metric("switchboard_bus_rejected_total"), forged.len() as u64);
}

/// `PTTL KEY` in milliseconds (-1: no expiry, -2: no key).
fn pttl(redis: &RedisServer, key: &str) -> i64 {
    redis.cli(&["PTTL", key]).trim().parse().expect("an integer")
}

#[test]
fn a_killed_nodes_names_expire_and_a_live_nodes_are_renewed() {
    let redis = RedisServer::start();
    // A lease of 3 s: names' keys live 20 leases (60 s), renewed every 15 s.
    let mut doomed = NodeProc::start(&["--redis", &redis.url(), "--lease-secs", "3"]);
    let live = NodeProc::start(&["--redis", &redis.url(), "--lease-secs", "3"]);
    let mut alice = connect(&doomed.url("/ws"));
    let mut bob = connect(&live.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    assert!(cluster_login(&mut bob, "bob"));
    let first = pttl(&redis, "sb:reg:{bob}");
    assert!((50_000..=60_000).contains(&first), "bob's key expires in {first} ms");
    let started = Instant::now();

    doomed.child.kill().expect("kill -9 the node");
    doomed.child.wait().expect("reap it");
    let orphan = pttl(&redis, "sb:reg:{alice}");
    assert!(orphan > 0 && orphan <= 60_000, "a dead node's name has no expiry (PTTL {orphan})");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(pttl(&redis, "sb:reg:{alice}") < orphan, "the dead node's key is not counting down");

    // The live node renews its names' keys (every 15 s with this lease).
    std::thread::sleep(Duration::from_secs(17).saturating_sub(started.elapsed()));
    let renewed = pttl(&redis, "sb:reg:{bob}");
    let aged = first - started.elapsed().as_millis() as i64;
    assert!(renewed > aged + 5_000, "bob's key was not renewed: PTTL {renewed}, {aged} without renewal");
    assert!(pttl(&redis, "sb:reg:{alice}") < orphan - 10_000, "nobody renews the dead node's names");
    // The dead node's name is free for another node (its lease expired).
    let mut alice_again = connect(&live.url("/ws"));
    assert!(cluster_login(&mut alice_again, "alice"));
}

#[test]
fn a_host_name_is_looked_up_on_every_connect() {
    let mut redis = RedisServer::start();
    // `localhost` may resolve to ::1 first, where this Redis does not listen:
    // each attempt tries the next address the lookup found.
    let url = format!("redis://localhost:{}", redis.port);
    let node = NodeProc::start(&["--redis", &url]);
    assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_bus_connected") == 1));
    let mut alice = connect(&node.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    redis.restart();
    assert!(wait_until(Duration::from_secs(10), || node.metric("switchboard_bus_reconnects_total") >= 1
        && node.metric("switchboard_bus_connected") == 1));
    assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_bus_subscriptions") == 1));
}
