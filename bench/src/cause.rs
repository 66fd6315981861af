//! Why a connection failed, told from the side that acted: the node closed it (with a
//! close frame, an HTTP status instead of the upgrade, or a bare FIN), the kernel ended it
//! (ECONNRESET, ECONNREFUSED, ETIMEDOUT, EADDRNOTAVAIL, ...), or the load generator gave up
//! waiting (its `--connect-timeout`). Failures are counted by cause and by the step the
//! connection was in, in every worker, and summed exactly by the coordinator.

use std::collections::BTreeMap;
use std::io;

use crate::codec::ProtocolError;
use crate::stats::Counter;

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The node: a close frame, an HTTP error status, a protocol violation, a FIN.
    Node,
    /// The kernel: an errno on connect, read or write (a reset, a refusal, a TCP timeout).
    Kernel,
    /// The load generator: a deadline of its own passed.
    Loadgen,
}

impl Side {
    pub const ALL: [Side; 3] = [Side::Node, Side::Kernel, Side::Loadgen];

    /// How the human summary names the side.
    pub fn label(self) -> &'static str {
        match self {
            Side::Node => "the node closed it",
            Side::Kernel => "the kernel ended it",
            Side::Loadgen => "the load generator gave up",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Side::Node => "node",
            Side::Kernel => "kernel",
            Side::Loadgen => "loadgen",
        }
    }
}

/// One failure: who acted, what happened, and the error kind it is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub side: Side,
    pub what: String,
    pub kind: Counter,
}

impl Cause {
    /// The node sent a close frame: its code and reason say which rule closed it.
    pub fn closed_by_node(code: u16, reason: &str) -> Self {
        // Reasons may carry figures after a colon ("slow consumer: 1048576 bytes"); the
        // rule is what comes before.
        let rule: String = reason.split(':').next().unwrap_or("").trim().chars().take(48).collect();
        let what = if rule.is_empty() { format!("close {code}") } else { format!("close {code} \"{rule}\"") };
        Cause { side: Side::Node, what, kind: Counter::ErrClosed }
    }

    /// The node ended the session in its protocol's own way (Socket.IO: an Engine.IO
    /// close, a disconnect, a connect error).
    pub fn ended_by_node(what: String) -> Self {
        Cause { side: Side::Node, what, kind: Counter::ErrClosed }
    }

    /// The node closed TCP without a close frame.
    pub fn node_eof() -> Self {
        Cause { side: Side::Node, what: "closed TCP without a close frame".into(), kind: Counter::ErrReset }
    }

    /// The node refused a login: the name is taken ("User already exists").
    pub fn login_rejected() -> Self {
        Cause {
            side: Side::Node,
            what: "login refused: \"User already exists\"".into(),
            kind: Counter::ErrLoginRejected,
        }
    }

    /// The node broke the protocol, or answered the upgrade with an HTTP error.
    pub fn node_protocol(error: &ProtocolError) -> Self {
        let what = match error {
            ProtocolError::Status { status, reason } => format!("HTTP {status} {reason}").trim_end().to_string(),
            other => format!("protocol: {other}"),
        };
        Cause { side: Side::Node, what, kind: Counter::ErrProtocol }
    }

    /// The node sent something the protocol does not allow here.
    pub fn node_violation(what: &str) -> Self {
        Cause { side: Side::Node, what: format!("protocol: {what}"), kind: Counter::ErrProtocol }
    }

    /// An errno from the kernel.
    pub fn kernel(error: &io::Error) -> Self {
        let what = match error.raw_os_error() {
            Some(code) => errno_name(code).map_or_else(|| format!("errno {code}"), str::to_string),
            None => error.kind().to_string(),
        };
        Cause { side: Side::Kernel, what, kind: kind_of(error) }
    }

    /// The load generator stopped waiting for `what`.
    pub fn gave_up(what: &str) -> Self {
        Cause { side: Side::Loadgen, what: format!("timed out waiting for the {what}"), kind: Counter::ErrTimeout }
    }

    /// Socket.IO: the ack of an event never came; most likely the server has no handler
    /// for an event of that name (Socket.IO ignores unknown events without a word).
    pub fn no_ack(event: &str, seconds: f64, what: &str) -> Self {
        let what = format!("no ack for event {event:?} within {seconds} s: is the server's {what} event called that?");
        Cause { side: Side::Loadgen, what, kind: Counter::ErrTimeout }
    }

    /// TLS failed: the load generator refused the server's certificate, or the server
    /// sent an alert or broke the protocol.
    pub fn tls(error: &rustls::Error) -> Self {
        match error {
            rustls::Error::InvalidCertificate(e) => Cause {
                side: Side::Loadgen,
                what: format!("refused the TLS certificate: {e:?}"),
                kind: Counter::ErrProtocol,
            },
            other => Cause { side: Side::Node, what: format!("TLS: {other}"), kind: Counter::ErrProtocol },
        }
    }
}

/// The error counter an I/O error belongs to.
fn kind_of(e: &io::Error) -> Counter {
    use io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => Counter::ErrRefused,
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof | NotConnected => Counter::ErrReset,
        TimedOut => Counter::ErrTimeout,
        _ => Counter::ErrOther,
    }
}

/// The symbolic name of the errnos a connection meets.
pub fn errno_name(code: i32) -> Option<&'static str> {
    Some(match code {
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::EPIPE => "EPIPE",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::EAGAIN => "EAGAIN",
        _ => return None,
    })
}

/// Failures counted by (side, what happened and in which step).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Causes {
    counts: BTreeMap<(Side, String), u64>,
}

/// One line of [`Causes`] as it travels between processes.
pub type CauseCount = (Side, String, u64);

impl Causes {
    /// Counts one failure of `cause` during `step`.
    pub fn count(&mut self, cause: &Cause, step: &str) {
        *self.counts.entry((cause.side, format!("{} during {step}", cause.what))).or_default() += 1;
    }

    /// Adds counts from another thread or process.
    pub fn add(&mut self, lines: impl IntoIterator<Item = CauseCount>) {
        for (side, what, n) in lines {
            *self.counts.entry((side, what)).or_default() += n;
        }
    }

    pub fn lines(&self) -> Vec<CauseCount> {
        self.counts.iter().map(|((side, what), n)| (*side, what.clone(), *n)).collect()
    }

    /// The counts of one side, most frequent first.
    pub fn of(&self, side: Side) -> Vec<(&str, u64)> {
        let mut lines: Vec<(&str, u64)> =
            self.counts.iter().filter(|((s, _), _)| *s == side).map(|((_, w), n)| (w.as_str(), *n)).collect();
        lines.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        lines
    }

    pub fn total(&self, side: Side) -> u64 {
        self.counts.iter().filter(|((s, _), _)| *s == side).map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_names_what_happened() {
        assert_eq!(
            Cause::closed_by_node(1008, "slow consumer: 1048577 bytes pending").what,
            "close 1008 \"slow consumer\""
        );
        assert_eq!(Cause::closed_by_node(1001, "").what, "close 1001");
        let http = Cause::node_protocol(&ProtocolError::Status { status: 503, reason: "Service Unavailable".into() });
        assert_eq!((http.side, http.what.as_str()), (Side::Node, "HTTP 503 Service Unavailable"));
        let reset = Cause::kernel(&io::Error::from_raw_os_error(libc::ECONNRESET));
        assert_eq!((reset.side, reset.what.as_str(), reset.kind), (Side::Kernel, "ECONNRESET", Counter::ErrReset));
        let refused = Cause::kernel(&io::Error::from_raw_os_error(libc::ECONNREFUSED));
        assert_eq!(refused.kind, Counter::ErrRefused);
        assert_eq!(Cause::kernel(&io::Error::from_raw_os_error(4095)).what, "errno 4095");
        let late = Cause::gave_up("WebSocket handshake answer");
        assert_eq!((late.side, late.kind), (Side::Loadgen, Counter::ErrTimeout));
        let unanswered = Cause::no_ack("login", 2.0, "login");
        assert_eq!(unanswered.what, "no ack for event \"login\" within 2 s: is the server's login event called that?");
        let refused = Cause::tls(&rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        assert_eq!(
            (refused.side, refused.what.as_str()),
            (Side::Loadgen, "refused the TLS certificate: UnknownIssuer")
        );
    }

    #[test]
    fn counts_add_up_by_side_and_step() {
        let mut a = Causes::default();
        a.count(&Cause::node_eof(), "handshake");
        a.count(&Cause::node_eof(), "handshake");
        a.count(&Cause::gave_up("login confirmation"), "login");
        let mut b = Causes::default();
        b.count(&Cause::node_eof(), "handshake");
        b.add(a.lines());
        assert_eq!(b.of(Side::Node), [("closed TCP without a close frame during handshake", 3)]);
        assert_eq!(b.total(Side::Loadgen), 1);
        assert_eq!(b.total(Side::Kernel), 0);
    }
}
