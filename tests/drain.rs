//! Stopping a node: SIGTERM, SIGINT or SIGQUIT drain it (not ready, no new
//! connections, every client closed with 1001, spread over --drain-secs, its
//! names released, exit 0); SIGHUP does not stop it.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::raw::{text, RawClient};
use common::redis::{cluster_login, RedisServer};
use common::NodeProc;

/// Logs `count` raw clients in and has each wait, on a thread of its own, for
/// the server's close frame (answered as a client should): its code and when
/// it came.
fn waiting_clients(node: &NodeProc, count: usize) -> Vec<JoinHandle<(u16, Instant)>> {
    let clients: Vec<RawClient> = (0..count)
        .map(|i| {
            let mut c = RawClient::open(node.addr, "/ws");
            c.send(&text(&format!(r#"{{"MessageType":"loginmsg","Sender":"u{i}"}}"#)));
            c
        })
        .collect();
    assert!(common::wait_until(Duration::from_secs(5), || node.metric("switchboard_users") == count as u64));
    clients
        .into_iter()
        .map(|mut c| {
            c.stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            std::thread::spawn(move || {
                let (code, _) = c.expect_close();
                (code, Instant::now())
            })
        })
        .collect()
}

#[test]
fn sigterm_turns_readyz_503_and_closes_clients_with_1001_spread_over_drain_secs() {
    const CLIENTS: usize = 12;
    const DRAIN: f64 = 3.0;
    let mut node = NodeProc::start(&["--drain-secs", "3", "--reactors", "2"]);
    let clients = waiting_clients(&node, CLIENTS);
    assert!(node.admin_get("/readyz").starts_with("HTTP/1.1 200 "));

    let t0 = Instant::now();
    node.signal(libc::SIGTERM);
    let not_ready = || node.admin_get("/readyz").starts_with("HTTP/1.1 503 ");
    assert!(common::wait_until(Duration::from_secs(1), not_ready), "{}", node.admin_get("/readyz"));
    assert_eq!(node.metric("switchboard_draining"), 1);
    // No new clients: the listener is closed, so a balancer moves on at once.
    let refused = || std::net::TcpStream::connect(node.addr).is_err();
    assert!(common::wait_until(Duration::from_secs(1), refused), "the chat port still accepts");

    let mut at: Vec<f64> = clients
        .into_iter()
        .map(|c| {
            let (code, when) = c.join().unwrap();
            assert_eq!(code, 1001);
            when.duration_since(t0).as_secs_f64()
        })
        .collect();
    at.sort_by(f64::total_cmp);
    assert!(at[0] < 0.8, "the first close comes at once: {at:?}");
    assert!(at[CLIENTS - 1] > DRAIN * 0.6, "closes spread over the drain: {at:?}");
    assert!(at[CLIENTS - 1] < DRAIN + 2.0, "and end with it: {at:?}");
    // Evenly: no second of the three holds more than about its third.
    for second in 0..3 {
        let within = at.iter().filter(|t| (second as f64..second as f64 + 1.0).contains(*t)).count();
        assert!(within <= CLIENTS / 3 + 2, "{within} closes in second {second}: {at:?}");
    }
    let status = node.wait_exit(Duration::from_secs(5)).expect("the node exits once drained");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_drained_node_leaves_its_names_free_at_once() {
    let redis = RedisServer::start();
    let mut a = NodeProc::start(&["--redis", &redis.url(), "--drain-secs", "1", "--lease-secs", "60"]);
    let b = NodeProc::start(&["--redis", &redis.url()]);
    let mut alice = common::connect(&a.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    let mut thief = common::connect(&b.url("/ws"));
    assert!(!cluster_login(&mut thief, "alice"), "alice is taken while her node runs");

    a.signal(libc::SIGTERM);
    match alice.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
    let _ = alice.flush(); // the close answer
    let status = a.wait_exit(Duration::from_secs(10)).expect("node a exits once drained");
    assert_eq!(status.code(), Some(0));
    // Well before the 60 s lease: the drain gave the name back.
    let mut again = common::connect(&b.url("/ws"));
    assert!(cluster_login(&mut again, "alice"), "alice is free once her node drained");
}

#[test]
fn sighup_is_logged_and_the_node_serves_on() {
    let node = NodeProc::logged(&[], &[]);
    node.signal(libc::SIGHUP);
    assert!(common::wait_until(Duration::from_secs(3), || node.log().contains("SIGHUP: nothing to reload")));
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(r#"{"MessageType":"loginmsg","Sender":"hup"}"#));
    c.send(&text(r#"{"MessageType":"chatmsg","Data":"still here","Reciever":"hup"}"#));
    assert_eq!(c.read_text(), common::chat_bytes("still here", "hup", "hup"));
    assert!(node.admin_get("/readyz").starts_with("HTTP/1.1 200 "));
}

#[test]
fn sigquit_drains_like_sigterm() {
    let mut node = NodeProc::logged(&["--drain-secs", "1"], &[]);
    let clients = waiting_clients(&node, 2);
    node.signal(libc::SIGQUIT);
    for c in clients {
        assert_eq!(c.join().unwrap().0, 1001);
    }
    let status = node.wait_exit(Duration::from_secs(5)).expect("the node exits once drained");
    assert_eq!(status.code(), Some(0), "{}", node.log());
    assert!(node.log().contains("SIGQUIT: draining"), "{}", node.log());
}

#[test]
fn a_second_stop_signal_closes_the_rest_at_once() {
    let mut node = NodeProc::start(&["--drain-secs", "600"]);
    let clients = waiting_clients(&node, 4);
    let t0 = Instant::now();
    node.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    node.signal(libc::SIGINT);
    for c in clients {
        let (code, when) = c.join().unwrap();
        assert_eq!(code, 1001);
        assert!(when.duration_since(t0) < Duration::from_secs(3), "closed at once after the second signal");
    }
    let status = node.wait_exit(Duration::from_secs(10)).expect("the node exits");
    assert_eq!(status.code(), Some(0));
}
