//! `scripts/netns.sh` and `scripts/capacity.sh --netns`: a run in a network namespace of
//! its own, with an established-connection hash of the size asked, the namespace's
//! settings from sysctl.conf, the host's own settings put back, and nothing left behind.

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn netns(args: &[&str]) -> Output {
    Command::new("bash").arg(repo().join("scripts/netns.sh")).args(args).output().expect("run bash")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn host(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_command_runs_with_its_own_hash_and_settings_and_the_host_is_left_as_it_was() {
    let child_before = host("net.ipv4.tcp_child_ehash_entries");
    let name = format!("sbtest-{}", std::process::id());
    let probe = "cat /proc/sys/net/ipv4/tcp_ehash_entries; cat /proc/sys/net/ipv4/ip_local_port_range; \
                 python3 -c 'import socket; s = socket.create_server((\"127.0.0.9\", 0)); \
                 c = socket.create_connection(s.getsockname()); print(\"loopback\", c.getpeername()[0])'; exit 7";
    let out = netns(&["--name", &name, "--ehash", "4096", "--", "sh", "-c", probe]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(7), "the command's exit status comes back: {all}");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("netns:")).collect();
    assert_eq!(lines[0], "4096", "{all}");
    assert_eq!(lines[1].split_whitespace().collect::<Vec<_>>(), ["10000", "65535"], "sysctl.conf's range: {all}");
    assert_eq!(lines[2], "loopback 127.0.0.9", "{all}");
    assert_eq!(host("net.ipv4.tcp_child_ehash_entries"), child_before);
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists(), "namespace left behind");
}

#[test]
fn host_wide_settings_are_read_from_the_host_inside_the_namespace() {
    // net.ipv4.tcp_mem and net.core.netdev_max_backlog exist only in the host's namespace:
    // the preflight must still check them, not refuse them as missing.
    let preflight = repo().join("scripts/preflight.sh");
    let preflight = preflight.to_str().unwrap();
    let out = netns(&["--ehash", "1024", "--", "bash", preflight, "--target", "1000", "--nodes", "1"]);
    let all = text(&out);
    let mem_high = host("net.ipv4.tcp_mem").split(' ').nth(2).unwrap().to_owned();
    assert!(all.contains(&format!("net.ipv4.tcp_mem               max {mem_high} pages")), "{all}");
    assert!(all.contains(&format!("net.core.netdev_max_backlog    {}", host("net.core.netdev_max_backlog"))), "{all}");
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    for (args, says) in [
        (&["--ehash", "0", "--", "true"][..], "--ehash needs 1..16777216"),
        (&["--ehash", "lots", "--", "true"][..], "--ehash needs 1..16777216"),
        (&["--name", "a/b", "--", "true"][..], "is not a plain name"),
        (&["--ehash", "1024"][..], "no command given"),
    ] {
        let out = netns(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
}

#[test]
fn a_capacity_run_in_a_namespace_says_so_in_its_summary() {
    let release = repo().join("target/release");
    let out = Command::new("bash")
        .arg(repo().join("scripts/capacity.sh"))
        .args(["--netns", "--ehash", "8192", "--standalone", "--target", "600", "--nodes", "2", "--hold", "1"])
        .args(["--chat-rate", "200", "--chat-duration", "1"])
        .env("SWITCHBOARD_BIN", release.join("switchboard"))
        .env("LOADGEN_BIN", env!("CARGO_BIN_EXE_loadgen"))
        .current_dir(repo())
        .output()
        .expect("run bash");
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let path = all
        .lines()
        .find_map(|l| l.strip_prefix("verdict:  OK; summary "))
        .unwrap_or_else(|| panic!("no summary path in:\n{all}"));
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(path.trim()).unwrap()).unwrap();
    assert_eq!(summary["ehash_buckets"], 8192, "{summary}");
    assert!(summary["netns"].as_str().unwrap().starts_with("switchboard-"), "{summary}");
    assert_eq!(summary["connections_at_peak"], 600, "{summary}");
    assert_eq!(summary["loadgen"]["chat"]["lost"], 0, "{summary}");
    assert!(summary["loadgen"]["chat"]["delivered"].as_u64().unwrap() > 0, "{summary}");
    for ext in ["json", "svg", "csv"] {
        std::fs::remove_file(path.trim().replace(".json", &format!(".{ext}"))).ok();
    }
}
