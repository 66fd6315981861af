//! Source addresses and ports: which (address, port) pair each connection binds.
//!
//! A client socket that leaves its port to the kernel makes `connect()` search the
//! ephemeral range for a free port (`__inet_hash_connect` -> `__inet_check_established`
//! per candidate); with most of an address's ports taken, that search took 72.6% of all
//! CPU during a million-connection ramp. So the load generator chooses every pair itself:
//! connection `i` binds address `addrs[(i / per_source) % addrs.len()]` and owns `stride`
//! ports of that address's range, starting at its home port `lo + (i % per_source) *
//! stride`; the ports after the home port are its spares, tried in turn when the kernel
//! reports one in use (EADDRINUSE from `bind`, EADDRNOTAVAIL from `connect`), and a churn
//! reconnect starts one spare further on. The plan is deterministic, so no two threads or
//! processes ever pick the same pair and nothing is coordinated at run time.
//!
//! A port that an earlier run left in TIME_WAIT (the load generator closes first, so the
//! TIME_WAIT is on its side) is bound again with SO_REUSEADDR and taken over by `connect()`
//! (`net.ipv4.tcp_tw_reuse`, on for loopback by default): back-to-back runs find their
//! ports free.
//!
//! `per_source` defaults to half the port range, so no address is more than half full and
//! every connection has at least one spare. Each run turns the plan by a random offset
//! within the range, so two runs at once from the same addresses mostly take each other's
//! spares rather than each other's ports; a connection whose every port is taken falls
//! back to the kernel's own choice (counted), so a busy machine slows a ramp down a little
//! instead of failing it.

use std::net::{IpAddr, Ipv4Addr};

use clap::ValueEnum;

/// How a socket gets its source port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortMode {
    /// `bind(address, port)` with the port chosen by the plan: no search in the kernel;
    /// each pair serves one connection whatever its destination.
    Explicit,
    /// `IP_BIND_ADDRESS_NO_PORT` plus an `IP_LOCAL_PORT_RANGE` of the one planned port
    /// (Linux 6.3+): `connect()` takes exactly that port, unique per destination.
    Range,
    /// `IP_BIND_ADDRESS_NO_PORT` and port 0: the kernel searches its ephemeral range at
    /// every `connect()` (for comparison: what the load generator did before).
    Kernel,
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
}

impl PortRange {
    /// Ports in the range.
    pub fn len(self) -> u32 {
        u32::from(self.hi) - u32::from(self.lo) + 1
    }

    /// Parses `LO-HI` (or `LO HI`, as /proc/sys/net/ipv4/ip_local_port_range reads).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(|c: char| c == '-' || c.is_whitespace()).filter(|p| !p.is_empty());
        let lo: u16 = parts.next()?.parse().ok()?;
        let hi: u16 = parts.next()?.parse().ok()?;
        (parts.next().is_none() && lo >= 1 && lo <= hi).then_some(PortRange { lo, hi })
    }

    /// The kernel's ephemeral range; Linux's default when it cannot be read.
    pub fn of_kernel() -> Self {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| Self::parse(&t))
            .unwrap_or(PortRange { lo: 32768, hi: 60999 })
    }
}

/// The source side of every connection of the run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Sources {
    /// Empty: no bind at all, the kernel chooses address and port.
    pub addrs: Vec<IpAddr>,
    pub per_source: u32,
    pub ports: PortRange,
    pub mode: PortMode,
    /// This run's turn of the plan within the range (from the run's seed).
    pub offset: u32,
}

/// Where one connection binds: an address and the ports it owns there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    pub addr: IpAddr,
    /// The home port's position in `ports`; unused in kernel mode.
    pub position: u32,
    /// Ports owned, from the home port on (wrapping within `ports`).
    pub stride: u16,
    pub ports: PortRange,
}

impl Bind {
    /// The home port.
    #[cfg(test)]
    pub fn home(self) -> u16 {
        self.port_at(0)
    }

    /// The ports to try, in order, for the connection's `attempt`-th connect (each
    /// reconnect starts one port further on, so a port still held elsewhere is skipped).
    pub fn candidates(self, attempt: u16) -> impl Iterator<Item = u16> {
        let stride = self.stride.max(1);
        (0..stride).map(move |k| self.port_at(attempt.wrapping_add(k) % stride))
    }

    fn port_at(self, k: u16) -> u16 {
        (u32::from(self.ports.lo) + (self.position + u32::from(k)) % self.ports.len()) as u16
    }
}

impl Sources {
    /// 127.0.0.2 upward, enough addresses for `connections` at `per_source` each (any
    /// 127/8 address is local on Linux loopback).
    pub fn loopback(connections: u32, per_source: u32, ports: PortRange, mode: PortMode) -> Self {
        let needed = connections.div_ceil(per_source.max(1)).max(1);
        let first = u32::from(Ipv4Addr::new(127, 0, 0, 2));
        let addrs = (0..needed).map(|i| IpAddr::V4(Ipv4Addr::from(first + i))).collect();
        Sources { addrs, per_source, ports, mode, offset: 0 }
    }

    /// The same plan turned by `seed` within the port range.
    pub fn turned(self, seed: u64) -> Self {
        let offset = (seed % u64::from(self.ports.len())) as u32;
        Sources { offset, ..self }
    }

    /// The per-source count that keeps every address at most half full.
    pub fn half_of(ports: PortRange) -> u32 {
        (ports.len() / 2).max(1)
    }

    /// Ports each connection owns on its address (at least one).
    pub fn stride(&self) -> u16 {
        (self.ports.len() / self.per_source.max(1)).clamp(1, u32::from(u16::MAX)) as u16
    }

    /// Where connection `index` binds; `None` without source addresses.
    pub fn bind_of(&self, index: u32) -> Option<Bind> {
        if self.addrs.is_empty() {
            return None;
        }
        let addr = self.addrs[(index / self.per_source) as usize % self.addrs.len()];
        let stride = self.stride();
        let position = ((index % self.per_source) * u32::from(stride) + self.offset) % self.ports.len();
        Some(Bind { addr, position, stride, ports: self.ports })
    }

    /// Why this plan cannot work, if it cannot: more connections per address than it has
    /// ports, or fewer addresses than the connections need when each pair is used once.
    pub fn check(&self, connections: u32) -> Result<(), String> {
        if self.addrs.is_empty() {
            return Ok(());
        }
        if self.per_source > self.ports.len() {
            return Err(format!(
                "--per-source {} is more than the {} ports of --source-port-range {}-{}",
                self.per_source,
                self.ports.len(),
                self.ports.lo,
                self.ports.hi
            ));
        }
        let needed = connections.div_ceil(self.per_source.max(1)) as usize;
        if self.mode != PortMode::Kernel && self.addrs.len() < needed {
            return Err(format!(
                "{connections} connections at --per-source {} need {needed} source addresses, \
                 --source-addrs gives {}: give more, or raise --per-source",
                self.per_source,
                self.addrs.len()
            ));
        }
        Ok(())
    }

    /// The most connections any address holds, and its share of the port range.
    pub fn fullest(&self, connections: u32) -> (u32, f64) {
        let most = connections.min(self.per_source);
        (most, f64::from(most) / f64::from(self.ports.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_RANGE: PortRange = PortRange { lo: 32768, hi: 60999 };

    #[test]
    fn port_ranges_parse_both_spellings() {
        assert_eq!(PortRange::parse("32768\t60999\n"), Some(DEFAULT_RANGE));
        assert_eq!(PortRange::parse("10000-65535"), Some(PortRange { lo: 10000, hi: 65535 }));
        assert_eq!(PortRange::parse("5-4"), None);
        assert_eq!(PortRange::parse("0-4"), None);
        assert_eq!(PortRange::parse("1-2-3"), None);
        assert_eq!(DEFAULT_RANGE.len(), 28_232);
    }

    #[test]
    fn a_million_spread_so_no_address_is_more_than_half_full() {
        let per = Sources::half_of(DEFAULT_RANGE);
        let s = Sources::loopback(1_000_000, per, DEFAULT_RANGE, PortMode::Explicit);
        assert_eq!(per, 14_116);
        assert_eq!(s.addrs.len(), 71);
        assert_eq!(s.addrs[70], "127.0.0.72".parse::<IpAddr>().unwrap());
        let (most, share) = s.fullest(1_000_000);
        assert!(most == per && share <= 0.5, "{most} {share}");
        assert!(s.check(1_000_000).is_ok());
        // Every connection has a spare port.
        assert_eq!(s.stride(), 2);
    }

    #[test]
    fn every_pair_is_used_once() {
        let ports = PortRange { lo: 40000, hi: 40099 };
        let s = Sources::loopback(130, 50, ports, PortMode::Explicit);
        let mut seen = std::collections::HashSet::new();
        for i in 0..130 {
            let b = s.bind_of(i).unwrap();
            for port in b.candidates(0) {
                assert!((ports.lo..=ports.hi).contains(&port));
                assert!(seen.insert((b.addr, port)), "({}, {port}) twice", b.addr);
            }
        }
        assert_eq!(s.addrs.len(), 3);
        assert_eq!(s.bind_of(49).unwrap().addr, s.addrs[0]);
        assert_eq!((s.bind_of(50).unwrap().addr, s.bind_of(50).unwrap().home()), (s.addrs[1], 40000));
        // Turned by a run's seed, every pair is still used once, wrapping in the range.
        let turned = s.clone().turned(1_000_000_001);
        assert_eq!(turned.offset, 1);
        let pairs: std::collections::HashSet<_> = (0..50)
            .flat_map(|i| turned.bind_of(i).unwrap().candidates(0).map(move |p| (i, p)))
            .map(|(_, p)| p)
            .collect();
        assert_eq!(pairs.len(), 100);
        assert_eq!(turned.bind_of(49).unwrap().candidates(0).collect::<Vec<_>>(), [40099, 40000]);
    }

    #[test]
    fn reconnects_start_one_spare_further() {
        let ports = PortRange { lo: 98, hi: 199 };
        let b = Bind { addr: "127.0.0.2".parse().unwrap(), position: 2, stride: 3, ports };
        assert_eq!(b.candidates(0).collect::<Vec<_>>(), [100, 101, 102]);
        assert_eq!(b.candidates(1).collect::<Vec<_>>(), [101, 102, 100]);
        assert_eq!(b.candidates(5).collect::<Vec<_>>(), [102, 100, 101]);
    }

    #[test]
    fn plans_that_cannot_work_are_refused() {
        let ports = PortRange { lo: 40000, hi: 40099 };
        let over = Sources { per_source: 101, ..Sources::loopback(10, 101, ports, PortMode::Explicit) };
        assert!(over.check(10).unwrap_err().contains("--per-source 101"));
        let few = Sources {
            addrs: vec!["127.0.0.2".parse().unwrap()],
            per_source: 50,
            ports,
            mode: PortMode::Range,
            offset: 0,
        };
        assert!(few.check(120).unwrap_err().contains("need 3 source addresses"));
        // The kernel's own search may reuse ports per destination: several blocks may share.
        assert!(Sources { mode: PortMode::Kernel, ..few }.check(120).is_ok());
    }
}
