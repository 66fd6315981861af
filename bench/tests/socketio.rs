//! `--protocol socketio` against the real Socket.IO server (bench/socketio/server.js,
//! socket.io 4 with the Redis adapter): two nodes and a real redis-server per test.
//! Every message delivered exactly once across nodes, Engine.IO's pings answered, a name
//! taken refused as the seed refuses it, and event names the server does not know named
//! in the error instead of silence.

mod common;

use std::time::{Duration, Instant};

use common::{finish_loadgen, run_loadgen, spawn_loadgen_with_progress, wait_for_phase, Redis, SioNode};

/// Redis and two Socket.IO nodes joined through it.
fn cluster(extra: &[&str]) -> (Redis, SioNode, SioNode) {
    let redis = Redis::start();
    let a = SioNode::start(&redis.url(), extra);
    let b = SioNode::start(&redis.url(), extra);
    (redis, a, b)
}

/// How many times Redis ran `command` (INFO commandstats).
fn calls(redis: &Redis, command: &str) -> u64 {
    let stats = redis.command("INFO commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_message_crosses_nodes_through_redis_exactly_once() {
    let (redis, a, b) = cluster(&[]);
    let (pa, pb) = (a.pid().to_string(), b.pid().to_string());
    let run = run_loadgen(&[
        "--protocol",
        "socketio",
        "--url",
        &a.url(),
        "--url",
        &b.url(),
        "--server-pid",
        &pa,
        "--server-pid",
        &pb,
        "--connections",
        "400",
        "--pattern",
        "cross-node",
        "--rate",
        "1000",
        "--duration",
        "3",
        "--churn-rate",
        "20",
        "--churn-duration",
        "2",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.summary;
    assert_eq!((s["connect"]["established"].as_u64(), s["login"]["ok"].as_u64()), (Some(400), Some(400)), "{s}");
    let sent = s["chat"]["sent"].as_u64().unwrap();
    assert!(sent >= 2900, "sent {sent}");
    assert_eq!(s["chat"]["delivered"], sent);
    assert_eq!((s["chat"]["lost"].as_u64(), s["chat"]["duplicated"].as_u64()), (Some(0), Some(0)));
    assert_eq!(s["chat"]["misrouted"], 0);
    assert_eq!(s["errors"]["total"], 0);
    assert!(s["chat"]["latency"]["p99_us"].as_u64().unwrap() > 0);
    // Every user left and logged in again under its name (the node freed it first).
    assert!(s["churn"]["ok"].as_u64().unwrap() >= 30, "{}", s["churn"]);
    assert_eq!(s["churn"]["failed"], 0);
    // Each chat message went node -> Redis -> node: the adapter published it.
    let published = calls(&redis, "publish");
    assert!(published >= sent, "Redis saw {published} PUBLISH for {sent} messages");
}

#[test]
fn engineio_pings_are_answered_with_pongs() {
    // A client that does not pong within interval + timeout (0.4 s) is dropped.
    let (_redis, a, b) = cluster(&["--ping-interval", "200", "--ping-timeout", "200"]);
    let run = run_loadgen(&[
        "--protocol",
        "socketio",
        "--url",
        &a.url(),
        "--url",
        &b.url(),
        "--connections",
        "60",
        "--hold",
        "2",
        "--rate",
        "100",
        "--duration",
        "1",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary["errors"]["total"], 0, "{}", run.summary["errors"]);
    assert_eq!(run.summary["chat"]["lost"], 0);
}

#[test]
fn a_name_taken_on_either_node_is_refused_as_the_seed_refuses_it() {
    let (_redis, a, b) = cluster(&[]);
    let urls = ["--protocol", "socketio", "--url", &a.url(), "--url", &b.url(), "--connections", "50"];
    let started = Instant::now();
    let mut holder = spawn_loadgen_with_progress(&[&urls[..], &["--hold", "30"]].concat());
    let progress = wait_for_phase(&mut holder, "hold", Duration::from_secs(20)).expect("first run never held");
    // The same names again, each on the other node.
    let second = run_loadgen(&["--protocol", "socketio", "--url", &b.url(), "--url", &a.url(), "--connections", "50"]);
    assert_eq!(second.code, 1, "stderr: {}", second.stderr);
    assert_eq!(second.summary["errors"]["login_rejected"], 50, "{}", second.summary["errors"]);
    assert_eq!(second.summary["login"]["failed"], 50);
    assert!(second.stderr.contains("rejected: \"User already exists\""), "{}", second.stderr);
    // SAFETY: a plain signal to our own child process.
    unsafe { libc::kill(holder.id() as i32, libc::SIGTERM) };
    let first = finish_loadgen(holder, started);
    drop(progress);
    assert_eq!(first.summary["login"]["ok"], 50, "{}", first.summary);
}

#[test]
fn a_login_event_the_server_does_not_know_is_named_in_the_error() {
    let (_redis, a, b) = cluster(&[]);
    let run = run_loadgen(&[
        "--protocol",
        "socketio",
        "--url",
        &a.url(),
        "--url",
        &b.url(),
        "--connections",
        "20",
        "--rate",
        "100",
        "--connect-timeout",
        "2",
        "--sio-login-event",
        "login",
    ]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    let why = "no ack for event \"login\" within 2 s: is the server's login event called that?";
    assert!(
        run.stderr.contains(&format!("why:     the load generator gave up 20: {why} during login 20")),
        "{}",
        run.stderr
    );
    assert_eq!(run.summary["causes"]["loadgen"]["by_cause"][format!("{why} during login")], 20);
    assert!(run.elapsed < Duration::from_secs(15), "took {:?}", run.elapsed);
}

#[test]
fn event_names_follow_the_flags_and_an_unknown_chat_event_is_named() {
    let (_redis, a, b) = cluster(&["--login-event", "signin", "--chat-event", "say"]);
    let base = ["--protocol", "socketio", "--url", &a.url(), "--url", &b.url(), "--connections", "40"];
    let chat = ["--rate", "200", "--duration", "1", "--grace", "1", "--sio-login-event", "signin"];
    let renamed = run_loadgen(&[&base[..], &chat, &["--sio-chat-event", "say"]].concat());
    assert_eq!(renamed.code, 0, "stderr: {}", renamed.stderr);
    assert_eq!(renamed.summary["chat"]["lost"], 0);

    let wrong = run_loadgen(&[&base[..], &chat].concat());
    assert_eq!(wrong.code, 1, "stderr: {}", wrong.stderr);
    let failures = wrong.summary["failures"].to_string();
    assert!(
        failures.contains(r#"none came back: is the server's chat event called \"chatmsg\"? --sio-chat-event"#),
        "{failures}"
    );
}
