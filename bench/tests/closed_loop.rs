//! Closed-loop chat (`--closed-loop IN_FLIGHT`): against the real node every message is
//! delivered and the node counts the same; against a server that delivers nothing, each
//! connection sends exactly its window and then waits.

mod common;

use std::sync::atomic::Ordering;

use common::{metric, run_loadgen, Node, TestServer};

#[test]
fn every_message_is_delivered_through_the_real_node() {
    let node = Node::start(2);
    let url = node.url();
    let pid = node.pid().to_string();
    // Two URLs that reach the same node: every recipient is on the other "node".
    let run = run_loadgen(&[
        "--url",
        &url,
        "--url",
        &url,
        "--pattern",
        "cross-node",
        "--connections",
        "400",
        "--closed-loop",
        "8",
        "--duration",
        "2",
        "--threads",
        "2",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.summary;
    assert_eq!(s["config"]["closed_loop"], 8);
    assert_eq!(s["config"]["rate"], 0);
    assert_eq!(s["login"]["ok"], 400);
    assert_eq!(s["chat"]["ran"], true);
    let sent = s["chat"]["sent"].as_u64().unwrap();
    // 400 connections x 8 in flight fill the window at once; a loaded machine still
    // turns it over many times in 2 s.
    assert!(sent > 10 * 400 * 8, "sent {sent}");
    assert_eq!(s["chat"]["delivered"], sent);
    assert_eq!(s["chat"]["received"], sent);
    assert_eq!(s["chat"]["lost"], 0);
    assert_eq!(s["chat"]["duplicated"], 0);
    assert_eq!(s["chat"]["misrouted"], 0);
    assert_eq!(s["chat"]["send_behind"], 0);
    // No schedule in closed loop: a message is meant to go when it goes.
    assert_eq!(s["chat"]["generator_lag"]["count"], 0);
    assert_eq!(s["chat"]["service_latency"], s["chat"]["latency"]);
    assert_eq!(s["errors"]["total"], 0);
    assert!(s["chat"]["latency"]["p99_us"].as_u64().unwrap() > 0);
    assert!(run.stderr.contains("closed loop, 8 in flight per connection"), "{}", run.stderr);
    // The node wrote every chat message once, plus one login marker per user.
    assert_eq!(metric(node.admin_port, "switchboard_messages_out_total"), sent + 400);
}

#[test]
fn a_window_is_all_a_connection_sends_without_deliveries() {
    // Drops every chat message that is not a login marker: no window ever reopens.
    let server = TestServer::start(1);
    let url = server.url("/ws");
    let run =
        run_loadgen(&["--url", &url, "--connections", "50", "--closed-loop", "3", "--duration", "1", "--grace", "0.5"]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let s = &run.summary;
    assert_eq!(s["chat"]["sent"], 150);
    assert_eq!(server.seen.chats.load(Ordering::Relaxed), 150);
    assert_eq!(s["chat"]["lost"], 150);
    assert!(s["failures"][0].as_str().unwrap().contains("150 of 150 chat messages lost"), "{}", s["failures"]);
}

#[test]
fn rate_and_closed_loop_together_are_refused() {
    let run = run_loadgen(&["--url", "ws://127.0.0.1:1/ws", "--rate", "100", "--closed-loop", "4"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("give one"), "{}", run.stderr);
}
