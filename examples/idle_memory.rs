//! Memory benchmark: how much node RSS one idle, logged-in connection costs.
//!
//! Starts a node (or measures a running one with `--addr` and `--pid`), reads
//! its RSS, opens N WebSocket connections that each log in and then stay idle,
//! waits until the node reports N users, reads its RSS again, and prints one
//! JSON summary plus a human line. Exits 1 when the cost per connection is over
//! `--budget` bytes.
//!
//! With `--hold SECS` it then keeps the connections open that long, answering
//! the node's pings as a browser would, and reports the node's CPU time
//! (utime + stime from /proc) over the hold: what idle connections cost.
//!
//!     cargo run --release --example idle_memory -- --connections 19000
//!     cargo run --release --example idle_memory -- --connections 19000 --hold 60

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser};

use support::{open_logged_in, users};

mod support;

#[derive(Parser)]
struct Args {
    /// Idle logged-in connections to open.
    #[arg(long, default_value_t = 19_000)]
    connections: usize,
    /// Node binary to start (default: the release build next to this example).
    #[arg(long)]
    node: Option<String>,
    /// Reactor threads for the started node.
    #[arg(long, default_value_t = 2)]
    reactors: usize,
    /// Extra flag for the started node, e.g. `--node-arg=--accept=handoff` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    node_arg: Vec<String>,
    /// Measure a running node at this address instead of starting one (needs
    /// --pid and --admin).
    #[arg(long, requires = "pid", requires = "admin")]
    addr: Option<SocketAddr>,
    /// The admin address of the running node (its second stdout line).
    #[arg(long)]
    admin: Option<SocketAddr>,
    #[arg(long)]
    pid: Option<u32>,
    /// Client threads opening connections.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Most node RSS bytes one idle connection may cost.
    #[arg(long, default_value_t = 512)]
    budget: u64,
    /// After measuring memory, hold the connections this many seconds
    /// (answering pings) and report the node's CPU time over the hold.
    #[arg(long, default_value_t = 0)]
    hold: u64,
    /// Start the node with the per-address and per-second limits out of reach
    /// (`--lift-limits=false` for a build that has no such flags).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    lift_limits: bool,
}

/// The node's CPU time so far (utime + stime), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read the node's /proc stat");
    // Fields after the command name (which may hold spaces) start at state (3rd).
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).expect("stat format");
    let fields: Vec<u64> = after.split_whitespace().skip(11).take(2).map(|v| v.parse().unwrap_or(0)).collect();
    // SAFETY: sysconf reads a constant of the system.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (fields[0] + fields[1]) as f64 / ticks
}

/// Holds `streams` open for `secs`, answering every ping with a pong; returns
/// the pings answered.
fn hold(streams: Vec<TcpStream>, secs: u64) -> u64 {
    let mut poll = mio::Poll::new().expect("poll");
    let mut socks: Vec<mio::net::TcpStream> = Vec::with_capacity(streams.len());
    for (i, s) in streams.into_iter().enumerate() {
        s.set_nonblocking(true).expect("nonblocking");
        let mut m = mio::net::TcpStream::from_std(s);
        poll.registry().register(&mut m, mio::Token(i), mio::Interest::READABLE).expect("register");
        socks.push(m);
    }
    let mut events = mio::Events::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let mut pings = 0;
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        poll.poll(&mut events, Some(Duration::from_millis(200))).expect("poll");
        for event in events.iter() {
            let sock = &mut socks[event.token().0];
            loop {
                match sock.read(&mut buf) {
                    Ok(0) => panic!("connection {} closed by the node", event.token().0),
                    Ok(n) => {
                        // Server pings carry no payload here: 0x89 0x00.
                        for _ in buf[..n].windows(2).filter(|w| w == &[0x89, 0x00]) {
                            let _ = sock.write_all(&[0x8A, 0x80, 1, 2, 3, 4]);
                            pings += 1;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("connection {}: {e}", event.token().0),
                }
            }
        }
    }
    pings
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the node's /proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

fn meminfo_kib(key: &str) -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn raise_nofile() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

fn main() {
    let args = Args::parse();
    raise_nofile();
    let mut child: Option<Child> = None;
    let (addr, admin, pid) = match (args.addr, args.admin, args.pid) {
        (Some(addr), Some(admin), Some(pid)) => (addr, admin, pid),
        _ => {
            let mut node_args = vec!["--reactors".to_string(), args.reactors.to_string()];
            if args.lift_limits {
                node_args.extend(support::BENCH_LIMITS.map(String::from));
            }
            node_args.extend(args.node_arg.iter().cloned());
            let (c, addr, admin) = support::start_node(args.node.clone(), &node_args);
            let pid = c.id();
            child = Some(c);
            (addr, admin, pid)
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let rss_before = rss_kib(pid);
    let slab_before = meminfo_kib("Slab:");
    let started = Instant::now();
    let per_thread = args.connections.div_ceil(args.threads);
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mut held = Vec::with_capacity(per_thread);
                for i in t * per_thread..((t + 1) * per_thread).min(args.connections) {
                    match open_logged_in(addr, &format!("idle{i}"), Duration::from_secs(10)) {
                        Ok(s) => held.push(s),
                        Err(e) => panic!("connection {i}: {e}"),
                    }
                }
                held
            })
        })
        .collect();
    let held: Vec<TcpStream> = handles.into_iter().flat_map(|h| h.join().expect("client thread")).collect();
    let open_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    while users(admin) < args.connections as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let logged_in = users(admin);
    // Let the allocator settle (jemalloc returns dirty pages on a decay timer).
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(pid);
    let slab_after = meminfo_kib("Slab:");
    let per_conn = (rss_after.saturating_sub(rss_before) * 1024) as f64 / held.len() as f64;
    let kernel_per_conn = (slab_after.saturating_sub(slab_before) * 1024) as f64 / held.len() as f64;
    let connections = held.len();
    let (mut hold_cpu, mut pings) = (0.0, 0);
    if args.hold > 0 {
        let cpu_before = cpu_seconds(pid);
        pings = hold(held, args.hold);
        hold_cpu = cpu_seconds(pid) - cpu_before;
        eprintln!(
            "held {connections} idle connections {} s: node CPU {hold_cpu:.2} s ({:.3}% of one core), {pings} pings answered",
            args.hold,
            hold_cpu * 100.0 / args.hold as f64
        );
    } else {
        drop(held);
    }
    println!(
        "{{\"connections\":{},\"logged_in\":{},\"open_seconds\":{:.2},\"node_rss_before_kib\":{},\"node_rss_after_kib\":{},\"node_rss_bytes_per_connection\":{:.1},\"kernel_slab_bytes_per_connection_both_ends\":{:.1},\"budget_bytes\":{},\"hold_seconds\":{},\"hold_node_cpu_seconds\":{:.2},\"pings_answered\":{}}}",
        connections, logged_in, open_secs, rss_before, rss_after, per_conn, kernel_per_conn, args.budget, args.hold, hold_cpu, pings
    );
    eprintln!(
        "{} idle logged-in connections: node RSS {} -> {} KiB = {:.0} bytes per connection (budget {}); kernel slab {:.0} bytes per connection, both ends",
        connections, rss_before, rss_after, per_conn, args.budget, kernel_per_conn
    );
    if let Some(mut c) = child {
        let _ = c.kill();
        let _ = c.wait();
    }
    if logged_in < args.connections as u64 || per_conn > args.budget as f64 {
        std::process::exit(1);
    }
}
