//! The end of a run: judge it, then write every output (the JSON summary on stdout and to
//! `--json`, the human summary on stderr, the `--csv` timeline, the `--svg` chart) and
//! return the exit status.

use std::path::Path;

use crate::config::{Args, Plan};
use crate::outcome::Outcome;
use crate::summary::Summary;
use crate::verdict::Verdict;

/// Writes every output and returns the exit status.
pub fn finish(args: &Args, plan: &Plan, outcome: Outcome) -> i32 {
    let verdict = Verdict::of(plan, &outcome);
    let summary = Summary::new(args, plan, &outcome, &verdict);
    let json = serde_json::to_string_pretty(&summary).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    if let Some(path) = &args.json {
        write_or_warn(path, std::fs::write(path, &json));
    }
    if let Some(path) = &args.csv {
        write_or_warn(path, std::fs::write(path, crate::timeline::csv(&outcome.rows)));
    }
    if let Some(path) = &args.svg {
        write_or_warn(path, crate::chart::draw(path, &outcome.rows));
    }
    eprint!("{}", crate::human::render(&summary));
    println!("{json}");
    verdict.exit_code()
}

/// An output that cannot be written is reported; the others are still written.
fn write_or_warn<E: std::fmt::Display>(path: &Path, result: Result<(), E>) {
    if let Err(e) = result {
        eprintln!("loadgen: cannot write {}: {e}", path.display());
    }
}
