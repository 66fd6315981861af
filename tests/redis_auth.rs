//! Redis with `requirepass` and ACL users. A node whose password or rights
//! Redis refuses does not start: it exits non-zero saying what to fix in
//! `--redis`. A password that changes under a running node takes its links
//! down (`switchboard_bus_connected 0`), retried with growing backoff and a
//! quiet log, and the node recovers when Redis accepts it again.

#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::time::{Duration, Instant};

use common::process::{node_exit, LoggedNode};
use common::redis::{cluster_login, RedisServer};
use common::*;

/// How long a refused node may take to give up (the check at start is quick).
const EXIT_WITHIN: Duration = Duration::from_secs(10);

fn url(redis: &RedisServer, userinfo: &str) -> String {
    format!("redis://{userinfo}@127.0.0.1:{}", redis.port)
}

/// Two nodes chat through `redis_url` and share one registry.
fn assert_cluster_works(redis_url: &str) {
    let a = NodeProc::start(&["--redis", redis_url]);
    let b = NodeProc::start(&["--redis", redis_url]);
    for node in [&a, &b] {
        assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_bus_connected") == 1));
    }
    let mut alice = connect(&a.url("/ws"));
    let mut bob = connect(&b.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    assert!(cluster_login(&mut bob, "bob"));
    assert!(!cluster_login(&mut connect(&b.url("/ws")), "alice"), "alice logged in on two nodes");
    chat(&mut alice, "bob", "hi");
    assert_eq!(recv_text(&mut bob), chat_bytes("hi", "bob", "alice"));
}

#[test]
fn a_missing_or_wrong_password_stops_the_node_with_what_to_fix() {
    let redis = RedisServer::start_with(common::redis::free_port(false), &["--requirepass", "s3cret"]);

    let (status, stderr) = node_exit(&["--redis", &redis.url()], EXIT_WITHIN);
    assert!(!status.success(), "a node without the password started: {stderr}");
    assert!(stderr.contains("NOAUTH") && stderr.contains("--redis"), "{stderr}");
    assert!(stderr.contains("put it in --redis URL"), "{stderr}");

    let (status, stderr) = node_exit(&["--redis", &url(&redis, ":wrong")], EXIT_WITHIN);
    assert!(!status.success(), "a node with a wrong password started: {stderr}");
    assert!(stderr.contains("WRONGPASS"), "{stderr}");
    assert!(stderr.contains("fix the user name and password in --redis URL"), "{stderr}");
    assert!(!stderr.contains("wrong@"), "the password is shown: {stderr}");

    assert_cluster_works(&url(&redis, ":s3cret"));
}

#[test]
fn acl_users_work_with_the_rights_the_bus_needs_and_are_refused_without() {
    let redis = RedisServer::start();
    // The rights the README's checklist lists, and nothing else.
    let granted = redis.cli(&[
        "ACL",
        "SETUSER",
        "sb",
        "on",
        ">pw",
        "resetkeys",
        "~sb:*",
        "resetchannels",
        "&sb:u:*",
        "&msg",
        "-@all",
        "+ping",
        "+select",
        "+publish",
        "+spublish",
        "+subscribe",
        "+ssubscribe",
        "+unsubscribe",
        "+sunsubscribe",
        "+eval",
        "+get",
        "+set",
        "+del",
        "+exists",
        "+pexpire",
        "+cluster|slots",
    ]);
    assert_eq!(granted.trim(), "OK");
    // Every command and key, no channel (Redis 7's default for a new user).
    assert_eq!(redis.cli(&["ACL", "SETUSER", "deaf", "on", ">pw", "~*", "+@all", "resetchannels"]).trim(), "OK");
    // No command at all.
    assert_eq!(redis.cli(&["ACL", "SETUSER", "nobody", "on", ">pw"]).trim(), "OK");

    let (status, stderr) = node_exit(&["--redis", &url(&redis, "deaf:pw")], EXIT_WITHIN);
    assert!(!status.success(), "a user without channels started: {stderr}");
    assert!(stderr.contains("NOPERM") && stderr.contains("PUBLISH"), "{stderr}");
    assert!(stderr.contains("lacks a right the bus needs"), "{stderr}");

    let (status, stderr) = node_exit(&["--redis", &url(&redis, "nobody:pw")], EXIT_WITHIN);
    assert!(!status.success(), "a user without commands started: {stderr}");
    assert!(stderr.contains("NOPERM") && stderr.contains("greeting"), "{stderr}");

    let (status, stderr) = node_exit(&["--redis", &url(&redis, "sb:nope")], EXIT_WITHIN);
    assert!(!status.success() && stderr.contains("WRONGPASS"), "{stderr}");

    assert_cluster_works(&url(&redis, "sb:pw"));
}

/// `INFO stats` total_connections_received.
fn connections(redis: &RedisServer, password: &str) -> u64 {
    let info = redis.cli(&["-a", password, "--no-auth-warning", "INFO", "stats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connection count in {info}"))
}

#[test]
fn a_password_changed_under_a_running_node_takes_it_down_quietly_until_it_matches_again() {
    let redis = RedisServer::start_with(common::redis::free_port(false), &["--requirepass", "old"]);
    let mut node = LoggedNode::start(&["--redis", &url(&redis, ":old")]);
    assert!(wait_until(Duration::from_secs(5), || node.node.metric("switchboard_bus_connected") == 1));

    let cli = |password: &str, args: &[&str]| {
        let mut all = vec!["-a", password, "--no-auth-warning"];
        all.extend_from_slice(args);
        redis.cli(&all)
    };
    assert_eq!(cli("old", &["CONFIG", "SET", "requirepass", "new"]).trim(), "OK");
    cli("new", &["CLIENT", "KILL", "TYPE", "pubsub"]);
    cli("new", &["CLIENT", "KILL", "TYPE", "normal"]);
    assert!(
        wait_until(Duration::from_secs(3), || node.node.metric("switchboard_bus_connected") == 0),
        "a refused link counts as connected"
    );
    let before = connections(&redis, "new");
    let watched = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    let attempts = connections(&redis, "new") - before;
    eprintln!("{attempts} connections in {:?} while refused", watched.elapsed());
    assert!(attempts <= 30, "{attempts} reconnects in 6 s: the backoff does not grow");
    assert_eq!(node.node.metric("switchboard_bus_connected"), 0);
    assert!(node.node.child.try_wait().expect("the node's status").is_none(), "the node exited");
    let warnings = node.lines_with("link down") + node.lines_with("still down");
    assert!((1..=4).contains(&warnings), "{warnings} warnings while refused");
    assert!(node.lines_with("WRONGPASS") >= 1, "the log names the refusal");

    assert_eq!(cli("new", &["CONFIG", "SET", "requirepass", "old"]).trim(), "OK");
    assert!(
        wait_until(Duration::from_secs(15), || node.node.metric("switchboard_bus_connected") == 1),
        "the node did not come back once Redis accepted its password again"
    );
    let mut alice = connect(&node.node.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
}
