//! The reference Socket.IO server (bench/socketio/server.js: socket.io 4 with the Redis
//! adapter) as a child process. A test that needs it fails (never skips) when node or
//! its packages are missing: `npm ci --prefix bench/socketio` installs them
//! (scripts/test.sh does).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One Socket.IO node, killed when dropped.
pub struct SioNode {
    pub port: u16,
    child: Child,
}

impl SioNode {
    /// Starts `node bench/socketio/server.js --port 0 --redis URL EXTRA...` and reads its
    /// port from `socketio listening on PORT`.
    pub fn start(redis_url: &str, extra: &[&str]) -> SioNode {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("socketio");
        assert!(
            dir.join("node_modules/socket.io").is_dir(),
            "the Socket.IO server's packages are missing: run `npm ci --prefix bench/socketio` (scripts/test.sh does)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("server.js"))
            .args(["--port", "0", "--redis", redis_url])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start node ({e}): install Node.js 18+ (Debian: apt-get install nodejs npm)")
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("socketio listening on ").and_then(|p| p.trim().parse().ok()) {
                    let _ = tx.send(port);
                }
            }
        });
        let port =
            rx.recv_timeout(Duration::from_secs(20)).expect("server.js did not print `socketio listening on PORT`");
        SioNode { port, child }
    }

    /// The URL loadgen takes with `--protocol socketio` (the default Engine.IO path).
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SioNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
