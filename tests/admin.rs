//! The admin listener: metrics and probes on an address of their own, off the
//! public chat port, which answers only `/healthz` besides WebSocket.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::time::Duration;

use common::raw::{text, RawClient};
use common::{raw_exchange, NodeProc};

#[test]
fn metrics_are_on_the_admin_port_and_not_on_the_chat_port() {
    let node = NodeProc::start(&[]);
    assert_ne!(node.admin, node.addr);
    assert!(node.admin.ip().is_loopback(), "the default admin address is loopback: {}", node.admin);

    let metrics = node.admin_get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 "), "{metrics}");
    assert!(metrics.contains("Content-Type: text/plain; version=0.0.4"), "{metrics}");
    assert!(metrics.contains("\nswitchboard_connections "), "{metrics}");

    let public = node.http_get("/metrics");
    assert!(public.starts_with("HTTP/1.1 404 "), "the chat port must not serve metrics: {public}");
    assert!(node.http_get("/readyz").starts_with("HTTP/1.1 404 "));
    // Load balancers that can only probe the port they balance still can.
    assert!(node.http_get("/healthz").ends_with("\r\n\r\nok\n"));

    assert!(node.admin_get("/healthz").ends_with("\r\n\r\nok\n"));
    assert!(node.admin_get("/readyz").ends_with("\r\n\r\nready\n"));
    let nope = node.admin_get("/nope");
    assert!(nope.starts_with("HTTP/1.1 404 ") && nope.contains("/metrics /healthz /readyz"), "{nope}");
    let post = raw_exchange(node.admin, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET"), "{post}");
    assert!(raw_exchange(node.admin, b"NOT HTTP\0\r\n\r\n").starts_with("HTTP/1.1 400 "));
}

#[test]
fn nodes_on_one_host_get_admin_ports_of_their_own() {
    let nodes: Vec<NodeProc> = (0..3).map(|_| NodeProc::start(&[])).collect();
    let mut ports: Vec<u16> = nodes.iter().map(|n| n.admin.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "{ports:?}");
    // A fixed admin port is held alone, like the chat port.
    let fixed = nodes[0].admin.to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0", "--admin-addr", &fixed])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("cannot listen on --admin-addr {fixed}")), "{stderr}");
}

#[test]
fn closes_are_counted_by_code_and_reason() {
    let node = NodeProc::start(&["--max-message-size", "200"]);
    let closes = |code: &str, reason: &str| {
        let series = format!("switchboard_closes_total{{code=\"{code}\",reason=\"{reason}\"}}");
        node.metric(&series)
    };
    assert_eq!(closes("1000", "peer"), 0);
    let mut polite = RawClient::open(node.addr, "/ws");
    polite.send(&common::raw::frame(true, 8, &1000u16.to_be_bytes()));
    assert_eq!(polite.read_frame().close_code().0, 1000);
    let mut big = RawClient::open(node.addr, "/ws");
    big.send(&text(&"x".repeat(300)));
    assert_eq!(big.read_frame().close_code().0, 1009);
    let gone = RawClient::open(node.addr, "/ws");
    drop(gone);
    let counted = || closes("1000", "peer") == 1 && closes("1009", "error") == 1 && closes("none", "dropped") == 1;
    assert!(common::wait_until(Duration::from_secs(5), counted), "{}", node.admin_get("/metrics"));
    // The label sets others count into are there from the start, at 0.
    for series in [
        "switchboard_limit_hits_total{limit=\"output\"}",
        "switchboard_token_failures_total{reason=\"expired\"}",
        "switchboard_closes_total{code=\"1001\",reason=\"shutdown\"}",
        "switchboard_draining",
    ] {
        assert_eq!(node.metric(series), 0, "{series}");
    }
}
