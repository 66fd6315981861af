//! Rooms through the real switchboard nodes joined by a real redis-server: every member
//! (the sender included) gets every room message exactly once, as the nodes' own counts
//! confirm; bad room settings are refused; a join the node refuses and a node killed
//! mid-run fail the run with the reason.

mod common;

use std::time::{Duration, Instant};

use common::{finish_loadgen, metric, run_loadgen, spawn_loadgen_with_progress, wait_for_phase, Node, Redis};

/// Two nodes joined through `redis`, with `extra` flags each.
fn two_nodes(redis: &Redis, extra: &[&str]) -> (Node, Node) {
    let url = redis.url();
    let mut flags = vec!["--redis", url.as_str()];
    flags.extend_from_slice(extra);
    (Node::start_with(1, &flags), Node::start_with(1, &flags))
}

/// Redis's count of PUBLISH commands so far.
fn publishes(redis: &Redis) -> u64 {
    let stats = redis.command("INFO commandstats");
    stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_member_on_both_nodes_gets_every_room_message_once() {
    let redis = Redis::start();
    // Joins not announced: the nodes' message counts are then exactly logins, joins and
    // room deliveries.
    let (a, b) = two_nodes(&redis, &["--join-notices", "false"]);
    let (pid_a, pid_b) = (a.pid().to_string(), b.pid().to_string());
    let published_before = publishes(&redis);
    // 6 rooms of 200 over 600 connections: each connection in two rooms, every room on
    // both nodes (connection i is on node i % 2).
    let run = run_loadgen(&[
        "--url",
        &a.url(),
        "--url",
        &b.url(),
        "--connections",
        "600",
        "--rooms",
        "6",
        "--room-size",
        "200",
        "--room-rate",
        "100",
        "--room-messages",
        "60",
        "--server-pid",
        &pid_a,
        "--server-pid",
        &pid_b,
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let r = &run.summary["rooms"];
    assert_eq!(r["joins_ok"], 1200, "{r}");
    assert_eq!(r["join_latency"]["count"], 1200, "{r}");
    assert_eq!(r["sent"], 60, "{r}");
    assert_eq!(r["expected_deliveries"], 60 * 200, "{r}");
    assert_eq!(r["delivered"], 60 * 200, "{r}");
    assert_eq!(r["received"], 60 * 200, "{r}");
    assert_eq!((r["lost"].as_u64(), r["duplicated"].as_u64(), r["misrouted"].as_u64()), (Some(0), Some(0), Some(0)));
    assert_eq!(r["complete"], 60, "{r}");
    assert_eq!(r["fanout_latency"]["count"], 60, "{r}");
    assert!(r["fanout_latency"]["p50_us"].as_u64().unwrap() >= r["member_latency"]["p50_us"].as_u64().unwrap());
    assert!(r["cpu_per_delivery"]["servers_us_per_op"].as_f64().is_some(), "{r}");
    // What the nodes wrote: one login confirmation per user, one join confirmation per
    // join, one room message per member per message.
    let out =
        metric(a.admin_port, "switchboard_messages_out_total") + metric(b.admin_port, "switchboard_messages_out_total");
    assert_eq!(out, 600 + 1200 + 60 * 200);
    // Every room message crossed Redis once, from its sender's node to the other.
    assert_eq!(publishes(&redis) - published_before, 60);
    assert!(run.stderr.contains("fan-out: until the last member p50"), "{}", run.stderr);
}

#[test]
fn join_notices_to_other_members_are_not_taken_for_confirmations() {
    let redis = Redis::start();
    let (a, b) = two_nodes(&redis, &[]);
    let run = run_loadgen(&[
        "--url",
        &a.url(),
        "--url",
        &b.url(),
        "--connections",
        "200",
        "--rooms",
        "2",
        "--room-size",
        "100",
        "--room-rate",
        "50",
        "--room-messages",
        "20",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let r = &run.summary["rooms"];
    assert_eq!((r["joins_ok"].as_u64(), r["delivered"].as_u64()), (Some(200), Some(20 * 100)), "{r}");
}

#[test]
fn bad_room_settings_are_refused_by_name() {
    for (args, expected) in [
        (vec!["--rooms", "2", "--room-size", "500"], "--room-size must be 1 to --connections (100)"),
        (vec!["--rooms", "300", "--room-size", "100"], "puts a connection in 300 rooms; at most 100"),
        (vec!["--room-size", "10"], "--room-size, --room-rate and --room-messages need --rooms N"),
        (vec!["--rooms", "2", "--room-size", "10", "--churn-rate", "5"], "without --churn-rate"),
    ] {
        let mut argv = vec!["--url", "ws://127.0.0.1:9/ws", "--connections", "100"];
        argv.extend(args);
        let run = run_loadgen(&argv);
        assert_eq!(run.code, 2, "{argv:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{argv:?}: {}", run.stderr);
    }
}

#[test]
fn joins_the_node_refuses_fail_the_run_with_its_reason() {
    // A node that takes 50 members per room, asked for rooms of 100.
    let node = Node::start_with(1, &["--max-room-members", "50"]);
    let run = run_loadgen(&[
        "--url",
        &node.url(),
        "--connections",
        "100",
        "--rooms",
        "1",
        "--room-size",
        "100",
        "--room-rate",
        "10",
        "--room-messages",
        "5",
        "--connect-timeout",
        "2",
    ]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let r = &run.summary["rooms"];
    assert_eq!(r["joins_ok"], 50, "{r}");
    assert_eq!(run.summary["errors"]["server_error"], 50);
    let failures = run.summary["failures"].to_string();
    assert!(failures.contains("only 50 of 100 room joins confirmed"), "{failures}");
    assert!(failures.contains("room messages skipped"), "{failures}");
    assert!(run.stderr.contains("is full on this node"), "{}", run.stderr);
}

#[test]
fn a_node_killed_mid_run_loses_its_members_deliveries() {
    let redis = Redis::start();
    let (a, mut b) = two_nodes(&redis, &["--join-notices", "false"]);
    let started = Instant::now();
    let mut child = spawn_loadgen_with_progress(&[
        "--url",
        &a.url(),
        "--url",
        &b.url(),
        "--connections",
        "400",
        "--rooms",
        "2",
        "--room-size",
        "200",
        "--room-rate",
        "20",
        "--room-messages",
        "80",
        "--grace",
        "1",
    ]);
    let stderr = wait_for_phase(&mut child, "rooms", Duration::from_secs(30)).expect("room messages never started");
    std::thread::sleep(Duration::from_millis(500));
    b.child.kill().unwrap();
    let _ = b.child.wait();
    let run = finish_loadgen(child, started);
    let text = stderr.join().unwrap_or_default();
    assert_eq!(run.code, 1, "{text}\n{}", run.summary);
    let r = &run.summary["rooms"];
    // Half the members were on the killed node: every later message misses them.
    let lost = r["lost"].as_u64().unwrap();
    assert!(lost >= 100, "{r}");
    assert!(r["complete"].as_u64().unwrap() < r["sent"].as_u64().unwrap(), "{r}");
    let failures = run.summary["failures"].to_string();
    assert!(failures.contains("room member deliveries lost"), "{failures}");
}
