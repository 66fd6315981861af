//! A real redis-server on a free port, for the Socket.IO nodes' adapter and registry.
//! A test that needs it fails (never skips) when redis-server is missing.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// One redis-server (without persistence unless asked), killed when dropped.
pub struct Redis {
    pub port: u16,
    child: Child,
    /// Its working directory (for an append-only file), removed when dropped.
    dir: std::path::PathBuf,
    extra: Vec<String>,
}

impl Redis {
    /// Starts `redis-server --port P --save "" --appendonly no` and waits for PING.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// The same with more settings (`--appendonly yes`...), in a directory of its own.
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("loadgen-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for redis-server");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let child = Redis::spawn(port, &dir, &extra);
        let redis = Redis { port, child, dir, extra };
        redis.wait_for_ping();
        redis
    }

    fn spawn(port: u16, dir: &std::path::Path, extra: &[String]) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (Debian: apt-get install redis-server; scripts/test.sh does)")
            })
    }

    fn wait_for_ping(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.command("PING").starts_with("+PONG") {
            assert!(Instant::now() < deadline, "redis-server on port {} did not answer PING in 10 s", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9, then the same server again on the same port and directory.
    #[allow(dead_code)]
    pub fn crash_and_restart(&mut self, down_for: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down_for);
        self.child = Redis::spawn(self.port, &self.dir, &self.extra);
        self.wait_for_ping();
    }

    /// SIGSTOP for `hung_for`, then SIGCONT: a Redis that hangs and goes on.
    #[allow(dead_code)]
    pub fn freeze(&self, hung_for: Duration) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child, not yet waited for.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        std::thread::sleep(hung_for);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One inline command; its raw reply ("" when unreachable).
    pub fn command(&self, line: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.write_all(format!("{line}\r\n").as_bytes());
        let mut reply = vec![0; 64 * 1024];
        let n = stream.read(&mut reply).unwrap_or(0);
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
