//! The ramp: source pairs chosen by the load generator (explicit binds spread over
//! addresses, ports the kernel reports in use skipped), and a fast ramp whose own backlog
//! of handshakes stays within `--max-in-flight`.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{run_loadgen, Behaviour, TestServer};

fn peers(server: &TestServer) -> Vec<SocketAddr> {
    server.seen.peers.lock().unwrap().clone()
}

#[test]
fn every_connection_binds_its_own_pair_and_no_address_is_over_half_full() {
    let server = TestServer::start(0);
    let url = server.url("/ws");
    let run = run_loadgen(&["--url", &url, "--connections", "250", "--no-login", "--source-port-range", "21000-21199"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let config = &run.summary["config"];
    // 200 ports: half full is 100 connections per address, so three addresses.
    assert_eq!((config["per_source"].as_u64(), config["source_addrs"].as_u64()), (Some(100), Some(3)));
    assert_eq!(config["source_ports"], "explicit");
    assert_eq!(config["source_fullest_share"], 0.5);
    let seen = peers(&server);
    assert_eq!(seen.len(), 250);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 250, "a source pair used twice");
    for addr in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let ip: IpAddr = addr.parse().unwrap();
        let on = seen.iter().filter(|p| p.ip() == ip).count();
        assert!((50..=100).contains(&on), "{on} connections from {addr}");
    }
    let planned = run.summary["connect"]["ports_fallback"].as_u64().unwrap();
    let in_range = seen.iter().filter(|p| (21000..=21199).contains(&p.port())).count() as u64;
    assert_eq!(in_range + planned, 250, "ports outside the range without a fallback: {seen:?}");
}

#[test]
fn ports_in_use_are_skipped_and_never_taken() {
    let server = TestServer::start(0);
    let url = server.url("/ws");
    // Another process holds the first 40 of the 100 ports on the address (an address and
    // ports below the kernel's ephemeral range, which no other test uses).
    let addr: IpAddr = "127.0.0.99".parse().unwrap();
    let held: Vec<TcpListener> = (20000..20040).filter_map(|p| TcpListener::bind((addr, p)).ok()).collect();
    assert_eq!(held.len(), 40, "ports 20000-20039 on 127.0.0.99 are not free");
    let run = run_loadgen(&[
        "--url",
        &url,
        "--connections",
        "50",
        "--no-login",
        "--source-addrs",
        "127.0.0.99",
        "--source-port-range",
        "20000-20099",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let connect = &run.summary["connect"];
    assert_eq!(connect["established"], 50);
    // About 20 connections find their home port held, and about 20 of them their spare
    // too (the kernel then chooses); each skip is one EADDRINUSE answered by a retry.
    let skipped = connect["ports_skipped"].as_u64().unwrap();
    assert!(skipped >= 30, "ports skipped: {connect}");
    assert!(connect["ports_fallback"].as_u64().unwrap() <= 21, "{connect}");
    let taken: Vec<SocketAddr> = peers(&server).into_iter().filter(|p| (20000..20040).contains(&p.port())).collect();
    assert!(taken.is_empty(), "held ports were taken: {taken:?}");
    drop(held);
}

#[test]
fn a_fast_ramp_keeps_its_own_backlog_within_max_in_flight() {
    // Every upgrade is answered 20 ms late, so whatever the load generator has under way
    // piles up at the server, where it is counted.
    let slow = Behaviour { upgrade_delay: Duration::from_millis(20), ..Behaviour::default() };
    let server = TestServer::with(slow.clone());
    let url = server.url("/ws");
    let args = ["--url", &url, "--connections", "300", "--connect-rate", "0", "--no-login", "--threads", "2"];
    let run = run_loadgen(&[&args[..], &["--max-in-flight", "16"]].concat());
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary["connect"]["established"], 300);
    assert_eq!(run.summary["config"]["max_in_flight"], 16);
    let most = server.seen.max_pending.load(Ordering::SeqCst);
    assert!((8..=16).contains(&most), "{most} handshakes at once at the server");
    // Without the cap the same ramp piles up far more.
    let server = TestServer::with(slow);
    let url = server.url("/ws");
    let args = ["--url", &url, "--connections", "300", "--connect-rate", "0", "--no-login", "--threads", "2"];
    let run = run_loadgen(&[&args[..], &["--max-in-flight", "1000"]].concat());
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(server.seen.max_pending.load(Ordering::SeqCst) > 64);
}
