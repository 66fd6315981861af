//! Taking new connections off a listener: which reactor gets each one, and
//! what to do when the process runs out of descriptors.

use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};

use super::admit::{self, Source};
use crate::config::{AcceptMode, Config};
use crate::hub::Hub;

/// How long to stop accepting after running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one "accept failed" line per this, for all reactors together.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);

/// What one `accept` gave.
pub(super) enum Accepted {
    /// A new socket for reactor `target`, already counted in its gauge
    /// (and, from a direct peer, per address).
    Socket { stream: TcpStream, target: usize, source: Source },
    /// The backlog is empty: wait for the next event.
    Empty,
    /// Out of descriptors (EMFILE/ENFILE): the backlog stays queued and no
    /// new edge comes for it, so accepting resumes on a timer at `until`.
    Paused { until: Instant },
}

/// Accepts one socket from `listener` on behalf of reactor `id`.
pub(super) fn accept_one(listener: &TcpListener, id: usize, hub: &Hub, config: &Config) -> Accepted {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let reactors = &hub.metrics.reactors;
                reactors[id].accepted.fetch_add(1, Relaxed);
                let target = match config.accept {
                    AcceptMode::Handoff => least_loaded(hub).unwrap_or(id),
                    AcceptMode::Each => id,
                };
                // Counted for its reactor now, before it is adopted, so the
                // rest of this burst sees it when choosing the least loaded.
                reactors[target].connections.fetch_add(1, Relaxed);
                let source = admit::on_accept(hub, config, peer);
                return Accepted::Socket { stream, target, source };
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Empty,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
            Err(e) => {
                // Out of descriptors this repeats every backoff on every reactor.
                crate::warn_limited!(
                    ACCEPT_WARN_EVERY,
                    "accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?} (raise LimitNOFILE / ulimit -n)"
                );
                return Accepted::Paused { until: Instant::now() + ACCEPT_BACKOFF };
            }
        }
    }
}

/// The reactor with the fewest live connections.
fn least_loaded(hub: &Hub) -> Option<usize> {
    let reactors = &hub.metrics.reactors;
    (0..reactors.len()).min_by_key(|&r| reactors[r].connections.load(Relaxed))
}
