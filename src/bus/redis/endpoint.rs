//! Where a Redis server is: a host as the URL (or `CLUSTER SLOTS`) names it
//! and a port, resolved again on every connect, so a Redis that moves to a
//! new address (a restarted container, a DNS failover) is found there.
//!
//! An IP address needs no lookup. A host name is looked up off the bus
//! thread ([`Lookup`]): `getaddrinfo` blocks, up to seconds against a DNS
//! server that does not answer, and a bus thread must never wait on it.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use parking_lot::Mutex;

/// A Redis server's host and port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// A DNS name, or an IP address in its text form (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint { host: addr.ip().to_string(), port: addr.port() }
    }
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint { host: host.into(), port }
    }

    /// The address when the host is an IP address (no lookup needed).
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }

    /// Every address the host has now, blocking on the lookup (at start and
    /// in the short blocking exchanges of `cluster`, never on a link).
    ///
    /// # Errors
    /// The lookup failed, or found no address.
    pub fn resolve_now(&self) -> io::Result<Vec<SocketAddr>> {
        if let Some(addr) = self.literal() {
            return Ok(vec![addr]);
        }
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", self.host)));
        }
        Ok(addrs)
    }
}

/// A host name being looked up on a thread of its own.
pub struct Lookup {
    result: Arc<Mutex<Option<io::Result<Vec<SocketAddr>>>>>,
}

impl Lookup {
    /// Starts looking `endpoint` up.
    ///
    /// # Errors
    /// No thread could be started for it.
    pub fn start(endpoint: &Endpoint) -> io::Result<Lookup> {
        let result = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&result);
        let endpoint = endpoint.clone();
        std::thread::Builder::new().name("bus-resolve".into()).spawn(move || {
            let found = endpoint.resolve_now();
            *slot.lock() = Some(found);
        })?;
        Ok(Lookup { result })
    }

    /// The addresses found, once the lookup is over.
    pub fn poll(&self) -> Option<io::Result<Vec<SocketAddr>>> {
        self.result.lock().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn addresses_need_no_lookup_and_names_are_looked_up() {
        let v4 = Endpoint::new("127.0.0.1", 6379);
        assert_eq!(v4.literal(), Some("127.0.0.1:6379".parse().unwrap()));
        assert_eq!(v4.to_string(), "127.0.0.1:6379");
        let v6 = Endpoint::new("::1", 7000);
        assert_eq!(v6.literal(), Some("[::1]:7000".parse().unwrap()));
        assert_eq!(v6.to_string(), "[::1]:7000");
        let name = Endpoint::new("localhost", 6379);
        assert_eq!(name.literal(), None);
        let lookup = Lookup::start(&name).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let found = loop {
            if let Some(found) = lookup.poll() {
                break found.unwrap();
            }
            assert!(Instant::now() < deadline, "localhost was not resolved");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert!(found.iter().all(|a| a.ip().is_loopback() && a.port() == 6379), "{found:?}");
        assert!(Endpoint::new("no-such-host.invalid", 1).resolve_now().is_err());
    }
}
