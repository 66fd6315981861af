//! The JSON summary: every figure of a run, in the shape bench/README.md documents. It is
//! printed on stdout, written to `--json`, and read back by the human summary.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::cause::Side;
use crate::config::{Args, Plan};
use crate::outcome::{MemorySnapshot, Outcome, PhaseCpu};
use crate::pattern::Pattern;
use crate::protocol::{ProtocolKind, SioNames};
use crate::recovery::summary::RecoverySummary;
use crate::rooms::summary::RoomsSummary;
use crate::sources::PortMode;
use crate::stats::{Counter, Percentiles, ERROR_KINDS};
use crate::timeline::Row;
use crate::verdict::Verdict;

#[derive(Serialize)]
pub struct Summary<'a> {
    pub ok: bool,
    pub exit_code: i32,
    pub failures: &'a [String],
    pub command: Vec<String>,
    pub machine: Machine,
    pub config: ConfigSummary<'a>,
    pub connect: ConnectSummary,
    pub login: LoginSummary,
    pub chat: ChatSummary,
    pub churn: ChurnSummary,
    /// `--rooms`: joins, room messages, per-member accounting and fan-out latency.
    pub rooms: Option<RoomsSummary>,
    /// `--recover`: dropped connections, their recoveries and replays.
    pub recovery: Option<RecoverySummary>,
    /// Set when a stop signal ended the run early; the figures cover what ran.
    pub cut_short: Option<&'a str>,
    pub errors: serde_json::Map<String, serde_json::Value>,
    /// Failed connections by who ended them and why, with the step they were in.
    pub causes: serde_json::Map<String, serde_json::Value>,
    /// How the kernel's TCP counters moved during the phases (before the connections
    /// closed), network-namespace wide.
    pub kernel_tcp: serde_json::Map<String, serde_json::Value>,
    pub error_samples: &'a [String],
    pub memory: MemorySummary<'a>,
    pub cpu: CpuSummary,
    pub timeline: &'a [Row],
}

#[derive(Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub mem_total_bytes: u64,
    pub kernel: String,
}

#[derive(Serialize)]
pub struct ConfigSummary<'a> {
    pub urls: Vec<&'a str>,
    pub protocol: ProtocolKind,
    /// Socket.IO's event and field names; null for the seed's protocol.
    pub socketio: Option<&'a SioNames>,
    /// wss://: any certificate accepted (`--insecure`), and the `--ca` file.
    pub tls_insecure: bool,
    pub tls_ca: Option<&'a std::path::Path>,
    pub connections: u32,
    pub connect_rate: u32,
    pub connect_timeout_s: f64,
    pub login: bool,
    pub login_rate: u32,
    pub name_prefix: &'a str,
    pub hold_s: f64,
    pub rate: u32,
    /// Closed-loop chat: messages each connection keeps under way; null for open loop.
    pub closed_loop: Option<u16>,
    pub duration_s: f64,
    pub payload: usize,
    pub pattern: Pattern,
    pub grace_s: f64,
    pub churn_rate: u32,
    pub churn_duration_s: f64,
    pub max_in_flight: u32,
    pub source_addrs: usize,
    pub per_source: u32,
    /// LO-HI: the source ports the load generator assigns.
    pub source_port_range: String,
    pub source_ports: PortMode,
    /// The fullest source address's share of the port range (0.5: half full).
    pub source_fullest_share: f64,
    pub workers: u32,
    pub threads_per_worker: u32,
}

#[derive(Serialize)]
pub struct ConnectSummary {
    pub target: u64,
    pub established: u64,
    pub failed: u64,
    pub open_at_end: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Source ports skipped because the kernel reported them in use.
    pub ports_skipped: u64,
    /// Connects whose every planned port was in use, so the kernel chose one.
    pub ports_fallback: u64,
    /// TCP connect + WebSocket handshake.
    pub latency: Percentiles,
    /// CPU the connect phase cost, per connection established.
    pub cpu: PhaseCpu,
}

#[derive(Serialize)]
pub struct LoginSummary {
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// Login sent until the self-addressed marker message came back.
    pub latency: Percentiles,
    pub cpu: PhaseCpu,
}

#[derive(Serialize)]
pub struct ChatSummary {
    pub ran: bool,
    pub skipped_reason: Option<String>,
    pub target_rate: u32,
    pub seconds: f64,
    pub grace_used_s: f64,
    pub sent: u64,
    pub received: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub misrouted: u64,
    pub phantom: u64,
    pub send_behind: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    /// End to end from the intended send time (the schedule's) to the recipient's read:
    /// what a user would see, the load generator's own delays included.
    pub latency: Percentiles,
    /// End to end from the actual send: the service time.
    pub service_latency: Percentiles,
    /// How far behind schedule each message was sent (actual - intended).
    pub generator_lag: Percentiles,
    /// CPU from the start of chat to the end of its grace period, per delivered message.
    pub cpu: PhaseCpu,
    /// The same span's CPU seconds (user + system) of each `--server-pid`.
    pub server_cpu_s_by_pid: BTreeMap<String, f64>,
}

#[derive(Serialize)]
pub struct ChurnSummary {
    pub rate: u32,
    pub seconds: f64,
    pub ok: u64,
    pub failed: u64,
    /// Cycles more than a second behind schedule, dropped, or never started.
    pub behind: u64,
    /// A churn cycle from its intended start (close, reconnect, login) until the re-login
    /// was confirmed.
    pub reconnect_latency: Percentiles,
}

#[derive(Serialize)]
pub struct MemorySummary<'a> {
    pub server_pids: &'a [u32],
    /// Before the first connection.
    pub baseline: MemorySnapshot,
    /// After connect, login and hold, with `connections_at_full` open.
    pub full: MemorySnapshot,
    pub end: MemorySnapshot,
    pub connections_at_full: u64,
    pub server_rss_per_connection: Option<f64>,
    /// Kernel slab growth per connection; loopback: both ends of each connection.
    pub slab_per_connection: Option<f64>,
    pub sunreclaim_per_connection: Option<f64>,
    pub loadgen_rss_per_connection: Option<f64>,
}

#[derive(Serialize)]
pub struct CpuSummary {
    pub wall_s: f64,
    pub loadgen_cpu_s: f64,
    pub server_cpu_s: f64,
    /// Percent of one core during the chat phase (200 = two cores busy).
    pub chat_loadgen_pct: Option<f64>,
    pub chat_server_pct: Option<f64>,
    /// Whole machine during chat: what exceeds load generator + servers went elsewhere.
    pub chat_machine_pct: Option<f64>,
}

impl<'a> Summary<'a> {
    /// The summary of a finished run.
    pub fn new(args: &'a Args, plan: &'a Plan, o: &'a Outcome, verdict: &'a Verdict) -> Self {
        let exit_code = verdict.exit_code();
        Summary {
            ok: exit_code == 0,
            exit_code,
            failures: &verdict.failures,
            command: std::env::args().collect(),
            machine: Machine {
                cpus: crate::procfs::cpu_count(),
                mem_total_bytes: crate::procfs::mem_total_bytes(),
                kernel: crate::procfs::kernel_release(),
            },
            config: ConfigSummary::new(args, plan, o),
            connect: ConnectSummary {
                target: plan.connections as u64,
                established: o.established,
                failed: o.count(Counter::ConnectFail),
                open_at_end: o.count(Counter::Open),
                seconds: round3(o.connect_secs),
                per_second: rate(o.established, o.connect_secs),
                ports_skipped: o.count(Counter::PortsSkipped),
                ports_fallback: o.count(Counter::PortsFallback),
                latency: Percentiles::of(&o.hists.connect),
                cpu: PhaseCpu::new(&o.connect_cpu, o.established),
            },
            login: LoginSummary {
                ok: o.count(Counter::LoginOk),
                failed: o.count(Counter::LoginFail),
                seconds: round3(o.login_secs),
                per_second: rate(o.count(Counter::LoginOk), o.login_secs),
                latency: Percentiles::of(&o.hists.login),
                cpu: PhaseCpu::new(&o.login_cpu, o.count(Counter::LoginOk)),
            },
            chat: ChatSummary::new(plan, o),
            rooms: plan.rooms.as_ref().map(|r| RoomsSummary::new(r, o)),
            recovery: plan.recovery.recover.then(|| RecoverySummary::new(o)),
            churn: ChurnSummary {
                rate: plan.churn_rate,
                seconds: round3(o.churn_secs),
                ok: o.count(Counter::ChurnOk),
                failed: o.count(Counter::ChurnFail),
                behind: o.count(Counter::ChurnBehind),
                reconnect_latency: Percentiles::of(&o.hists.churn),
            },
            cut_short: o.cut_short.as_deref(),
            errors: errors(o),
            causes: causes(o),
            kernel_tcp: o.kernel_tcp.iter().map(|(name, n)| (name.to_string(), (*n).into())).collect(),
            error_samples: &o.samples,
            memory: MemorySummary::new(args, o),
            cpu: CpuSummary::new(o),
            timeline: &o.rows,
        }
    }
}

impl<'a> ConfigSummary<'a> {
    fn new(args: &Args, plan: &'a Plan, o: &Outcome) -> Self {
        ConfigSummary {
            urls: plan.targets.iter().map(|t| t.url.as_str()).collect(),
            protocol: plan.protocol.kind(),
            socketio: plan.protocol.sio(),
            tls_insecure: plan.tls.insecure,
            tls_ca: plan.tls.ca.as_deref(),
            connections: plan.connections,
            connect_rate: plan.connect_rate,
            connect_timeout_s: args.connect_timeout,
            login: plan.login,
            login_rate: plan.login_rate,
            name_prefix: &plan.name_prefix,
            hold_s: args.hold,
            rate: plan.rate,
            closed_loop: plan.closed_loop,
            duration_s: args.duration,
            payload: plan.payload,
            pattern: plan.pattern,
            grace_s: args.grace,
            churn_rate: plan.churn_rate,
            churn_duration_s: args.churn_duration,
            max_in_flight: plan.max_in_flight,
            source_addrs: plan.sources.addrs.len(),
            per_source: plan.sources.per_source,
            source_port_range: format!("{}-{}", plan.sources.ports.lo, plan.sources.ports.hi),
            source_ports: plan.sources.mode,
            source_fullest_share: (plan.sources.fullest(plan.connections).1 * 1000.0).round() / 1000.0,
            workers: o.workers,
            threads_per_worker: o.threads,
        }
    }
}

impl ChatSummary {
    fn new(plan: &Plan, o: &Outcome) -> Self {
        let sent = o.count(Counter::Sent);
        ChatSummary {
            ran: o.chat_ran(plan),
            skipped_reason: o.chat_skipped.clone(),
            target_rate: plan.rate,
            seconds: round3(o.chat_secs),
            grace_used_s: round3(o.grace_secs),
            sent,
            received: o.tally.received,
            delivered: o.tally.distinct,
            lost: o.lost(plan),
            duplicated: o.tally.duplicates,
            misrouted: o.count(Counter::Misrouted),
            phantom: o.tally.phantom(sent),
            send_behind: o.count(Counter::SendBehind),
            sent_per_s: rate(sent, o.chat_secs),
            delivered_per_s: rate(o.tally.distinct, o.chat_secs),
            latency: Percentiles::of(&o.hists.latency),
            service_latency: Percentiles::of(&o.hists.service),
            generator_lag: Percentiles::of(&o.hists.lag),
            cpu: PhaseCpu::new(&o.delivery_cpu, o.tally.distinct),
            server_cpu_s_by_pid: o.delivery_cpu_by_pid.iter().map(|(pid, s)| (pid.to_string(), round3(*s))).collect(),
        }
    }
}

impl<'a> MemorySummary<'a> {
    fn new(args: &'a Args, o: &Outcome) -> Self {
        let per_conn = |before: u64, after: u64| {
            (o.open_at_full > 0).then(|| {
                let d = after as f64 - before as f64;
                (d / o.open_at_full as f64 * 10.0).round() / 10.0
            })
        };
        let (baseline, full) = (o.baseline, o.full);
        MemorySummary {
            server_pids: &args.server_pids,
            baseline,
            full,
            end: o.end,
            connections_at_full: o.open_at_full,
            server_rss_per_connection: (!args.server_pids.is_empty())
                .then(|| per_conn(baseline.server_rss, full.server_rss))
                .flatten(),
            slab_per_connection: per_conn(baseline.slab, full.slab),
            sunreclaim_per_connection: per_conn(baseline.sunreclaim, full.sunreclaim),
            loadgen_rss_per_connection: per_conn(baseline.loadgen_rss, full.loadgen_rss),
        }
    }
}

impl CpuSummary {
    fn new(o: &Outcome) -> Self {
        let chat_pct = |seconds: f64| round1(seconds / o.chat_secs.max(1e-9) * 100.0);
        CpuSummary {
            wall_s: round3(o.wall_secs),
            loadgen_cpu_s: round3(o.cpu_total.0),
            server_cpu_s: round3(o.cpu_total.1.max(0.0)),
            chat_loadgen_pct: o.chat_cpu.map(|(l, _, _)| chat_pct(l)),
            chat_server_pct: o.chat_cpu.map(|(_, s, _)| chat_pct(s)),
            chat_machine_pct: o.chat_cpu.map(|(_, _, m)| chat_pct(m)),
        }
    }
}

/// Failed connections by side (`node`, `kernel`, `loadgen`): a total and the count of
/// each cause.
fn causes(o: &Outcome) -> serde_json::Map<String, serde_json::Value> {
    let mut sides = serde_json::Map::new();
    for side in Side::ALL {
        let by_cause: serde_json::Map<String, serde_json::Value> =
            o.causes.of(side).into_iter().map(|(what, n)| (what.to_string(), n.into())).collect();
        let entry = serde_json::json!({ "total": o.causes.total(side), "by_cause": by_cause });
        sides.insert(side.key().into(), entry);
    }
    sides
}

/// Error counts by kind, plus their total.
fn errors(o: &Outcome) -> serde_json::Map<String, serde_json::Value> {
    let mut errors = serde_json::Map::new();
    let mut total = 0;
    for (counter, name) in ERROR_KINDS {
        total += o.count(counter);
        errors.insert(name.into(), o.count(counter).into());
    }
    errors.insert("total".into(), total.into());
    errors
}

fn rate(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        round1(count as f64 / secs)
    } else {
        0.0
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
