//! Command line, and the run plan every worker receives.
//!
//! The plan makes every assignment deterministic: connection `i` (global index) talks to
//! `urls[i % urls.len()]`, logs in as `<prefix><i>`, and binds the source address and
//! ports that `crate::sources` gives it. So any worker can name any recipient and know its
//! node without asking anyone, and no two connections ever pick the same source pair.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::pattern::Pattern;
use crate::protocol::{Protocol, ProtocolKind, SioNames};
use crate::recovery::{RecoverArgs, RecoverPlan};
use crate::rooms::{RoomArgs, RoomPlan};
use crate::sources::{PortMode, PortRange, Sources};
pub use crate::target::Target;
use crate::target::{parse_url, BadUrl};
use crate::tls::{TlsError, TlsSettings};

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
    /// Target WebSocket URL, ws:// or wss:// (TLS); repeat for several nodes (connections
    /// are assigned round-robin). With --protocol socketio the path is the Engine.IO path
    /// (default /socket.io/).
    #[arg(long = "url", default_value = DEFAULT_URL)]
    pub urls: Vec<String>,
    /// The chat protocol the targets speak: the seed's JSON messages, or Socket.IO
    /// (Engine.IO v4 over WebSocket) with events carrying the same fields.
    #[arg(long, value_enum, default_value_t = ProtocolKind::Seed)]
    pub protocol: ProtocolKind,
    /// Socket.IO: the event that logs a user in, answered with an ack [default: loginmsg,
    /// the seed's login type].
    #[arg(long, value_name = "EVENT")]
    pub sio_login_event: Option<String>,
    /// Socket.IO: the event that carries a chat message, both ways [default: chatmsg].
    #[arg(long, value_name = "EVENT")]
    pub sio_chat_event: Option<String>,
    /// Socket.IO: the payload field naming the message type, "" for none [default:
    /// MessageType].
    #[arg(long, value_name = "FIELD")]
    pub sio_type_field: Option<String>,
    /// Socket.IO: the payload field of the message text [default: Data].
    #[arg(long, value_name = "FIELD")]
    pub sio_data_field: Option<String>,
    /// Socket.IO: the payload field naming the recipient [default: Reciever, the seed's
    /// spelling].
    #[arg(long, value_name = "FIELD")]
    pub sio_recipient_field: Option<String>,
    /// Socket.IO: the payload field naming the sender [default: Sender].
    #[arg(long, value_name = "FIELD")]
    pub sio_sender_field: Option<String>,
    /// wss://: accept any server certificate (a self-signed test certificate); the
    /// handshake's signatures are still checked. Off: verification is the default.
    #[arg(long)]
    pub insecure: bool,
    /// wss://: trust the certificates in this PEM file instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
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
    #[command(flatten)]
    pub rooms: RoomArgs,
    #[command(flatten)]
    pub recover: RecoverArgs,
    /// Internal: run as a worker process, reading its plan on stdin.
    #[arg(long, hide = true)]
    pub worker: bool,
}

/// Everything a worker needs to know about the whole run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub targets: Vec<Target>,
    pub protocol: Protocol,
    /// How wss:// targets are verified.
    pub tls: TlsSettings,
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
    /// Rooms to join after login, and the room messages' schedule.
    pub rooms: Option<RoomPlan>,
    /// Whether dropped connections come back (`--recover`), and who sends chat.
    pub recovery: RecoverPlan,
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
    #[error(transparent)]
    BadUrl(#[from] BadUrl),
    #[error(transparent)]
    Tls(#[from] TlsError),
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
        let protocol = protocol_of(args)?;
        let socketio = protocol.kind() == ProtocolKind::Socketio;
        let targets = args.urls.iter().map(|u| parse_url(u, socketio)).collect::<Result<Vec<_>, _>>()?;
        let tls = tls_of(args, &targets)?;
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
        let rooms = rooms_of(args, socketio)?;
        let recovery = RecoverPlan::from_args(&args.recover, targets.len(), socketio).map_err(ConfigError::Invalid)?;
        if recovery.recover && (args.no_login || rooms.is_some()) {
            return Err(ConfigError::Invalid(
                "--recover logs connections in again but does not rejoin rooms: not with --no-login or --rooms".into(),
            ));
        }
        let seed = std::process::id() as u64 ^ crate::clock::monotonic_ns();
        let sources = choose_sources(args, &targets)?.turned(codec_seed(seed));
        sources.check(args.connections).map_err(ConfigError::Invalid)?;
        Ok(Plan {
            targets,
            protocol,
            tls,
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
            rooms,
            recovery,
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

/// The rooms asked for, checked: they need the seed's protocol and logged-in
/// connections, and churn would take members out of their rooms.
fn rooms_of(args: &Args, socketio: bool) -> Result<Option<RoomPlan>, ConfigError> {
    let rooms = RoomPlan::from_args(&args.rooms, args.connections, args.duration).map_err(ConfigError::Invalid)?;
    if rooms.is_some() && (socketio || args.no_login || args.churn_rate > 0) {
        return Err(ConfigError::Invalid(
            "--rooms needs --protocol seed and logged-in connections, without --churn-rate (a churned \
             connection would leave its rooms)"
                .into(),
        ));
    }
    Ok(rooms)
}

/// A well-mixed number from the run's seed, for the source plan's turn.
fn codec_seed(seed: u64) -> u64 {
    crate::codec::splitmix64(seed ^ 0x5EED)
}

fn parse_port_range(text: &str) -> Result<PortRange, String> {
    PortRange::parse(text).ok_or_else(|| format!("expected LO-HI with 1 <= LO <= HI <= 65535, got {text:?}"))
}

/// The protocol and, for Socket.IO, its names (the seed's unless given); Socket.IO flags
/// without `--protocol socketio` are refused, as they would be ignored.
fn protocol_of(args: &Args) -> Result<Protocol, ConfigError> {
    let given = [
        &args.sio_login_event,
        &args.sio_chat_event,
        &args.sio_type_field,
        &args.sio_data_field,
        &args.sio_recipient_field,
        &args.sio_sender_field,
    ];
    if args.protocol == ProtocolKind::Seed {
        if given.iter().any(|name| name.is_some()) {
            return Err(ConfigError::Invalid("the --sio-* flags need --protocol socketio".into()));
        }
        return Ok(Protocol::Seed);
    }
    let name = |given: &Option<String>, default: &str| given.clone().unwrap_or_else(|| default.to_string());
    let names = SioNames {
        login_event: name(&args.sio_login_event, "loginmsg"),
        chat_event: name(&args.sio_chat_event, "chatmsg"),
        type_field: name(&args.sio_type_field, "MessageType"),
        data_field: name(&args.sio_data_field, "Data"),
        recipient_field: name(&args.sio_recipient_field, "Reciever"),
        sender_field: name(&args.sio_sender_field, "Sender"),
    };
    names.check().map_err(ConfigError::Invalid)?;
    Ok(Protocol::SocketIo(names))
}

/// The TLS settings, checked now (the CA file read, the server names valid) so that a
/// bad one is refused at start rather than in every worker.
fn tls_of(args: &Args, targets: &[Target]) -> Result<TlsSettings, ConfigError> {
    let settings = TlsSettings { insecure: args.insecure, ca: args.ca.clone() };
    if !targets.iter().any(|t| t.tls) {
        if args.insecure || args.ca.is_some() {
            return Err(ConfigError::Invalid("--insecure and --ca apply to wss:// URLs only".into()));
        }
        return Ok(settings);
    }
    if args.insecure && args.ca.is_some() {
        return Err(ConfigError::Invalid("--insecure accepts any certificate: drop --ca, or --insecure".into()));
    }
    crate::tls::client_config(&settings)?;
    for t in targets.iter().filter(|t| t.tls) {
        crate::tls::server_name(&t.url, &t.server_name)?;
    }
    Ok(settings)
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
    fn socketio_flags_need_the_protocol_and_tls_flags_a_wss_url() {
        let refused = |argv: &[&str]| Plan::from_args(&Args::parse_from(argv)).unwrap_err().to_string();
        assert_eq!(refused(&["loadgen", "--sio-chat-event", "say"]), "the --sio-* flags need --protocol socketio");
        assert_eq!(refused(&["loadgen", "--insecure"]), "--insecure and --ca apply to wss:// URLs only");
        let plan = Plan::from_args(&Args::parse_from(["loadgen", "--protocol", "socketio", "--sio-chat-event", "say"]));
        let names = plan.unwrap().protocol.sio().cloned().unwrap();
        assert_eq!((names.login_event.as_str(), names.chat_event.as_str()), ("loginmsg", "say"));
        let tls = Plan::from_args(&Args::parse_from(["loadgen", "--url", "wss://127.0.0.1:1/ws", "--insecure"]));
        assert!(tls.unwrap().targets[0].tls);
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
    fn recover_is_refused_where_it_cannot_log_in_again_as_before() {
        for extra in [&["--no-login"][..], &["--rooms", "1", "--room-size", "1"]] {
            let args = Args::parse_from([&["loadgen", "--recover"][..], extra].concat());
            let refused = Plan::from_args(&args).map(|_| ()).unwrap_err().to_string();
            assert!(refused.contains("--recover") && refused.contains(extra[0]), "{refused}");
        }
    }

    #[test]
    fn too_few_source_addresses_are_refused() {
        let args = Args::parse_from(["loadgen", "--connections", "30000", "--source-addrs", "127.0.0.2"]);
        let e = Plan::from_args(&args).unwrap_err().to_string();
        assert!(e.contains("source addresses"), "{e}");
    }
}
