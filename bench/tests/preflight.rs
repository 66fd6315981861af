//! `scripts/preflight.sh`, the checks a capacity run makes before it starts: against a
//! fake /proc (PREFLIGHT_PROC) and open-file limit (PREFLIGHT_NOFILE), each setting too
//! small for the target is refused with its name and the change to make, and
//! `scripts/capacity.sh` stops within seconds, its JSON summary saying why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A /proc with settings that hold a million connections, in a fresh directory.
struct FakeProc {
    root: PathBuf,
}

impl FakeProc {
    fn tuned(name: &str) -> Self {
        let root = std::env::temp_dir().join(format!("preflight-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let fake = FakeProc { root };
        for (key, value) in [
            ("fs.file-max", "4194304"),
            ("fs.file-nr", "2000\t0\t4194304"),
            ("fs.nr_open", "2097152"),
            ("net.ipv4.ip_local_port_range", "10000\t65535"),
            ("net.core.somaxconn", "65535"),
            ("net.ipv4.tcp_max_syn_backlog", "65535"),
            ("net.core.netdev_max_backlog", "262144"),
            ("net.ipv4.tcp_mem", "1048576\t1572864\t2097152"),
        ] {
            fake.set(key, value);
        }
        fake.meminfo(20 * 1024 * 1024);
        fake
    }

    fn set(&self, key: &str, value: &str) {
        let path = self.root.join("sys").join(key.replace('.', "/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("{value}\n")).unwrap();
    }

    fn meminfo(&self, available_kb: u64) {
        std::fs::create_dir_all(&self.root).unwrap();
        let text = format!("MemTotal:       25000000 kB\nMemAvailable:   {available_kb} kB\n");
        std::fs::write(self.root.join("meminfo"), text).unwrap();
    }

    fn run(&self, script: &str, nofile: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo().join("scripts").join(script))
            .args(args)
            .env("PREFLIGHT_PROC", &self.root)
            .env("PREFLIGHT_NOFILE", nofile)
            .current_dir(repo())
            .output()
            .expect("run bash")
    }
}

impl Drop for FakeProc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_tuned_host_passes_and_each_small_setting_is_refused_by_name() {
    let million = ["--target", "1000000", "--per-node", "1000000", "--nodes", "1"];
    let fake = FakeProc::tuned("each");
    let ok = fake.run("preflight.sh", "1048576", &million);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("preflight: OK for 1000000 connections"), "{}", stdout(&ok));

    // (setting, value too small for a million, what the refusal must name)
    let cases = [
        ("fs.file-max", "1000000", "sysctl -w fs.file-max="),
        ("fs.nr_open", "524288", "sysctl -w fs.nr_open=2097152"),
        ("net.core.somaxconn", "128", "sysctl -w net.core.somaxconn=65535"),
        ("net.ipv4.tcp_max_syn_backlog", "512", "sysctl -w net.ipv4.tcp_max_syn_backlog=65535"),
        ("net.core.netdev_max_backlog", "16384", "sysctl -w net.core.netdev_max_backlog=262144"),
        ("net.ipv4.tcp_mem", "287892\t383858\t575784", "sysctl -w net.ipv4.tcp_mem="),
        ("net.ipv4.ip_local_port_range", "60000\t60009", "net.ipv4.ip_local_port_range"),
    ];
    for (key, small, fix) in cases {
        let fake = FakeProc::tuned("one");
        fake.set(key, small);
        let out = fake.run("preflight.sh", "2097152", &million);
        let text = stdout(&out);
        assert_eq!(out.status.code(), Some(1), "{key} = {small} passed:\n{text}");
        let refusal = text.lines().find(|l| l.contains("REFUSE")).unwrap_or_else(|| panic!("no REFUSE line: {text}"));
        let named = if key == "net.ipv4.ip_local_port_range" { "source ports" } else { key };
        assert!(refusal.contains(named), "{key}: {refusal}");
        assert!(text.contains(fix), "{key}: the fix {fix:?} is not named:\n{text}");
        assert_eq!(
            text.lines().filter(|l| l.starts_with("  REFUSE ")).count(),
            1,
            "only {key} should be refused:\n{text}"
        );
    }
}

#[test]
fn the_open_file_limit_and_memory_are_checked_against_the_run() {
    let fake = FakeProc::tuned("limits");
    // 19,000 connections per node do not fit under a hard limit of 1,024.
    let out = fake.run("preflight.sh", "1024", &["--target", "100000", "--per-node", "19000"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains("REFUSE  open files per process"), "{}", stdout(&out));
    assert!(stdout(&out).contains("ulimit -Hn 19064"), "{}", stdout(&out));
    fake.meminfo(2 * 1024 * 1024);
    let out = fake.run("preflight.sh", "1048576", &["--target", "1000000", "--per-node", "1000000"]);
    assert!(stdout(&out).contains("REFUSE  free memory"), "{}", stdout(&out));
    // The JSON form names the failed check too.
    let json = fake.root.join("checks.json");
    let out = fake.run(
        "preflight.sh",
        "1048576",
        &["--target", "1000000", "--per-node", "1000000", "--json", json.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    let checks: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let failed: Vec<&str> =
        checks.as_array().unwrap().iter().filter(|c| c["ok"] == false).map(|c| c["check"].as_str().unwrap()).collect();
    assert_eq!(failed, ["free memory"]);
}

#[test]
fn capacity_stops_in_seconds_with_the_reason_in_its_summary() {
    let fake = FakeProc::tuned("capacity");
    fake.set("net.core.somaxconn", "128");
    let started = Instant::now();
    let out = fake.run("capacity.sh", "1048576", &["--target", "5000", "--nodes", "2", "--standalone"]);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("REFUSE  net.core.somaxconn"), "{text}");
    let path = text
        .lines()
        .find_map(|l| l.rsplit("summary ").next().filter(|_| l.starts_with("verdict:")))
        .unwrap_or_else(|| panic!("no summary path in:\n{text}"));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(Path::new(path.trim())).unwrap()).unwrap();
    assert_eq!(summary["ok"], false);
    assert!(summary["reason"].as_str().unwrap().contains("preflight refused"), "{summary}");
    let refused: Vec<&serde_json::Value> =
        summary["preflight"].as_array().unwrap().iter().filter(|c| c["ok"] == false).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["check"], "net.core.somaxconn");
    assert!(refused[0]["fix"].as_str().unwrap().contains("sysctl -w net.core.somaxconn=65535"));
    std::fs::remove_file(path.trim()).ok();
}

#[test]
fn this_host_passes_a_small_target() {
    let out = Command::new("bash")
        .arg(repo().join("scripts/preflight.sh"))
        .args(["--target", "1000", "--nodes", "1"])
        .output()
        .expect("run bash");
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}
