//! Command line, and the run plan every worker receives.
//!
//! The plan makes every assignment deterministic: connection `i` (global index) talks to
//! `urls[i % urls.len()]`, logs in as `<prefix><i>`, and binds the source address and
//! ports that `crate::sources` gives it. So any worker can name any recipient and know its
//! node without asking anyone, and no two connections ever pick the same source pair.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Parser;

use crate::pattern::Pattern;
use crate::sources::{PortMode, PortRange, Sources};

/// Where connections go, unless told otherwise.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:9000/ws";
/// Connects and logins under way at once, over all workers: enough to keep a node's
/// accept queue busy (a handshake takes well under a millisecond when the node keeps up),
/// few enough that a ramp at `--connect-rate 0` never queues more than a few thousand in
/// the kernel (somaxconn 4096 by default) and its latency figures stay the node's.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 2_000;
/// File descriptors a worker keeps for itself (epoll, wakers, pipes, libraries) below
/// RLIMIT_NOFILE: 20,000 allowed here gives 19,000 sockets per worker.
pub const FD_HEADROOM: u64 = 1_000;

/// Load generator for switchboard (and any server speaking the seed's chat protocol).
///
/// Phases run in order, each optional: connect, login, hold, chat (+ grace), churn.
/// Exit status: 0 when every target connection was made (and logged in) and no chat
/// message was lost or duplicated; 1 when not; 2 on bad arguments or when no connection
/// could be made at all.
#[derive(Debug, Clone, Parser)]
// A flag given twice takes its last value, so wrapper scripts can pass defaults that
// flags after theirs override (repeatable flags such as --url still add up).
#[command(name = "loadgen", version, args_override_self = true)]
pub struct Args {
    /// Target WebSocket URL, ws:// only; repeat for several nodes (connections are
    /// assigned round-robin).
    #[arg(long = "url", default_value = DEFAULT_URL)]
    pub urls: Vec<String>,
    /// Total connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: u32,
    /// New connections per second, over all workers (0 = as fast as possible).
    #[arg(long, default_value_t = 10_000)]
    pub connect_rate: u32,
    /// Seconds to wait for TCP connect + WebSocket handshake, and for a login to be
    /// confirmed, before calling it a timeout.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Skip the login phase (then no chat is possible either).
    #[arg(long)]
    pub no_login: bool,
    /// Logins per second, over all workers (0 = as fast as possible).
    #[arg(long, default_value_t = 20_000)]
    pub login_rate: u32,
    /// Connection i logs in as <prefix><i>.
    #[arg(long, default_value = "u")]
    pub name_prefix: String,
    /// Seconds to hold all connections idle after login.
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// Chat messages per second over all connections (0 = no chat phase).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Closed-loop chat instead of --rate: every connection keeps IN_FLIGHT messages under
    /// way and sends the next one as soon as one of them is delivered, so the run measures
    /// what the server sustains. Each connection talks to one partner all run: the next
    /// connection of its own reactor thread (the one that sees the delivery) that --pattern
    /// allows; cross-node, connection i talks to i + 1.
    #[arg(long, value_name = "IN_FLIGHT", value_parser = clap::value_parser!(u16).range(1..))]
    pub closed_loop: Option<u16>,
    /// Seconds of chat.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of the Data field of each chat message (at least the timing marker).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// How recipients are chosen.
    #[arg(long, value_enum, default_value_t = Pattern::Random)]
    pub pattern: Pattern,
    /// Seconds to wait after the last chat message for late deliveries; what has not
    /// arrived by then is lost.
    #[arg(long, default_value_t = 5.0)]
    pub grace: f64,
    /// Disconnect + reconnect (+ login) cycles per second, over all workers (0 = none).
    #[arg(long, default_value_t = 0)]
    pub churn_rate: u32,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10.0)]
    pub churn_duration: f64,
    /// Connects and logins under way at once over all workers (each thread gets its
    /// share, at least one): bounds the load generator's own backlog at any rate.
    #[arg(long, default_value_t = DEFAULT_MAX_IN_FLIGHT, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Source addresses to bind, comma separated, or "none" to let the kernel choose.
    /// Default: 127.0.0.2 upward for loopback targets (as many as --per-source needs),
    /// none otherwise.
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Vec<String>,
    /// Connections per source address before moving to the next one (default: half the
    /// source port range, so that no address is more than half full).
    #[arg(long)]
    pub per_source: Option<u32>,
    /// Source ports the load generator assigns, LO-HI (default: the kernel's
    /// net.ipv4.ip_local_port_range, the ports it sets aside for outgoing connections).
    #[arg(long, value_parser = parse_port_range)]
    pub source_port_range: Option<PortRange>,
    /// How a socket gets its source port: explicit bind (no search in the kernel), a
    /// one-port IP_LOCAL_PORT_RANGE, or the kernel's own search at connect().
    #[arg(long, value_enum, default_value_t = PortMode::Explicit)]
    pub source_ports: PortMode,
    /// Worker processes (default: enough to stay under RLIMIT_NOFILE, at least one).
    #[arg(long)]
    pub workers: Option<u32>,
    /// Reactor threads per worker (default: spread the CPUs over the workers).
    #[arg(long)]
    pub threads: Option<u32>,
    /// PID of a server process to sample (RSS, CPU); repeatable.
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
    /// Write the JSON summary to this file (it is also printed on stdout).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a per-second timeline as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write an SVG chart of connections, memory, throughput and latency over time.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
    /// Internal: run as a worker process, reading its plan on stdin.
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// One target node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// The Host header value.
    pub host: String,
    pub path: String,
}

/// Everything a worker needs to know about the whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub sources: Sources,
    pub connections: u32,
    pub connect_rate: u32,
    /// Connects and logins under way at once, over all threads.
    pub max_in_flight: u32,
    pub connect_timeout_ns: u64,
    pub login: bool,
    pub login_rate: u32,
    pub name_prefix: String,
    /// Open-loop chat messages per second (0: none, or closed loop).
    pub rate: u32,
    /// Closed-loop chat: messages each connection keeps under way.
    pub closed_loop: Option<u16>,
    pub duration_ns: u64,
    pub payload: usize,
    pub pattern: Pattern,
    pub churn_rate: u32,
    pub churn_duration_ns: u64,
    /// Seeds handshake keys and random choices.
    pub seed: u64,
}

/// What one worker process is told at start.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WorkerSetup {
    pub worker: u32,
    pub first: u32,
    pub count: u32,
    pub threads: u32,
    pub plan: Plan,
}

/// A refused configuration, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("bad --url {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("bad --source-addrs entry {0:?}: expected an IP address or \"none\"")]
    BadSource(String),
    #[error("--pattern cross-node needs at least two --url targets")]
    CrossNodeNeedsTwoUrls,
    #[error("{0}")]
    Invalid(String),
}

impl Plan {
    /// Checks the arguments and resolves the targets.
    ///
    /// # Errors
    /// Any argument that cannot work, with the reason.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let targets = args.urls.iter().map(|u| parse_url(u)).collect::<Result<Vec<_>, _>>()?;
        if args.pattern == Pattern::CrossNode && targets.len() < 2 {
            return Err(ConfigError::CrossNodeNeedsTwoUrls);
        }
        for (name, value) in [
            ("--connect-timeout", args.connect_timeout),
            ("--hold", args.hold),
            ("--duration", args.duration),
            ("--grace", args.grace),
            ("--churn-duration", args.churn_duration),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(ConfigError::Invalid(format!("{name} must be a number of seconds >= 0")));
            }
        }
        if args.connect_timeout <= 0.0 {
            return Err(ConfigError::Invalid("--connect-timeout must be > 0".into()));
        }
        if args.per_source == Some(0) {
            return Err(ConfigError::Invalid("--per-source must be > 0".into()));
        }
        if args.rate > 0 && args.closed_loop.is_some() {
            return Err(ConfigError::Invalid(
                "--rate (open loop) and --closed-loop are two ways to pace chat: give one".into(),
            ));
        }
        if (args.rate > 0 || args.closed_loop.is_some() || args.churn_rate > 0) && args.no_login {
            return Err(ConfigError::Invalid("chat and churn need logged-in connections: drop --no-login".into()));
        }
        if args.name_prefix.contains(['"', '\\']) {
            return Err(ConfigError::Invalid("--name-prefix must not contain quotes or backslashes".into()));
        }
        let seed = std::process::id() as u64 ^ crate::clock::monotonic_ns();
        let sources = choose_sources(args, &targets)?.turned(codec_seed(seed));
        sources.check(args.connections).map_err(ConfigError::Invalid)?;
        Ok(Plan {
            targets,
            sources,
            connections: args.connections,
            connect_rate: args.connect_rate,
            max_in_flight: args.max_in_flight,
            connect_timeout_ns: (args.connect_timeout * 1e9) as u64,
            login: !args.no_login,
            login_rate: args.login_rate,
            name_prefix: args.name_prefix.clone(),
            rate: args.rate,
            closed_loop: args.closed_loop,
            duration_ns: (args.duration * 1e9) as u64,
            payload: args.payload,
            pattern: args.pattern,
            churn_rate: args.churn_rate,
            churn_duration_ns: (args.churn_duration * 1e9) as u64,
            seed,
        })
    }

    /// Whether there is a chat phase, open or closed loop.
    pub fn chats(&self) -> bool {
        self.rate > 0 || self.closed_loop.is_some()
    }

    pub fn target_of(&self, index: u32) -> &Target {
        &self.targets[index as usize % self.targets.len()]
    }
}

/// A well-mixed number from the run's seed, for the source plan's turn.
fn codec_seed(seed: u64) -> u64 {
    crate::codec::splitmix64(seed ^ 0x5EED)
}

fn parse_port_range(text: &str) -> Result<PortRange, String> {
    PortRange::parse(text).ok_or_else(|| format!("expected LO-HI with 1 <= LO <= HI <= 65535, got {text:?}"))
}

/// Parses `ws://host[:port][/path]` and resolves the host.
fn parse_url(url: &str) -> Result<Target, ConfigError> {
    let bad = |why: &str| ConfigError::BadUrl { url: url.to_string(), why: why.to_string() };
    let rest = if let Some(rest) = url.strip_prefix("ws://") {
        rest
    } else if url.starts_with("wss://") {
        return Err(bad("wss:// (TLS) is not supported; use ws://"));
    } else {
        return Err(bad("expected ws://HOST:PORT/PATH"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(bad("missing host"));
    }
    let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> =
        with_port.to_socket_addrs().map_err(|e| bad(&format!("cannot resolve {with_port}: {e}")))?.collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| bad("host resolves to no address"))?;
    Ok(Target { url: url.to_string(), addr, host: authority.to_string(), path: path.to_string() })
}

/// The source plan: the addresses given (or 127.0.0.2 upward for loopback targets), the
/// port range and how many connections each address takes.
fn choose_sources(args: &Args, targets: &[Target]) -> Result<Sources, ConfigError> {
    let kernel = PortRange::of_kernel();
    let ports = args.source_port_range.unwrap_or(kernel);
    let per_source = args.per_source.unwrap_or_else(|| Sources::half_of(ports));
    let mode = args.source_ports;
    if mode == PortMode::Range && !(kernel.lo <= ports.lo && ports.hi <= kernel.hi) {
        return Err(ConfigError::Invalid(format!(
            "--source-ports range needs --source-port-range inside net.ipv4.ip_local_port_range \
             ({}-{}): the kernel ignores a per-socket range outside it",
            kernel.lo, kernel.hi
        )));
    }
    if args.source_addrs.iter().any(|s| s == "none") {
        return Ok(Sources { addrs: Vec::new(), per_source, ports, mode, offset: 0 });
    }
    if !args.source_addrs.is_empty() {
        let addrs = args
            .source_addrs
            .iter()
            .map(|s| s.trim().parse::<IpAddr>().map_err(|_| ConfigError::BadSource(s.clone())))
            .collect::<Result<_, _>>()?;
        return Ok(Sources { addrs, per_source, ports, mode, offset: 0 });
    }
    let all_loopback_v4 = targets.iter().all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
    if !all_loopback_v4 {
        return Ok(Sources { addrs: Vec::new(), per_source, ports, mode, offset: 0 });
    }
    Ok(Sources::loopback(args.connections, per_source, ports, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults() {
        let t = parse_url("ws://127.0.0.1:9000/ws").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(t.path, "/ws");
        assert_eq!(t.host, "127.0.0.1:9000");
        let t = parse_url("ws://127.0.0.1").unwrap();
        assert_eq!(t.addr.port(), 80);
        assert_eq!(t.path, "/");
        assert!(parse_url("http://x/ws").is_err());
        assert!(parse_url("wss://x/ws").is_err());
        assert!(parse_url("ws:///ws").is_err());
    }

    #[test]
    fn default_sources_keep_every_address_half_full() {
        let args = Args::parse_from(["loadgen", "--connections", "50001", "--source-port-range", "10000-29999"]);
        let plan = Plan::from_args(&args).unwrap();
        assert_eq!(plan.sources.per_source, 10_000);
        assert_eq!(plan.sources.addrs.len(), 6);
        let bind = |i| plan.sources.bind_of(i).unwrap();
        let offset = plan.sources.offset;
        let home = |position: u32| 10_000 + ((position + offset) % 20_000) as u16;
        assert_eq!((bind(0).addr, bind(0).home()), ("127.0.0.2".parse().unwrap(), home(0)));
        assert_eq!((bind(10_001).addr, bind(10_001).home()), ("127.0.0.3".parse().unwrap(), home(2)));
        assert_eq!(bind(50_000).addr, "127.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_later_flag_overrides_an_earlier_one_and_urls_add_up() {
        let args = Args::parse_from([
            "loadgen",
            "--connect-rate",
            "5",
            "--url",
            "ws://a:1/",
            "--connect-rate",
            "0",
            "--url",
            "ws://b:2/",
        ]);
        assert_eq!(args.connect_rate, 0);
        assert_eq!(args.urls, ["ws://a:1/", "ws://b:2/"]);
    }

    #[test]
    fn too_few_source_addresses_are_refused() {
        let args = Args::parse_from(["loadgen", "--connections", "30000", "--source-addrs", "127.0.0.2"]);
        let e = Plan::from_args(&args).unwrap_err().to_string();
        assert!(e.contains("source addresses"), "{e}");
    }
}
