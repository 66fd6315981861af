//! What the examples share: a node started from the release build, raw
//! connections that upgrade and log in in one write, and a metrics read.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Node flags for a benchmark run from one host: thousands of connections
/// from one address, opened as fast as the client can, and messages as fast
/// as the node takes them. The limits stay switched on (the same code runs
/// per message), only set out of reach.
pub const BENCH_LIMITS: [&str; 10] = [
    "--max-connections-per-address",
    "0",
    "--connect-rate",
    "0",
    "--message-rate",
    "1000000",
    "--message-burst",
    "1000000",
    "--inbox-size",
    "1000000",
];

/// Appends a masked, final client frame (payloads up to 64 KiB).
pub fn masked(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            assert!(n <= usize::from(u16::MAX));
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// Opens one connection, upgrades it and logs it in as `name` in one write,
/// then waits for the 101.
pub fn open_logged_in(addr: SocketAddr, name: &str, read_timeout: Duration) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(read_timeout))?;
    let mut req = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        .to_vec();
    let login = format!(r#"{{"MessageType":"loginmsg","Sender":"{name}"}}"#);
    masked(0x1, login.as_bytes(), [0x11, 0x22, 0x33, 0x44], &mut req);
    s.write_all(&req)?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::other("closed during the handshake"));
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(std::io::Error::other(String::from_utf8_lossy(&head).into_owned()));
    }
    Ok(s)
}

/// The node's `switchboard_users` gauge, from its admin listener (0 when it
/// cannot be read).
pub fn users(admin: SocketAddr) -> u64 {
    let Ok(mut s) = TcpStream::connect(admin) else { return 0 };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines().find_map(|l| l.strip_prefix("switchboard_users ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Starts `node` (default: the `switchboard` binary of the same build) on a
/// free loopback port with `args`, and returns it with its chat and admin addresses.
pub fn start_node(node: Option<String>, args: &[String]) -> (Child, SocketAddr, SocketAddr) {
    let exe = std::env::current_exe().expect("own path");
    let default = exe.parent().and_then(|p| p.parent()).map(|p| p.join("switchboard")).expect("target dir");
    let node = node.map(Into::into).unwrap_or(default);
    let mut child = Command::new(&node)
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (cargo build --release first)", node.display()));
    let mut out = child.stdout.take().expect("stdout");
    let mut address = || {
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
            line.push(b[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        line.trim().rsplit(' ').next().and_then(|a| a.parse().ok()).expect("an address line")
    };
    // "switchboard listening on ADDR", then "switchboard admin on ADDR".
    let addr = address();
    let admin = address();
    (child, addr, admin)
}
