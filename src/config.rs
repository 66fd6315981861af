//! Every knob of a node, its default, and why that default.
//!
//! `main.rs` parses the command line into [`Config`]; [`Config::validate`]
//! refuses bad combinations at start with a message that says what to change.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
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

#[derive(Parser, Debug, Clone)]
#[command(name = "switchboard", version, about = "WebSocket chat node (seed protocol), clustered through Redis")]
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

    /// Longest user name, in bytes. Names are Redis channel names too.
    #[arg(long, default_value_t = 64)]
    pub max_name_len: usize,

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
