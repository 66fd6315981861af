//! Hot-path driver: pushes N chat messages through a node and reads every
//! delivery, so the node's cost per message can be measured (instructions under
//! callgrind with `scripts/callgrind.sh`, or wall-clock messages/s here).
//!
//! Opens 2K WebSocket connections one at a time against a node started with
//! `--accept handoff --reactors 2`: each accepted socket goes to the least-loaded
//! reactor, so connection `i` lands on reactor `i % 2`. K senders each chat to
//! one recipient, on the same reactor (`--mode same`), on the other one
//! (`--mode cross`), or on another node of a Redis cluster (`--mode node
//! --peer ADDR`: recipients on the peer, so every message crosses the bus;
//! `scripts/callgrind-bus.sh` measures that). Handshakes, logins and chat
//! frames are pre-built and masked; chat frames go out in batched writes.
//! Prints one JSON summary and a human line.
//!
//!     cargo run --release --example chat_hotpath -- --messages 100000 --mode cross
//!     cargo run --release --example chat_hotpath -- --addr 127.0.0.1:9000 --messages 0

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

use support::{masked, open_logged_in, users};

mod support;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Sender and recipient on the same reactor.
    Same,
    /// Sender and recipient on different reactors.
    Cross,
    /// Senders on `--addr`, recipients on `--peer` (another node of the
    /// same Redis cluster): every message crosses the bus.
    Node,
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
    #[arg(long, requires = "admin")]
    addr: Option<SocketAddr>,
    /// The admin address of the running node (its second stdout line).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// With `--mode node`: the node that holds the recipients.
    #[arg(long)]
    peer: Option<SocketAddr>,
    /// With `--mode node`: the admin address of that node.
    #[arg(long)]
    peer_admin: Option<SocketAddr>,
    /// Node binary to start when no `--addr` is given.
    #[arg(long)]
    node: Option<String>,
}

/// Reactors the node must run for the placement rule to hold.
const REACTORS: usize = 2;

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

fn main() {
    let args = Args::parse();
    assert!(args.pairs > 0 && (args.mode != Mode::Same || args.pairs % 2 == 0), "--pairs must be even for same");
    let peer = match args.mode {
        Mode::Node => Some((
            args.peer.expect("--mode node needs --peer ADDR"),
            args.peer_admin.expect("--mode node needs --peer-admin ADDR"),
        )),
        _ => None,
    };
    let (mut child, addr, admin) = match (args.addr, args.admin) {
        (Some(addr), Some(admin)) => (None, addr, admin),
        _ => {
            let mut node_args = ["--reactors", &REACTORS.to_string(), "--accept", "handoff"].map(String::from).to_vec();
            node_args.extend(support::BENCH_LIMITS.map(String::from));
            let (c, a, admin) = support::start_node(args.node.clone(), &node_args);
            (Some(c), a, admin)
        }
    };

    // Connection i lands on reactor i % 2 (handoff to the least loaded, one
    // at a time); with a peer, odd connections (the recipients) are on it.
    let node_of = |i: usize| match peer {
        Some((peer, _)) if i % 2 == 1 => peer,
        _ => addr,
    };
    let conns: Vec<TcpStream> = (0..2 * args.pairs)
        .map(|i| {
            open_logged_in(node_of(i), &format!("u{i}"), Duration::from_secs(600))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected = |node| (0..conns.len()).filter(|&i| node_of(i) == node).count() as u64;
    while users(admin) < expected(addr) || peer.is_some_and(|(p, p_admin)| users(p_admin) < expected(p)) {
        assert!(Instant::now() < deadline, "logins did not complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    // (sender, recipient) indices.
    let pairs: Vec<(usize, usize)> = match args.mode {
        Mode::Cross | Mode::Node => (0..args.pairs).map(|j| (2 * j, 2 * j + 1)).collect(),
        Mode::Same => (0..args.pairs / 2).flat_map(|j| [(4 * j, 4 * j + 2), (4 * j + 1, 4 * j + 3)]).collect(),
    };
    for &(s, r) in &pairs {
        assert!(args.mode == Mode::Node || (s % REACTORS == r % REACTORS) == (args.mode == Mode::Same));
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
    let mode = match args.mode {
        Mode::Same => "same",
        Mode::Cross => "cross",
        Mode::Node => "node",
    };
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
