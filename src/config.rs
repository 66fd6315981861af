//! Every knob of a node, its default, and why that default.
//!
//! Each flag can also come from a `SWITCHBOARD_*` environment variable or a
//! key of the TOML file named by `--config` (flags win over the environment,
//! which wins over the file): [`load`] reads them. [`Config::validate`]
//! refuses settings that cannot work, naming the flag and what it accepts.

mod load;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

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

#[derive(Parser, Debug, Clone)]
#[command(name = "switchboard", version, about = "WebSocket chat node (seed protocol), clustered through Redis")]
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

    /// Longest user name, in bytes. Names are Redis channel names too.
    #[arg(long, global = true, env = "SWITCHBOARD_MAX_NAME_LEN", value_name = "BYTES", default_value_t = 64)]
    pub max_name_len: usize,

    /// Redis URL (redis://host:port) to join a cluster; without it the node runs alone.
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// Treat the Redis URL as a Redis Cluster seed: sharded pub/sub (SSUBSCRIBE/SPUBLISH).
    #[arg(long, global = true, env = "SWITCHBOARD_REDIS_CLUSTER", value_parser = BoolishValueParser::new())]
    pub redis_cluster: bool,

    /// Routing between nodes (only with --redis).
    #[arg(long, global = true, env = "SWITCHBOARD_ROUTING", value_enum, default_value_t = Routing::Targeted)]
    pub routing: Routing,

    /// Seconds a node's hold on its user names lasts without renewal in Redis:
    /// a dead node's names come free after it. The Redis links follow it too:
    /// a PING after a third of it in silence (at most 5 s), and a link that
    /// stays silent two thirds of it (at most 10 s) is dropped and reconnected.
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
}

impl Config {
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
