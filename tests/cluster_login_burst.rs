//! Bursts of logins on two Redis-joined nodes: thousands of logins at once
//! are all decided, each name is held once in the whole cluster, and Redis
//! is asked for them in batches (a script call and a SUBSCRIBE for many
//! names, as its command statistics show), even when Redis stalls or
//! restarts in the middle of the burst.
//!
//! These tests open thousands of connections from one address at once, and
//! keep them (the refused ones too) while reading each only now and then:
//! the nodes run with the per-address and per-second limits out of reach,
//! a long login timeout and no pings.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use common::*;

/// Names tried, each on both nodes at once: twice as many logins.
const NAMES: usize = 2500;

fn two_nodes(redis: &RedisServer) -> [NodeProc; 2] {
    let url = redis.url();
    let node = |id| {
        let limits = [
            "--max-connections-per-address",
            "0",
            "--connect-rate",
            "0",
            "--login-timeout",
            "600",
            "--ping-interval",
            "0",
        ];
        NodeProc::start(&[&["--redis", &url, "--node-id", id][..], &limits].concat())
    };
    [node("burst-a"), node("burst-b")]
}

/// One connection per name on each node, upgraded, not logged in yet.
fn connections(nodes: &[NodeProc; 2]) -> Vec<(String, Ws)> {
    let mut all = Vec::with_capacity(2 * NAMES);
    for i in 0..NAMES {
        for node in nodes {
            all.push((format!("burst{i}"), connect(&node.url("/ws"))));
        }
    }
    all
}

/// Every connection sends its login and a message to itself, as fast as it can.
fn burst(all: &mut [(String, Ws)]) {
    for (name, ws) in all.iter_mut() {
        login(ws, name);
        chat(ws, name, "probe");
    }
}

/// How the cluster decided a login: the message to itself came back, or
/// the seed's refusal (then the probe's "log in first").
fn decision(name: &str, ws: &mut Ws) -> bool {
    let reply = recv_text(ws);
    if reply == chat_bytes("probe", name, name) {
        return true;
    }
    assert_eq!(reply, "\"User already exists\"\n", "{name}: neither accepted nor refused");
    assert!(recv_text(ws).contains("log in first"), "{name}: the probe after a refusal");
    false
}

/// A text message already waiting on `ws`, if any (without waiting).
fn waiting_text(ws: &mut Ws) -> Option<String> {
    ws.get_mut().set_nonblocking(true).expect("non-blocking");
    let text = match ws.read() {
        Ok(tungstenite::Message::Text(text)) => Some(text.to_string()),
        Ok(other) => panic!("expected text, got {other:?}"),
        Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(e) => panic!("read failed: {e}"),
    };
    ws.get_mut().set_nonblocking(false).expect("blocking");
    text
}

/// Calls of `command` in Redis's command statistics.
fn calls(redis: &RedisServer, command: &str) -> u64 {
    let stats = redis.cli(&["info", "commandstats"]);
    let line = stats.lines().find(|l| l.starts_with(&format!("cmdstat_{command}:"))).unwrap_or("");
    line.split(['=', ',']).nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

#[test]
fn a_burst_of_logins_on_two_nodes_is_decided_each_name_once_in_batches() {
    let redis = RedisServer::start();
    let nodes = two_nodes(&redis);
    let mut all = connections(&nodes);
    redis.cli(&["config", "resetstat"]);
    // Redis stalls for a moment as the burst starts: every login after the
    // first few waits for it, so the nodes have thousands to send at once.
    redis.pause();
    let start = Instant::now();
    burst(&mut all);
    std::thread::sleep(Duration::from_millis(300));
    redis.resume();
    let mut held: HashMap<String, usize> = HashMap::new();
    for (name, ws) in all.iter_mut() {
        if decision(name, ws) {
            *held.entry(name.clone()).or_default() += 1;
        }
    }
    eprintln!("{} logins decided {:?} after the burst started", all.len(), start.elapsed());
    let twice: Vec<_> = held.iter().filter(|(_, &n)| n > 1).map(|(name, _)| name).collect();
    assert!(twice.is_empty(), "names held on both nodes: {twice:?}");
    assert_eq!(held.len(), NAMES, "every name is held somewhere");
    let users: u64 = nodes.iter().map(|n| n.metric("switchboard_users")).sum();
    assert_eq!(users, NAMES as u64);
    for i in [0, NAMES / 2, NAMES - 1] {
        let key = format!("sb:reg:{{burst{i}}}");
        let holder = redis.cli(&["get", &key]);
        assert!(["burst-a\n", "burst-b\n"].contains(&holder.as_str()), "{key} names a node: {holder:?}");
    }
    // Thousands of claims and subscriptions, a few dozen commands.
    let (scripts, subscribes) = (calls(&redis, "eval"), calls(&redis, "subscribe"));
    eprintln!("{} logins: {scripts} script calls, {subscribes} SUBSCRIBEs", all.len());
    assert!(scripts * 20 < all.len() as u64, "{scripts} script calls for {} logins", all.len());
    assert!(subscribes * 20 < all.len() as u64, "{subscribes} SUBSCRIBEs for {} logins", all.len());
    assert_eq!(redis.cli(&["pubsub", "numsub", "sb:u:{burst7}"]).lines().nth(1), Some("1"));
}

#[test]
fn a_burst_of_logins_during_a_redis_restart_is_decided_each_name_once() {
    let mut redis = RedisServer::start();
    let nodes = two_nodes(&redis);
    let mut all = connections(&nodes);
    let start = Instant::now();
    // Redis hangs as the burst starts, then dies with its claims unanswered
    // and comes back empty.
    redis.pause();
    burst(&mut all);
    std::thread::sleep(Duration::from_millis(200));
    redis.restart();
    // Every login is decided: by Redis, or (while it was away) locally.
    let mut accepted: Vec<bool> = all.iter_mut().map(|(name, ws)| decision(name, ws)).collect();
    eprintln!("{} logins decided {:?} after the burst started", all.len(), start.elapsed());
    // Back, the nodes re-assert their names: a name granted on both nodes
    // meanwhile is taken from one of them, whose user gets the seed's refusal.
    let users = || nodes.iter().map(|n| n.metric("switchboard_users")).sum::<u64>();
    let settled = wait_until(Duration::from_secs(20), || users() == NAMES as u64);
    std::thread::sleep(Duration::from_millis(200));
    for ((name, ws), accepted) in all.iter_mut().zip(accepted.iter_mut()) {
        while let Some(text) = waiting_text(ws) {
            assert!(*accepted, "{name}: {text} after a refusal");
            assert_eq!(text, "\"User already exists\"\n", "{name}: revoked in the seed's words");
            *accepted = false;
        }
    }
    let mut held: HashMap<&str, usize> = HashMap::new();
    for ((name, _), &accepted) in all.iter().zip(&accepted) {
        if accepted {
            *held.entry(name.as_str()).or_default() += 1;
        }
    }
    let twice: Vec<_> = held.iter().filter(|(_, &n)| n > 1).map(|(name, _)| *name).collect();
    assert!(settled && twice.is_empty(), "{} users; names held on both nodes: {twice:?}", users());
    assert_eq!(held.len(), NAMES, "every name is held somewhere");
    // And the registry agrees: every name has its key again.
    let keys = redis.cli(&["--scan", "--pattern", "sb:reg:*"]).lines().count();
    assert_eq!(keys, NAMES);
}
