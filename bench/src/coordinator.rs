//! The parent process: sizes the fleet, runs the phases in order (connect, login, room
//! joins, hold, chat + grace, room messages + grace, churn), samples the servers and
//! itself once a second, and adds up the workers' exact totals into the summary. The
//! rooms phases are in `rooms`.

mod rooms;

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::accounting::Tally;
use crate::cause::{CauseCount, Causes};
use crate::config::{Args, Plan, FD_HEADROOM};
use crate::fleet::{Fleet, FleetError};
use crate::ipc::{Command, Report};
use crate::outcome::{CpuSpan, Histograms, MemorySnapshot, Outcome};
use crate::procfs;
use crate::progress::Progress;
use crate::report;
use crate::rooms::fanout::Totals;
use crate::signals;
use crate::stats::{self, get, Counter, COUNTER_COUNT};
use crate::timeline::Row;

/// Connect failures with no success at all after which the run stops: the target is wrong.
const HOPELESS_FAILURES: u64 = 100;

/// The timeline row is taken this long after the workers' on-the-second reports.
const TICK_AFTER_REPORTS: Duration = Duration::from_millis(150);

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("no connection could be made to {targets}: {detail}")]
    NoConnection { targets: String, detail: String },
    #[error("{0}")]
    Invalid(String),
    /// A stop signal: the run ends early but still reports.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
}

/// Runs the load and returns the process exit status.
///
/// # Errors
/// Bad configuration, workers that fail, or a target that takes no connection at all.
pub fn run(args: &Args) -> Result<i32, RunError> {
    let plan = Plan::from_args(args)?;
    let nofile = procfs::raise_nofile_limit();
    let per_worker = nofile.saturating_sub(FD_HEADROOM).max(64);
    let needed = (plan.connections as u64).div_ceil(per_worker).max(1) as u32;
    let workers = args.workers.unwrap_or(needed).clamp(1, plan.connections.max(1));
    if (plan.connections as u64).div_ceil(workers as u64) > per_worker {
        return Err(RunError::Invalid(format!(
            "{} connections over {workers} workers exceeds {per_worker} sockets per \
             process (RLIMIT_NOFILE {nofile}); use more --workers",
            plan.connections
        )));
    }
    let cpus = procfs::cpu_count() as u32;
    let threads = args.threads.unwrap_or_else(|| cpus.div_ceil(workers).max(1));
    signals::catch_stop();
    let fleet = Fleet::start(&plan, workers, threads)?;
    let mut run = Run::new(args, plan, fleet, threads);
    run.execute()
}

/// The state of one run in the coordinator.
struct Run<'a> {
    args: &'a Args,
    plan: Plan,
    fleet: Fleet,
    threads: u32,
    started: Instant,
    /// Latest counters per worker.
    counters: Vec<Vec<u64>>,
    done_phase: Vec<u8>,
    /// Latest failure causes per worker (cumulative).
    causes: Vec<Vec<CauseCount>>,
    /// Chat latencies and send lags since the last timeline row.
    interval: Histogram<u64>,
    interval_lag: Histogram<u64>,
    samples: Vec<String>,
    rows: Vec<Row>,
    phase: &'static str,
    last_tick: Instant,
    /// Just after the workers' next once-a-second reports.
    next_tick: Instant,
    last_cpu: (f64, f64, f64),
    /// Server CPU seconds when the run started (they may have run before).
    servers_cpu_at_start: f64,
    last_totals: Vec<u64>,
    progress: Progress,
}

impl<'a> Run<'a> {
    fn new(args: &'a Args, plan: Plan, fleet: Fleet, threads: u32) -> Self {
        let n = fleet.workers.len();
        let now = Instant::now();
        let mut run = Self {
            args,
            plan,
            fleet,
            threads,
            started: now,
            counters: vec![vec![0; COUNTER_COUNT]; n],
            done_phase: vec![0; n],
            causes: vec![Vec::new(); n],
            interval: stats::new_histogram(),
            interval_lag: stats::new_histogram(),
            samples: Vec::new(),
            rows: Vec::new(),
            phase: "start",
            last_tick: now,
            next_tick: crate::clock::next_second_boundary() + TICK_AFTER_REPORTS,
            last_cpu: (0.0, 0.0, 0.0),
            servers_cpu_at_start: 0.0,
            last_totals: vec![0; COUNTER_COUNT],
            progress: Progress::new(args.quiet),
        };
        let cpu = run.cpu();
        run.last_cpu = (cpu.loadgen(), cpu.servers(), cpu.machine);
        run.servers_cpu_at_start = cpu.servers();
        run
    }

    fn execute(&mut self) -> Result<i32, RunError> {
        let mut outcome = Outcome { baseline: self.memory(), ..Outcome::default() };
        let tcp_before = procfs::tcp_counters();
        match self.phases(&mut outcome) {
            Ok(()) => {}
            // Cut short by a signal: still finish the workers and write every output.
            Err(RunError::Interrupted(signal)) => outcome.cut_short = Some(format!("interrupted by {signal}")),
            Err(e) => return Err(e),
        }
        self.phase = "finish";
        self.tick();
        outcome.end = self.memory();
        outcome.kernel_tcp = tcp_before
            .iter()
            .zip(procfs::tcp_counters())
            .map(|((name, before), (_, after))| (*name, after as i64 - *before as i64))
            .collect();
        let servers_cpu = self.cpu().servers() - self.servers_cpu_at_start;
        let finals = self.fleet.finish()?;
        // The workers have exited and been waited for: getrusage now covers them exactly.
        outcome.cpu_total = (procfs::rusage_cpu_seconds(), servers_cpu);
        self.progress.finish();
        let room_size = self.plan.rooms.as_ref().map_or(0, |r| r.size);
        add_finals(&mut outcome, finals, &mut self.samples)?;
        if self.plan.rooms.is_some() {
            let records = std::mem::take(&mut outcome.rooms_records);
            outcome.rooms.totals = Some(Totals::merge(room_size, records));
        }
        outcome.samples = std::mem::take(&mut self.samples);
        outcome.workers = self.fleet.workers.len() as u32;
        outcome.threads = self.threads;
        outcome.wall_secs = self.started.elapsed().as_secs_f64();
        outcome.rows = std::mem::take(&mut self.rows);
        Ok(report::finish(self.args, &self.plan, outcome))
    }

    /// Every phase asked for, in order.
    fn phases(&mut self, outcome: &mut Outcome) -> Result<(), RunError> {
        if self.plan.connections == 0 {
            return Ok(());
        }
        self.connect_and_login(outcome)?;
        if self.plan.rooms.is_some() {
            self.join(outcome)?;
        }
        if self.args.hold > 0.0 {
            self.phase = "hold";
            self.wait_for(Duration::from_secs_f64(self.args.hold))?;
        }
        outcome.full = self.memory();
        outcome.open_at_full = self.total(Counter::Open);
        if self.plan.chats() {
            self.chat(outcome)?;
        }
        if self.plan.rooms.as_ref().is_some_and(|r| r.messages > 0) {
            self.room_messages(outcome)?;
        }
        if self.plan.churn_rate > 0 {
            self.phase = "churn";
            let t = Instant::now();
            self.fleet.order(Command::Churn);
            self.wait_phase(Command::Churn, false)?;
            outcome.churn_secs = t.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// The connect phase, then (unless `--no-login`) the login phase, each with the CPU
    /// it took.
    ///
    /// # Errors
    /// No connection could be made at all, the workers fail, or a stop signal.
    fn connect_and_login(&mut self, outcome: &mut Outcome) -> Result<(), RunError> {
        self.phase = "connect";
        let (t, cpu) = (Instant::now(), self.cpu());
        self.fleet.order(Command::Connect);
        let waited = self.wait_phase(Command::Connect, true);
        outcome.connect_secs = t.elapsed().as_secs_f64();
        outcome.connect_cpu = CpuSpan::between(&cpu, &self.cpu());
        outcome.established = self.total(Counter::ConnectOk);
        waited?;
        if self.total(Counter::ConnectOk) == 0 {
            return Err(self.no_connection());
        }
        if self.plan.login {
            self.phase = "login";
            let (t, cpu) = (Instant::now(), self.cpu());
            self.fleet.order(Command::Login);
            let waited = self.wait_phase(Command::Login, false);
            outcome.login_secs = t.elapsed().as_secs_f64();
            outcome.login_cpu = CpuSpan::between(&cpu, &self.cpu());
            outcome.logged_in = self.total(Counter::LoginOk);
            waited?;
        }
        Ok(())
    }

    /// The chat phase and its grace period, or the reason it is skipped: messages to
    /// users who are not there would count as lost and hide the server's own losses.
    fn chat(&mut self, outcome: &mut Outcome) -> Result<(), RunError> {
        let target = self.plan.connections as u64;
        let everyone_ready = outcome.established == target && outcome.logged_in == outcome.established;
        if !everyone_ready {
            outcome.chat_skipped = Some(format!(
                "chat skipped: only {} of {target} connections established and {} \
                 logged in; messages to missing users would count as lost",
                outcome.established, outcome.logged_in
            ));
            return Ok(());
        }
        self.phase = "chat";
        let before = self.cpu();
        let by_pid = self.servers_cpu_by_pid();
        let t = Instant::now();
        self.fleet.order(Command::Chat);
        let waited = self.wait_phase(Command::Chat, false);
        outcome.chat_secs = t.elapsed().as_secs_f64();
        let spent = CpuSpan::between(&before, &self.cpu());
        outcome.chat_cpu = Some((spent.loadgen(), spent.servers(), spent.machine));
        waited?;
        self.phase = "grace";
        let t = Instant::now();
        let waited = self.wait_delivered(Duration::from_secs_f64(self.args.grace));
        outcome.grace_secs = t.elapsed().as_secs_f64();
        outcome.delivery_cpu = CpuSpan::between(&before, &self.cpu());
        let after = self.servers_cpu_by_pid();
        outcome.delivery_cpu_by_pid = by_pid.iter().zip(after).map(|(&(pid, was), (_, is))| (pid, is - was)).collect();
        waited
    }

    /// User + system CPU seconds so far of each `--server-pid`.
    fn servers_cpu_by_pid(&self) -> Vec<(u32, f64)> {
        let seconds = |pid| procfs::cpu_split(pid).map_or(0.0, |(user, system)| user + system);
        self.args.server_pids.iter().map(|&pid| (pid, seconds(pid))).collect()
    }

    /// Waits until every worker has finished `phase`. In the connect phase, gives up
    /// early when many connections failed and none succeeded.
    fn wait_phase(&mut self, phase: Command, connecting: bool) -> Result<(), RunError> {
        loop {
            if let Some(signal) = signals::stop_requested() {
                return Err(RunError::Interrupted(signal));
            }
            if self.done_phase.iter().all(|&p| p >= phase as u8) {
                return Ok(());
            }
            let failed = self.total(Counter::ConnectFail);
            let hopeless = failed >= HOPELESS_FAILURES.min(self.plan.connections as u64);
            if connecting && hopeless && self.total(Counter::ConnectOk) == 0 {
                return Err(self.no_connection());
            }
            self.pump(Duration::from_millis(200))?;
        }
    }

    fn wait_for(&mut self, span: Duration) -> Result<(), RunError> {
        let end = Instant::now() + span;
        while Instant::now() < end {
            if let Some(signal) = signals::stop_requested() {
                return Err(RunError::Interrupted(signal));
            }
            self.pump(end.saturating_duration_since(Instant::now()).min(Duration::from_millis(200)))?;
        }
        Ok(())
    }

    /// After chat: waits until everything sent has arrived, or the grace period is over.
    fn wait_delivered(&mut self, grace: Duration) -> Result<(), RunError> {
        // The reports that ended the chat phase carry final `Sent` counts.
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if self.total(Counter::Received) >= self.total(Counter::Sent) {
                return Ok(());
            }
            if let Some(signal) = signals::stop_requested() {
                return Err(RunError::Interrupted(signal));
            }
            self.pump(Duration::from_millis(200))?;
        }
        Ok(())
    }

    /// Takes reports for up to `wait`, emitting a timeline row each second.
    fn pump(&mut self, wait: Duration) -> Result<(), RunError> {
        let deadline = Instant::now() + wait;
        loop {
            if Instant::now() >= self.next_tick {
                self.tick();
            }
            let until = deadline.min(self.next_tick);
            match self.fleet.next(until)? {
                Some((id, Report::Stats { counters, done_phase, latency, lag, causes, samples })) => {
                    self.counters[id] = counters;
                    self.done_phase[id] = done_phase;
                    self.causes[id] = causes;
                    for (into, text) in [(&mut self.interval, latency), (&mut self.interval_lag, lag)] {
                        if let Some(h) = text.and_then(|t| stats::decode_histogram(&t).ok()) {
                            stats::merge(into, &h);
                        }
                    }
                    for sample in samples {
                        if self.samples.len() < 50 {
                            self.samples.push(sample);
                        }
                    }
                    return Ok(());
                }
                Some(_) => {}
                None => {
                    if Instant::now() >= deadline {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One timeline row and progress line.
    fn tick(&mut self) {
        let now = Instant::now();
        let secs = now.duration_since(self.last_tick).as_secs_f64().max(1e-3);
        self.last_tick = now;
        self.next_tick = crate::clock::next_second_boundary() + TICK_AFTER_REPORTS;
        let totals = self.totals();
        let per_second = |c: Counter| (get(&totals, c) - get(&self.last_totals, c).min(get(&totals, c))) as f64 / secs;
        let span = self.cpu();
        let cpu = (span.loadgen(), span.servers(), span.machine);
        let memory = self.memory();
        let row = Row {
            t: self.started.elapsed().as_secs_f64(),
            phase: self.phase,
            connections: get(&totals, Counter::Open),
            logged_in: get(&totals, Counter::LoginOk),
            sent_per_s: per_second(Counter::Sent),
            delivered_per_s: per_second(Counter::Received),
            p99_us: (!self.interval.is_empty()).then(|| self.interval.value_at_quantile(0.99)),
            lag_p99_us: (!self.interval_lag.is_empty()).then(|| self.interval_lag.value_at_quantile(0.99)),
            server_rss: memory.server_rss,
            slab: memory.slab,
            sunreclaim: memory.sunreclaim,
            loadgen_rss: memory.loadgen_rss,
            loadgen_cpu_pct: (cpu.0 - self.last_cpu.0) / secs * 100.0,
            server_cpu_pct: (cpu.1 - self.last_cpu.1) / secs * 100.0,
            machine_cpu_pct: (cpu.2 - self.last_cpu.2) / secs * 100.0,
        };
        self.interval.reset();
        self.interval_lag.reset();
        self.last_cpu = cpu;
        self.last_totals = totals.clone();
        let errors: u64 = stats::ERROR_KINDS.iter().map(|(c, _)| get(&totals, *c)).sum();
        self.progress.show(&row, &totals, errors, self.plan.connections);
        self.rows.push(row);
    }

    fn totals(&self) -> Vec<u64> {
        let mut totals = vec![0; COUNTER_COUNT];
        for worker in &self.counters {
            for (sum, v) in totals.iter_mut().zip(worker) {
                *sum += v;
            }
        }
        totals
    }

    fn total(&self, counter: Counter) -> u64 {
        self.counters.iter().map(|c| get(c, counter)).sum()
    }

    /// CPU seconds so far (user and system): the load generator with its workers, the
    /// servers given by --server-pid, and the whole machine.
    fn cpu(&self) -> CpuSpan {
        let sum = |pids: &mut dyn Iterator<Item = u32>| {
            pids.filter_map(procfs::cpu_split).fold((0.0, 0.0), |(u, s), (du, ds)| (u + du, s + ds))
        };
        let own = sum(&mut std::iter::once(std::process::id()).chain(self.fleet.workers.iter().map(|w| w.pid)));
        let servers = sum(&mut self.args.server_pids.iter().copied());
        CpuSpan {
            loadgen_user: own.0,
            loadgen_system: own.1,
            servers_user: servers.0,
            servers_system: servers.1,
            machine: procfs::machine_busy_seconds(),
        }
    }

    fn memory(&self) -> MemorySnapshot {
        let (slab, sunreclaim) = procfs::slab_bytes();
        MemorySnapshot {
            server_rss: self.args.server_pids.iter().filter_map(|&p| procfs::rss_bytes(p)).sum(),
            slab,
            sunreclaim,
            loadgen_rss: self.fleet.workers.iter().filter_map(|w| procfs::rss_bytes(w.pid)).sum(),
        }
    }

    fn no_connection(&mut self) -> RunError {
        // Collect whatever error descriptions are on their way.
        let _ = self.pump(Duration::from_millis(300));
        self.progress.finish();
        let targets = self.plan.targets.iter().map(|t| t.url.as_str()).collect::<Vec<_>>().join(", ");
        let totals = self.totals();
        let kinds: Vec<String> = stats::ERROR_KINDS
            .iter()
            .filter(|(c, _)| get(&totals, *c) > 0)
            .map(|(c, name)| format!("{name} {}", get(&totals, *c)))
            .collect();
        let mut causes = Causes::default();
        for worker in &self.causes {
            causes.add(worker.iter().cloned());
        }
        let why: Vec<String> = crate::cause::Side::ALL
            .iter()
            .flat_map(|&side| causes.of(side).into_iter().map(move |(what, n)| format!("{}: {what} {n}", side.key())))
            .collect();
        let first = self.samples.first().cloned().unwrap_or_else(|| "no error description".into());
        RunError::NoConnection {
            targets,
            detail: format!("{first} [errors: {}] [causes: {}]", kinds.join(", "), why.join(", ")),
        }
    }
}

/// Adds the workers' final reports into `outcome`: counters, causes, whole-run histograms
/// (merged exactly) and receipt tallies; error descriptions that came with them go to
/// `samples`.
fn add_finals(outcome: &mut Outcome, finals: Vec<(usize, Report)>, samples: &mut Vec<String>) -> Result<(), RunError> {
    let mut counters = vec![0; COUNTER_COUNT];
    let mut causes = Causes::default();
    let mut hists = Histograms::default();
    let mut tally = Tally::default();
    for (_, report) in finals {
        match report {
            Report::Final { counters: c, causes: more, histograms: h, tally: t, rooms } => {
                for (sum, v) in counters.iter_mut().zip(c) {
                    *sum += v;
                }
                causes.add(more);
                let pairs = [
                    (&mut hists.connect, h.connect),
                    (&mut hists.login, h.login),
                    (&mut hists.churn, h.churn),
                    (&mut hists.latency, h.latency),
                    (&mut hists.service, h.service),
                    (&mut hists.lag, h.lag),
                    (&mut hists.recovery, h.recovery),
                ];
                for (into, text) in pairs {
                    let h = stats::decode_histogram(&text).map_err(RunError::Invalid)?;
                    stats::merge(into, &h);
                }
                tally.add(t);
                rooms::add_rooms(outcome, rooms)?;
            }
            Report::Stats { samples: more, .. } => samples.extend(more),
            Report::Ready { .. } => {}
        }
    }
    outcome.counters = counters;
    outcome.causes = causes;
    outcome.tally = tally;
    outcome.hists = hists;
    Ok(())
}
