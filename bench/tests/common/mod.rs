//! Peers for the load generator's integration tests:
//! - `TestServer` (`server.rs`): a small, independent, thread-per-connection WebSocket
//!   chat server (std only) that speaks the seed's protocol, counts what it saw, and
//!   misbehaves on purpose when told (`Behaviour`);
//! - `Node`: the real switchboard binary, built on demand, and `metric` to read its
//!   `/metrics`;
//! - `run_loadgen`: the real `loadgen` binary, with its JSON summary parsed;
//! - `Redis` (`redis.rs`), `SioNode` (`socketio.rs`: bench/socketio/server.js) and
//!   `Nginx` (`nginx.rs`: TLS in front of nodes): the real servers, started per test.

#![allow(dead_code)]

mod nginx;
mod redis;
mod server;
mod socketio;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

#[allow(unused_imports)]
pub use nginx::Nginx;
#[allow(unused_imports)]
pub use redis::Redis;
#[allow(unused_imports)]
pub use server::{Behaviour, Seen, TestServer};
#[allow(unused_imports)]
pub use socketio::SioNode;

/// A finished loadgen run.
pub struct Run {
    pub code: i32,
    pub summary: serde_json::Value,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Runs the loadgen binary with `args` (plus --quiet) and parses its JSON summary.
pub fn run_loadgen(args: &[&str]) -> Run {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_loadgen")).args(args).arg("--quiet").output().expect("run loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let summary = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    Run { code: output.status.code().unwrap_or(-1), summary, stderr, elapsed: started.elapsed() }
}

/// Spawns loadgen without waiting (for tests that act on the server mid-run).
pub fn spawn_loadgen(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .arg("--quiet")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen")
}

/// Spawns loadgen with its progress lines on (for tests that wait for a phase).
pub fn spawn_loadgen_with_progress(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn loadgen")
}

/// Waits until a spawned loadgen's progress lines (plain lines on a pipe) show `phase`,
/// then hands its stderr to a thread that keeps the rest; `None` if it never does.
pub fn wait_for_phase(child: &mut Child, phase: &str, within: Duration) -> Option<thread::JoinHandle<String>> {
    let stderr = child.stderr.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = format!(" {phase} ");
    let reader = thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    rx.recv_timeout(within).ok().map(|()| reader)
}

/// The worker processes of a running loadgen (its children).
pub fn children_of(pid: u32) -> Vec<u32> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// Waits for a spawned loadgen and parses its output.
pub fn finish_loadgen(child: Child, started: Instant) -> Run {
    let output = child.wait_with_output().expect("wait loadgen");
    Run {
        code: output.status.code().unwrap_or(-1),
        summary: serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null),
        stderr: String::from_utf8_lossy(&output.stderr).to_string(),
        elapsed: started.elapsed(),
    }
}

/// The real switchboard node, started on 127.0.0.1:0.
pub struct Node {
    pub child: Child,
    pub port: u16,
    /// The admin listener's port (/metrics).
    pub admin_port: u16,
}

impl Node {
    /// Builds the node if its binary is missing (same profile as this test), then starts it
    /// and reads the port from its `listening on 127.0.0.1:PORT` line.
    pub fn start(reactors: u32) -> Node {
        Node::start_with(reactors, &[])
    }

    /// The same with more flags (`--redis URL`, room limits...).
    pub fn start_with(reactors: u32, extra: &[&str]) -> Node {
        Node::start_on(0, reactors, extra)
    }

    /// The same on a given port (0: any free one), e.g. to start a node again where
    /// its clients will reconnect.
    pub fn start_on(port: u16, reactors: u32, extra: &[&str]) -> Node {
        let bin = node_binary();
        let mut child = Command::new(&bin)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--reactors", &reactors.to_string()])
            .args(extra)
            // Thousands of connections from one address, opened at once, and
            // chatting as fast as they can.
            .args(["--max-connections-per-address", "0", "--connect-rate", "0", "--message-rate", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if let Some(port) = parse_listening(&line) {
                        let _ = tx.send((false, port));
                    } else if let Some(port) = line.strip_prefix("switchboard admin on ").and_then(port_of) {
                        let _ = tx.send((true, port));
                    }
                }
            });
        }
        let (mut port, mut admin_port) = (None, None);
        while port.is_none() || admin_port.is_none() {
            let (admin, p) = rx.recv_timeout(Duration::from_secs(20)).expect(
                "switchboard did not print `listening on 127.0.0.1:PORT` and `switchboard admin on 127.0.0.1:PORT`",
            );
            *(if admin { &mut admin_port } else { &mut port }) = Some(p);
        }
        Node { child, port: port.unwrap(), admin_port: admin_port.unwrap() }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One value from the node's /metrics.
pub fn metric(port: u16, name: &str) -> u64 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect for /metrics");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

fn parse_listening(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    port_of(rest.split_whitespace().next()?)
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.trim_end_matches(|c: char| !c.is_ascii_digit()).parse().ok()
}

/// target/<profile>/switchboard, built with `cargo build -p switchboard` when missing.
fn node_binary() -> PathBuf {
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target").join(profile).join("switchboard");
    if !bin.exists() {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.current_dir(&root).args(["build", "-p", "switchboard"]);
        if profile == "release" {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build -p switchboard");
        assert!(status.success(), "cargo build -p switchboard failed");
    }
    bin
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    dead_port()
}

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
