//! Shared test helpers: the real node binary on port 0, real Redis servers,
//! and a plain tungstenite client.
#![allow(dead_code)]
// Helpers of tests: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

pub mod api;
pub mod ports;
pub mod process;
pub mod raw;
pub mod redis;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// A node process, killed when dropped.
pub struct NodeProc {
    pub child: Child,
    /// The chat listener.
    pub addr: SocketAddr,
    /// The admin listener: /metrics, /healthz, /readyz.
    pub admin: SocketAddr,
    /// What the node wrote to stderr so far, when started with [`NodeProc::logged`].
    log: Option<Arc<Mutex<String>>>,
}

impl NodeProc {
    /// Starts `switchboard --listen 127.0.0.1:0 ARGS` and waits for its two
    /// address lines (chat, then admin).
    pub fn start(args: &[&str]) -> NodeProc {
        Self::start_on("127.0.0.1:0", args)
    }

    pub fn start_on(listen: &str, args: &[&str]) -> NodeProc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command.arg("--listen").arg(listen).args(args).env("RUST_LOG", "warn").stderr(Stdio::inherit());
        Self::launch(command)
    }

    /// Starts `command` (the node binary, or a shell that execs it) and waits
    /// for its two address lines.
    pub fn launch(mut command: Command) -> NodeProc {
        let mut child = command.stdout(Stdio::piped()).spawn().expect("start the switchboard binary");
        let log = child.stderr.take().map(|stderr| {
            let log = Arc::new(Mutex::new(String::new()));
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
            log
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let addr = read_address(&mut stdout, "switchboard listening on ");
        let admin = read_address(&mut stdout, "switchboard admin on ");
        NodeProc { child, addr, admin, log }
    }

    /// Like [`NodeProc::start`], with stderr captured (see [`NodeProc::log`]),
    /// `RUST_LOG=info` and the environment `env`.
    pub fn logged(args: &[&str], env: &[(&str, &str)]) -> NodeProc {
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command.args(["--listen", "127.0.0.1:0"]).args(args).env("RUST_LOG", "info").stderr(Stdio::piped());
        command.envs(env.iter().copied());
        Self::launch(command)
    }

    /// What the node logged so far (nodes started with [`NodeProc::logged`]).
    pub fn log(&self) -> String {
        self.log.as_ref().expect("a node started with NodeProc::logged").lock().unwrap().clone()
    }

    /// Waits up to `timeout` for the node to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the node") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// GETs a plain HTTP path and returns the whole response.
    pub fn http_get(&self, path: &str) -> String {
        raw_exchange(self.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    /// GETs a path of the admin listener and returns the whole response.
    pub fn admin_get(&self, path: &str) -> String {
        raw_exchange(self.admin, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
    }

    /// One metric's value from `/metrics` (on the admin listener).
    pub fn metric(&self, name: &str) -> u64 {
        let body = self.admin_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no metric {name} in {body}"))
            .trim()
            .parse()
            .expect("a number")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("wait for the node")
    }

    /// Freezes the node (SIGSTOP): what clients send piles up in the kernel,
    /// so that the node meets it all in one turn when resumed.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address on the next line of a node's stdout, after `prefix`.
pub fn read_address(stdout: &mut impl BufRead, prefix: &str) -> SocketAddr {
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read an address line");
    line.trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected {prefix:?} from the node, got {line:?}"))
        .parse()
        .expect("a socket address")
}

/// Writes `request` on a fresh TCP connection and reads until the server closes.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).expect("write request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub type Ws = WebSocket<TcpStream>;

/// A blocking tungstenite client with a read timeout.
pub fn connect(url: &str) -> Ws {
    connect_with(url, WebSocketConfig::default())
}

pub fn connect_with(url: &str, config: WebSocketConfig) -> Ws {
    let req = url.into_client_request().expect("a ws URL");
    let host = req.uri().host().unwrap().to_string();
    let port = req.uri().port_u16().unwrap();
    let stream = TcpStream::connect((host.as_str(), port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.set_nodelay(true).unwrap();
    let (ws, _) = tungstenite::client::client_with_config(req, stream, Some(config)).expect("handshake");
    ws
}

pub fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).expect("send");
}

pub fn login(ws: &mut Ws, name: &str) {
    send(ws, &format!(r#"{{"MessageType":"loginmsg","Sender":"{name}"}}"#));
}

pub fn chat(ws: &mut Ws, to: &str, data: &str) {
    send(ws, &format!(r#"{{"MessageType":"chatmsg","Data":"{data}","Reciever":"{to}","Sender":"someone"}}"#));
}

/// The next text message, skipping pings; panics on timeout or close.
pub fn recv_text(ws: &mut Ws) -> String {
    loop {
        match ws.read().expect("read a message") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// The exact bytes a recipient gets for a chat message (the seed's format).
pub fn chat_bytes(data: &str, to: &str, from: &str) -> String {
    format!("{{\"MessageType\":\"chatmsg\",\"Data\":\"{data}\",\"Reciever\":\"{to}\",\"Sender\":\"{from}\"}}\n")
}

/// Logs `ws` in as `name` and waits until the login has taken effect, by
/// sending itself a message and reading it back.
pub fn login_and_confirm(ws: &mut Ws, name: &str) {
    login(ws, name);
    chat(ws, name, "login-probe");
    assert_eq!(recv_text(ws), chat_bytes("login-probe", name, name));
}

/// Polls `check` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}
