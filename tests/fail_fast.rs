//! A node fails loudly rather than partly: a setting it cannot use is refused
//! at start with the flag's name, and a thread that panics takes the whole
//! process down with a non-zero status, so that a supervisor restarts it.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use common::raw::{text, RawClient};
use common::NodeProc;

/// Runs the node with `args` and `env`; returns its exit code and stderr.
fn refused(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let listen: &[&str] = if args.contains(&"--listen") { &[] } else { &["--listen", "127.0.0.1:0"] };
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(listen)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run the node");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn absurd_numbers_are_refused_naming_the_flag() {
    for (args, says) in [
        (&["--keepalive", "4294967296"][..], "--keepalive must be between 0 and 32767 s (got 4294967296)"),
        (&["--reactors", "100000"][..], "--reactors must be between 0 and 1024 (got 100000)"),
        (&["--drain-secs", "99999999"][..], "--drain-secs must be between 0 and 3600 s"),
        (&["--handshake-timeout", "18446744073709551615"][..], "--handshake-timeout must be between 1 and 86400 s"),
        (&["--message-timeout", "0"][..], "--message-timeout must be between 1 and 86400 s"),
        (&["--max-output", "1"][..], "--max-output must be between 4096 and"),
        // Too big for the type: clap names the flag.
        (&["--keepalive", "99999999999999999999"][..], "'--keepalive <SECS>'"),
        (&["--drain-secs=-1"][..], "invalid value '-1' for '--drain-secs <SECS>'"),
        (
            &["--admin-addr", "127.0.0.1:9000", "--listen", "127.0.0.1:9000"][..],
            "--admin-addr must differ from --listen",
        ),
    ] {
        let (code, stderr) = refused(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("Invalid argument"), "{args:?}: {stderr}");
    }
}

#[test]
fn the_environment_is_checked_like_the_flags() {
    let (code, stderr) = refused(&[], &[("SWITCHBOARD_KEEPALIVE", "4294967296")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--keepalive must be between 0 and 32767 s"), "{stderr}");
}

#[test]
fn a_panicking_reactor_takes_the_node_down_for_its_supervisor() {
    // Reactor 1 of 2 panics one second in; reactor 0 serves until then.
    let mut node = NodeProc::logged(&["--reactors", "2", "--fault-panic-after", "1"], &[]);
    let mut alice = RawClient::open(node.addr, "/ws");
    alice.send(&text(r#"{"MessageType":"loginmsg","Sender":"alice"}"#));
    let status = node.wait_exit(Duration::from_secs(10)).expect("the node exits after the panic");
    assert_eq!(status.code(), Some(101), "{status:?}");
    let log = node.log();
    assert!(log.contains("thread reactor-1 panicked"), "{log}");
    assert!(log.contains("panic injected by --fault-panic-after"), "{log}");
    // Its clients see the connection end, its port is free for the restart.
    assert!(alice.at_eof());
    assert!(std::net::TcpStream::connect(node.addr).is_err(), "nothing listens on {} any more", node.addr);
}
