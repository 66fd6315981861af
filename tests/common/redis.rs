//! Real redis-server processes on free ports, for the cluster tests.
//! A test that needs Redis fails (never skips) when redis-server is missing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use super::ports::free_port;

/// How long a fresh redis-server may take to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One redis-server, killed (and its directory removed) when dropped.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
    /// TLS only (`--tls-port`, no plain port).
    tls: bool,
}

impl RedisServer {
    /// Starts `redis-server --port P --save "" --appendonly no` on a free port
    /// and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(free_port(false), &[])
    }

    /// Starts a server on `port` with extra arguments.
    pub fn start_with(port: u16, extra: &[&str]) -> RedisServer {
        Self::launch(port, extra.iter().map(|s| s.to_string()).collect(), false)
    }

    /// Starts a server that speaks only TLS on a free port, with the
    /// certificate and key given, not asking clients for certificates.
    pub fn start_tls(cert: &Path, key: &Path) -> RedisServer {
        let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
        let (cert, key) = (path(cert), path(key));
        let extra = ["--tls-cert-file", &cert, "--tls-key-file", &key, "--tls-ca-cert-file", &cert];
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        extra.extend(["--tls-auth-clients".to_string(), "no".to_string()]);
        Self::launch(free_port(false), extra, true)
    }

    fn launch(port: u16, extra: Vec<String>, tls: bool) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("sb-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a directory for redis-server");
        let mut server = RedisServer { port, child: None, dir, extra, tls };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let ports: Vec<&str> = if self.tls { vec!["--port", "0", "--tls-port", &port] } else { vec!["--port", &port] };
        let child = Command::new("redis-server")
            .args(&ports)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): install it (Debian: apt-get install redis-server; \
                     scripts/test.sh does) — the cluster tests need a real Redis and never skip"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING within {START_TIMEOUT:?}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the server answers PING right now.
    pub fn ping(&self) -> bool {
        self.command(&["PING"]).is_some_and(|r| r.starts_with("+PONG"))
    }

    /// Serving: PONG, or a demand for a password; for a TLS server, a TCP connect.
    fn answers(&self) -> bool {
        let answer = |r: String| r.starts_with("+PONG") || r.starts_with("-NOAUTH");
        (self.tls && TcpStream::connect(("127.0.0.1", self.port)).is_ok())
            || self.command(&["PING"]).is_some_and(answer)
    }

    /// Sends one command and returns the raw first reply, or None when unreachable.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        self.command_bytes(&args.iter().map(|a| a.as_bytes()).collect::<Vec<_>>())
    }

    /// [`RedisServer::command`] with arguments of any bytes (plain port only).
    pub fn command_bytes(&self, args: &[&[u8]]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        s.write_all(&req).ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        let n = s.read(&mut buf).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// How many connections (nodes) subscribe to `channel` here (`PUBSUB NUMSUB`).
    #[allow(dead_code)]
    pub fn subscribers(&self, channel: &str) -> u64 {
        self.count_of(&["PUBSUB", "NUMSUB", channel])
    }

    /// The same for a sharded channel of a Redis Cluster (`PUBSUB SHARDNUMSUB`).
    #[allow(dead_code)]
    pub fn shard_subscribers(&self, channel: &str) -> u64 {
        self.count_of(&["PUBSUB", "SHARDNUMSUB", channel])
    }

    /// The count in a `[channel, count]` reply (0 when there is none).
    fn count_of(&self, args: &[&str]) -> u64 {
        self.cli(args).lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// `redis-cli -p PORT ARGS`, its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("run redis-cli (Debian package redis-tools / redis-server)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kill -9`: the server vanishes without a word, as in a crash.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `kill -STOP`: the server hangs with its connections open, answering
    /// nothing, as a Redis stuck on a slow disk or a frozen VM does.
    /// Returns once the kernel reports the process stopped, so nothing sent
    /// after it is answered.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
        let pid = self.child.as_ref().expect("a running redis-server").id();
        let stopped = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the command name's closing parenthesis.
            stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('T'))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !stopped() {
            assert!(Instant::now() < deadline, "redis-server did not stop on SIGSTOP");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// `kill -CONT`: the hung server goes on where it stopped.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        let child = self.child.as_ref().expect("a running redis-server");
        // SAFETY: kill(2) on our own child's pid, which has not been waited for.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "cannot signal redis-server");
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster created with `redis-cli --cluster create`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// `masters` masters without replicas.
    pub fn start(masters: usize) -> RedisCluster {
        Self::start_with(masters, 0, 2000)
    }

    /// `masters` masters with `replicas` replicas each. A master silent for
    /// `node_timeout_ms` (`cluster-node-timeout`) counts as failed, and one of
    /// its replicas is promoted about a second later.
    pub fn start_with(masters: usize, replicas: usize, node_timeout_ms: u64) -> RedisCluster {
        let timeout = node_timeout_ms.to_string();
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                RedisServer::start_with(
                    free_port(true),
                    &[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        &timeout,
                        // A replica takes over however long ago it heard from its master.
                        "--cluster-replica-validity-factor",
                        "0",
                    ],
                )
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.nodes.iter().all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok")) {
            assert!(Instant::now() < deadline, "the Redis Cluster did not reach state ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        // A replica can take over only once it has synced with its master.
        let synced = |n: &RedisServer| {
            let info = n.cli(&["info", "replication"]);
            !info.contains("role:slave") || info.contains("master_link_status:up")
        };
        while !cluster.nodes.iter().all(synced) {
            assert!(Instant::now() < deadline, "the Redis Cluster's replicas did not sync");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    /// A node that answers PING (the cluster's view from there).
    pub fn live_node(&self) -> &RedisServer {
        self.nodes.iter().find(|n| n.ping()).expect("no Redis Cluster node answers")
    }

    /// The server on `port`.
    pub fn node(&self, port: u16) -> &RedisServer {
        self.nodes.iter().find(|n| n.port == port).expect("a node of this cluster")
    }

    /// `kill -9` on the server at `port`.
    pub fn kill9(&mut self, port: u16) {
        self.nodes.iter_mut().find(|n| n.port == port).expect("a node of this cluster").kill9();
    }

    /// Ports of the replicas of the master at `port`.
    pub fn replica_ports_of(&self, port: u16) -> Vec<u16> {
        let nodes = self.live_node().cli(&["cluster", "nodes"]);
        let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split_whitespace().collect()).collect();
        let port_of = |f: &[&str]| f[1].split('@').next().and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
        let Some(id) = lines.iter().find(|f| f.len() > 3 && port_of(f) == Some(port)).map(|f| f[0]) else {
            return Vec::new();
        };
        lines.iter().filter(|f| f.len() > 3 && f[3] == id).filter_map(|f| port_of(f)).collect()
    }

    /// Whether every live node reports `cluster_state:ok`.
    pub fn state_ok(&self) -> bool {
        self.nodes.iter().filter(|n| n.ping()).all(|n| n.cli(&["cluster", "info"]).contains("cluster_state:ok"))
    }

    /// `per_master` user names whose channels `sb:u:{NAME}` live on each master, sorted.
    pub fn names_on_every_master(&self, per_master: usize) -> Vec<String> {
        let masters = self.live_node().cli(&["cluster", "nodes"]).lines().filter(|l| l.contains("master")).count();
        let mut by_master: std::collections::HashMap<u16, Vec<String>> = Default::default();
        for i in 0.. {
            let name = format!("user{i}");
            let names = by_master.entry(self.master_port_of(&format!("sb:u:{{{name}}}"))).or_default();
            if names.len() < per_master {
                names.push(name);
            }
            if by_master.len() == masters && by_master.values().all(|n| n.len() == per_master) {
                break;
            }
        }
        let mut names: Vec<String> = by_master.into_values().flatten().collect();
        names.sort();
        names
    }

    /// A cluster URL for the node's `--redis`.
    pub fn url(&self) -> String {
        format!("redis+cluster://127.0.0.1:{}", self.nodes[0].port)
    }

    /// The port of the master that serves `key`'s slot.
    pub fn master_port_of(&self, key: &str) -> u16 {
        let node = self.live_node();
        let slot: u16 = node.cli(&["cluster", "keyslot", key]).trim().parse().expect("a slot number");
        let nodes = node.cli(&["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let mut ends = range.splitn(2, '-').map(|n| n.parse::<u16>());
                match (ends.next(), ends.next()) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            if serves {
                let addr = fields[1].split('@').next().unwrap_or_default();
                return addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
            }
        }
        panic!("no master for slot {slot} in {nodes}");
    }
}

/// Logs `ws` in as `name` on a clustered node and waits for the cluster's
/// decision with a message to itself, sent at once: the node holds it until
/// the login is decided. Returns false when the login was refused with the
/// seed's `"User already exists"`.
pub fn cluster_login(ws: &mut super::Ws, name: &str) -> bool {
    super::login(ws, name);
    super::chat(ws, name, "login-probe");
    let reply = super::recv_text(ws);
    if reply == super::chat_bytes("login-probe", name, name) {
        return true;
    }
    assert_eq!(reply, "\"User already exists\"\n", "unexpected reply while logging in {name}");
    // The probe, processed after the refusal, gets "log in first".
    assert!(super::recv_text(ws).contains("log in first"));
    false
}

/// The next text message within `timeout`, or None (skips pings).
pub fn try_recv(ws: &mut super::Ws, timeout: Duration) -> Option<String> {
    ws.get_mut().set_read_timeout(Some(timeout)).expect("set a read timeout");
    let got = loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => break Some(t.to_string()),
            Ok(tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_)) => {}
            Ok(other) => panic!("expected text, got {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                break None
            }
            Err(e) => panic!("read failed: {e}"),
        }
    };
    ws.get_mut().set_read_timeout(Some(Duration::from_secs(5))).expect("reset the read timeout");
    got
}

/// A TCP proxy in front of a Redis that holds back every write carrying a
/// SUBSCRIBE for `delay` and passes everything else at once: a subscriber
/// connection slower than the publisher's, deterministically (or, with
/// [`SlowSubscribeProxy::refusing_links`], links whose first attempts fail).
pub struct SlowSubscribeProxy {
    pub port: u16,
}

impl SlowSubscribeProxy {
    pub fn start(redis: &RedisServer, delay: Duration) -> SlowSubscribeProxy {
        SlowSubscribeProxy::holding(redis, delay, |bytes| bytes.windows(9).any(|w| w == b"SUBSCRIBE"), 0)
    }

    /// The same proxy closing connections 2 to `refused + 1` at once and passing the
    /// rest: a node's check at start reaches Redis, its links' first attempts fail (they
    /// are down, then back after their backoff).
    #[allow(dead_code)]
    pub fn refusing_links(redis: &RedisServer, refused: usize) -> SlowSubscribeProxy {
        SlowSubscribeProxy::holding(redis, Duration::ZERO, |_| false, refused)
    }

    /// Holds back a write for `delay` when `hold(bytes)`; closes connections 2 to
    /// `refused + 1` as soon as they come.
    fn holding(redis: &RedisServer, delay: Duration, hold: fn(&[u8]) -> bool, refused: usize) -> SlowSubscribeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("the proxy's address").port();
        let upstream = redis.port;
        std::thread::spawn(move || {
            for (connection, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { return };
                if (1..=refused).contains(&connection) {
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
                let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else { return };
                std::thread::spawn(move || {
                    let (mut server, mut client) = (server, client);
                    let _ = std::io::copy(&mut server, &mut client);
                });
                std::thread::spawn(move || {
                    let mut chunk = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_in.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        if hold(&chunk[..n]) {
                            std::thread::sleep(delay);
                        }
                        if server_out.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SlowSubscribeProxy { port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// A seed-style Redis client: SUBSCRIBE msg on a raw socket, as the seed's Go
/// nodes do, and PUBLISH like them.
pub struct SeedPeer {
    sub: TcpStream,
    buf: Vec<u8>,
    port: u16,
}

impl SeedPeer {
    pub fn subscribe(redis: &RedisServer) -> SeedPeer {
        let mut sub = TcpStream::connect(("127.0.0.1", redis.port)).expect("connect to Redis");
        sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        sub.write_all(b"*2\r\n$9\r\nSUBSCRIBE\r\n$3\r\nmsg\r\n").unwrap();
        let mut peer = SeedPeer { sub, buf: Vec::new(), port: redis.port };
        let ack = peer.next_frame();
        assert!(ack.contains("subscribe"), "unexpected SUBSCRIBE reply {ack:?}");
        peer
    }

    fn next_frame(&mut self) -> String {
        // Pub/sub frames here are arrays of 3; read until one is complete.
        loop {
            if let Some(len) = frame_len(&self.buf) {
                let frame: Vec<u8> = self.buf.drain(..len).collect();
                return String::from_utf8_lossy(&frame).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = self.sub.read(&mut chunk).expect("read from Redis");
            assert!(n > 0, "Redis closed the seed subscriber");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The payload of the next message on `msg`.
    pub fn next_message(&mut self) -> String {
        loop {
            let frame = self.next_frame();
            let parts: Vec<&str> = frame.split("\r\n").collect();
            // *3 $7 message $3 msg $N payload
            if parts.len() >= 7 && parts[2] == "message" {
                return parts[6].to_string();
            }
        }
    }

    /// PUBLISH msg PAYLOAD, as a seed node does; returns the receiver count.
    pub fn publish(&self, payload: &str) -> i64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to Redis");
        let req = format!("*3\r\n$7\r\nPUBLISH\r\n$3\r\nmsg\r\n${}\r\n{payload}\r\n", payload.len());
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]);
        reply.trim().trim_start_matches(':').parse().expect("an integer reply")
    }
}

/// Length of one complete array of bulk strings / integers at the start of `buf`.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let line_end = |from: usize| buf.get(from..)?.windows(2).position(|w| w == b"\r\n").map(|p| from + p);
    let end = line_end(0)?;
    let count: usize = std::str::from_utf8(buf.get(1..end)?).ok()?.parse().ok()?;
    let mut at = end + 2;
    for _ in 0..count {
        let end = line_end(at)?;
        let kind = buf[at];
        let head = std::str::from_utf8(&buf[at + 1..end]).ok()?;
        at = end + 2;
        if kind == b'$' {
            let len: usize = head.parse().ok()?;
            if buf.len() < at + len + 2 {
                return None;
            }
            at += len + 2;
        }
    }
    Some(at)
}

/// Logs user i in on node i % nodes, waiting for each login to be granted.
pub fn login_round_robin(nodes: &[super::NodeProc], names: &[String]) -> Vec<super::Ws> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut ws = super::connect(&nodes[i % nodes.len()].url("/ws"));
            assert!(cluster_login(&mut ws, name), "{name} was refused");
            ws
        })
        .collect()
}
