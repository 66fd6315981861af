//! The verdict on a run: every reason it failed, and the exit status that follows (0 when
//! there is none, 1 otherwise; 2 is for runs that could not start, see `coordinator`).

use crate::config::Plan;
use crate::outcome::Outcome;
use crate::recovery::summary::RecoverySummary;
use crate::rooms::summary::RoomsSummary;
use crate::stats::{Counter, ERROR_KINDS};

/// The reasons a completed run failed; none means it passed.
pub struct Verdict {
    pub failures: Vec<String>,
}

impl Verdict {
    /// Judges a run: connections and logins short of the target, chat skipped, messages
    /// lost, duplicated, misrouted or invented, load not generated, errors of any kind,
    /// failed churn reconnects.
    pub fn of(plan: &Plan, o: &Outcome) -> Self {
        let mut failures = Vec::new();
        let target = plan.connections as u64;
        if o.established < target {
            failures.push(format!("only {} of {target} connections established", o.established));
        }
        if plan.login && o.logged_in < o.established {
            failures.push(format!("only {} of {} connections logged in", o.logged_in, o.established));
        }
        if let Some(reason) = &o.chat_skipped {
            failures.push(reason.clone());
        }
        failures.extend(delivery_failures(plan, o));
        if let Some(rooms) = &plan.rooms {
            failures.extend(RoomsSummary::new(rooms, o).failures());
        }
        if plan.recovery.recover {
            failures.extend(RecoverySummary::new(o).failures());
        }
        let errors_seen: Vec<String> = ERROR_KINDS
            .iter()
            .filter(|(counter, _)| o.count(*counter) > 0)
            .map(|(counter, name)| format!("{name} {}", o.count(*counter)))
            .collect();
        if !errors_seen.is_empty() {
            failures.push(format!("errors: {}", errors_seen.join(", ")));
        }
        let churn_failed = o.count(Counter::ChurnFail);
        if churn_failed > 0 {
            failures.push(format!("{churn_failed} churn reconnects failed"));
        }
        let churn_behind = o.count(Counter::ChurnBehind);
        if churn_behind > 0 {
            failures.push(format!("asked churn not generated: {churn_behind} cycles dropped behind schedule"));
        }
        if let Some(why) = &o.cut_short {
            failures.push(format!("run cut short: {why}"));
        }
        Verdict { failures }
    }

    pub fn exit_code(&self) -> i32 {
        i32::from(!self.failures.is_empty())
    }
}

/// What went wrong with the chat messages themselves.
fn delivery_failures(plan: &Plan, o: &Outcome) -> Vec<String> {
    let mut failures = Vec::new();
    let sent = o.count(Counter::Sent);
    let lost = o.lost(plan);
    if lost > 0 {
        // Socket.IO drops an event it has no handler for without a word.
        let hint = match plan.protocol.sio() {
            Some(names) if lost == sent => {
                format!(" (none came back: is the server's chat event called {:?}? --sio-chat-event)", names.chat_event)
            }
            _ => String::new(),
        };
        failures.push(format!("{lost} of {sent} chat messages lost{hint}"));
    }
    if o.tally.duplicates > 0 {
        failures.push(format!("{} chat messages duplicated", o.tally.duplicates));
    }
    let misrouted = o.count(Counter::Misrouted);
    if misrouted > 0 {
        failures.push(format!("{misrouted} chat messages misrouted"));
    }
    if o.tally.phantom(sent) > 0 {
        failures.push(format!("{} messages received that were never sent", o.tally.phantom(sent)));
    }
    let behind = o.count(Counter::SendBehind);
    if o.chat_ran(plan) && behind > 0 {
        failures.push(format!(
            "asked load not generated: {behind} messages dropped more than 1 s behind schedule or \
             never sent (load generator saturated, or no sender could take them)"
        ));
    }
    failures
}
