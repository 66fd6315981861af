//! `TestServer`: a small, independent, thread-per-connection WebSocket chat server (std
//! only) that speaks the seed's protocol and counts what it saw. Its `Behaviour` makes it
//! misbehave on purpose: drop messages, stall once, answer the upgrade late or with an
//! HTTP error, close a connection with a close frame after its login.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
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
    /// Connections accepted and not yet answered the upgrade, and the most at once.
    pub pending: AtomicU64,
    pub max_pending: AtomicU64,
    /// The source address and port of every connection accepted.
    pub peers: Mutex<Vec<SocketAddr>>,
}

/// How the server misbehaves (the default: not at all).
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Drop every n-th chat message that is not a login marker (0: none).
    pub drop_every: u64,
    /// After this many chat messages, every connection stops reading and delivering for
    /// the given time, once (a stop-the-world pause).
    pub stall_after: Option<(u64, Duration)>,
    /// Wait this long before answering each upgrade.
    pub upgrade_delay: Duration,
    /// Answer every upgrade with this HTTP status line instead of 101.
    pub refuse_with: Option<&'static str>,
    /// Close every connection with this close frame right after its login.
    pub close_after_login: Option<(u16, &'static str)>,
}

type Directory = Mutex<HashMap<String, Arc<Mutex<TcpStream>>>>;

pub struct TestServer {
    pub port: u16,
    pub seen: Arc<Seen>,
}

/// What every connection's thread shares.
struct State {
    seen: Arc<Seen>,
    directory: Directory,
    chats: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
    behaviour: Behaviour,
}

impl TestServer {
    /// Starts the server on 127.0.0.1:0, dropping every `drop_every`-th chat message.
    pub fn start(drop_every: u64) -> Self {
        Self::with(Behaviour { drop_every, ..Behaviour::default() })
    }

    /// Starts the server on 127.0.0.1:0, misbehaving as told.
    pub fn with(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Seen::default());
        let state = Arc::new(State {
            seen: seen.clone(),
            directory: Mutex::default(),
            chats: AtomicU64::new(0),
            stall_until: Mutex::new(None),
            behaviour,
        });
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let state = state.clone();
                let _ = thread::Builder::new().stack_size(128 * 1024).spawn(move || serve(stream, &state));
            }
        });
        TestServer { port, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }
}

fn serve(stream: TcpStream, state: &State) {
    let seen = &state.seen;
    stream.set_nodelay(true).ok();
    if let Ok(peer) = stream.peer_addr() {
        seen.peers.lock().unwrap().push(peer);
    }
    let now_pending = seen.pending.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_pending.fetch_max(now_pending, Ordering::SeqCst);
    let writer = Arc::new(Mutex::new(stream.try_clone().expect("clone")));
    let mut reader = BufReader::new(stream);
    if !upgrade(&mut reader, &writer, state) {
        return;
    }
    seen.upgrades.fetch_add(1, Ordering::Relaxed);
    let mut me: Option<String> = None;
    while let Some((opcode, payload)) = read_frame(&mut reader) {
        wait_out_stall(state);
        match opcode {
            0x1 => on_text(state, &writer, &mut me, &payload),
            0x8 => {
                // Log the user out before answering, as a server should.
                if let Some(name) = me.take() {
                    state.directory.lock().unwrap().remove(&name);
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
        state.directory.lock().unwrap().remove(&name);
    }
}

/// Reads the upgrade request and answers it (101, or the error the behaviour asks for).
/// The connection stops counting as pending just before the answer goes out, so the count
/// never includes one whose client may already have moved on.
fn upgrade(reader: &mut BufReader<TcpStream>, writer: &Mutex<TcpStream>, state: &State) -> bool {
    let answered = || state.seen.pending.fetch_sub(1, Ordering::SeqCst);
    let behaviour = &state.behaviour;
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        answered();
        return false;
    }
    let mut key = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            answered();
            return false;
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
    thread::sleep(behaviour.upgrade_delay);
    answered();
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let status = if path == "/ws" { behaviour.refuse_with } else { Some("404 Not Found") };
    let (Some(key), None) = (key, status) else {
        let status = status.unwrap_or("400 Bad Request");
        let answer = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let _ = writer.lock().unwrap().write_all(answer.as_bytes());
        return false;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    writer.lock().unwrap().write_all(response.as_bytes()).is_ok()
}

/// During a stall every connection's thread waits before it handles anything more.
fn wait_out_stall(state: &State) {
    let until = *state.stall_until.lock().unwrap();
    if let Some(until) = until {
        let now = Instant::now();
        if now < until {
            thread::sleep(until - now);
        }
    }
}

fn on_text(state: &State, writer: &Arc<Mutex<TcpStream>>, me: &mut Option<String>, payload: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else { return };
    match v["MessageType"].as_str() {
        Some("loginmsg") => {
            let name = v["Sender"].as_str().unwrap_or("").to_string();
            let mut dir = state.directory.lock().unwrap();
            if dir.contains_key(&name) {
                drop(dir);
                send_text(writer, b"\"User already exists\"\n");
                return;
            }
            dir.insert(name.clone(), writer.clone());
            *me = Some(name);
            state.seen.logins.fetch_add(1, Ordering::Relaxed);
            if let Some((code, reason)) = state.behaviour.close_after_login {
                let mut frame = vec![0x88, 2 + reason.len() as u8];
                frame.extend_from_slice(&code.to_be_bytes());
                frame.extend_from_slice(reason.as_bytes());
                let _ = writer.lock().unwrap().write_all(&frame);
            }
        }
        Some("chatmsg") => on_chat(state, &v, me.as_deref()),
        _ => send_text(writer, br#"{"MessageType":"errormsg","Data":"unknown message type"}"#),
    }
}

fn on_chat(state: &State, v: &serde_json::Value, me: Option<&str>) {
    let Some(sender) = me else { return };
    let data = v["Data"].as_str().unwrap_or("");
    let to = v["Reciever"].as_str().unwrap_or("");
    if !data.starts_with("login;") {
        state.seen.chats.fetch_add(1, Ordering::Relaxed);
        let n = state.chats.fetch_add(1, Ordering::Relaxed) + 1;
        let drop_every = state.behaviour.drop_every;
        if drop_every > 0 && n.is_multiple_of(drop_every) {
            state.seen.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Some((after, stall)) = state.behaviour.stall_after {
            if n == after {
                *state.stall_until.lock().unwrap() = Some(Instant::now() + stall);
                thread::sleep(stall);
            }
        }
    }
    let out = format!(
        "{{\"MessageType\":\"chatmsg\",\"Data\":{},\"Reciever\":{},\"Sender\":{}}}\n",
        serde_json::Value::from(data),
        serde_json::Value::from(to),
        serde_json::Value::from(sender)
    );
    let target = state.directory.lock().unwrap().get(to).cloned();
    if let Some(target) = target {
        send_text(&target, out.as_bytes());
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
