//! Memory benchmark: does a node give back what a burst of stalled messages took?
//!
//! Starts a node (the release build next to this example, or `--node`),
//! reads its RSS, opens N WebSocket connections that each send most of one
//! 64 KiB message and stop (a partial frame the node must hold), reads the
//! RSS with them held, closes them all, and reads the RSS again after
//! `--settle` seconds. Prints one JSON summary plus a human line.
//!
//!     cargo run --release --example burst_memory -- --connections 300

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use clap::{ArgAction, Parser};

mod support;

#[derive(Parser)]
struct Args {
    /// Connections that each leave one message unfinished.
    #[arg(long, default_value_t = 300)]
    connections: usize,
    /// Bytes of the 65,536-byte message each sends before stopping.
    #[arg(long, default_value_t = 60_000)]
    sent: usize,
    /// Seconds after the connections close before the last RSS reading.
    #[arg(long, default_value_t = 10)]
    settle: u64,
    /// Node binary to start (default: the release build next to this example).
    #[arg(long)]
    node: Option<String>,
    /// Start the node with the per-address and per-second limits out of reach
    /// (`--lift-limits=false` for a build that has no such flags).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    lift_limits: bool,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the node's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

/// Upgrades a connection and sends the first `sent` bytes of a 64 KiB binary message.
fn stall(addr: std::net::SocketAddr, sent: usize) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("upgrade");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("101"), 1, "closed during the upgrade");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&65_536u64.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.resize(frame.len() + sent, 0x5A);
    s.write_all(&frame).expect("partial message");
    s
}

fn main() {
    let args = Args::parse();
    let node_args: Vec<String> =
        if args.lift_limits { support::BENCH_LIMITS.map(String::from).to_vec() } else { Vec::new() };
    let (mut child, addr, _admin) = support::start_node(args.node.clone(), &node_args);
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let held: Vec<TcpStream> = (0..args.connections).map(|_| stall(addr, args.sent)).collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = rss_kib(pid);
    drop(held);
    std::thread::sleep(Duration::from_secs(args.settle));
    let after = rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{{\"connections\":{},\"sent_bytes_each\":{},\"settle_seconds\":{},\"node_rss_before_kib\":{before},\"node_rss_held_kib\":{during},\"node_rss_after_kib\":{after}}}",
        args.connections, args.sent, args.settle
    );
    eprintln!(
        "{} stalled 64 KiB messages: node RSS {before} KiB before, {during} KiB while held, {after} KiB {} s after they closed",
        args.connections, args.settle
    );
}
