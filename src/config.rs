//! Every knob of a node, its default, and why that default.
//!
//! Each flag can also come from a `SWITCHBOARD_*` environment variable or a
//! key of the TOML file named by `--config` (flags win over the environment,
//! which wins over the file): [`load`] reads them. [`Config::validate`]
//! refuses settings that cannot work, naming the flag and what it accepts.

mod history;
mod load;
mod validate;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};
use ipnet::IpNet;

pub(crate) use self::history::glob_matches;
pub use self::history::HistoryConfig;
pub use self::load::{load, LoadError, Setting, Settings, Source};
pub use self::validate::ConfigError;

/// How accepted sockets reach reactors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcceptMode {
    /// Every reactor accepts for itself: from one listening socket the
    /// reactors share, or with --reuse-port from a SO_REUSEPORT socket each.
    #[value(alias = "reuseport")]
    Each,
    /// One listener on reactor 0, which hands each socket to the least-loaded reactor.
    Handoff,
}

/// How chat messages travel between nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Routing {
    /// Per-user channels: a node receives only its own users' messages.
    Targeted,
    /// The seed's scheme: every message on channel `msg`, every node gets all.
    Broadcast,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line: what log collectors parse.
    Json,
    /// Human-readable lines.
    Text,
}

/// A secret given on the command line or in the environment: never shown
/// by `Debug`, so logging the configuration cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// An address or a CIDR block, for `--trusted-proxy`.
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("expected an address or CIDR block like 10.0.0.0/8, got {s:?}"))
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "switchboard",
    version,
    about = "WebSocket chat node (seed protocol), clustered through Redis",
    after_help = "Mint a signed token for a user: switchboard token --help"
)]
pub struct Config {
    /// TOML file with settings, one key per flag (`max-output = 1048576`).
    /// Flags and SWITCHBOARD_* variables override it; an unknown key is an error.
    #[arg(long, global = true, env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on for WebSocket clients. Port 0 picks a free port;
    /// the first line on stdout is `switchboard listening on ADDR`.
    #[arg(long, global = true, env = "SWITCHBOARD_LISTEN", value_name = "ADDR", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,

    /// Address of the admin listener: /metrics, /healthz, /readyz. Loopback
    /// keeps it off the internet; port 0 lets any number of nodes share a host
    /// (the second line on stdout is `switchboard admin on ADDR`).
    #[arg(long, global = true, env = "SWITCHBOARD_ADMIN_ADDR", value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub admin_addr: SocketAddr,

    /// Key of the server API on the admin listener (`/api/...` with
    /// `Authorization: Bearer KEY`), at least 16 bytes. Default: none, and the
    /// /api routes are absent (404): publishing as the server and closing
    /// users' connections need a key the operator chose. Prefer the file or
    /// the environment: a command line is visible to every local user.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        conflicts_with = "api_key_file"
    )]
    pub api_key: Option<Secret>,

    /// File holding the server API key (one trailing newline is dropped).
    #[arg(long, global = true, env = "SWITCHBOARD_API_KEY_FILE", value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// `Sender` of the messages the server API publishes, a name of the user-name
    /// profile. "server" says where they come from.
    #[arg(long, global = true, env = "SWITCHBOARD_API_SENDER", value_name = "NAME", default_value = "server")]
    pub api_sender: String,

    /// Reactor threads (0 = one per core). Each owns a poll loop and its connections.
    #[arg(long, global = true, env = "SWITCHBOARD_REACTORS", value_name = "N", default_value_t = 0)]
    pub reactors: usize,

    /// Let several node processes share the listen port (SO_REUSEPORT). Off:
    /// the node holds its port alone, so no other process can take a share of
    /// its connections.
    #[arg(long, global = true, env = "SWITCHBOARD_REUSE_PORT", value_parser = BoolishValueParser::new())]
    pub reuse_port: bool,

    /// How accepted sockets reach reactors. `each`: no thread between accept and
    /// reactor, and it measured as fast as the others (see README).
    #[arg(long, global = true, env = "SWITCHBOARD_ACCEPT", value_enum, default_value_t = AcceptMode::Each)]
    pub accept: AcceptMode,

    /// Path of the chat endpoint (the seed's).
    #[arg(long, global = true, env = "SWITCHBOARD_WS_PATH", value_name = "PATH", default_value = "/ws")]
    pub ws_path: String,

    /// Path of an echo endpoint for conformance testing (off unless given).
    #[arg(long, global = true, env = "SWITCHBOARD_ECHO_PATH", value_name = "PATH")]
    pub echo_path: Option<String>,

    /// Largest message accepted, in bytes, after reassembling fragments.
    /// 64 KiB is far above any chat line and bounds what one peer can make us buffer.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_MESSAGE_SIZE", value_name = "BYTES", default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// Unsent output per connection, in bytes, past which a client is closed with 1008.
    /// 1 MiB holds thousands of chat lines: only a client that stopped reading hits it.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_OUTPUT", value_name = "BYTES", default_value_t = 1024 * 1024)]
    pub max_output: usize,

    /// Largest HTTP upgrade request head, in bytes (431 past it). Browsers send under 2 KiB.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_HEADER_BYTES", value_name = "BYTES", default_value_t = 8 * 1024)]
    pub max_header_bytes: usize,

    /// Seconds a client may take to finish its HTTP upgrade (slowloris guard).
    #[arg(long, global = true, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT", value_name = "SECS", default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Seconds a client may take to finish a message it started (a frame cut
    /// short, or fragments without the final one): such input is held in
    /// memory, up to --max-message-size each. Past it (checked at most one more
    /// such period later) the client is closed with 1008.
    #[arg(long, global = true, env = "SWITCHBOARD_MESSAGE_TIMEOUT", value_name = "SECS", default_value_t = 30)]
    pub message_timeout: u64,

    /// Seconds of silence before the kernel probes a peer (TCP keepalive, then 3
    /// probes 10 s apart; 0 = off). A peer that vanished without a FIN is dropped
    /// after about this plus 30 s, at no cost in user space. 60 s keeps probes rare.
    #[arg(long, global = true, env = "SWITCHBOARD_KEEPALIVE", value_name = "SECS", default_value_t = 60)]
    pub keepalive: u64,

    /// Seconds a WebSocket may stay without logging in, counted from its TCP
    /// accept (as --handshake-timeout is); then it gets an errormsg and a 1008
    /// close. A client logs in right after its upgrade: 10 s covers a slow
    /// mobile round trip, and an anonymous socket is not held for long.
    #[arg(long, global = true, env = "SWITCHBOARD_LOGIN_TIMEOUT", default_value_t = 10, value_name = "SECS")]
    pub login_timeout: u64,

    /// Seconds between pings to a WebSocket that has sent nothing meanwhile
    /// (0 = no pings). Any frame received counts as a sign of life. 25 s is
    /// under the 30-60 s idle timeouts of common proxies and NATs.
    #[arg(long, global = true, env = "SWITCHBOARD_PING_INTERVAL", default_value_t = 25, value_name = "SECS")]
    pub ping_interval: u64,

    /// Seconds a pinged WebSocket has to answer (any frame will do) before it
    /// is closed with 1008; shorter than --ping-interval. A live peer answers
    /// within a round trip; 10 s allows for a congested mobile link.
    #[arg(long, global = true, env = "SWITCHBOARD_PONG_TIMEOUT", default_value_t = 10, value_name = "SECS")]
    pub pong_timeout: u64,

    /// Messages (and pings) per second one connection may send, sustained
    /// (0 = no limit). A person types a few a second; 100 leaves room for bots,
    /// and keeps one connection from pushing the 190,000/s it otherwise could.
    /// Over it: one errormsg, and the messages are dropped; a client that goes
    /// on for another --message-burst is closed with 1008.
    #[arg(long, global = true, env = "SWITCHBOARD_MESSAGE_RATE", default_value_t = 100, value_name = "N")]
    pub message_rate: u32,

    /// Messages one connection may send at once above --message-rate: 200 lets
    /// a client flush a queue of messages written while it was offline.
    #[arg(long, global = true, env = "SWITCHBOARD_MESSAGE_BURST", default_value_t = 200, value_name = "N")]
    pub message_burst: u32,

    /// Logins one connection may try (granted or refused, 0 = no limit); past
    /// it the connection gets an errormsg and a 1008 close. A person whose name
    /// is taken tries a few others; a connection that tries more is probing
    /// which names are online.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_LOGIN_ATTEMPTS", default_value_t = 10, value_name = "N")]
    pub max_login_attempts: u8,

    /// Connections this node holds at most (0 = what the open-file limit allows,
    /// less 256 descriptors kept to answer refusals). A WebSocket upgrade past
    /// it gets 503 with Retry-After; past the open-file limit a client would
    /// get no answer at all.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_CONNECTIONS", default_value_t = 0, value_name = "N")]
    pub max_connections: usize,

    /// Connections one source address may hold on this node (0 = no limit); an
    /// upgrade past it gets 429 with Retry-After. 256 is far above one
    /// household or office behind a NAT, and caps what one address can take.
    /// A load test from a few addresses must raise it.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 256,
        value_name = "N"
    )]
    pub max_connections_per_address: u32,

    /// New WebSocket connections per second this node upgrades (0 = no limit);
    /// past it (after a burst of as many) an upgrade gets 503 with Retry-After.
    /// A node upgrades about 29,000/s at full CPU; 2,000/s takes under a tenth
    /// of it, so a reconnect storm cannot starve established connections, and
    /// 19,000 clients are back within 10 s.
    #[arg(long, global = true, env = "SWITCHBOARD_CONNECT_RATE", default_value_t = 2000, value_name = "N")]
    pub connect_rate: u32,

    /// A proxy (address or CIDR, repeatable) whose X-Forwarded-For names the
    /// client: the source address for --max-connections-per-address is then
    /// the last address in that header not itself a trusted proxy. From any
    /// other peer the header is ignored. Default: none (the header is
    /// client-controlled, so trusting it by default would void the limit).
    #[arg(long, global = true, env = "SWITCHBOARD_TRUSTED_PROXY", value_parser = parse_net, value_delimiter = ',')]
    pub trusted_proxy: Vec<IpNet>,

    /// Bytes all connections of this node may hold in unfinished messages (a
    /// partial frame, or fragments without the final one). A client whose
    /// message would pass it is closed with 1008. 64 MiB is a thousand
    /// maximum-size messages in flight at once, far more than chat sees, and
    /// bounds what stalled clients can pin however many they are.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_PARTIAL_BYTES", default_value_t = 64 << 20, value_name = "BYTES")]
    pub max_partial_bytes: usize,

    /// SO_SNDBUF of accepted sockets, in bytes (0 = the kernel's autotuning,
    /// up to net.ipv4.tcp_wmem's maximum, 4 MiB by default). Setting it caps
    /// the kernel memory a client that does not read can pin, at the cost of
    /// throughput to fast far-away readers.
    #[arg(long, global = true, env = "SWITCHBOARD_SEND_BUFFER", default_value_t = 0, value_name = "BYTES")]
    pub send_buffer: usize,

    /// Rooms one connection may be in at once; a join past it gets an
    /// errormsg. A person is in a handful of rooms; 100 leaves room for a
    /// client that mirrors many channels, and bounds what one connection can
    /// make every node keep.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_ROOMS_PER_CONN", value_name = "N", default_value_t = 100)]
    pub max_rooms_per_conn: usize,

    /// Members one room may have on this node; a join past it gets an
    /// errormsg. One room message costs the node a queue entry per local
    /// member: 100,000 is a fan-out of a few tens of milliseconds on one core.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_ROOM_MEMBERS", value_name = "N", default_value_t = 100_000)]
    pub max_room_members: usize,

    /// Announce joins and leaves to a room's members (`joinmsg`/`leavemsg`
    /// with the member's name as `Sender`). Off, or off for the rooms named by
    /// --quiet-room, for very large rooms, where every join would be a message
    /// to every member; the joiner (leaver) always gets its own as confirmation.
    #[arg(long, global = true, env = "SWITCHBOARD_JOIN_NOTICES", default_value_t = true, action = clap::ArgAction::Set,
          value_parser = BoolishValueParser::new(), value_name = "BOOL")]
    pub join_notices: bool,

    /// Rooms (by name, `*` matching any run of characters, repeatable) whose
    /// joins and leaves are not announced: `--quiet-room 'big-*'`.
    #[arg(
        long = "quiet-room",
        global = true,
        env = "SWITCHBOARD_QUIET_ROOM",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    pub quiet_rooms: Vec<String>,

    /// Names one `presencemsg` may ask about: one answer, one Redis round trip.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_PRESENCE_NAMES", value_name = "N", default_value_t = 100)]
    pub max_presence_names: usize,

    /// Members a `membersmsg` answer lists at most (its `Count` is always the
    /// whole number): a page shows a few dozen; a 100,000-member room is
    /// counted, not listed.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_MEMBERS_LISTED", value_name = "N", default_value_t = 100)]
    pub max_members_listed: usize,

    /// Commands (mostly chat messages from other reactors and the bus) one
    /// reactor's inbox holds at most; a message for a full inbox is refused
    /// with an errormsg to its sender. A reactor drains its inbox every turn,
    /// so only a stuck one fills 16,384 (about 20 MB of chat lines).
    #[arg(long, global = true, env = "SWITCHBOARD_INBOX_SIZE", default_value_t = 16_384, value_name = "N")]
    pub inbox_size: usize,

    /// Longest user name, in bytes, as given and as its key (see README, "User
    /// names"). Names are Redis channel names too; 64 bytes fit any real name.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_NAME_LEN", value_name = "BYTES", default_value_t = 64)]
    pub max_name_len: usize,

    /// Secret for HS256/384/512 tokens: authenticated mode, where a login needs a
    /// signed token whose `sub` is the user name. At least 32 bytes (RFC 7518
    /// 3.2). Prefer the file or the environment: a command line is visible to
    /// every local user. Default: none of the three --auth-* keys, open mode
    /// (the seed's: any client takes any name), announced by a WARN line at start.
    #[arg(long, global = true, env = "SWITCHBOARD_AUTH_SECRET", hide_env_values = true, value_name = "SECRET",
          conflicts_with_all = ["auth_secret_file", "auth_public_key"])]
    pub auth_secret: Option<Secret>,

    /// File holding the HS256 secret (one trailing newline is dropped).
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_AUTH_SECRET_FILE",
        value_name = "PATH",
        conflicts_with = "auth_public_key"
    )]
    pub auth_secret_file: Option<PathBuf>,

    /// PEM public key whose private half signs the tokens (RSA: RS*/PS*; EC
    /// P-256: ES256, P-384: ES384; Ed25519: EdDSA). The node then holds no
    /// secret that could mint tokens.
    #[arg(long, global = true, env = "SWITCHBOARD_AUTH_PUBLIC_KEY", value_name = "PEM-FILE")]
    pub auth_public_key: Option<PathBuf>,

    /// Seconds a token's nbf or iat may lie ahead of this node's clock (the
    /// issuer's clock may run ahead). 60 s is the usual default (jsonwebtoken,
    /// Spring Security) and covers NTP-kept clocks many times over; exp gets no
    /// leeway, so a connection never outlives its token.
    #[arg(long, global = true, env = "SWITCHBOARD_AUTH_LEEWAY", default_value_t = 60, value_name = "SECS")]
    pub auth_leeway: u64,

    /// The `aud` tokens must name. Default: none, and a token naming any
    /// audience is refused (it was issued for another service).
    #[arg(long, global = true, env = "SWITCHBOARD_AUTH_AUDIENCE", value_name = "AUD")]
    pub auth_audience: Option<String>,

    /// Origin allowed to open a WebSocket (repeatable): `https://chat.example.com`,
    /// `https://*.example.com` (any subdomain), `http://localhost:*` (any port),
    /// `*` (any). Others get 403. Default: any in open mode (nothing to protect);
    /// in authenticated mode only pages of this host (Origin's host:port equals
    /// the Host header), so another site cannot use a visitor's token or cookies.
    /// A request without an Origin (not a browser) is always let through.
    #[arg(
        long = "allowed-origin",
        global = true,
        env = "SWITCHBOARD_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Redis URL to join a cluster: redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss:// for
    /// TLS; without it the node runs alone.
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// Milliseconds Redis may take to answer: a connect, the greeting (AUTH, PING), and the
    /// oldest command awaiting a reply. Past it the link counts as down (claims in flight
    /// are granted locally, unconfirmed messages reported lost to their senders) and
    /// reconnects. 2 s is far above any reply of a live Redis (well under 1 ms) and a short
    /// wait for a login while Redis hangs.
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS_TIMEOUT_MS", default_value_t = 2000, value_name = "SECS")]
    pub redis_timeout_ms: u64,

    /// PEM file of the CA certificate(s) a rediss:// server's certificate must chain to
    /// (default: the system's roots, which suit a Redis with a public certificate).
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,

    /// Accept any certificate from a rediss:// server (encrypted, not authenticated): only
    /// for self-signed test setups. Off by default: verification is what stops a
    /// man in the middle.
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS_INSECURE", value_parser = BoolishValueParser::new())]
    pub redis_insecure: bool,

    /// Treat the Redis URL as a Redis Cluster seed: sharded pub/sub (SSUBSCRIBE/SPUBLISH).
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS_CLUSTER", value_parser = BoolishValueParser::new())]
    pub redis_cluster: bool,

    /// Routing between nodes (only with --redis).
    #[arg(long, global = true, env = "SWITCHBOARD_ROUTING", value_enum, default_value_t = Routing::Targeted)]
    pub routing: Routing,

    /// Seconds a node's hold on its user names lasts without renewal in Redis:
    /// a dead node's names come free after it (its registry keys expire 20
    /// leases after their last renewal even if no node takes them over). A
    /// quiet Redis link is checked with a PING after a third of it (at most 5 s).
    #[arg(long, global = true, env = "SWITCHBOARD_LEASE_SECS", value_name = "SECS", default_value_t = 15)]
    pub lease_secs: u64,

    /// This node's name in the cluster registry (default: host-pid-random).
    #[arg(long, global = true, env = "SWITCHBOARD_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Seconds over which a stopping node (SIGTERM, SIGINT, SIGQUIT) closes its
    /// clients with 1001, spread evenly, so that a deploy does not make every
    /// client reconnect at the same instant. 10 s fits common stop timeouts
    /// (systemd's 90 s, Kubernetes' 30 s) with the close handshakes on top.
    #[arg(long, global = true, env = "SWITCHBOARD_DRAIN_SECS", value_name = "SECS", default_value_t = 10)]
    pub drain_secs: u64,

    /// Log lines as `json` or `text` (default: text on a terminal, JSON
    /// otherwise, which is what a log collector reads). RUST_LOG sets the level.
    #[arg(long, global = true, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Seconds after start at which a reactor thread panics on purpose: checks
    /// that a supervisor restarts a node that lost a thread. Never in production.
    #[arg(long, global = true, hide = true, value_name = "SECS")]
    pub fault_panic_after: Option<u64>,

    #[command(flatten)]
    pub history: HistoryConfig,
}

impl Config {
    /// Whether logins need signed tokens (one of the --auth-* keys is given).
    pub fn authenticated(&self) -> bool {
        self.auth_secret.is_some() || self.auth_secret_file.is_some() || self.auth_public_key.is_some()
    }

    /// Reactor count with 0 resolved to the number of cores.
    pub fn reactor_count(&self) -> usize {
        if self.reactors > 0 {
            self.reactors
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
    }

    pub fn drain_period(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    /// Defaults for tests and embedding: an ephemeral port on loopback.
    pub fn for_tests() -> Config {
        Config::parse_from(["switchboard", "--listen", "127.0.0.1:0"])
    }
}
