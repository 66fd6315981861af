//! A worker process: holds up to ~19,000 connections (one RLIMIT_NOFILE's worth) on a
//! few driver threads, obeys the coordinator's orders from stdin and reports on stdout.
//! If the coordinator goes away (stdin closes), the worker exits at once.

use std::io::{self, BufReader, Write};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use mio::Waker;

use crate::accounting::Tally;
use crate::cause::Causes;
use crate::config::WorkerSetup;
use crate::driver::{self, lock, Driver, RoomFinal, Shared, WAKER};
use crate::ipc::{self, Command, FinalHistograms, Order, Report, RoomsFinal};
use crate::stats::{self, COUNTER_COUNT};

/// How often a worker checks whether its threads finished a phase.
const PHASE_CHECK_EVERY: Duration = Duration::from_millis(20);

struct Thread {
    shared: Arc<Shared>,
    waker: Waker,
    handle: thread::JoinHandle<driver::Final>,
}

/// Runs the worker: returns when the coordinator says `finish` or goes away.
///
/// # Errors
/// No setup line on stdin, or a driver thread cannot start.
pub fn run() -> io::Result<()> {
    let mut stdin = BufReader::new(io::stdin());
    let setup: WorkerSetup =
        ipc::read_line(&mut stdin)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no setup line"))?;
    crate::procfs::raise_nofile_limit();
    let threads = start_threads(setup)?;
    let orders = read_orders(stdin);
    let mut out = io::stdout().lock();
    ipc::send_line(&mut out, &Report::Ready { pid: std::process::id() })?;
    obey(&threads, &orders, &mut out)?;
    finish(threads, &mut out)
}

/// Starts the driver threads, each with a contiguous share of the worker's connections.
fn start_threads(setup: WorkerSetup) -> io::Result<Vec<Thread>> {
    let plan = Arc::new(setup.plan);
    let threads = setup.threads.clamp(1, setup.count.max(1));
    let mut started = Vec::new();
    for t in 0..threads {
        let from = setup.first + (setup.count as u64 * t as u64 / threads as u64) as u32;
        let to = setup.first + (setup.count as u64 * (t as u64 + 1) / threads as u64) as u32;
        let shared = Arc::new(Shared::default());
        let driver = Driver::new(plan.clone(), shared.clone(), from, to - from)?;
        let waker = Waker::new(driver.registry(), WAKER)?;
        let handle = thread::Builder::new().name(format!("driver-{}-{t}", setup.worker)).spawn(move || driver.run())?;
        started.push(Thread { shared, waker, handle });
    }
    Ok(started)
}

/// Reads the coordinator's orders on a thread of their own; the channel closes when the
/// coordinator is gone.
fn read_orders(mut stdin: BufReader<io::Stdin>) -> mpsc::Receiver<Order> {
    let (orders_tx, orders) = mpsc::channel::<Order>();
    thread::spawn(move || {
        while let Ok(Some(order)) = ipc::read_line::<Order>(&mut stdin) {
            if orders_tx.send(order).is_err() {
                break;
            }
        }
        // Dropping the sender tells the main loop that the coordinator is gone.
    });
    orders
}

/// Passes orders on to every thread and reports their stats, until told to finish.
fn obey(threads: &[Thread], orders: &mpsc::Receiver<Order>, out: &mut impl Write) -> io::Result<()> {
    let mut next_report = crate::clock::next_second_boundary();
    let mut reported_phase = 0;
    loop {
        let wait = next_report.saturating_duration_since(Instant::now()).min(PHASE_CHECK_EVERY);
        match orders.recv_timeout(wait) {
            Ok(Order { command: Command::Finish, .. }) => return Ok(()),
            Ok(Order { command, start_ns }) => {
                for w in threads {
                    w.shared.phase_start_ns.store(start_ns, Ordering::Release);
                    lock(&w.shared.commands).push(command);
                    let _ = w.waker.wake();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => std::process::exit(3),
        }
        // Report at once when a phase ends, so the coordinator moves on without waiting.
        let phase = lowest_done_phase(threads);
        if Instant::now() >= next_report || phase != reported_phase {
            ipc::send_line(out, &stats_report(threads))?;
            reported_phase = phase;
            // Once a second, on the second (see clock::next_second_boundary).
            if Instant::now() >= next_report {
                next_report = crate::clock::next_second_boundary();
            }
        }
    }
}

/// Stops the threads and sends the last interval report, then the worker's totals.
fn finish(threads: Vec<Thread>, out: &mut impl Write) -> io::Result<()> {
    for w in &threads {
        lock(&w.shared.commands).push(Command::Finish);
        let _ = w.waker.wake();
    }
    // One last interval report, then the totals.
    let last = stats_report(&threads);
    let mut counters = vec![0; COUNTER_COUNT];
    let mut causes = Causes::default();
    let new = stats::new_histogram;
    let (mut connect, mut login, mut churn) = (new(), new(), new());
    let (mut latency, mut service, mut lag, mut recovery) = (new(), new(), new(), new());
    let mut tally = Tally::default();
    let mut rooms = RoomFinal { join: new(), member: new(), lag: new(), records: Vec::new() };
    for w in threads {
        let done = w.handle.join().map_err(|_| io::Error::other("driver thread panicked"))?;
        w.shared.counters.add_to(&mut counters);
        causes.add(lock(&w.shared.causes).lines());
        for (into, from) in [
            (&mut connect, &done.connect),
            (&mut login, &done.login),
            (&mut churn, &done.churn),
            (&mut latency, &done.latency),
            (&mut service, &done.service),
            (&mut lag, &done.lag),
            (&mut recovery, &done.recovery),
        ] {
            stats::merge(into, from);
        }
        tally.add(done.tally);
        add_rooms(&mut rooms, done.rooms);
    }
    ipc::send_line(out, &last)?;
    let encode = stats::encode_histogram;
    let histograms = FinalHistograms {
        connect: encode(&connect),
        login: encode(&login),
        churn: encode(&churn),
        latency: encode(&latency),
        service: encode(&service),
        lag: encode(&lag),
        recovery: encode(&recovery),
    };
    let rooms = RoomsFinal {
        join: encode(&rooms.join),
        member: encode(&rooms.member),
        lag: encode(&rooms.lag),
        records: rooms.records,
    };
    let histograms = Box::new(histograms);
    ipc::send_line(out, &Report::Final { counters, causes: causes.lines(), histograms, tally, rooms })
}

/// Adds one thread's room figures to the worker's.
fn add_rooms(into: &mut RoomFinal, from: RoomFinal) {
    stats::merge(&mut into.join, &from.join);
    stats::merge(&mut into.member, &from.member);
    stats::merge(&mut into.lag, &from.lag);
    into.records.extend(from.records);
}

fn lowest_done_phase(threads: &[Thread]) -> u8 {
    threads.iter().map(|w| w.shared.done_phase.load(Ordering::Acquire)).min().unwrap_or(0)
}

fn stats_report(threads: &[Thread]) -> Report {
    // Phase first: a thread stores it after its last counter update of the phase, so
    // counters read afterwards include everything the phase did.
    let done_phase = lowest_done_phase(threads);
    let mut counters = vec![0; COUNTER_COUNT];
    let mut causes = Causes::default();
    let (mut latency, mut lag) = (stats::new_histogram(), stats::new_histogram());
    let mut samples = Vec::new();
    for w in threads {
        w.shared.counters.add_to(&mut counters);
        causes.add(lock(&w.shared.causes).lines());
        for (into, shared) in [(&mut latency, &w.shared.interval_latency), (&mut lag, &w.shared.interval_lag)] {
            let mut h = lock(shared);
            stats::merge(into, &h);
            h.reset();
        }
        samples.append(&mut lock(&w.shared.samples));
    }
    let encoded = |h: &hdrhistogram::Histogram<u64>| (!h.is_empty()).then(|| stats::encode_histogram(h));
    Report::Stats {
        counters,
        done_phase,
        latency: encoded(&latency),
        lag: encoded(&lag),
        causes: causes.lines(),
        samples,
    }
}
