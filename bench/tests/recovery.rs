//! `--recover` against real nodes with history (Redis Streams): the recipients' node
//! goes away mid-chat, by a drain or a crash, and starts again on the same port; every
//! recipient reconnects with its last offset, and the run's exact accounting shows every
//! message delivered once: what the node lost with its clients was replayed.
//! And Redis frozen or killed (restarted from its append-only file) mid-chat:
//! by the same count, no kept message is lost or delivered twice.

mod common;

use std::time::{Duration, Instant};

use common::{finish_loadgen, free_port, run_loadgen, spawn_loadgen_with_progress, wait_for_phase, Node, Redis};

const HISTORY: [&str; 4] = ["--history-size", "10000", "--history-users", "true"];

fn flags<'a>(redis_url: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--redis", redis_url, "--lease-secs", "3"];
    flags.extend_from_slice(&HISTORY);
    flags.extend_from_slice(more);
    flags
}

/// 200 users, half on a node that stays (they send), half on a node that goes away 1.5 s
/// into 8 s of chat and comes back 1 s later (they receive); `stop` takes it away.
fn recipients_node_goes_and_comes_back(stop: impl FnOnce(&mut Node)) -> common::Run {
    let redis = Redis::start();
    let url = redis.url();
    let node_flags = flags(&url, &["--drain-secs", "0"]);
    let stays = Node::start_with(1, &node_flags);
    let port = free_port();
    let mut goes = Node::start_on(port, 1, &node_flags);
    let args = [
        "--url",
        &stays.url(),
        "--url",
        &goes.url(),
        "--connections",
        "200",
        "--pattern",
        "cross-node",
        "--rate",
        "500",
        "--duration",
        "8",
        "--grace",
        "5",
        "--recover",
        "--send-from",
        "0",
        "--reconnect-delay-ms",
        "300",
        "--recover-timeout",
        "20",
    ];
    let started = Instant::now();
    let mut child = spawn_loadgen_with_progress(&args);
    let stderr = wait_for_phase(&mut child, "chat", Duration::from_secs(30)).expect("chat never started");
    std::thread::sleep(Duration::from_millis(1500));
    stop(&mut goes);
    std::thread::sleep(Duration::from_secs(1));
    let _back = Node::start_on(port, 1, &node_flags);
    let mut run = finish_loadgen(child, started);
    run.stderr = stderr.join().unwrap_or_default();
    run
}

fn assert_every_message_once(run: &common::Run) {
    let s = &run.summary;
    eprintln!("recovery: {}", s["recovery"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let chat = &s["chat"];
    assert!(chat["sent"].as_u64().unwrap() > 2000, "{chat}");
    assert_eq!((chat["lost"].as_u64(), chat["duplicated"].as_u64()), (Some(0), Some(0)), "{chat}");
    let r = &s["recovery"];
    assert_eq!(r["dropped"], 100, "{r}");
    assert_eq!(r["recovered"], 100, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["outcomes"]["recovered"], 100, "{r}");
    assert_eq!((r["outcomes"]["gap"].as_u64(), r["outcomes"]["reset"].as_u64()), (Some(0), Some(0)), "{r}");
    // A second of messages to 100 absent users came back as replays.
    assert!(r["replayed"].as_u64().unwrap() >= 100, "{r}");
    assert!(r["time"]["p50_us"].as_u64().unwrap() >= 1_000_000, "recovered before the node was back: {r}");
}

#[test]
fn recipients_drained_by_a_restart_get_every_message_once() {
    let run = recipients_node_goes_and_comes_back(|node| {
        // SIGTERM: the drain (--drain-secs 0) closes every client with 1001 and exits.
        let pid = node.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = node.child.wait().expect("wait for the drained node");
        assert!(status.success(), "the drained node exited with {status}");
    });
    assert_every_message_once(&run);
    let causes = run.summary["causes"].to_string();
    assert!(causes.contains("close 1001"), "the drops are told as the node's 1001: {causes}");
}

#[test]
fn recipients_of_a_crashed_node_get_every_message_once() {
    // kill -9: the node's names stay claimed until its lease (3 s) runs out, so the first
    // logins elsewhere are refused and tried again; what Redis had handed the dead node
    // is replayed from the stream.
    let run = recipients_node_goes_and_comes_back(|node| {
        node.child.kill().expect("kill -9 the node");
        let _ = node.child.wait();
    });
    assert_every_message_once(&run);
}

#[test]
fn a_node_without_history_is_named_when_recover_waits_for_it() {
    let redis = Redis::start();
    let url = redis.url();
    let node = Node::start_with(1, &["--redis", &url]);
    let run = run_loadgen(&["--url", &node.url(), "--connections", "5", "--recover", "--connect-timeout", "2"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("--history-users"), "{}", run.stderr);
    assert_eq!(run.summary["login"]["failed"], 5, "{}", run.summary["login"]);
}

/// Two nodes with history, 400 users chatting across them at 500 messages/s for 8 s;
/// 1.5 s in, Redis goes through `outage`. The load generator's exact count: nothing lost,
/// nothing twice, no sender told of a loss.
fn chat_through_a_redis_outage(redis: &mut Redis, outage: impl FnOnce(&mut Redis)) {
    let url = redis.url();
    let node_flags = flags(&url, &["--redis-timeout-ms", "1000"]);
    let (a, b) = (Node::start_with(1, &node_flags), Node::start_with(1, &node_flags));
    let args = ["--url", &a.url(), "--url", &b.url(), "--connections", "400", "--pattern", "cross-node"];
    let more = ["--rate", "500", "--duration", "8", "--grace", "10", "--recover"];
    let started = Instant::now();
    let mut child = spawn_loadgen_with_progress(&[&args[..], &more[..]].concat());
    let stderr = wait_for_phase(&mut child, "chat", Duration::from_secs(30)).expect("chat never started");
    std::thread::sleep(Duration::from_millis(1500));
    outage(redis);
    let mut run = finish_loadgen(child, started);
    run.stderr = stderr.join().unwrap_or_default();
    let chat = &run.summary["chat"];
    assert_eq!(run.code, 0, "{chat} {}", run.stderr);
    assert!(chat["sent"].as_u64().unwrap() >= 3900, "{chat}");
    assert_eq!((chat["lost"].as_u64(), chat["duplicated"].as_u64()), (Some(0), Some(0)), "{chat}");
    assert_eq!(run.summary["errors"]["total"], 0, "{}", run.summary["errors"]);
}

#[test]
fn a_redis_frozen_mid_chat_loses_nothing_kept() {
    let mut redis = Redis::start();
    chat_through_a_redis_outage(&mut redis, |redis| redis.freeze(Duration::from_secs(3)));
}

#[test]
fn a_redis_killed_mid_chat_and_restarted_from_its_log_loses_nothing_kept() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    chat_through_a_redis_outage(&mut redis, |redis| redis.crash_and_restart(Duration::from_secs(1)));
}
