//! The coordinator's side of the worker processes: start them (re-executing this binary
//! with `--worker`), send them orders, and gather their reports through one channel.

use std::io::{self, BufReader};
use std::process::{Child, ChildStdin, Command as Process, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{Plan, WorkerSetup};
use crate::ipc::{self, Command, Order, Report};

/// How long workers get to start and to hand in their final reports.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const FINAL_TIMEOUT: Duration = Duration::from_secs(120);
/// How far ahead of its order a phase's common start lies (see `Order::start_ns`).
const ORDER_LEAD_NS: u64 = 50_000_000;

/// A message from worker `.0`; `None` when its stdout closed.
pub type Incoming = (usize, Option<Report>);

pub struct Worker {
    pub pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
}

pub struct Fleet {
    pub workers: Vec<Worker>,
    pub reports: mpsc::Receiver<Incoming>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot start worker process {worker}: {source}")]
    Spawn { worker: usize, source: io::Error },
    #[error("worker process {worker} (pid {pid}) exited unexpectedly{status}")]
    Died { worker: usize, pid: u32, status: String },
    #[error("worker processes did not {what} within {secs} s")]
    Timeout { what: &'static str, secs: u64 },
}

impl Fleet {
    /// Starts `workers` processes, splitting connections `0..plan.connections` into
    /// contiguous ranges, and waits until all are ready.
    ///
    /// # Errors
    /// A worker cannot be started or does not come up.
    pub fn start(plan: &Plan, workers: u32, threads: u32) -> Result<Self, FleetError> {
        let exe = std::env::current_exe().map_err(|source| FleetError::Spawn { worker: 0, source })?;
        let (tx, reports) = mpsc::channel();
        let mut fleet = Vec::new();
        let total = plan.connections as u64;
        for w in 0..workers {
            let first = (total * w as u64 / workers as u64) as u32;
            let end = (total * (w as u64 + 1) / workers as u64) as u32;
            let spawn_error = |source| FleetError::Spawn { worker: w as usize, source };
            let mut child = Process::new(&exe)
                .arg("--worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(spawn_error)?;
            let mut stdin = child.stdin.take();
            let stdout = child.stdout.take();
            let setup = WorkerSetup { worker: w, first, count: end - first, threads, plan: plan.clone() };
            if let Some(stdin) = stdin.as_mut() {
                ipc::send_line(stdin, &setup).map_err(spawn_error)?;
            }
            if let Some(stdout) = stdout {
                let tx = tx.clone();
                let id = w as usize;
                thread::spawn(move || {
                    let mut input = BufReader::new(stdout);
                    loop {
                        match ipc::read_line::<Report>(&mut input) {
                            Ok(Some(report)) => {
                                if tx.send((id, Some(report))).is_err() {
                                    return;
                                }
                            }
                            Ok(None) | Err(_) => {
                                let _ = tx.send((id, None));
                                return;
                            }
                        }
                    }
                });
            }
            fleet.push(Worker { pid: child.id(), child, stdin });
        }
        let mut fleet = Fleet { workers: fleet, reports };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut ready = 0;
        while ready < fleet.workers.len() {
            match fleet.next(deadline)? {
                Some((_, Report::Ready { .. })) => ready += 1,
                Some(_) => {}
                None => return Err(FleetError::Timeout { what: "start", secs: START_TIMEOUT.as_secs() }),
            }
        }
        Ok(fleet)
    }

    /// The next report, or `None` at `deadline`.
    ///
    /// # Errors
    /// A worker's output ended before its final report.
    pub fn next(&mut self, deadline: Instant) -> Result<Option<(usize, Report)>, FleetError> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.reports.recv_timeout(wait) {
            Ok((id, Some(report))) => Ok(Some((id, report))),
            Ok((id, None)) => Err(self.died(id)),
            Err(_) => Ok(None),
        }
    }

    /// Sends an order to every worker.
    pub fn order(&mut self, command: Command) {
        // Long enough for the order to reach every worker first.
        let start_ns = crate::clock::monotonic_ns() + ORDER_LEAD_NS;
        for w in &mut self.workers {
            if let Some(stdin) = w.stdin.as_mut() {
                // A dead worker shows up as a closed report stream.
                let _ = ipc::send_line(stdin, &Order { command, start_ns });
            }
        }
    }

    /// Tells every worker to finish and collects the final reports (with the last
    /// interval stats that come just before them).
    ///
    /// # Errors
    /// A worker dies or takes too long.
    pub fn finish(&mut self) -> Result<Vec<(usize, Report)>, FleetError> {
        self.order(Command::Finish);
        let deadline = Instant::now() + FINAL_TIMEOUT;
        let mut finished = vec![false; self.workers.len()];
        let mut reports = Vec::new();
        while finished.iter().any(|f| !f) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(wait) {
                Ok((id, Some(report))) => {
                    if matches!(report, Report::Final { .. }) {
                        finished[id] = true;
                    }
                    reports.push((id, report));
                }
                // A worker closes its output after its final report; before it, it died.
                Ok((id, None)) if finished[id] => {}
                Ok((id, None)) => return Err(self.died(id)),
                Err(_) => {
                    return Err(FleetError::Timeout { what: "report their totals", secs: FINAL_TIMEOUT.as_secs() })
                }
            }
        }
        for w in &mut self.workers {
            w.stdin = None;
            let _ = w.child.wait();
        }
        Ok(reports)
    }

    fn died(&mut self, id: usize) -> FleetError {
        let w = &mut self.workers[id];
        thread::sleep(Duration::from_millis(50));
        let status = match w.child.try_wait() {
            Ok(Some(status)) => format!(" ({status})"),
            _ => String::new(),
        };
        FleetError::Died { worker: id, pid: w.pid, status }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Closing stdin makes a worker exit; kill any that hangs on.
        for w in &mut self.workers {
            w.stdin = None;
        }
        for w in &mut self.workers {
            if let Ok(None) = w.child.try_wait() {
                thread::sleep(Duration::from_millis(20));
                if let Ok(None) = w.child.try_wait() {
                    let _ = w.child.kill();
                }
                let _ = w.child.wait();
            }
        }
    }
}
