//! The load generator against the independent test server in `common`: exact counts,
//! deliberate loss, and wrong targets.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{dead_port, run_loadgen, TestServer};

#[test]
fn counts_match_what_the_server_saw() {
    let server = TestServer::start(0);
    let url = server.url("/ws");
    let run = run_loadgen(&[
        "--url",
        &url,
        "--connections",
        "300",
        "--rate",
        "1500",
        "--duration",
        "1",
        "--payload",
        "100",
        "--grace",
        "3",
        "--workers",
        "3",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.summary;
    assert_eq!(s["connect"]["established"], 300);
    assert_eq!(s["login"]["ok"], 300);
    let sent = s["chat"]["sent"].as_u64().unwrap();
    assert!(sent > 1000, "sent {sent}");
    assert_eq!(s["chat"]["delivered"], sent);
    assert_eq!(s["chat"]["lost"], 0);
    assert_eq!(s["chat"]["duplicated"], 0);
    assert_eq!(server.seen.upgrades.load(Ordering::Relaxed), 300);
    assert_eq!(server.seen.logins.load(Ordering::Relaxed), 300);
    assert_eq!(server.seen.chats.load(Ordering::Relaxed), sent);
    assert!(s["chat"]["latency"]["p99_us"].as_u64().unwrap() > 0);
    assert_eq!(s["ok"], true);
    assert_eq!(s["config"]["workers"], 3);
}

#[test]
fn dropped_messages_count_as_lost_and_fail_the_run() {
    let server = TestServer::start(50);
    let url = server.url("/ws");
    let run =
        run_loadgen(&["--url", &url, "--connections", "100", "--rate", "1000", "--duration", "1", "--grace", "1"]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let dropped = server.seen.dropped.load(Ordering::Relaxed);
    assert!(dropped > 0);
    assert_eq!(run.summary["chat"]["lost"], dropped);
    assert_eq!(
        run.summary["chat"]["delivered"].as_u64().unwrap() + dropped,
        run.summary["chat"]["sent"].as_u64().unwrap()
    );
    assert!(run.stderr.contains("lost"), "stderr: {}", run.stderr);
}

#[test]
fn nothing_listening_is_a_clear_quick_error() {
    let url = format!("ws://127.0.0.1:{}/ws", dead_port());
    let run = run_loadgen(&["--url", &url, "--connections", "500"]);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("no connection could be made"), "{}", run.stderr);
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(10), "took {:?}", run.elapsed);
}

#[test]
fn wrong_path_reports_the_http_status() {
    let server = TestServer::start(0);
    let url = server.url("/nope");
    let run = run_loadgen(&["--url", &url, "--connections", "50"]);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("HTTP 404 Not Found"), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(10), "took {:?}", run.elapsed);
}

#[test]
fn bad_url_is_refused_before_anything_starts() {
    let run = run_loadgen(&["--url", "http://127.0.0.1:1/ws"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("bad --url"), "{}", run.stderr);
    let run = run_loadgen(&["--url", "ws://127.0.0.1:1/ws", "--pattern", "cross-node"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("two --url"), "{}", run.stderr);
}

#[test]
fn a_server_that_never_answers_times_out() {
    // Accepts TCP but never answers the upgrade request.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let run = run_loadgen(&["--url", &url, "--connections", "20", "--connect-timeout", "1"]);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(run.elapsed < Duration::from_secs(10), "took {:?}", run.elapsed);
    drop(listener);
}

#[test]
fn churn_reconnects_and_logs_in_again() {
    let server = TestServer::start(0);
    let url = server.url("/ws");
    let run = run_loadgen(&["--url", &url, "--connections", "200", "--churn-rate", "300", "--churn-duration", "1"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let churned = run.summary["churn"]["ok"].as_u64().unwrap();
    assert!(churned >= 200, "churned {churned}");
    assert_eq!(run.summary["churn"]["failed"], 0);
    assert_eq!(run.summary["connect"]["open_at_end"], 200);
    // Every churn is one more upgrade and one more login.
    assert_eq!(server.seen.upgrades.load(Ordering::Relaxed), 200 + churned);
    assert_eq!(server.seen.logins.load(Ordering::Relaxed), 200 + churned);
}

#[test]
fn cross_node_pattern_over_two_urls() {
    // Two URLs that reach the same server: every message crosses "nodes" and still arrives.
    let server = TestServer::start(0);
    let url = server.url("/ws");
    let run = run_loadgen(&[
        "--url",
        &url,
        "--url",
        &url,
        "--connections",
        "200",
        "--pattern",
        "cross-node",
        "--rate",
        "1000",
        "--duration",
        "1",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary["config"]["urls"].as_array().unwrap().len(), 2);
    assert_eq!(run.summary["chat"]["lost"], 0);
    assert_eq!(run.summary["chat"]["delivered"], run.summary["chat"]["sent"]);
}

#[test]
fn connect_and_hold_without_login() {
    let server = TestServer::start(0);
    let url = server.url("/ws");
    let run = run_loadgen(&["--url", &url, "--connections", "100", "--no-login", "--hold", "1"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary["connect"]["established"], 100);
    assert_eq!(run.summary["login"]["ok"], 0);
    assert_eq!(run.summary["chat"]["ran"], false);
    assert_eq!(server.seen.logins.load(Ordering::Relaxed), 0);
}
