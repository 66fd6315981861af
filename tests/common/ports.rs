//! Ports for the servers tests start: free a moment ago, and out of the
//! kernel's ephemeral range where it leaves room.

use std::net::TcpListener;

/// A port that was free a moment ago (and, for cluster nodes, whose bus port
/// PORT+10000 was too), below the kernel's ephemeral range (32768 and up by
/// default, read from /proc): a client that retries connecting to a port in
/// that range may be given that very port as its own source port and connect
/// to itself, holding the port a restarted Redis then cannot bind.
pub fn free_port(cluster: bool) -> u16 {
    // Spread over the range by the clock, so parallel tests rarely try the same.
    let (low, span) = below_ephemeral(if cluster { 10_000 } else { 0 });
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut seed = now.as_nanos() as u64 ^ u64::from(std::process::id()) << 20;
    loop {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let port = low + (seed >> 33) as u16 % span;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && (!cluster || free(port + 10_000)) {
            return port;
        }
    }
}

/// Where test ports go: 12,000 upward while the ephemeral range starts above
/// 32,000 (the default), else just under where it starts (a tuned kernel,
/// `ip_local_port_range = 10000 65535`), leaving `reserve` above the port
/// (a cluster node's bus port) also below it where there is room.
fn below_ephemeral(reserve: u16) -> (u16, u16) {
    let first = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if first >= 32_000 {
        return (12_000, 20_000 - reserve);
    }
    let top = first.saturating_sub(reserve).max(3_000);
    (2_000, top - 2_000)
}
