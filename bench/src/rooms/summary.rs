//! What the rooms phases measured, as the JSON summary's `rooms` section, its lines in
//! the human summary and the reasons it fails a run (from `crate::outcome::RoomOutcome`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::RoomPlan;
use crate::outcome::{Outcome, PhaseCpu};
use crate::stats::{Counter, Percentiles};

/// The `rooms` section of the JSON summary.
#[derive(Serialize)]
pub struct RoomsSummary {
    pub rooms: u32,
    pub room_size: u32,
    pub room_prefix: String,
    pub rate: f64,
    pub messages_asked: u64,
    /// Joins asked (every member of every room), confirmed, and connections that failed
    /// while joining; a join is timed from sending the connection's joins to its own
    /// `joinmsg` back.
    pub joins_expected: u64,
    pub joins_ok: u64,
    pub join_failed_connections: u64,
    pub join_seconds: f64,
    pub join_latency: Percentiles,
    pub join_cpu: PhaseCpu,
    pub skipped_reason: Option<String>,
    pub seconds: f64,
    pub grace_used_s: f64,
    pub sent: u64,
    /// Messages whose sender could not send (not joined, or its output full).
    pub unsent: u64,
    /// Messages that reached every member of their room, and at least one.
    pub complete: u64,
    pub seen: u64,
    /// Every member of the room (the sender included) once per message sent.
    pub expected_deliveries: u64,
    /// Distinct member deliveries; `received` counts repeats too.
    pub delivered: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub misrouted: u64,
    /// Per complete message: from the intended send time until the last member had it,
    /// and until the first.
    pub fanout_latency: Percentiles,
    pub first_member_latency: Percentiles,
    /// Per member delivery, from the intended send time.
    pub member_latency: Percentiles,
    /// How far behind the schedule each room message went.
    pub generator_lag: Percentiles,
    /// CPU over the messages and their grace period, per member delivery
    /// (`*_us_per_op`), and the same per message sent.
    pub cpu_per_delivery: PhaseCpu,
    pub cpu_per_message: PhaseCpu,
    pub server_cpu_s_by_pid: BTreeMap<String, f64>,
    /// Percent of one core over the same span.
    pub loadgen_pct: f64,
    pub server_pct: f64,
    pub machine_pct: f64,
}

impl RoomsSummary {
    pub fn new(r: &RoomPlan, o: &Outcome) -> Self {
        let ro = &o.rooms;
        let sent = o.count(Counter::RoomSent);
        let expected = sent * r.size as u64;
        let (delivered, duplicated, complete, seen) =
            ro.totals.as_ref().map_or((0, 0, 0, 0), |t| (t.delivered, t.duplicates, t.complete, t.seen));
        let span = (ro.send_secs + ro.grace_secs).max(1e-9);
        let pct = |seconds: f64| (seconds / span * 1000.0).round() / 10.0;
        RoomsSummary {
            rooms: r.rooms,
            room_size: r.size,
            room_prefix: r.prefix.clone(),
            rate: r.rate,
            messages_asked: r.messages,
            joins_expected: r.rooms as u64 * r.size as u64,
            joins_ok: o.count(Counter::RoomJoinOk),
            join_failed_connections: o.count(Counter::RoomJoinFail),
            join_seconds: round3(ro.join_secs),
            join_latency: Percentiles::of(&ro.join),
            join_cpu: PhaseCpu::new(&ro.join_cpu, o.count(Counter::RoomJoinOk)),
            skipped_reason: ro.skipped.clone(),
            seconds: round3(ro.send_secs),
            grace_used_s: round3(ro.grace_secs),
            sent,
            unsent: o.count(Counter::RoomUnsent),
            complete,
            seen,
            expected_deliveries: expected,
            delivered,
            received: o.count(Counter::RoomReceived),
            lost: expected.saturating_sub(delivered),
            duplicated,
            misrouted: o.count(Counter::RoomMisrouted),
            fanout_latency: ro.totals.as_ref().map_or_else(Percentiles::default, |t| Percentiles::of(&t.fanout)),
            first_member_latency: ro.totals.as_ref().map_or_else(Percentiles::default, |t| Percentiles::of(&t.first)),
            member_latency: Percentiles::of(&ro.member),
            generator_lag: Percentiles::of(&ro.lag),
            cpu_per_delivery: PhaseCpu::new(&ro.cpu, delivered),
            cpu_per_message: PhaseCpu::new(&ro.cpu, sent),
            server_cpu_s_by_pid: ro.cpu_by_pid.iter().map(|(pid, s)| (pid.to_string(), round3(*s))).collect(),
            loadgen_pct: pct(ro.cpu.loadgen()),
            server_pct: pct(ro.cpu.servers()),
            machine_pct: pct(ro.cpu.machine),
        }
    }

    /// Why the rooms fail the run, if they do.
    pub fn failures(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if self.joins_ok < self.joins_expected {
            failures.push(format!("only {} of {} room joins confirmed", self.joins_ok, self.joins_expected));
        }
        if let Some(why) = &self.skipped_reason {
            failures.push(why.clone());
        }
        if self.lost > 0 {
            failures.push(format!(
                "{} of {} room member deliveries lost ({} of {} room messages reached every member)",
                self.lost, self.expected_deliveries, self.complete, self.sent
            ));
        }
        for (n, what) in [
            (self.duplicated, "room member deliveries duplicated"),
            (self.misrouted, "room messages misrouted (to a non-member, or from the wrong sender)"),
            (self.unsent, "room messages not sent (the sender was not ready)"),
        ] {
            if n > 0 {
                failures.push(format!("{n} {what}"));
            }
        }
        failures
    }

    /// The human summary's room lines.
    pub fn render(&self, out: &mut String) {
        let ms = |us: u64| us as f64 / 1000.0;
        let l = &self.join_latency;
        let _ = writeln!(
            out,
            "rooms:   {} rooms x {} members: {} of {} joins confirmed in {:.2} s; p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            self.rooms, self.room_size, self.joins_ok, self.joins_expected, self.join_seconds,
            ms(l.p50_us), ms(l.p99_us), ms(l.max_us)
        );
        if self.messages_asked == 0 {
            return;
        }
        let _ = writeln!(
            out,
            "room:    {} messages sent of {} asked ({} unsent), {} reached every member; {} of {} member \
             deliveries, {} lost, {} duplicated, {} misrouted",
            self.sent,
            self.messages_asked,
            self.unsent,
            self.complete,
            self.delivered,
            self.expected_deliveries,
            self.lost,
            self.duplicated,
            self.misrouted
        );
        let (f, m, g) = (&self.fanout_latency, &self.member_latency, &self.generator_lag);
        let _ = writeln!(
            out,
            "fan-out: until the last member p50 {:.2} ms p99 {:.2} ms max {:.2} ms; per member p50 {:.2} ms \
             p99 {:.2} ms; first member p50 {:.2} ms (from the intended send time; lag p99 {:.2} ms)",
            ms(f.p50_us),
            ms(f.p99_us),
            ms(f.max_us),
            ms(m.p50_us),
            ms(m.p99_us),
            ms(self.first_member_latency.p50_us),
            ms(g.p99_us)
        );
        let us = |v: Option<f64>| v.map_or("-".to_string(), |u| format!("{u:.2} us"));
        let _ = writeln!(
            out,
            "         servers' CPU per member delivery {}, per message {}; load generator {:.0}%, servers {:.0}%, \
             whole machine {:.0}% meanwhile",
            us(self.cpu_per_delivery.servers_us_per_op),
            us(self.cpu_per_message.servers_us_per_op),
            self.loadgen_pct,
            self.server_pct,
            self.machine_pct
        );
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
