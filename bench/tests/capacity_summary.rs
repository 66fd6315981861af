//! `scripts/capacity_summary.py`, the summary every capacity run writes: from a run's
//! per-second CSV it gives the CPU of each phase and, for a run that fell short, the
//! resource that ran out first (the CPU, when a working phase kept the machine at 90% of
//! its cores or more), in the JSON and in a human line.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the summary over a made-up run: `rows` are (phase, machine %, load generator %,
/// nodes %) samples on a 2-core machine; `ok` is the load generator's verdict.
fn summarise(name: &str, ok: bool, rows: &[(&str, f64, f64, f64)]) -> (serde_json::Value, String) {
    let dir = std::env::temp_dir().join(format!("capsum-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("time_s,phase,connections,logged_in,sent_per_s,delivered_per_s,p99_latency_us,p99_lag_us,server_rss_bytes,slab_bytes,sunreclaim_bytes,loadgen_rss_bytes,loadgen_cpu_pct,server_cpu_pct,machine_cpu_pct\n");
    for (i, (phase, machine, loadgen, nodes)) in rows.iter().enumerate() {
        csv.push_str(&format!("{i},{phase},0,0,0,0,,,0,0,0,0,{loadgen},{nodes},{machine}\n"));
    }
    std::fs::write(dir.join("run.csv"), csv).unwrap();
    let failures = if ok { "[]" } else { r#"["asked load not generated"]"# };
    let lg = format!(r#"{{"ok": {ok}, "failures": {failures}, "machine": {{"cpus": 2}}}}"#);
    std::fs::write(dir.join("loadgen.json"), lg).unwrap();
    let path = |file: &str| dir.join(file).to_str().unwrap().to_owned();
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("scripts/capacity_summary.py"));
    for (key, value) in [
        ("TARGET", "1000"),
        ("NODES", "1"),
        ("ALIVE", "1"),
        ("HOLD", "1"),
        ("STANDALONE", "1"),
        ("SHARED_PORT", "0"),
        ("PATTERN", "same-node"),
        ("CHAT_RATE", "100"),
        ("CHAT_DURATION", "1"),
        ("CHURN_RATE", "0"),
        ("CHURN_DURATION", "1"),
        ("CONNECT_RATE", "0"),
        ("LOGIN_RATE", "0"),
        ("IN_FLIGHT", "2000"),
        ("REASON", ""),
        ("COMMAND", "test"),
        ("BASE_SLAB", "0"),
        ("PEAK_SLAB", "0"),
        ("BASE_RSS", "0"),
        ("PEAK_RSS", "0"),
        ("BASE_FDS", "0"),
        ("PEAK_FDS", "1000"),
        ("FDS", ""),
        ("LOADGEN_RC", if ok { "0" } else { "1" }),
        ("WALL", "10"),
    ] {
        cmd.env(format!("CAP_{key}"), value);
    }
    for (key, file) in [
        ("LOADGEN_JSON", "loadgen.json"),
        ("LOADGEN_LOG", "loadgen.log"),
        ("PREFLIGHT", "preflight.json"),
        ("NSTAT_BEFORE", "before.txt"),
        ("NSTAT_AFTER", "after.txt"),
        ("SUMMARY", "run.json"),
        ("SVG", "run.svg"),
    ] {
        cmd.env(format!("CAP_{key}"), path(file));
    }
    let out = cmd.output().expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let summary = serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (summary, text)
}

#[test]
fn a_run_that_fell_short_with_the_cores_full_names_the_cpu_and_the_phase() {
    let rows = [
        ("connect", 196.0, 74.0, 72.0),
        ("connect", 198.0, 76.0, 74.0),
        ("hold", 80.0, 10.0, 10.0),
        ("chat", 198.0, 40.0, 90.0),
    ];
    let (summary, text) = summarise("cpu", false, &rows);
    let limit = &summary["limit"];
    assert_eq!(limit["resource"], "cpu", "{summary}");
    assert_eq!(limit["phase"], "connect", "the first phase that ran out: {summary}");
    assert_eq!(limit["of_pct"], 200);
    assert_eq!(limit["machine_pct"], 197.0);
    assert_eq!((limit["loadgen_pct"].as_f64(), limit["nodes_pct"].as_f64()), (Some(75.0), Some(73.0)));
    assert_eq!(limit["rest_pct"], 49.0);
    assert_eq!(summary["cpu_by_phase"]["hold"]["machine_pct"], 80.0);
    assert_eq!(summary["cpu_by_phase"]["chat"]["nodes_pct"], 90.0);
    assert!(text.contains("limit:    CPU first: the machine at 197% of 200% during connect (load generator 75%, nodes 73%, the rest 49%"), "{text}");
}

#[test]
fn no_limit_is_named_when_the_cores_had_room_or_the_run_succeeded() {
    let idle = [("connect", 120.0, 50.0, 50.0), ("chat", 150.0, 40.0, 90.0)];
    let (summary, text) = summarise("room", false, &idle);
    assert!(summary["limit"].is_null(), "{summary}");
    assert!(!text.contains("limit:"), "{text}");
    let full = [("connect", 199.0, 75.0, 74.0)];
    let (summary, _) = summarise("ok", true, &full);
    assert!(summary["limit"].is_null(), "a run that met its targets has no limit to name: {summary}");
}
