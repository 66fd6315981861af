//! The node binary run the ways the Redis tests watch it: to its exit
//! (status and standard error), or with its log kept for the test to read.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs the node with `args` until it exits, which it must within
/// `timeout`: its exit status and what it wrote to standard error.
pub fn node_exit(args: &[&str], timeout: Duration) -> (ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the switchboard binary");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node did not exit within {timeout:?}: {}", reader.join().unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().expect("the stderr reader"))
}

/// A node whose log (standard error, at `RUST_LOG=warn`) the test reads.
pub struct LoggedNode {
    pub node: super::NodeProc,
}

impl LoggedNode {
    pub fn start(args: &[&str]) -> LoggedNode {
        LoggedNode { node: super::NodeProc::logged(args, &[("RUST_LOG", "warn")]) }
    }

    /// Log lines so far that contain `text`.
    pub fn lines_with(&self, text: &str) -> usize {
        self.node.log().lines().filter(|l| l.contains(text)).count()
    }
}
