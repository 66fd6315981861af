//! Sharing a port: `--reuse-port` lets several node processes listen on one
//! port (how one host holds more connections than one process may open);
//! without it a node refuses a port that another process holds.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::raw::{text, RawClient};
use common::NodeProc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn nodes_with_reuse_port_share_one_port() {
    let listen = format!("127.0.0.1:{}", free_port());
    let a = NodeProc::start_on(&listen, &["--reuse-port", "--reactors", "2"]);
    let b = NodeProc::start_on(&listen, &["--reuse-port", "--reactors", "2"]);
    assert_eq!(a.addr, b.addr);
    let clients: Vec<RawClient> = (0..200)
        .map(|i| {
            let mut c = RawClient::open(a.addr, "/ws");
            c.send(&text(&format!(r#"{{"MessageType":"loginmsg","Sender":"p{i}"}}"#)));
            c
        })
        .collect();
    let users = || a.metric("switchboard_users") + b.metric("switchboard_users");
    assert!(common::wait_until(Duration::from_secs(5), || users() == 200), "{} users", users());
    // The kernel spread the connections over both processes.
    let (on_a, on_b) = (a.metric("switchboard_users"), b.metric("switchboard_users"));
    assert!(on_a > 20 && on_b > 20, "users per node: {on_a} and {on_b}");
    drop(clients);
}

/// A listening socket with SO_REUSEPORT on `addr`, as any process of the
/// same user may open: does the kernel let it share the port?
fn joins_with_reuse_port(addr: std::net::SocketAddr) -> std::io::Result<socket2::Socket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(16)?;
    Ok(socket)
}

#[test]
fn without_reuse_port_no_other_process_can_take_a_share_of_the_port() {
    for accept in ["each", "handoff"] {
        let node = NodeProc::start(&["--reactors", "2", "--accept", accept]);
        let intruder = joins_with_reuse_port(node.addr);
        assert_eq!(
            intruder.as_ref().map_err(std::io::Error::kind).err(),
            Some(std::io::ErrorKind::AddrInUse),
            "--accept {accept}: a SO_REUSEPORT socket joined the node's port"
        );
        // Both reactors still take connections from the one socket.
        let clients: Vec<RawClient> = (0..40).map(|_| RawClient::open(node.addr, "/ws")).collect();
        assert!(common::wait_until(Duration::from_secs(5), || node.metric("switchboard_handshakes_total") == 40));
        drop(clients);
    }
    // With --reuse-port, sharing is what was asked for.
    let shared = NodeProc::start(&["--reuse-port"]);
    assert!(joins_with_reuse_port(shared.addr).is_ok());
}

#[test]
fn without_reuse_port_a_taken_port_is_refused_with_a_hint() {
    let first = NodeProc::start(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", &first.addr.to_string()])
        .stdout(Stdio::null())
        .output()
        .expect("run a second node");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot listen on") && stderr.contains("--reuse-port"), "{stderr}");
}

#[test]
fn bad_configuration_is_refused_at_start() {
    for (args, says) in [
        (&["--ws-path", "ws"][..], "--ws-path must be an absolute path"),
        (&["--routing", "broadcast"][..], "--routing broadcast needs --redis URL"),
        (&["--max-output", "10"][..], "--max-output must be between 4096 and"),
        (&["--lease-secs", "18446744073709551615"][..], "--lease-secs must be between 3 and 86400 s"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("run the node");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
fn handoff_spreads_a_burst_of_connections_evenly() {
    let node = NodeProc::start(&["--accept", "handoff", "--reactors", "4"]);
    // Frozen, the node finds all 400 connections in its backlog at once.
    node.pause();
    let clients: Vec<std::net::TcpStream> =
        (0..400).map(|_| std::net::TcpStream::connect(node.addr).expect("connect")).collect();
    node.resume();
    let per_reactor = || -> Vec<u64> {
        node.admin_get("/metrics")
            .lines()
            .filter(|l| l.starts_with("switchboard_reactor_connections{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    assert!(common::wait_until(Duration::from_secs(5), || per_reactor().iter().sum::<u64>() >= 400));
    let spread = per_reactor();
    assert!(spread.iter().all(|&n| n == 100), "connections per reactor: {spread:?}");
    drop(clients);
}
