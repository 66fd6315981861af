//! Command line, and the run plan every worker receives.
//!
//! The plan makes every assignment deterministic: connection `i` (global index) talks to
//! `urls[i % urls.len()]`, logs in as `<prefix><i>`, and binds source address
//! `sources[(i / per_source) % sources.len()]`. So any worker can name any recipient and
//! know its node without asking anyone.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::Parser;

use crate::pattern::Pattern;

/// Where connections go and how many per source address, unless told otherwise.
pub const DEFAULT_URL: &str = "ws://127.0.0.1:9000/ws";
/// About 28,000 ephemeral ports exist per source address; 20,000 leaves room for churn
/// reconnects while old ports sit in TIME_WAIT.
pub const DEFAULT_PER_SOURCE: u32 = 20_000;
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
#[command(name = "loadgen", version)]
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
    /// Source addresses to bind, comma separated, or "none" to let the kernel choose.
    /// Default: 127.0.0.2 upward for loopback targets, none otherwise.
    #[arg(long, value_delimiter = ',')]
    pub source_addrs: Vec<String>,
    /// Connections per source address before moving to the next one.
    #[arg(long, default_value_t = DEFAULT_PER_SOURCE)]
    pub per_source: u32,
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
    pub sources: Vec<IpAddr>,
    pub per_source: u32,
    pub connections: u32,
    pub connect_rate: u32,
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
        if args.per_source == 0 {
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
        let sources = choose_sources(args, &targets)?;
        Ok(Plan {
            targets,
            sources,
            per_source: args.per_source,
            connections: args.connections,
            connect_rate: args.connect_rate,
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
            seed: std::process::id() as u64 ^ crate::clock::monotonic_ns(),
        })
    }

    /// Whether there is a chat phase, open or closed loop.
    pub fn chats(&self) -> bool {
        self.rate > 0 || self.closed_loop.is_some()
    }

    pub fn target_of(&self, index: u32) -> &Target {
        &self.targets[index as usize % self.targets.len()]
    }

    pub fn source_of(&self, index: u32) -> Option<IpAddr> {
        if self.sources.is_empty() {
            return None;
        }
        let slot = (index / self.per_source) as usize % self.sources.len();
        Some(self.sources[slot])
    }
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

fn choose_sources(args: &Args, targets: &[Target]) -> Result<Vec<IpAddr>, ConfigError> {
    if args.source_addrs.iter().any(|s| s == "none") {
        return Ok(Vec::new());
    }
    if !args.source_addrs.is_empty() {
        return args
            .source_addrs
            .iter()
            .map(|s| s.trim().parse::<IpAddr>().map_err(|_| ConfigError::BadSource(s.clone())))
            .collect();
    }
    let all_loopback_v4 = targets.iter().all(|t| matches!(t.addr.ip(), IpAddr::V4(ip) if ip.is_loopback()));
    if !all_loopback_v4 {
        return Ok(Vec::new());
    }
    // 127.0.0.2 upward: any 127/8 address is local on Linux loopback.
    let needed = args.connections.div_ceil(args.per_source).max(1);
    Ok((0..needed)
        .map(|i| {
            let n = u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i;
            IpAddr::V4(Ipv4Addr::from(n))
        })
        .collect())
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
    fn default_sources_cover_all_connections() {
        let args = Args::parse_from(["loadgen", "--connections", "50001"]);
        let plan = Plan::from_args(&args).unwrap();
        assert_eq!(plan.sources.len(), 3);
        assert_eq!(plan.source_of(0), Some("127.0.0.2".parse().unwrap()));
        assert_eq!(plan.source_of(20_000), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(plan.source_of(50_000), Some("127.0.0.4".parse().unwrap()));
    }
}
