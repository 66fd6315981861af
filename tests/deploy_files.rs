//! The deployment files: the systemd unit (verified by `systemd-analyze`
//! where it exists, its keys parsed in any case, its command line checked by
//! the node itself) and the Grafana dashboard (every metric it queries is in
//! a live node's `/metrics`).
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::NodeProc;

const UNIT: &str = include_str!("../deploy/switchboard.service");
const SAMPLE_CONFIG: &str = "deploy/switchboard.toml";
const DASHBOARD: &str = include_str!("../deploy/grafana-dashboard.json");
/// How long a node waits for close handshakes after its last 1001 (reactor CLOSE_GRACE).
const CLOSE_GRACE_SECS: u64 = 5;

/// `Key=value` pairs of one `[section]` of a unit file.
fn section(unit: &str, name: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut pairs = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not Key=value: {line}"));
            pairs.push((key.to_string(), value.to_string()));
        }
    }
    pairs
}

fn value<'a>(pairs: &'a [(String, String)], key: &str) -> &'a str {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key}="))
}

fn seconds(v: &str) -> u64 {
    v.trim_end_matches('s').parse().unwrap_or_else(|_| panic!("not seconds: {v}"))
}

/// The unit with its ExecStart pointing at this build and the sample config.
fn runnable_unit() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    UNIT.replace("/usr/local/bin/switchboard", env!("CARGO_BIN_EXE_switchboard"))
        .replace("/etc/switchboard/switchboard.toml", &format!("{root}/{SAMPLE_CONFIG}"))
}

#[test]
fn the_systemd_unit_restarts_on_failure_and_leaves_time_to_drain() {
    let service = section(UNIT, "Service");
    assert_eq!(value(&service, "Restart"), "on-failure");
    assert_eq!(value(&service, "KillSignal"), "SIGTERM");
    assert!(value(&service, "LimitNOFILE").parse::<u64>().unwrap() >= 1_000_000);
    assert!(!section(UNIT, "Install").is_empty());

    // Its command line is one the node accepts, and its drain fits the stop timeout.
    let unit = runnable_unit();
    let exec = value(&section(&unit, "Service"), "ExecStart").to_string();
    let mut words = exec.split_whitespace();
    let out = Command::new(words.next().unwrap()).arg("check-config").args(words).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    let drain = printed.lines().find_map(|l| l.strip_prefix("drain-secs = ")).unwrap();
    let drain: u64 = drain.split_whitespace().next().unwrap().parse().unwrap();
    let stop = seconds(value(&service, "TimeoutStopSec"));
    assert!(stop >= drain + CLOSE_GRACE_SECS + 5, "TimeoutStopSec={stop}s for a {drain} s drain");

    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let dir = std::env::temp_dir().join(format!("switchboard-unit-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("switchboard.service");
            std::fs::write(&path, unit).unwrap();
            let verify = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
            let said = String::from_utf8_lossy(&verify.stderr);
            assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
        }
        Err(e) => eprintln!("systemd-analyze not available ({e}): the unit's keys were checked by parsing"),
    }
}

/// Every `switchboard_*` name in a PromQL expression.
fn metric_names(expr: &str) -> impl Iterator<Item = String> + '_ {
    expr.match_indices("switchboard_")
        .map(move |(at, _)| expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
}

#[test]
fn every_metric_the_dashboard_queries_is_served_by_a_node() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let queried: BTreeSet<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .flat_map(|t| metric_names(t["expr"].as_str().unwrap()).collect::<Vec<_>>())
        .collect();
    assert!(queried.len() >= 20, "the dashboard covers the node's metrics: {queried:?}");

    let node = NodeProc::start(&[]);
    let served = node.admin_get("/metrics");
    let types: BTreeSet<&str> = served.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
    let missing: Vec<_> = queried.iter().filter(|m| !types.contains(m.as_str())).collect();
    assert!(missing.is_empty(), "queried but not served: {missing:?}");
    // The other way round too: a metric nobody can see on the dashboard is one an operator misses.
    let unshown: Vec<_> = types.iter().filter(|m| !queried.contains(**m)).collect();
    assert!(unshown.is_empty(), "served but not on the dashboard: {unshown:?}");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE_CONFIG).exists());
}
