//! The node binary run the ways the Redis tests watch it: to its exit
//! (status and standard error), or with its log kept for the test to read.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedNode {
    pub fn start(args: &[&str]) -> LoggedNode {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the switchboard binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("node: {line}");
                lines.lock().unwrap().push(line);
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout")).read_line(&mut line).expect("the listening line");
        let addr = line
            .trim()
            .strip_prefix("switchboard listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the node: {line:?}"))
            .parse()
            .expect("a socket address");
        LoggedNode { node: super::NodeProc { child, addr }, log }
    }

    /// Log lines so far that contain `text`.
    pub fn lines_with(&self, text: &str) -> usize {
        self.log.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }
}
