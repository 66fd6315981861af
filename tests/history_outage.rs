//! Delivery with history survives Redis going away: Redis frozen (SIGSTOP)
//! or killed and restarted (kill -9, append-only file fsynced on every
//! write) while two users chat across two nodes. Every message whose sender
//! got no errormsg is delivered exactly once, in order: what was published
//! while the recipient's node was not listening is read back from the
//! stream once its subscriber link is up again.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::time::Duration;

use common::redis::{free_port, try_recv, RedisServer};
use common::{chat, connect, recv_text, send, wait_until, NodeProc, Ws};
use serde_json::Value;

fn node(redis: &RedisServer) -> NodeProc {
    let url = redis.url();
    let args = ["--redis", &url, "--reactors", "2", "--history-size", "1000", "--history-users", "true"];
    let mut args = args.to_vec();
    args.extend(["--message-rate", "0", "--redis-timeout-ms", "1000"]);
    let node = NodeProc::start(&args);
    assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_bus_connected") == 1));
    node
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

/// Logs in as `name` and reads up to its `recoverymsg`.
fn log_in(node: &NodeProc, name: &str) -> Ws {
    let mut ws = connect(&node.url("/ws"));
    send(&mut ws, &format!(r#"{{"MessageType":"loginmsg","Sender":"{name}"}}"#));
    while json(&recv_text(&mut ws))["MessageType"] != "recoverymsg" {}
    ws
}

/// Everything `ws` gets until it is quiet for `quiet`.
fn drain(ws: &mut Ws, quiet: Duration) -> Vec<Value> {
    std::iter::from_fn(|| try_recv(ws, quiet)).map(|t| json(&t)).collect()
}

/// alice (node b) sends bob (node a) 300 numbered messages, `outage`
/// striking after the first 100 and `recover` after the next 100.
fn chat_through(outage: impl FnOnce(&mut RedisServer), recover: impl FnOnce(&mut RedisServer)) {
    let mut redis = RedisServer::start_with(free_port(false), &["--appendonly", "yes", "--appendfsync", "always"]);
    let (a, b) = (node(&redis), node(&redis));
    let mut bob = log_in(&a, "bob");
    let mut alice = log_in(&b, "alice");
    let mut replies = Vec::new();
    let send_range = |alice: &mut Ws, range: std::ops::Range<u32>| {
        for i in range {
            chat(alice, "bob", &format!("m{i}"));
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    send_range(&mut alice, 0..100);
    outage(&mut redis);
    send_range(&mut alice, 100..200);
    recover(&mut redis);
    assert!(wait_until(Duration::from_secs(15), || a.metric("switchboard_bus_connected") == 1
        && b.metric("switchboard_bus_connected") == 1));
    send_range(&mut alice, 200..300);
    let got: Vec<u32> = drain(&mut bob, Duration::from_secs(4))
        .iter()
        .filter(|v| v["MessageType"] == "chatmsg")
        .map(|v| v["Data"].as_str().unwrap()[1..].parse().unwrap())
        .collect();
    replies.extend(drain(&mut alice, Duration::from_millis(500)));
    let errors = replies.iter().filter(|v| v["MessageType"] == "errormsg").count();
    let mut sorted = got.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "a message delivered twice: {got:?}");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    assert!(got.len() + errors >= 300, "{} delivered, {errors} errormsgs: {got:?} {replies:?}", got.len());
    assert!(got.len() >= 200, "most messages arrive: {}", got.len());
}

#[test]
fn a_frozen_redis_loses_nothing_it_did_not_report() {
    chat_through(
        |redis| redis.pause(),
        |redis| {
            std::thread::sleep(Duration::from_secs(3));
            redis.resume();
        },
    );
}

#[test]
fn a_redis_killed_and_restarted_loses_nothing_it_did_not_report() {
    chat_through(|redis| redis.kill9(), |redis| redis.restart());
}

#[test]
fn a_dropped_subscriber_link_catches_up_from_the_stream() {
    // Only the subscriber connections go: publishes keep reaching Redis,
    // and those made before bob's node listens again reach nobody live.
    chat_through(
        |redis| {
            redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
        },
        |_| {},
    );
}
