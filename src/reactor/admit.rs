//! Whether the node takes a WebSocket upgrade: its connection cap
//! (`--max-connections`, 503), the source address's share
//! (`--max-connections-per-address`, 429) and the node's rate of new
//! connections (`--connect-rate`, 503). Each refusal carries `Retry-After`.
//!
//! A peer's connections are counted per address from its accept on, so a
//! client holding sockets that never upgrade counts too; behind a trusted
//! proxy the client is known only from the upgrade's `X-Forwarded-For`, and
//! is counted from then on. Plain HTTP requests (`/healthz`, `/metrics`)
//! are never refused here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::context::Context;
use crate::admission::source_key;
use crate::config::Config;
use crate::handshake::{ForwardedFor, Refusal};
use crate::hub::Hub;
use crate::limits;
use crate::metrics::Limit;

/// Seconds a client refused for a cap is told to wait: connections come
/// and go over seconds, and a client that retries at once meets the same cap.
const RETRY_CAP_SECS: u64 = 10;
/// Descriptors kept free under the open-file limit to answer refusals with.
const REFUSAL_FDS: u64 = 256;

/// Where an accepted socket comes from, for the per-address count.
#[derive(Clone, Copy, Debug)]
pub(super) struct Source {
    /// `admission::source_key` of the peer (or, behind a proxy, the proxy
    /// until the upgrade names the client).
    pub key: u32,
    /// Already counted in the node's per-address table.
    pub counted: bool,
}

/// Counts a freshly accepted socket from `peer`: at once for a direct peer,
/// at the upgrade for one that is a trusted proxy.
pub(super) fn on_accept(hub: &Hub, config: &Config, peer: SocketAddr) -> Source {
    let ip = peer.ip().to_canonical();
    let key = source_key(ip);
    let proxy = config.trusted_proxy.iter().any(|net| net.contains(&ip));
    let counted = config.max_connections_per_address > 0 && !proxy;
    if counted {
        hub.admission.add_source(key);
    }
    Source { key, counted }
}

/// The node's connection cap: `--max-connections`, or what the open-file
/// limit allows less the descriptors kept to answer refusals.
pub(super) fn max_connections(config: &Config) -> usize {
    if config.max_connections > 0 {
        return config.max_connections;
    }
    match limits::raise_nofile() {
        Ok(n) => n.saturating_sub(limits::RESERVED_FDS + REFUSAL_FDS).max(1) as usize,
        Err(_) => usize::MAX,
    }
}

/// Decides an upgrade from a connection counted as `source`. A source
/// counted here (the client behind a proxy) is written to `newly`, for the
/// connection to remember, whether it is admitted or not.
pub(super) fn admit(
    cx: &Context,
    source: Source,
    forwarded: &ForwardedFor<'_>,
    newly: &mut Option<u32>,
) -> Result<(), Refusal> {
    let config = &cx.config;
    let admission = &cx.hub.admission;
    let held: u64 = cx.hub.metrics.reactors.iter().map(|r| r.connections.load(Relaxed)).sum();
    if held > cx.max_connections as u64 {
        cx.stats().limit_hit(Limit::MaxConnections);
        return Err(Refusal { status: 503, retry_after: RETRY_CAP_SECS, why: "this node is full" });
    }
    let per_address = config.max_connections_per_address;
    if per_address > 0 {
        let count = if source.counted {
            admission.source_count(source.key)
        } else {
            let key = forwarded.client(&config.trusted_proxy).map_or(source.key, source_key);
            *newly = Some(key);
            admission.add_source(key)
        };
        if count > per_address {
            cx.stats().limit_hit(Limit::PerAddress);
            let why = "too many connections from your address";
            return Err(Refusal { status: 429, retry_after: RETRY_CAP_SECS, why });
        }
    }
    if let Err(wait) = admission.take_connect_token(config.connect_rate, Instant::now()) {
        cx.stats().limit_hit(Limit::ConnectRate);
        let retry_after = wait.as_secs() + 1;
        return Err(Refusal { status: 503, retry_after, why: "too many new connections, try again shortly" });
    }
    Ok(())
}
