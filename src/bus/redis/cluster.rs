//! Where a key or shard channel lives: hash slots and the map of masters.
//!
//! A plain Redis is a "cluster" of one master that owns every slot, so the
//! bus threads route everything the same way; only the map's source differs.
//! In Redis Cluster the map comes from `CLUSTER SLOTS` and is fetched again
//! whenever a reply says `MOVED`, a shard unsubscribes us (slot migrated), or
//! a master stops answering (failover): [`RefreshSchedule`] says when.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::endpoint::Endpoint;
use super::exchange::{exchange, ExchangeError};
use super::resp::{self, Frame};
use super::settings::LinkConfig;

/// Hash slots in Redis Cluster.
pub const SLOTS: usize = 16_384;

/// How long one blocking `CLUSTER SLOTS` exchange may take: a live node
/// answers in well under a millisecond, even on a loaded machine far under
/// this, so 200 ms means it is not going to.
const FETCH_TIMEOUT: Duration = Duration::from_millis(200);
/// How long one [`fetch`] may block its thread, over all the seeds it asks:
/// the bus thread delivers nothing meanwhile. Live masters are asked first and
/// answer at once, so the budget is spent only when none of them answers.
pub const FETCH_BUDGET: Duration = Duration::from_millis(300);
/// A seed is not asked with less time than this left (it could not answer).
const FETCH_MIN: Duration = Duration::from_millis(10);
/// Shortest pause between two fetches of the slot map, however many shards
/// say MOVED at once.
const REFRESH_PAUSE: Duration = Duration::from_millis(100);
/// Pause between fetches of the slot map while a master is unreachable: a
/// replica is promoted after `cluster-node-timeout` (15 s by default) plus an
/// election of about a second, so twice a second finds it promptly, and costs
/// one `CLUSTER SLOTS` per half second only while a master is down.
const REFRESH_WHILE_DOWN: Duration = Duration::from_millis(500);

/// Why no slot map came back from a seed.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("no Redis Cluster seed to ask")]
    NoSeed,
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    #[error("{seed}: CLUSTER SLOTS reply without a usable slot map")]
    NoSlotMap { seed: Endpoint },
}

/// The slot of a key or shard channel: CRC16 (XMODEM) of its hash tag.
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|&b| b == b'}').filter(|&close| close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS as u16
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// Which master serves each slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// As `CLUSTER SLOTS` names them (or the URL, for a plain Redis): each
    /// link resolves its master's host again on every connect.
    pub masters: Vec<Endpoint>,
    /// Index into `masters` per slot; `u16::MAX` for a slot nobody serves.
    owner: Box<[u16]>,
}

impl Topology {
    /// One server for every slot (plain Redis).
    pub fn single(server: Endpoint) -> Topology {
        Topology { masters: vec![server], owner: vec![0; SLOTS].into_boxed_slice() }
    }

    /// The index of the master that serves `slot`, if any does.
    pub fn master_of(&self, slot: u16) -> Option<usize> {
        let i = *self.owner.get(usize::from(slot))?;
        (usize::from(i) < self.masters.len()).then_some(usize::from(i))
    }

    /// Builds the map from a `CLUSTER SLOTS` reply; `seed` names a master
    /// whose address came back empty ("the node you asked").
    pub fn from_cluster_slots(reply: &Frame<'_>, seed: &Endpoint) -> Option<Topology> {
        let mut masters: Vec<Endpoint> = Vec::new();
        let mut owner = vec![u16::MAX; SLOTS].into_boxed_slice();
        for range in reply.items()? {
            let items = range.items()?;
            let start = usize::try_from(items.first()?.integer()?).ok()?;
            let end = usize::try_from(items.get(1)?.integer()?).ok()?;
            let master = items.get(2)?.items()?;
            let host = std::str::from_utf8(master.first()?.bytes()?).ok()?;
            let port = u16::try_from(master.get(1)?.integer()?).ok()?;
            let addr = if host.is_empty() || host == "?" {
                Endpoint::new(seed.host.clone(), port)
            } else {
                Endpoint::new(host, port)
            };
            let index = match masters.iter().position(|m| *m == addr) {
                Some(i) => i,
                None => {
                    masters.push(addr);
                    masters.len() - 1
                }
            };
            for slot in owner.get_mut(start..=end)? {
                *slot = u16::try_from(index).ok()?;
            }
        }
        (!masters.is_empty()).then_some(Topology { masters, owner })
    }
}

/// Whom to ask for the slot map, best first: masters whose link is up, then
/// the configured seeds, then masters that are down (a dead host may take the
/// whole connect timeout to refuse, and the asking thread waits meanwhile).
pub fn seeds_to_ask(masters: &[Endpoint], up: &[bool], seeds: &[Endpoint]) -> Vec<Endpoint> {
    let is_up = |i: usize| up.get(i).copied().unwrap_or(false);
    let mut ask: Vec<Endpoint> = (0..masters.len()).filter(|&i| is_up(i)).map(|i| masters[i].clone()).collect();
    ask.extend(seeds.iter().filter(|s| !ask.contains(s)).cloned().collect::<Vec<_>>());
    ask.extend((0..masters.len()).filter(|&i| !is_up(i)).map(|i| masters[i].clone()).filter(|m| !seeds.contains(m)));
    ask
}

/// The slot map to start with: in Redis Cluster, fetched now if reachable,
/// else the first seed (its MOVED replies then correct us).
pub fn initial(seeds: &[Endpoint], link: &LinkConfig, cluster: bool) -> Topology {
    if !cluster {
        return Topology::single(seeds[0].clone());
    }
    match fetch(seeds, link) {
        Ok(topology) => topology,
        Err(e) => {
            log::error!("cannot fetch the Redis Cluster slot map yet ({e}); retrying");
            Topology::single(seeds[0].clone())
        }
    }
}

/// Asks each of `seeds` in turn for the slot map, with a short blocking
/// exchange (the bus threads call this only while re-routing), within
/// [`FETCH_BUDGET`] in all; seeds left when it is spent are not asked.
///
/// # Errors
/// The last seed's error when none answers with a usable map in time.
pub fn fetch(seeds: &[Endpoint], link: &LinkConfig) -> Result<Topology, FetchError> {
    let deadline = Instant::now() + FETCH_BUDGET;
    let mut last = FetchError::NoSeed;
    for seed in seeds {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < FETCH_MIN {
            break;
        }
        match fetch_from(seed, link, left.min(FETCH_TIMEOUT)) {
            Ok(topology) => return Ok(topology),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn fetch_from(seed: &Endpoint, link: &LinkConfig, timeout: Duration) -> Result<Topology, FetchError> {
    let mut request = Vec::with_capacity(32);
    resp::push_command(&mut request, &[b"CLUSTER", b"SLOTS"]);
    let map = exchange(seed, link, &request, timeout, |frame| match frame {
        Frame::Error(e) => {
            Err(ExchangeError::Refused { server: seed.clone(), reply: String::from_utf8_lossy(e).into() })
        }
        frame => Ok(Some(Topology::from_cluster_slots(&frame, seed))),
    })?;
    map.ok_or_else(|| FetchError::NoSlotMap { seed: seed.clone() })
}

/// When a bus thread fetches the slot map next: soon after a sign that it
/// changed, at a steady pace while a master is down, never in a tight loop.
pub struct RefreshSchedule {
    at: Option<Instant>,
    last: Instant,
}

impl RefreshSchedule {
    pub fn new() -> RefreshSchedule {
        RefreshSchedule { at: None, last: Instant::now() }
    }

    /// As soon as the pause since the last fetch allows (after MOVED, a slot
    /// that moved away, a link that dropped).
    pub fn soon(&mut self) {
        let earliest = self.last + REFRESH_PAUSE;
        if self.at.is_none_or(|at| at > earliest) {
            self.at = Some(earliest.max(Instant::now()));
        }
    }

    /// While a master is down: its replica takes over after
    /// `cluster-node-timeout`, and only a new map names it.
    pub fn while_down(&mut self) {
        if self.at.is_none() {
            self.at = Some(self.last + REFRESH_WHILE_DOWN);
        }
    }

    /// Whether a fetch is due at `now`; if so, it counts as started.
    pub fn start_if_due(&mut self, now: Instant) -> bool {
        if self.at.is_none_or(|at| now < at) {
            return false;
        }
        self.at = None;
        self.last = Instant::now();
        true
    }

    /// The fetch just started found no map: try again after a pause.
    pub fn failed(&mut self) {
        self.at = Some(Instant::now() + REFRESH_WHILE_DOWN);
    }

    /// When the next fetch is due, if one is scheduled.
    pub fn next(&self) -> Option<Instant> {
        self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"sb:u:{alice}"), slot(b"alice"));
    }

    #[test]
    fn a_fetch_from_silent_seeds_blocks_at_most_its_budget() {
        // Listeners that never accept: the connect succeeds (the kernel's
        // backlog), the reply never comes, as from a hung Redis.
        let silent: Vec<std::net::TcpListener> =
            (0..4).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let seeds: Vec<Endpoint> = silent.iter().map(|l| Endpoint::from(l.local_addr().unwrap())).collect();
        let link = LinkConfig {
            greeting: Vec::new(),
            greeting_replies: 0,
            tls: None,
            idle_ping: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(2),
        };
        let started = Instant::now();
        assert!(fetch(&seeds, &link).is_err());
        let took = started.elapsed();
        assert!(took < FETCH_BUDGET + Duration::from_millis(100), "fetch blocked for {took:?}");
    }

    #[test]
    fn refreshes_keep_their_pace() {
        let mut schedule = RefreshSchedule::new();
        let start = Instant::now();
        assert!(!schedule.start_if_due(start + Duration::from_secs(10)), "nothing scheduled");
        schedule.while_down();
        let paced = schedule.next().unwrap();
        schedule.soon();
        let soon = schedule.next().unwrap();
        assert!(soon < paced && soon <= start + REFRESH_PAUSE + Duration::from_millis(50));
        assert!(!schedule.start_if_due(start));
        let fetched = Instant::now();
        assert!(schedule.start_if_due(soon));
        assert_eq!(schedule.next(), None);
        schedule.soon();
        assert!(schedule.next().unwrap() >= fetched + REFRESH_PAUSE, "a pause between fetches");
        schedule.failed();
        assert!(schedule.next().unwrap() >= Instant::now() + REFRESH_WHILE_DOWN - Duration::from_millis(50));
    }

    #[test]
    fn live_masters_are_asked_first() {
        let addr = |p: u16| Endpoint::new("127.0.0.1", p);
        let ask = seeds_to_ask(&[addr(1), addr(2), addr(3)], &[false, true, true], &[addr(1), addr(9)]);
        assert_eq!(ask, vec![addr(2), addr(3), addr(1), addr(9)]);
    }

    #[test]
    fn a_slot_map_is_read_from_cluster_slots() {
        let reply = b"*2\r\n*3\r\n:0\r\n:8191\r\n*3\r\n$9\r\n127.0.0.1\r\n:7000\r\n$2\r\nid\r\n\
                      *3\r\n:8192\r\n:16383\r\n*2\r\n$0\r\n\r\n:7001\r\n";
        let (frame, _) = resp::parse(reply).unwrap().unwrap();
        let seed = Endpoint::new("127.0.0.1", 7001);
        let map = Topology::from_cluster_slots(&frame, &seed).unwrap();
        assert_eq!(map.masters.len(), 2);
        assert_eq!(map.masters[map.master_of(0).unwrap()].port, 7000);
        assert_eq!(map.masters[map.master_of(16383).unwrap()], seed);
        let single = Topology::single(seed);
        assert_eq!(single.master_of(12345), Some(0));
    }
}
