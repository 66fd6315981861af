//! Cross-node chat throughput and latency through the Redis bus.
//!
//! Opens `--users` WebSocket clients spread round-robin over the `--url`
//! nodes; user i sends to user i+1, who is always on another node. Each user
//! keeps `--window` messages in flight (closed loop: a delivery lets its
//! sender send again), so the run measures what the cluster sustains. Data
//! carries the send time; latency is send-to-delivery on this process's clock.
//!
//! Prints one JSON summary line and one human line:
//!
//!     cargo run --release --example cluster_bench -- --url ws://127.0.0.1:9001/ws \
//!         --url ws://127.0.0.1:9002/ws --users 512 --window 16 --seconds 5
//!
//! One thread, one mio poll: the load generator takes as little of the
//! machine as it can, since the nodes and Redis share it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Args {
    urls: Vec<(SocketAddr, String)>,
    users: usize,
    window: usize,
    seconds: f64,
    warmup: f64,
    label: String,
}

fn parse_args() -> Args {
    let mut args = Args { urls: Vec::new(), users: 256, window: 8, seconds: 5.0, warmup: 1.0, label: String::new() };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match flag.as_str() {
            "--url" => {
                let url = value();
                let rest = url.strip_prefix("ws://").unwrap_or_else(|| usage("ws:// URLs only"));
                let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
                let addr = host
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .unwrap_or_else(|| usage(&format!("cannot resolve {host}")));
                args.urls.push((addr, path));
            }
            "--users" => args.users = value().parse().unwrap_or_else(|_| usage("--users N")),
            "--window" => args.window = value().parse().unwrap_or_else(|_| usage("--window N")),
            "--seconds" => args.seconds = value().parse().unwrap_or_else(|_| usage("--seconds S")),
            "--warmup" => args.warmup = value().parse().unwrap_or_else(|_| usage("--warmup S")),
            "--label" => args.label = value(),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if args.urls.len() < 2 {
        usage("give at least two --url (nodes), so that chat crosses nodes");
    }
    // A multiple of the node count keeps user i+1 on another node, wrap included.
    args.users = args.users.div_ceil(args.urls.len()) * args.urls.len();
    args
}

fn usage(why: &str) -> ! {
    eprintln!("cluster_bench: {why}\nusage: cluster_bench --url ws://HOST:PORT/ws --url ... [--users N] [--window N] [--seconds S] [--warmup S] [--label TEXT]");
    std::process::exit(2);
}

#[derive(PartialEq)]
enum Phase {
    Handshake,
    LoggingIn,
    Ready,
}

struct Client {
    stream: TcpStream,
    phase: Phase,
    input: Vec<u8>,
    output: Vec<u8>,
    in_flight: usize,
}

fn name(i: usize) -> String {
    format!("b{i}")
}

/// A masked client text frame with mask key 0 (valid masking, payload as is).
fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.push(0x81);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

fn push_chat(out: &mut Vec<u8>, to: &str, data: &str) {
    let json = format!(r#"{{"MessageType":"chatmsg","Data":"{data}","Reciever":"{to}","Sender":"x"}}"#);
    push_frame(out, json.as_bytes());
}

/// One complete server frame at the start of `buf`: (payload range, total length).
fn server_frame(buf: &[u8]) -> Option<(std::ops::Range<usize>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (len, at) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().ok()?) as usize, 10),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    (buf.len() >= at + len).then_some((at..at + len, at + len))
}

fn main() -> io::Result<()> {
    let args = parse_args();
    let mut poll = Poll::new()?;
    let mut clients = Vec::with_capacity(args.users);
    for i in 0..args.users {
        let (addr, path) = &args.urls[i % args.urls.len()];
        let mut stream = TcpStream::connect(*addr)?;
        stream.set_nodelay(true)?;
        poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        let mut output = Vec::new();
        write!(
            output,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )?;
        clients.push(Client { stream, phase: Phase::Handshake, input: Vec::new(), output, in_flight: 0 });
    }
    let start = Instant::now();
    let mut events = Events::with_capacity(1024);
    let mut ready = 0;
    let mut chatting: Option<Instant> = None;
    let mut measuring: Option<Instant> = None;
    let mut delivered = 0u64;
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 22);
    let mut dirty: Vec<usize> = (0..args.users).collect();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut seq = 0u64;
    loop {
        poll.poll(&mut events, Some(Duration::from_millis(20)))?;
        let now = Instant::now();
        if let Some(m) = measuring {
            if now.duration_since(m).as_secs_f64() >= args.seconds {
                break;
            }
        } else if chatting.is_some_and(|c| now.duration_since(c).as_secs_f64() >= args.warmup) {
            measuring = Some(now);
            delivered = 0;
            latencies.clear();
        }
        if start.elapsed() > Duration::from_secs(60) && chatting.is_none() {
            eprintln!("cluster_bench: only {ready} of {} users logged in after 60 s", args.users);
            std::process::exit(1);
        }
        for event in events.iter() {
            let i = event.token().0;
            if event.is_writable() {
                dirty.push(i);
            }
            if !event.is_readable() {
                continue;
            }
            loop {
                let c = &mut clients[i];
                match c.stream.read(&mut chunk) {
                    Ok(0) => {
                        eprintln!("cluster_bench: node closed user {}", name(i));
                        std::process::exit(1);
                    }
                    Ok(n) => c.input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let c = &mut clients[i];
            if c.phase == Phase::Handshake {
                let Some(end) = c.input.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                c.input.drain(..end + 4);
                c.phase = Phase::LoggingIn;
                let login = format!(r#"{{"MessageType":"loginmsg","Sender":"{}"}}"#, name(i));
                push_frame(&mut c.output, login.as_bytes());
                push_chat(&mut c.output, &name(i), "probe");
                dirty.push(i);
            }
            let mut at = 0;
            let mut sends = 0;
            while let Some((payload, used)) = server_frame(&c.input[at..]) {
                let text = &c.input[at + payload.start..at + payload.end];
                at += used;
                if c.phase == Phase::LoggingIn {
                    // The node holds the probe until the cluster decides the login.
                    if text.windows(7).any(|w| w == b"\"probe\"") {
                        c.phase = Phase::Ready;
                        ready += 1;
                    } else {
                        eprintln!("cluster_bench: login of {} got {:?}", name(i), String::from_utf8_lossy(text));
                        std::process::exit(1);
                    }
                    continue;
                }
                // {"MessageType":"chatmsg","Data":"T S",...}: T = send time in µs.
                let Some(data) = text.get(33..).and_then(|d| d.split(|&b| b == b' ').next()) else {
                    continue;
                };
                if let Some(sent) = std::str::from_utf8(data).ok().and_then(|d| d.parse::<u64>().ok()) {
                    let now_us = start.elapsed().as_micros() as u64;
                    latencies.push(now_us.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                    delivered += 1;
                    sends += 1;
                } else if text.windows(8).any(|w| w == b"errormsg") {
                    eprintln!("cluster_bench: {} got {:?}", name(i), String::from_utf8_lossy(text));
                }
            }
            c.input.drain(..at);
            // Each delivery to user i came from user i-1: it may send again.
            let sender = (i + args.users - 1) % args.users;
            clients[sender].in_flight -= sends.min(clients[sender].in_flight);
            if sends > 0 {
                dirty.push(sender);
            }
        }
        if chatting.is_none() && ready == args.users {
            chatting = Some(Instant::now());
            eprintln!("cluster_bench: {ready} users logged in after {:.1?}; chatting", start.elapsed());
        }
        if chatting.is_some() {
            let now_us = start.elapsed().as_micros();
            for &i in &dirty {
                let to = name((i + 1) % args.users);
                let c = &mut clients[i];
                while c.in_flight < args.window {
                    seq += 1;
                    push_chat(&mut c.output, &to, &format!("{now_us} {seq}"));
                    c.in_flight += 1;
                }
            }
        }
        for i in dirty.drain(..) {
            let c = &mut clients[i];
            while !c.output.is_empty() {
                match c.stream.write(&c.output) {
                    Ok(n) => {
                        c.output.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    let elapsed = measuring.map_or(1.0, |m| m.elapsed().as_secs_f64());
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let rate = delivered as f64 / elapsed;
    println!(
        "{{\"label\":\"{}\",\"nodes\":{},\"users\":{},\"window\":{},\"seconds\":{elapsed:.2},\"delivered\":{delivered},\"delivered_per_s\":{rate:.0},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        args.label,
        args.urls.len(),
        args.users,
        args.window,
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0)
    );
    eprintln!(
        "{} {} nodes: {rate:.0} cross-node messages/s delivered, p50 {:.2} ms, p99 {:.2} ms",
        args.label,
        args.urls.len(),
        f64::from(pct(0.50)) / 1000.0,
        f64::from(pct(0.99)) / 1000.0
    );
    Ok(())
}
