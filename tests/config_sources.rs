//! Settings from flags, SWITCHBOARD_* variables and a TOML file (in that
//! order of precedence), `check-config`, and the logs: JSON lines where no
//! terminal reads them, repeated warnings rate-limited.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::raw::{text, upgrade_request, RawClient};
use common::NodeProc;

/// Whether an upgrade on `path` gets a 101.
fn upgrades(addr: std::net::SocketAddr, path: &str) -> bool {
    let mut c = RawClient::connect(addr);
    c.send(upgrade_request(path).as_bytes());
    c.read_http_head().starts_with("HTTP/1.1 101 ")
}

/// A file of its own in the temporary directory, holding `contents`.
fn config_file(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("switchboard-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

fn switchboard(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard")).args(args).envs(env.iter().copied()).output().unwrap()
}

/// The line of `check-config` output for `key`.
fn line_of<'a>(stdout: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key} = ");
    stdout.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {key} in {stdout}"))
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let file = config_file("precedence", "keepalive = 5\nmax-output = 8192\ndrain-secs = 3\nreuse-port = true\n");
    let out = switchboard(
        &["check-config", "--config", file.to_str().unwrap(), "--drain-secs", "6"],
        &[("SWITCHBOARD_KEEPALIVE", "7"), ("SWITCHBOARD_DRAIN_SECS", "4"), ("SWITCHBOARD_MAX_NAME_LEN", "20")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let shown = file.display().to_string();
    for (key, value, from) in [
        ("drain-secs", "6", "flag".to_string()),
        ("keepalive", "7", "environment SWITCHBOARD_KEEPALIVE".to_string()),
        ("max-name-len", "20", "environment SWITCHBOARD_MAX_NAME_LEN".to_string()),
        ("max-output", "8192", format!("file {shown}")),
        ("reuse-port", "true", format!("file {shown}")),
        ("max-message-size", "65536", "default".to_string()),
        ("listen", "\"0.0.0.0:9000\"", "default".to_string()),
    ] {
        let line = line_of(&stdout, key);
        assert!(line.starts_with(&format!("{key} = {value} ")) && line.ends_with(&format!("# {from}")), "{line}");
    }
    assert!(stdout.contains("# valid"), "{stdout}");
}

#[test]
fn a_node_serves_with_what_the_file_and_environment_say() {
    let file = config_file("node", "ws-path = \"/chat\"\nmax-name-len = 8\n");
    let node = NodeProc::logged(&["--config", file.to_str().unwrap()], &[("SWITCHBOARD_ECHO_PATH", "/echo")]);
    assert!(upgrades(node.addr, "/chat"));
    assert!(upgrades(node.addr, "/echo"));
    assert!(!upgrades(node.addr, "/ws"));
    let mut c = RawClient::open(node.addr, "/chat");
    c.send(&text(r#"{"MessageType":"loginmsg","Sender":"much-too-long"}"#));
    assert!(c.read_text().contains("longer than 8 bytes"));
}

#[test]
fn unknown_keys_and_bad_values_in_the_file_are_refused_by_name() {
    for (contents, says) in [
        ("max_output = 8192\n", "unknown key `max_output` (did you mean `max-output`?)"),
        ("colour = \"blue\"\n", "unknown key `colour`"),
        ("keepalive = \"soon\"\n", "bad value for `keepalive`: invalid value 'soon' for '--keepalive <SECS>'"),
        ("reuse-port = 1\n", "bad value for `reuse-port`: expects true or false"),
        ("listen = [1, 2]\n", "bad value for `listen`"),
        ("keepalive = \n", "is not valid TOML"),
        ("keepalive = 4294967296\n", "--keepalive must be between 0 and 32767 s"),
    ] {
        let file = config_file("bad", contents);
        let out = switchboard(&["--listen", "127.0.0.1:0", "--config", file.to_str().unwrap()], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{contents}: {stderr}");
        assert!(stderr.contains(says), "{contents}: {stderr}");
    }
    let out = switchboard(&["--config", "/nonexistent/switchboard.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the configuration file /nonexistent"));
}

#[test]
fn check_config_output_is_a_config_file_and_refuses_what_a_node_would() {
    let first = switchboard(&["check-config", "--drain-secs", "7", "--node-id", "n1"], &[]);
    assert_eq!(first.status.code(), Some(0));
    let printed = String::from_utf8(first.stdout).unwrap();
    // Fed back as a file, it gives the same settings, every one now from the file.
    let file = config_file("roundtrip", &printed);
    let second = switchboard(&["check-config", "--config", file.to_str().unwrap()], &[]);
    let again = String::from_utf8(second.stdout).unwrap();
    let values = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split("  #").next().unwrap().trim().to_string())
            .collect()
    };
    assert_eq!(values(&printed), values(&again));
    assert!(line_of(&again, "drain-secs").ends_with(&format!("# file {}", file.display())));

    let bad = switchboard(&["check-config", "--keepalive", "99999"], &[]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--keepalive must be between 0 and 32767 s (got 99999)"));
}

#[test]
fn logs_are_json_lines_unless_a_terminal_or_the_flag_says_text() {
    let node = NodeProc::logged(&[], &[]);
    assert!(common::wait_until(Duration::from_secs(3), || node.log().contains("admin on")));
    let log = node.log();
    for line in log.lines() {
        let json: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["ts", "level", "target", "thread", "msg"] {
            assert!(json[key].is_string(), "{key} in {line}");
        }
    }
    assert!(log.contains(r#""level":"INFO""#) && log.contains("open-file limit"), "{log}");

    let text_node = NodeProc::logged(&["--log-format", "text"], &[]);
    assert!(common::wait_until(Duration::from_secs(3), || text_node.log().contains("admin on")));
    assert!(text_node.log().lines().all(|l| !l.starts_with('{')), "{}", text_node.log());
}

#[test]
fn failed_accepts_at_the_open_file_limit_are_logged_once_per_interval() {
    // 64 descriptors: a few dozen connections, then every accept fails (EMFILE).
    let mut command = Command::new("bash");
    command
        .args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0", "--reactors", "2"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped());
    let node = NodeProc::launch(command);
    let clients: Vec<_> = (0..150).filter_map(|_| std::net::TcpStream::connect(node.addr).ok()).collect();
    assert!(clients.len() > 64, "the kernel queued the connections the node cannot take");
    // Accepts are retried every 100 ms on each reactor: 60 failures in 3 s.
    std::thread::sleep(Duration::from_secs(3));
    let log = node.log();
    let lines = log.lines().filter(|l| l.contains("accept failed")).count();
    assert!(lines >= 1, "the failure is logged: {log}");
    assert!(lines <= 2, "{lines} lines in 3 s: {log}");
}
