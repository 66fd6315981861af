//! Counters and gauges, rendered in Prometheus' text format for `/metrics`
//! (served by the admin listener, `admin.rs`).
//!
//! Each reactor counts into its own cache line (relaxed atomics, no sharing on
//! the hot path); the bus counts into node-wide fields. A scrape sums them.
//! Labelled counters take their labels from small enums, so the set of series
//! is fixed and every series is rendered from the start (at 0).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a WebSocket connection ended: the `reason` label of `switchboard_closes_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame; its code is answered.
    Peer,
    /// The client broke a rule (protocol, UTF-8, size, a stalled message).
    Error,
    /// A limit of the server was reached (a client that stopped reading, abuse limits).
    Limit,
    /// The node is stopping (1001).
    Shutdown,
    /// Gone without a close handshake: EOF, reset, a write error.
    Dropped,
    /// Closed through the server API (`POST /api/disconnect`).
    Api,
}

impl CloseReason {
    const ALL: [CloseReason; 6] = [
        CloseReason::Peer,
        CloseReason::Error,
        CloseReason::Limit,
        CloseReason::Shutdown,
        CloseReason::Dropped,
        CloseReason::Api,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::Peer => "peer",
            CloseReason::Error => "error",
            CloseReason::Limit => "limit",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Dropped => "dropped",
            CloseReason::Api => "api",
        }
    }
}

/// The `code` label: the close codes this server sends or commonly gets;
/// any other code counts as "other", a drop as "none".
const CLOSE_CODES: [(u16, &str); 9] = [
    (1000, "1000"),
    (1001, "1001"),
    (1002, "1002"),
    (1003, "1003"),
    (1007, "1007"),
    (1008, "1008"),
    (1009, "1009"),
    (1011, "1011"),
    (4000, "4000"),
];
const OTHER_CODE: usize = CLOSE_CODES.len();
const CODE_SLOTS: usize = CLOSE_CODES.len() + 1;

/// A limit that refused a client something: the `limit` label of
/// `switchboard_limit_hits_total`. Add a variant (and its label) for a new limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// --max-header-bytes (431).
    HeaderBytes,
    /// --handshake-timeout.
    HandshakeTimeout,
    /// --max-message-size (1009).
    MessageSize,
    /// --message-timeout (1008).
    MessageTimeout,
    /// --max-output: a client that stopped reading (1008).
    Output,
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
    const ALL: [Limit; 16] = [
        Limit::HeaderBytes,
        Limit::HandshakeTimeout,
        Limit::MessageSize,
        Limit::MessageTimeout,
        Limit::Output,
        Limit::LoginTimeout,
        Limit::PongTimeout,
        Limit::MessageRate,
        Limit::MessageRateClose,
        Limit::LoginAttempts,
        Limit::MaxConnections,
        Limit::PerAddress,
        Limit::ConnectRate,
        Limit::PartialBytes,
        Limit::InboxFull,
        Limit::CloseGraceReset,
    ];

    fn label(self) -> &'static str {
        match self {
            Limit::HeaderBytes => "header_bytes",
            Limit::HandshakeTimeout => "handshake_timeout",
            Limit::MessageSize => "message_size",
            Limit::MessageTimeout => "message_timeout",
            Limit::Output => "output",
            Limit::LoginTimeout => "login_timeout",
            Limit::PongTimeout => "pong_timeout",
            Limit::MessageRate => "message_rate",
            Limit::MessageRateClose => "message_rate_close",
            Limit::LoginAttempts => "login_attempts",
            Limit::MaxConnections => "max_connections",
            Limit::PerAddress => "per_address",
            Limit::ConnectRate => "connect_rate",
            Limit::PartialBytes => "partial_bytes",
            Limit::InboxFull => "inbox_full",
            Limit::CloseGraceReset => "close_grace_reset",
        }
    }
}

/// Why a client's token was refused: the `reason` label of `switchboard_token_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFailure {
    /// No token where one is required.
    Missing,
    /// Not a token (encoding, header, JSON).
    Malformed,
    /// The signature does not verify.
    Signature,
    /// Past its expiry (or not yet valid).
    Expired,
    /// A claim does not fit (issuer, audience, subject).
    Claims,
}

impl TokenFailure {
    const ALL: [TokenFailure; 5] = [
        TokenFailure::Missing,
        TokenFailure::Malformed,
        TokenFailure::Signature,
        TokenFailure::Expired,
        TokenFailure::Claims,
    ];

    fn label(self) -> &'static str {
        match self {
            TokenFailure::Missing => "missing",
            TokenFailure::Malformed => "malformed",
            TokenFailure::Signature => "signature",
            TokenFailure::Expired => "expired",
            TokenFailure::Claims => "claims",
        }
    }
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
    closes: [[AtomicU64; CODE_SLOTS]; CloseReason::ALL.len()],
    limit_hits: [AtomicU64; Limit::ALL.len()],
    token_failures: [AtomicU64; TokenFailure::ALL.len()],
}

impl ReactorStats {
    /// Counts a WebSocket connection that ended; `code` is the close code
    /// (none for [`CloseReason::Dropped`]).
    pub fn closed(&self, reason: CloseReason, code: u16) {
        let slot = CLOSE_CODES.iter().position(|&(c, _)| c == code).unwrap_or(OTHER_CODE);
        self.closes[reason as usize][slot].fetch_add(1, Relaxed);
    }

    pub fn limit_hit(&self, limit: Limit) {
        self.limit_hits[limit as usize].fetch_add(1, Relaxed);
    }

    pub fn token_failed(&self, why: TokenFailure) {
        self.token_failures[why as usize].fetch_add(1, Relaxed);
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
    /// Publishes written to a Redis link that dropped before it confirmed them.
    pub publish_lost: AtomicU64,
    /// Kept messages' publishes unconfirmed when their link dropped, sent again.
    pub publish_retried: AtomicU64,
    /// Bytes the subscriber found waiting in its last read round: how far behind it is.
    pub subscriber_lag_bytes: AtomicU64,
    /// The largest such round so far.
    pub subscriber_lag_max_bytes: AtomicU64,
    /// Messages from Redis in no shape a node publishes: dropped.
    pub rejected: AtomicU64,
}

/// The node's own state.
#[derive(Default)]
pub struct NodeStats {
    /// 1 from the stop signal on: not ready, closing its clients.
    pub draining: AtomicU64,
}

pub struct Metrics {
    pub reactors: Box<[ReactorStats]>,
    pub bus: BusStats,
    pub node: NodeStats,
    /// Bytes all connections hold in unfinished messages (`--max-partial-bytes`).
    pub partial_bytes: AtomicU64,
}

/// One unlabelled series: name, type, help, value.
type Series<'a> = (&'a str, &'a str, &'a str, u64);

impl Metrics {
    pub fn new(reactors: usize) -> Metrics {
        Metrics {
            reactors: (0..reactors).map(|_| ReactorStats::default()).collect(),
            bus: BusStats::default(),
            node: NodeStats::default(),
            partial_bytes: AtomicU64::new(0),
        }
    }

    fn sum(&self, field: impl Fn(&ReactorStats) -> &AtomicU64) -> u64 {
        self.reactors.iter().map(|r| field(r).load(Relaxed)).sum()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        for (name, kind, help, value) in self.node_series().iter().chain(self.bus_series().iter()) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        head(&mut out, "switchboard_reactor_connections", "gauge", "open connections per reactor");
        for (i, r) in self.reactors.iter().enumerate() {
            let _ = writeln!(out, "switchboard_reactor_connections{{reactor=\"{i}\"}} {}", r.connections.load(Relaxed));
        }
        self.render_closes(&mut out);
        head(&mut out, "switchboard_partial_bytes", "gauge", "bytes held in unfinished messages");
        let _ = writeln!(out, "switchboard_partial_bytes {}", self.partial_bytes.load(Relaxed));
        head(&mut out, "switchboard_limit_hits_total", "counter", "requests or clients refused by a limit");
        for limit in Limit::ALL {
            let n = self.sum(|r| &r.limit_hits[limit as usize]);
            let _ = writeln!(out, "switchboard_limit_hits_total{{limit=\"{}\"}} {n}", limit.label());
        }
        head(&mut out, "switchboard_token_failures_total", "counter", "client tokens refused");
        for why in TokenFailure::ALL {
            let n = self.sum(|r| &r.token_failures[why as usize]);
            let _ = writeln!(out, "switchboard_token_failures_total{{reason=\"{}\"}} {n}", why.label());
        }
        out
    }

    fn render_closes(&self, out: &mut String) {
        head(out, "switchboard_closes_total", "counter", "WebSocket connections ended, by close code and reason");
        let coded = CLOSE_CODES.iter().enumerate().map(|(slot, &(_, label))| (slot, label));
        let coded: Vec<(usize, &str)> = coded.chain([(OTHER_CODE, "other")]).collect();
        for reason in CloseReason::ALL {
            // A drop has no close code: its one series is "none".
            let slots: &[(usize, &str)] = if reason == CloseReason::Dropped { &[(OTHER_CODE, "none")] } else { &coded };
            for &(slot, code) in slots {
                let n = self.sum(|r| &r.closes[reason as usize][slot]);
                let _ = writeln!(out, "switchboard_closes_total{{code=\"{code}\",reason=\"{}\"}} {n}", reason.label());
            }
        }
    }

    fn node_series(&self) -> [Series<'static>; 12] {
        [
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
            (
                "switchboard_draining",
                "gauge",
                "1 while the node drains (stop signal received: not ready, closing clients)",
                self.node.draining.load(Relaxed),
            ),
        ]
    }

    fn bus_series(&self) -> [Series<'static>; 11] {
        let bus = &self.bus;
        [
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
            (
                "switchboard_bus_publish_retried_total",
                "counter",
                "kept messages unconfirmed when their Redis link dropped, sent again (written once)",
                bus.publish_retried.load(Relaxed),
            ),
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
            ("switchboard_bus_rejected_total", "counter", "Redis messages no node sent", bus.rejected.load(Relaxed)),
        ]
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_counters_sum_over_reactors_with_a_fixed_set_of_series() {
        let m = Metrics::new(2);
        let before = m.render().lines().count();
        m.reactors[0].closed(CloseReason::Shutdown, 1001);
        m.reactors[1].closed(CloseReason::Shutdown, 1001);
        m.reactors[1].closed(CloseReason::Peer, 4321);
        m.reactors[0].closed(CloseReason::Dropped, 0);
        m.reactors[1].limit_hit(Limit::Output);
        m.reactors[0].token_failed(TokenFailure::Expired);
        let text = m.render();
        assert_eq!(text.lines().count(), before, "no series appears later");
        for line in [
            "switchboard_closes_total{code=\"1001\",reason=\"shutdown\"} 2",
            "switchboard_closes_total{code=\"other\",reason=\"peer\"} 1",
            "switchboard_closes_total{code=\"none\",reason=\"dropped\"} 1",
            "switchboard_closes_total{code=\"1008\",reason=\"limit\"} 0",
            "switchboard_limit_hits_total{limit=\"output\"} 1",
            "switchboard_token_failures_total{reason=\"expired\"} 1",
            "switchboard_draining 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }
}
