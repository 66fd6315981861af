//! Peers for the load generator's integration tests:
//! - `TestServer`: a small, independent, thread-per-connection WebSocket chat server (std
//!   only) that speaks the seed's protocol, counts what it saw, and can drop messages on
//!   purpose;
//! - `Node`: the real switchboard binary, built on demand;
//! - `run_loadgen`: the real `loadgen` binary, with its JSON summary parsed.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What the test server saw.
#[derive(Default)]
pub struct Seen {
    pub upgrades: AtomicU64,
    pub logins: AtomicU64,
    pub chats: AtomicU64,
    pub dropped: AtomicU64,
}

type Directory = Mutex<HashMap<String, Arc<Mutex<TcpStream>>>>;

pub struct TestServer {
    pub port: u16,
    pub seen: Arc<Seen>,
}

impl TestServer {
    /// Starts the server on 127.0.0.1:0. `drop_every`: drop every n-th chat message that
    /// is not a login marker (0: drop none).
    pub fn start(drop_every: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let directory: Arc<Directory> = Arc::default();
        let counter = Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (seen, directory, counter) = (seen2.clone(), directory.clone(), counter.clone());
                let _ = thread::Builder::new()
                    .stack_size(128 * 1024)
                    .spawn(move || serve(stream, &seen, &directory, &counter, drop_every));
            }
        });
        TestServer { port, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(stream: TcpStream, seen: &Seen, directory: &Directory, counter: &AtomicU64, drop_every: u64) {
    stream.set_nodelay(true).ok();
    let writer = Arc::new(Mutex::new(stream.try_clone().expect("clone")));
    let mut reader = BufReader::new(stream);
    // HTTP upgrade.
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut key = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("sec-websocket-key") {
                key = Some(value.trim().to_string());
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let Some(key) = key.filter(|_| path == "/ws") else {
        let _ = writer
            .lock()
            .unwrap()
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if writer.lock().unwrap().write_all(response.as_bytes()).is_err() {
        return;
    }
    seen.upgrades.fetch_add(1, Ordering::Relaxed);
    let mut me: Option<String> = None;
    while let Some((opcode, payload)) = read_frame(&mut reader) {
        match opcode {
            0x1 => {
                let v: serde_json::Value = match serde_json::from_slice(&payload) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                match v["MessageType"].as_str() {
                    Some("loginmsg") => {
                        let name = v["Sender"].as_str().unwrap_or("").to_string();
                        let mut dir = directory.lock().unwrap();
                        if dir.contains_key(&name) {
                            drop(dir);
                            send_text(&writer, b"\"User already exists\"\n");
                        } else {
                            dir.insert(name.clone(), writer.clone());
                            me = Some(name);
                            seen.logins.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some("chatmsg") => {
                        let Some(sender) = &me else { continue };
                        let data = v["Data"].as_str().unwrap_or("");
                        let to = v["Reciever"].as_str().unwrap_or("");
                        if !data.starts_with("login;") {
                            seen.chats.fetch_add(1, Ordering::Relaxed);
                            let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
                            if drop_every > 0 && n.is_multiple_of(drop_every) {
                                seen.dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                        }
                        let out = format!(
                            "{{\"MessageType\":\"chatmsg\",\"Data\":{},\"Reciever\":{},\"Sender\":{}}}\n",
                            serde_json::Value::from(data),
                            serde_json::Value::from(to),
                            serde_json::Value::from(sender.as_str())
                        );
                        let target = directory.lock().unwrap().get(to).cloned();
                        if let Some(target) = target {
                            send_text(&target, out.as_bytes());
                        }
                    }
                    _ => send_text(&writer, br#"{"MessageType":"errormsg","Data":"unknown message type"}"#),
                }
            }
            0x8 => {
                // Log the user out before answering, as a server should.
                if let Some(name) = me.take() {
                    directory.lock().unwrap().remove(&name);
                }
                let mut w = writer.lock().unwrap();
                let _ = w.write_all(&[0x88, 0]);
                let _ = w.shutdown(Shutdown::Both);
                break;
            }
            0x9 => {
                let mut frame = vec![0x8A, payload.len() as u8];
                frame.extend_from_slice(&payload);
                let _ = writer.lock().unwrap().write_all(&frame);
            }
            _ => {}
        }
    }
    if let Some(name) = me {
        directory.lock().unwrap().remove(&name);
    }
}

fn read_frame(reader: &mut impl Read) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).ok()?;
    let mut len = (head[1] & 0x7F) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        reader.read_exact(&mut b).ok()?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        reader.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        reader.read_exact(&mut mask).ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    reader.read_exact(&mut payload).ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    Some((head[0] & 0x0F, payload))
}

fn send_text(writer: &Mutex<TcpStream>, payload: &[u8]) {
    let mut frame = vec![0x81];
    if payload.len() < 126 {
        frame.push(payload.len() as u8);
    } else {
        frame.push(126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(payload);
    let _ = writer.lock().unwrap().write_all(&frame);
}

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
        let bin = node_binary();
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--reactors", &reactors.to_string()])
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

/// A port on 127.0.0.1 with nothing listening (bound, then released).
pub fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
