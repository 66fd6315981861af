//! Counters and gauges, rendered in Prometheus' text format for `/metrics`.
//!
//! Each reactor counts into its own cache line (relaxed atomics, no sharing on
//! the hot path); the bus counts into node-wide fields. A scrape sums them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A limit a client ran into: `switchboard_limit_hits_total{limit="..."}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Closed: no login within --login-timeout.
    LoginTimeout,
    /// Closed: no answer to a ping within --pong-timeout.
    PongTimeout,
    /// A message dropped over --message-rate.
    MessageRate,
    /// Closed: went on sending over --message-rate.
    MessageRateClose,
    /// Closed: more logins than --max-login-attempts.
    LoginAttempts,
    /// Upgrade refused (503): --max-connections.
    MaxConnections,
    /// Upgrade refused (429): --max-connections-per-address.
    PerAddress,
    /// Upgrade refused (503): --connect-rate.
    ConnectRate,
    /// Closed: its unfinished message would pass --max-partial-bytes.
    PartialBytes,
    /// A message refused: the recipient's reactor inbox was full (--inbox-size).
    InboxFull,
    /// A closing connection reset at the end of its close grace.
    CloseGraceReset,
}

impl Limit {
    const ALL: [(Limit, &'static str); 11] = [
        (Limit::LoginTimeout, "login_timeout"),
        (Limit::PongTimeout, "pong_timeout"),
        (Limit::MessageRate, "message_rate"),
        (Limit::MessageRateClose, "message_rate_close"),
        (Limit::LoginAttempts, "login_attempts"),
        (Limit::MaxConnections, "max_connections"),
        (Limit::PerAddress, "per_address"),
        (Limit::ConnectRate, "connect_rate"),
        (Limit::PartialBytes, "partial_bytes"),
        (Limit::InboxFull, "inbox_full"),
        (Limit::CloseGraceReset, "close_grace_reset"),
    ];
}

/// One reactor's counters, alone on their cache line(s).
#[derive(Default)]
#[repr(align(128))]
pub struct ReactorStats {
    pub connections: AtomicU64,
    pub accepted: AtomicU64,
    pub handshakes: AtomicU64,
    pub users: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub slow_closed: AtomicU64,
    pub protocol_errors: AtomicU64,
    pub undeliverable: AtomicU64,
    limit_hits: [AtomicU64; Limit::ALL.len()],
}

impl ReactorStats {
    /// Counts one run-in with `limit`.
    pub fn hit(&self, limit: Limit) {
        self.limit_hits[limit as usize].fetch_add(1, Relaxed);
    }
}

/// Counters of the bus (Redis link), node-wide.
#[derive(Default)]
pub struct BusStats {
    pub connected: AtomicU64,
    pub reconnects: AtomicU64,
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub subscriptions: AtomicU64,
    pub publish_dropped: AtomicU64,
    /// Publishes written to a Redis link that dropped before it confirmed
    /// them, or refused by Redis; each sender is told.
    pub publish_lost: AtomicU64,
    /// Messages from Redis dropped as not published by a node (bad shape, bad UTF-8).
    pub rejected: AtomicU64,
    /// Bytes the subscriber found waiting in its last read round: how far behind it is.
    pub subscriber_lag_bytes: AtomicU64,
    /// The largest such round so far.
    pub subscriber_lag_max_bytes: AtomicU64,
}

pub struct Metrics {
    pub reactors: Box<[ReactorStats]>,
    pub bus: BusStats,
    /// Bytes all connections hold in unfinished messages (--max-partial-bytes).
    pub partial_bytes: AtomicU64,
}

impl Metrics {
    pub fn new(reactors: usize) -> Metrics {
        Metrics {
            reactors: (0..reactors).map(|_| ReactorStats::default()).collect(),
            bus: BusStats::default(),
            partial_bytes: AtomicU64::new(0),
        }
    }

    fn sum(&self, field: impl Fn(&ReactorStats) -> &AtomicU64) -> u64 {
        self.reactors.iter().map(|r| field(r).load(Relaxed)).sum()
    }

    /// The limits clients ran into, and the bytes held in unfinished messages.
    fn render_limits(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP switchboard_partial_bytes bytes held in unfinished messages\n# TYPE switchboard_partial_bytes gauge\nswitchboard_partial_bytes {}",
            self.partial_bytes.load(Relaxed)
        );
        out.push_str("# HELP switchboard_limit_hits_total clients that ran into a limit, by limit\n");
        out.push_str("# TYPE switchboard_limit_hits_total counter\n");
        for (limit, name) in Limit::ALL {
            let hits = self.sum(|r| &r.limit_hits[limit as usize]);
            let _ = writeln!(out, "switchboard_limit_hits_total{{limit=\"{name}\"}} {hits}");
        }
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let node: [(&str, &str, &str, u64); 11] = [
            ("switchboard_connections", "gauge", "open WebSocket and HTTP connections", self.sum(|r| &r.connections)),
            ("switchboard_users", "gauge", "logged-in users on this node", self.sum(|r| &r.users)),
            ("switchboard_accepted_total", "counter", "TCP connections accepted", self.sum(|r| &r.accepted)),
            ("switchboard_handshakes_total", "counter", "WebSocket upgrades completed", self.sum(|r| &r.handshakes)),
            ("switchboard_messages_in_total", "counter", "WebSocket messages received", self.sum(|r| &r.messages_in)),
            (
                "switchboard_messages_out_total",
                "counter",
                "WebSocket messages queued to clients",
                self.sum(|r| &r.messages_out),
            ),
            ("switchboard_bytes_in_total", "counter", "bytes read from clients", self.sum(|r| &r.bytes_in)),
            ("switchboard_bytes_out_total", "counter", "bytes written to clients", self.sum(|r| &r.bytes_out)),
            (
                "switchboard_slow_closed_total",
                "counter",
                "clients closed for unsent output over the limit",
                self.sum(|r| &r.slow_closed),
            ),
            (
                "switchboard_protocol_errors_total",
                "counter",
                "connections closed for protocol errors",
                self.sum(|r| &r.protocol_errors),
            ),
            (
                "switchboard_undeliverable_total",
                "counter",
                "chat messages whose recipient was not online",
                self.sum(|r| &r.undeliverable),
            ),
        ];
        let bus = &self.bus;
        let cluster: [(&str, &str, &str, u64); 10] = [
            ("switchboard_bus_connected", "gauge", "1 while the Redis link is up", bus.connected.load(Relaxed)),
            ("switchboard_bus_reconnects_total", "counter", "Redis reconnections", bus.reconnects.load(Relaxed)),
            ("switchboard_bus_published_total", "counter", "messages published to Redis", bus.published.load(Relaxed)),
            ("switchboard_bus_received_total", "counter", "messages received from Redis", bus.received.load(Relaxed)),
            ("switchboard_bus_subscriptions", "gauge", "channels subscribed", bus.subscriptions.load(Relaxed)),
            (
                "switchboard_bus_publish_dropped_total",
                "counter",
                "publishes dropped while Redis was unreachable",
                bus.publish_dropped.load(Relaxed),
            ),
            (
                "switchboard_bus_publish_lost_total",
                "counter",
                "publishes unconfirmed when their Redis link dropped, or refused by Redis (senders told)",
                bus.publish_lost.load(Relaxed),
            ),
            ("switchboard_bus_rejected_total", "counter", "Redis messages no node sent", bus.rejected.load(Relaxed)),
            (
                "switchboard_bus_subscriber_lag_bytes",
                "gauge",
                "bytes the subscriber found waiting in its last read round",
                bus.subscriber_lag_bytes.load(Relaxed),
            ),
            (
                "switchboard_bus_subscriber_lag_max_bytes",
                "gauge",
                "largest read round of the subscriber so far",
                bus.subscriber_lag_max_bytes.load(Relaxed),
            ),
        ];
        for (name, kind, help, value) in node.iter().chain(cluster.iter()) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        self.render_limits(&mut out);
        out.push_str("# HELP switchboard_reactor_connections open connections per reactor\n");
        out.push_str("# TYPE switchboard_reactor_connections gauge\n");
        for (i, r) in self.reactors.iter().enumerate() {
            let _ = writeln!(out, "switchboard_reactor_connections{{reactor=\"{i}\"}} {}", r.connections.load(Relaxed));
        }
        out
    }
}
