//! Every knob of a node, its default, and why that default.
//!
//! `main.rs` parses the command line into [`Config`]; [`Config::validate`]
//! refuses bad combinations at start with a message that says what to change.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ipnet::IpNet;
use thiserror::Error;

/// How accepted sockets reach reactors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AcceptMode {
    /// One SO_REUSEPORT listener per reactor; the kernel spreads connections.
    Reuseport,
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

#[derive(Parser, Debug, Clone)]
#[command(
    name = "switchboard",
    version,
    about = "WebSocket chat node (seed protocol), clustered through Redis",
    after_help = "Mint a signed token for a user: switchboard token --help"
)]
pub struct Config {
    /// Address to listen on. Port 0 picks a free port (printed at start).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:9000")]
    pub listen: SocketAddr,

    /// Reactor threads (0 = one per core). Each owns a poll loop and its connections.
    #[arg(long, env = "SWITCHBOARD_REACTORS", default_value_t = 0)]
    pub reactors: usize,

    /// Let several node processes share the listen port (SO_REUSEPORT across processes).
    #[arg(long)]
    pub reuse_port: bool,

    /// How accepted sockets reach reactors. `reuseport` measured faster (see README).
    #[arg(long, value_enum, default_value_t = AcceptMode::Reuseport)]
    pub accept: AcceptMode,

    /// Path of the chat endpoint (the seed's).
    #[arg(long, default_value = "/ws")]
    pub ws_path: String,

    /// Path of an echo endpoint for conformance testing (off unless given).
    #[arg(long)]
    pub echo_path: Option<String>,

    /// Largest message accepted, in bytes, after reassembling fragments.
    /// 64 KiB is far above any chat line and bounds what one peer can make us buffer.
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// Unsent output per connection, in bytes, past which a client is closed with 1008.
    /// 1 MiB holds thousands of chat lines: only a client that stopped reading hits it.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub max_output: usize,

    /// Largest HTTP upgrade request head, in bytes (431 past it). Browsers send under 2 KiB.
    #[arg(long, default_value_t = 8 * 1024)]
    pub max_header_bytes: usize,

    /// Seconds a client may take to finish its HTTP upgrade (slowloris guard).
    #[arg(long, default_value_t = 10)]
    pub handshake_timeout: u64,

    /// Seconds a client may take to finish a message it started (a frame cut
    /// short, or fragments without the final one): such input is held in
    /// memory, up to --max-message-size each. Past it (checked at most one more
    /// such period later) the client is closed with 1008.
    #[arg(long, default_value_t = 30)]
    pub message_timeout: u64,

    /// Seconds of silence before the kernel probes a peer (TCP keepalive, then 3
    /// probes 10 s apart; 0 = off). A peer that vanished without a FIN is dropped
    /// after about this plus 30 s, at no cost in user space. 60 s keeps probes rare.
    #[arg(long, default_value_t = 60)]
    pub keepalive: u64,

    /// Seconds a WebSocket may stay without logging in, counted from its TCP
    /// accept (as --handshake-timeout is); then it gets an errormsg and a 1008
    /// close. A client logs in right after its upgrade: 10 s covers a slow
    /// mobile round trip, and an anonymous socket is not held for long.
    #[arg(long, default_value_t = 10)]
    pub login_timeout: u64,

    /// Seconds between pings to a WebSocket that has sent nothing meanwhile
    /// (0 = no pings). Any frame received counts as a sign of life. 25 s is
    /// under the 30-60 s idle timeouts of common proxies and NATs.
    #[arg(long, default_value_t = 25)]
    pub ping_interval: u64,

    /// Seconds a pinged WebSocket has to answer (any frame will do) before it
    /// is closed with 1008; shorter than --ping-interval. A live peer answers
    /// within a round trip; 10 s allows for a congested mobile link.
    #[arg(long, default_value_t = 10)]
    pub pong_timeout: u64,

    /// Messages (and pings) per second one connection may send, sustained
    /// (0 = no limit). A person types a few a second; 100 leaves room for bots,
    /// and keeps one connection from pushing the 190,000/s it otherwise could.
    /// Over it: one errormsg, and the messages are dropped; a client that goes
    /// on for another --message-burst is closed with 1008.
    #[arg(long, default_value_t = 100)]
    pub message_rate: u32,

    /// Messages one connection may send at once above --message-rate: 200 lets
    /// a client flush a queue of messages written while it was offline.
    #[arg(long, default_value_t = 200)]
    pub message_burst: u32,

    /// Logins one connection may try (granted or refused, 0 = no limit); past
    /// it the connection gets an errormsg and a 1008 close. A person whose name
    /// is taken tries a few others; a connection that tries more is probing
    /// which names are online.
    #[arg(long, default_value_t = 10)]
    pub max_login_attempts: u8,

    /// Connections this node holds at most (0 = what the open-file limit allows,
    /// less 256 descriptors kept to answer refusals). A WebSocket upgrade past
    /// it gets 503 with Retry-After; past the open-file limit a client would
    /// get no answer at all.
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,

    /// Connections one source address may hold on this node (0 = no limit); an
    /// upgrade past it gets 429 with Retry-After. 256 is far above one
    /// household or office behind a NAT, and caps what one address can take.
    /// A load test from a few addresses must raise it.
    #[arg(long, default_value_t = 256)]
    pub max_connections_per_address: u32,

    /// New WebSocket connections per second this node upgrades (0 = no limit);
    /// past it (after a burst of as many) an upgrade gets 503 with Retry-After.
    /// A node upgrades about 29,000/s at full CPU; 2,000/s takes under a tenth
    /// of it, so a reconnect storm cannot starve established connections, and
    /// 19,000 clients are back within 10 s.
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,

    /// A proxy (address or CIDR, repeatable) whose X-Forwarded-For names the
    /// client: the source address for --max-connections-per-address is then
    /// the last address in that header not itself a trusted proxy. From any
    /// other peer the header is ignored. Default: none (the header is
    /// client-controlled, so trusting it by default would void the limit).
    #[arg(long, value_parser = parse_net)]
    pub trusted_proxy: Vec<IpNet>,

    /// Bytes all connections of this node may hold in unfinished messages (a
    /// partial frame, or fragments without the final one). A client whose
    /// message would pass it is closed with 1008. 64 MiB is a thousand
    /// maximum-size messages in flight at once, far more than chat sees, and
    /// bounds what stalled clients can pin however many they are.
    #[arg(long, default_value_t = 64 << 20)]
    pub max_partial_bytes: usize,

    /// SO_SNDBUF of accepted sockets, in bytes (0 = the kernel's autotuning,
    /// up to net.ipv4.tcp_wmem's maximum, 4 MiB by default). Setting it caps
    /// the kernel memory a client that does not read can pin, at the cost of
    /// throughput to fast far-away readers.
    #[arg(long, default_value_t = 0)]
    pub send_buffer: usize,

    /// Rooms one connection may be in at once; a join past it gets an
    /// errormsg. A person is in a handful of rooms; 100 leaves room for a
    /// client that mirrors many channels, and bounds what one connection can
    /// make every node keep.
    #[arg(long, default_value_t = 100)]
    pub max_rooms_per_conn: usize,

    /// Members one room may have on this node; a join past it gets an
    /// errormsg. One room message costs the node a queue entry per local
    /// member: 100,000 is a fan-out of a few tens of milliseconds on one core.
    #[arg(long, default_value_t = 100_000)]
    pub max_room_members: usize,

    /// Announce joins and leaves to a room's members (`joinmsg`/`leavemsg`
    /// with the member's name as `Sender`). Off, or off for the rooms named by
    /// --quiet-room, for very large rooms, where every join would be a message
    /// to every member; the joiner (leaver) always gets its own as confirmation.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub join_notices: bool,

    /// Rooms (by name, `*` matching any run of characters, repeatable) whose
    /// joins and leaves are not announced: `--quiet-room 'big-*'`.
    #[arg(long = "quiet-room", value_name = "PATTERN")]
    pub quiet_rooms: Vec<String>,

    /// Names one `presencemsg` may ask about: one answer, one Redis round trip.
    #[arg(long, default_value_t = 100)]
    pub max_presence_names: usize,

    /// Members a `membersmsg` answer lists at most (its `Count` is always the
    /// whole number): a page shows a few dozen; a 100,000-member room is
    /// counted, not listed.
    #[arg(long, default_value_t = 100)]
    pub max_members_listed: usize,

    /// Commands (mostly chat messages from other reactors and the bus) one
    /// reactor's inbox holds at most; a message for a full inbox is refused
    /// with an errormsg to its sender. A reactor drains its inbox every turn,
    /// so only a stuck one fills 16,384 (about 20 MB of chat lines).
    #[arg(long, default_value_t = 16_384)]
    pub inbox_size: usize,

    /// Longest user name, in bytes, as given and as its key (see README, "User
    /// names"). Names are Redis channel names too; 64 bytes fit any real name.
    #[arg(long, default_value_t = 64)]
    pub max_name_len: usize,

    /// Secret for HS256/384/512 tokens: authenticated mode, where a login needs a
    /// signed token whose `sub` is the user name. At least 32 bytes (RFC 7518
    /// 3.2). Prefer the file or the environment: a command line is visible to
    /// every local user. Default: none of the three --auth-* keys, open mode
    /// (the seed's: any client takes any name), announced by a WARN line at start.
    #[arg(long, env = "SWITCHBOARD_AUTH_SECRET", hide_env_values = true, value_name = "SECRET",
          conflicts_with_all = ["auth_secret_file", "auth_public_key"])]
    pub auth_secret: Option<Secret>,

    /// File holding the HS256 secret (one trailing newline is dropped).
    #[arg(long, value_name = "PATH", conflicts_with = "auth_public_key")]
    pub auth_secret_file: Option<PathBuf>,

    /// PEM public key whose private half signs the tokens (RSA: RS*/PS*; EC
    /// P-256: ES256, P-384: ES384; Ed25519: EdDSA). The node then holds no
    /// secret that could mint tokens.
    #[arg(long, value_name = "PEM-FILE")]
    pub auth_public_key: Option<PathBuf>,

    /// Seconds a token's nbf or iat may lie ahead of this node's clock (the
    /// issuer's clock may run ahead). 60 s is the usual default (jsonwebtoken,
    /// Spring Security) and covers NTP-kept clocks many times over; exp gets no
    /// leeway, so a connection never outlives its token.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub auth_leeway: u64,

    /// The `aud` tokens must name. Default: none, and a token naming any
    /// audience is refused (it was issued for another service).
    #[arg(long, value_name = "AUD")]
    pub auth_audience: Option<String>,

    /// Origin allowed to open a WebSocket (repeatable): `https://chat.example.com`,
    /// `https://*.example.com` (any subdomain), `http://localhost:*` (any port),
    /// `*` (any). Others get 403. Default: any in open mode (nothing to protect);
    /// in authenticated mode only pages of this host (Origin's host:port equals
    /// the Host header), so another site cannot use a visitor's token or cookies.
    /// A request without an Origin (not a browser) is always let through.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,

    /// Redis URL to join a cluster: redis://[USER:PASSWORD@]HOST[:PORT][/DB], rediss:// for
    /// TLS; without it the node runs alone.
    #[arg(long, env = "SWITCHBOARD_REDIS")]
    pub redis: Option<String>,

    /// Milliseconds Redis may take to answer: a connect, the greeting (AUTH, PING), and the
    /// oldest command awaiting a reply. Past it the link counts as down (claims in flight
    /// are granted locally, unconfirmed messages reported lost to their senders) and
    /// reconnects. 2 s is far above any reply of a live Redis (well under 1 ms) and a short
    /// wait for a login while Redis hangs.
    #[arg(long, default_value_t = 2000)]
    pub redis_timeout_ms: u64,

    /// PEM file of the CA certificate(s) a rediss:// server's certificate must chain to
    /// (default: the system's roots, which suit a Redis with a public certificate).
    #[arg(long)]
    pub redis_ca: Option<PathBuf>,

    /// Accept any certificate from a rediss:// server (encrypted, not authenticated): only
    /// for self-signed test setups. Off by default: verification is what stops a
    /// man in the middle.
    #[arg(long)]
    pub redis_insecure: bool,

    /// Treat the Redis URL as a Redis Cluster seed: sharded pub/sub (SSUBSCRIBE/SPUBLISH).
    #[arg(long)]
    pub redis_cluster: bool,

    /// Routing between nodes (only with --redis).
    #[arg(long, value_enum, default_value_t = Routing::Targeted)]
    pub routing: Routing,

    /// Seconds a node's hold on its user names lasts without renewal in Redis:
    /// a dead node's names come free after it (its registry keys expire 20
    /// leases after their last renewal even if no node takes them over). A
    /// quiet Redis link is checked with a PING after a third of it (at most 5 s).
    #[arg(long, default_value_t = 15)]
    pub lease_secs: u64,

    /// This node's name in the cluster registry (default: host-pid-random).
    #[arg(long)]
    pub node_id: Option<String>,
}

/// A setting that cannot work, naming the flag and what it accepts.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{flag} must be an absolute path without a query, like /ws (got {got:?})")]
    BadPath { flag: &'static str, got: String },
    #[error("--echo-path must differ from --ws-path")]
    SamePaths,
    #[error("{flag} must be between {min} and {max}{unit} (got {got})")]
    OutOfRange { flag: &'static str, min: u64, max: u64, unit: &'static str, got: u64 },
    #[error("{flag} needs --redis URL")]
    NeedsRedis { flag: &'static str },
    #[error("{flag} needs --auth-secret, --auth-secret-file or --auth-public-key")]
    NeedsAuth { flag: &'static str },
    #[error("--pong-timeout must be shorter than --ping-interval (got {pong} and {ping})")]
    PongAfterPing { pong: u64, ping: u64 },
    #[error("--message-burst / --message-rate must be at most 1000 s (got {burst} / {rate})")]
    BurstTooLong { burst: u32, rate: u32 },
}

/// An address or a CIDR block, for `--trusted-proxy`.
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("expected an address or CIDR block like 10.0.0.0/8, got {s:?}"))
}

/// `value` of `flag` within `min..=max`.
fn in_range(flag: &'static str, value: u64, min: u64, max: u64, unit: &'static str) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { flag, min, max, unit, got: value })
    }
}

impl Config {
    /// Refuses settings that cannot work, saying what to change.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flag at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (flag, path) in [("--ws-path", Some(&self.ws_path)), ("--echo-path", self.echo_path.as_ref())] {
            if let Some(p) = path {
                if !p.starts_with('/') || p.contains('?') {
                    return Err(ConfigError::BadPath { flag, got: p.clone() });
                }
            }
        }
        if self.echo_path.as_deref() == Some(self.ws_path.as_str()) {
            return Err(ConfigError::SamePaths);
        }
        in_range("--max-message-size", self.max_message_size as u64, 125, 1 << 30, " bytes")?;
        in_range("--max-output", self.max_output as u64, 4096, 1 << 40, " bytes")?;
        in_range("--max-header-bytes", self.max_header_bytes as u64, 512, 1 << 20, " bytes")?;
        in_range("--message-timeout", self.message_timeout, 1, 86_400, " s")?;
        in_range("--handshake-timeout", self.handshake_timeout, 1, 86_400, " s")?;
        in_range("--max-name-len", self.max_name_len as u64, 1, 1024, " bytes")?;
        in_range("--auth-leeway", self.auth_leeway, 0, 3600, " s")?;
        if self.auth_audience.is_some() && !self.authenticated() {
            return Err(ConfigError::NeedsAuth { flag: "--auth-audience" });
        }
        in_range("--login-timeout", self.login_timeout, 1, 86_400, " s")?;
        // The liveness sweep also keeps the rate limiter's clock from wrapping,
        // which needs a visit at least every half hour.
        in_range("--ping-interval", self.ping_interval, 0, 1800, " s")?;
        in_range("--pong-timeout", self.pong_timeout, 1, 3600, " s")?;
        if self.ping_interval > 0 && self.pong_timeout >= self.ping_interval {
            return Err(ConfigError::PongAfterPing { pong: self.pong_timeout, ping: self.ping_interval });
        }
        in_range("--message-rate", u64::from(self.message_rate), 0, 1_000_000, "/s")?;
        if self.message_rate > 0 {
            in_range("--message-burst", u64::from(self.message_burst), 1, 1_000_000, "")?;
            if u64::from(self.message_burst) > u64::from(self.message_rate) * 1000 {
                return Err(ConfigError::BurstTooLong { burst: self.message_burst, rate: self.message_rate });
            }
        }
        in_range("--connect-rate", u64::from(self.connect_rate), 0, 10_000_000, "/s")?;
        in_range("--max-partial-bytes", self.max_partial_bytes as u64, 64 * 1024, 1 << 40, " bytes")?;
        in_range("--send-buffer", self.send_buffer as u64, 0, 1 << 30, " bytes")?;
        in_range("--inbox-size", self.inbox_size as u64, 1, 1 << 30, " commands")?;
        in_range("--max-rooms-per-conn", self.max_rooms_per_conn as u64, 1, 100_000, "")?;
        in_range("--max-room-members", self.max_room_members as u64, 1, 100_000_000, "")?;
        in_range("--max-presence-names", self.max_presence_names as u64, 1, 10_000, "")?;
        in_range("--max-members-listed", self.max_members_listed as u64, 0, 100_000, "")?;
        // The lease is renewed every third of it.
        in_range("--lease-secs", self.lease_secs, 3, 86_400, " s")?;
        in_range("--redis-timeout-ms", self.redis_timeout_ms, 100, 60_000, " ms")?;
        if self.redis.is_none() {
            if self.redis_cluster {
                return Err(ConfigError::NeedsRedis { flag: "--redis-cluster" });
            }
            if self.redis_ca.is_some() {
                return Err(ConfigError::NeedsRedis { flag: "--redis-ca" });
            }
            if self.redis_insecure {
                return Err(ConfigError::NeedsRedis { flag: "--redis-insecure" });
            }
            if self.routing == Routing::Broadcast {
                return Err(ConfigError::NeedsRedis { flag: "--routing broadcast" });
            }
        }
        Ok(())
    }

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

    /// Defaults for tests and embedding: an ephemeral port on loopback.
    pub fn for_tests() -> Config {
        Config::parse_from(["switchboard", "--listen", "127.0.0.1:0"])
    }
}
