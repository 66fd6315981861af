//! The load generator against the real switchboard node (built on demand): counts that
//! match the node's own metrics, and a node killed mid-chat.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{finish_loadgen, metric, run_loadgen, Node};

#[test]
fn two_thousand_users_all_delivered_and_counted_by_the_node() {
    let node = Node::start(2);
    let pid = node.pid().to_string();
    let run = run_loadgen(&[
        "--url",
        &node.url(),
        "--connections",
        "2000",
        "--rate",
        "4000",
        "--duration",
        "2",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.summary;
    assert_eq!(s["connect"]["established"], 2000);
    assert_eq!(s["login"]["ok"], 2000);
    let sent = s["chat"]["sent"].as_u64().unwrap();
    assert!(sent >= 6000, "sent {sent}");
    assert_eq!(s["chat"]["delivered"], sent);
    assert_eq!(s["chat"]["lost"], 0);
    assert_eq!(s["chat"]["duplicated"], 0);
    assert_eq!(s["errors"]["total"], 0);
    // What the node saw: every upgrade, and every chat message plus one login marker per user.
    assert_eq!(metric(node.admin_port, "switchboard_handshakes_total"), 2000);
    assert_eq!(metric(node.admin_port, "switchboard_messages_out_total"), sent + 2000);
    assert!(s["memory"]["server_rss_per_connection"].as_f64().is_some());
}

#[test]
fn node_killed_mid_chat_means_lost_messages_and_failure() {
    let mut node = Node::start(1);
    let started = Instant::now();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--url", &node.url(), "--connections", "300", "--rate", "2000", "--duration", "4"])
        .args(["--grace", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The progress lines (plain on a pipe) say when chat is under way.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(" chat ") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(Duration::from_secs(20)).expect("chat never started");
    // Freeze the node first so that messages are certainly in flight, then kill it.
    let pid = node.pid() as i32;
    // SAFETY: plain signals to our own child process.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(300));
    node.child.kill().unwrap();
    let _ = node.child.wait();
    let run = finish_loadgen(child, started);
    assert_eq!(run.code, 1, "summary: {}", run.summary);
    let s = &run.summary;
    assert!(s["chat"]["lost"].as_u64().unwrap() > 0, "summary: {s}");
    assert!(s["errors"]["reset"].as_u64().unwrap() > 0, "summary: {s}");
    assert!(run.elapsed < Duration::from_secs(20), "took {:?}", run.elapsed);
}
