//! Hot-path driver: pushes N chat messages through a node and reads every
//! delivery, so the node's cost per message can be measured (instructions under
//! callgrind with `scripts/callgrind.sh`, or wall-clock messages/s here).
//!
//! Opens 2K WebSocket connections one at a time against a node started with
//! `--accept handoff --reactors 2`: each accepted socket goes to the least-loaded
//! reactor, so connection `i` lands on reactor `i % 2`. K senders each chat to
//! one recipient, on the same reactor (`--mode same`) or on the other one
//! (`--mode cross`). Handshakes, logins and chat frames are pre-built and masked;
//! chat frames go out in batched writes. Prints one JSON summary and a human line.
//!
//!     cargo run --release --example chat_hotpath -- --messages 100000 --mode cross
//!     cargo run --release --example chat_hotpath -- --addr 127.0.0.1:9000 --messages 0

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Sender and recipient on the same reactor.
    Same,
    /// Sender and recipient on different reactors.
    Cross,
}

#[derive(Parser)]
struct Args {
    /// Chat messages in all (0: connect and log in only, the idle baseline).
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Sender/recipient pairs (even for `--mode same`).
    #[arg(long, default_value_t = 4)]
    pairs: usize,
    #[arg(long, value_enum, default_value_t = Mode::Cross)]
    mode: Mode,
    /// Chat frames per `write`.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Most messages a sender may be ahead of its recipient: keeps the node's
    /// pending output under `--max-output` (1 MiB), past which it closes a slow reader.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// The `Data` of every message.
    #[arg(long, default_value = "hello from the hot path: a chat line of ordinary length, 0123456789")]
    data: String,
    /// A running node (started with `--accept handoff --reactors 2`); without it
    /// the release binary next to this example is started.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Node binary to start when no `--addr` is given.
    #[arg(long)]
    node: Option<String>,
}

/// Reactors the node must run for the placement rule to hold.
const REACTORS: usize = 2;

fn masked(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut Vec<u8>) {
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

/// Opens one connection, upgrades it and logs it in, waiting for the 101.
fn open(addr: SocketAddr, name: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(600)))?;
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

fn users(addr: SocketAddr) -> u64 {
    let Ok(mut s) = TcpStream::connect(addr) else { return 0 };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines().find_map(|l| l.strip_prefix("switchboard_users ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Reads server frames until `count` text messages came; checks the first one.
fn receive(mut s: TcpStream, count: usize, expect: Vec<u8>, received: &AtomicUsize, sender: Thread) -> TcpStream {
    let mut buf = vec![0u8; 256 * 1024];
    let (mut have, mut got) = (0, 0);
    while got < count {
        let n = s.read(&mut buf[have..]).expect("read deliveries");
        assert!(n > 0, "node closed a recipient after {got} of {count} messages");
        have += n;
        let mut pos = 0;
        loop {
            let rest = &buf[pos..have];
            if rest.len() < 2 {
                break;
            }
            let (len, head) = match rest[1] {
                126 if rest.len() >= 4 => (usize::from(u16::from_be_bytes([rest[2], rest[3]])), 4),
                126 => break,
                n if n < 126 => (usize::from(n), 2),
                n => panic!("unexpected frame length byte {n}"),
            };
            if rest.len() < head + len {
                break;
            }
            assert_eq!(rest[0], 0x81, "a text frame, not {:?}", String::from_utf8_lossy(&rest[head..head + len]));
            if got == 0 {
                assert_eq!(&rest[head..head + len], &expect[..], "the delivered message");
            }
            got += 1;
            pos += head + len;
        }
        buf.copy_within(pos..have, 0);
        have -= pos;
        received.store(got, Ordering::Release);
        sender.unpark();
    }
    s
}

fn start_node(node: Option<String>) -> (Child, SocketAddr) {
    let exe = std::env::current_exe().expect("own path");
    let default = exe.parent().and_then(|p| p.parent()).map(|p| p.join("switchboard")).expect("target dir");
    let node = node.map(Into::into).unwrap_or(default);
    let mut child = Command::new(&node)
        .args(["--listen", "127.0.0.1:0", "--reactors", "2", "--accept", "handoff"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e} (cargo build --release first)", node.display()));
    let mut out = child.stdout.take().expect("stdout");
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while out.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        line.push(b[0]);
    }
    let line = String::from_utf8_lossy(&line);
    let addr = line.trim().rsplit(' ').next().and_then(|a| a.parse().ok()).expect("listening line");
    (child, addr)
}

fn main() {
    let args = Args::parse();
    assert!(args.pairs > 0 && (args.mode == Mode::Cross || args.pairs % 2 == 0), "--pairs must be even for same");
    let (mut child, addr) = match args.addr {
        Some(addr) => (None, addr),
        None => {
            let (c, a) = start_node(args.node.clone());
            (Some(c), a)
        }
    };

    // Connection i lands on reactor i % 2 (handoff to the least loaded, one at a time).
    let conns: Vec<TcpStream> = (0..2 * args.pairs)
        .map(|i| open(addr, &format!("u{i}")).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    while users(addr) < conns.len() as u64 {
        assert!(Instant::now() < deadline, "logins did not complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    // (sender, recipient) indices.
    let pairs: Vec<(usize, usize)> = match args.mode {
        Mode::Cross => (0..args.pairs).map(|j| (2 * j, 2 * j + 1)).collect(),
        Mode::Same => (0..args.pairs / 2).flat_map(|j| [(4 * j, 4 * j + 2), (4 * j + 1, 4 * j + 3)]).collect(),
    };
    for &(s, r) in &pairs {
        assert_eq!(s % REACTORS == r % REACTORS, args.mode == Mode::Same);
    }

    let mut slots: Vec<Option<TcpStream>> = conns.into_iter().map(Some).collect();
    let started = Instant::now();
    let mut threads = Vec::new();
    for (j, &(s, r)) in pairs.iter().enumerate() {
        let count = args.messages / args.pairs + usize::from(j < args.messages % args.pairs);
        let text = format!(r#"{{"MessageType":"chatmsg","Data":"{}","Reciever":"u{r}","Sender":"u{s}"}}"#, args.data);
        let expect = format!(r#"{{"MessageType":"chatmsg","Data":"{}","Reciever":"u{r}","Sender":"u{s}"}}"#, args.data)
            .into_bytes()
            .into_iter()
            .chain(*b"\n")
            .collect::<Vec<u8>>();
        let mut frame = Vec::new();
        masked(0x1, text.as_bytes(), [0xA5, 0x5A, 0x3C, 0xC3], &mut frame);
        let batch: Vec<u8> = frame.repeat(args.batch);
        let mut sender = slots[s].take().expect("one role per connection");
        let recipient = slots[r].take().expect("one role per connection");
        let received = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&received);
        let window = args.window.max(args.batch);
        threads.push(std::thread::spawn(move || {
            let mut sent = 0;
            while sent < count {
                let n = (count - sent).min(batch.len() / frame.len());
                while sent + n - seen.load(Ordering::Acquire) > window {
                    std::thread::park();
                }
                sender.write_all(&batch[..n * frame.len()]).expect("write chat frames");
                sent += n;
            }
            sender
        }));
        let sender = threads.last().expect("just pushed").thread().clone();
        threads.push(std::thread::spawn(move || receive(recipient, count, expect, &received, sender)));
    }
    let held: Vec<TcpStream> = threads.into_iter().map(|t| t.join().expect("client thread")).collect();
    let secs = started.elapsed().as_secs_f64();
    let rate = if secs > 0.0 { args.messages as f64 / secs } else { 0.0 };
    let mode = if args.mode == Mode::Same { "same" } else { "cross" };
    println!(
        "{{\"mode\":\"{mode}\",\"pairs\":{},\"messages\":{},\"seconds\":{secs:.3},\"messages_per_second\":{rate:.0}}}",
        args.pairs, args.messages
    );
    eprintln!(
        "{} messages ({mode}-reactor, {} pairs) delivered in {secs:.3} s: {rate:.0} messages/s",
        args.messages, args.pairs
    );
    drop(held);
    drop(slots);
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
