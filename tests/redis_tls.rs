//! `rediss://`: nodes reach a redis-server that speaks only TLS
//! (`--tls-port`, a certificate made here by a test CA). Verification is on
//! by default: a node that does not trust the CA refuses to start and says
//! to name it with `--redis-ca`; with it, or with `--redis-insecure`, nodes
//! chat through Redis over TLS and survive it restarting.

#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::process::node_exit;
use common::redis::{cluster_login, RedisServer};
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A test CA, and a server certificate it signed for 127.0.0.1 and localhost.
struct Certificates {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = std::env::temp_dir().join(format!("sb-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "switchboard test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let server_key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let cert = params.signed_by(&server_key, &issuer).unwrap();
        let files = Certificates { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir };
        std::fs::write(&files.ca, ca.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
        files
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two nodes with `args` chat; `n` keeps each round's names apart (a killed
/// node's names stay taken for a lease).
fn chat_across(args: &[&str], n: u32) {
    let (alice_name, bob_name) = (format!("alice{n}"), format!("bob{n}"));
    let a = NodeProc::start(args);
    let b = NodeProc::start(args);
    for node in [&a, &b] {
        assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_bus_connected") == 1));
    }
    let mut alice = connect(&a.url("/ws"));
    let mut bob = connect(&b.url("/ws"));
    assert!(cluster_login(&mut alice, &alice_name));
    assert!(cluster_login(&mut bob, &bob_name));
    assert!(!cluster_login(&mut connect(&a.url("/ws")), &bob_name), "bob logged in on two nodes");
    chat(&mut alice, &bob_name, "over tls");
    assert_eq!(recv_text(&mut bob), chat_bytes("over tls", &bob_name, &alice_name));
    chat(&mut bob, &alice_name, "and back");
    assert_eq!(recv_text(&mut alice), chat_bytes("and back", &alice_name, &bob_name));
}

#[test]
fn nodes_chat_through_a_tls_redis_whose_certificate_they_verify() {
    let files = Certificates::make();
    let mut redis = RedisServer::start_tls(&files.cert, &files.key);
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let ca = files.ca.to_str().unwrap();

    // The system's roots do not know the test CA: refused at start, saying what to do.
    let (status, stderr) = node_exit(&["--redis", &url], Duration::from_secs(10));
    assert!(!status.success(), "a node trusted an unknown CA: {stderr}");
    assert!(stderr.contains("TLS") && stderr.contains("--redis-ca"), "{stderr}");
    // A plain-text node against the TLS port is not taken for connected either.
    let plain = NodeProc::start(&["--redis", &format!("redis://127.0.0.1:{}", redis.port)]);

    chat_across(&["--redis", &url, "--redis-ca", ca], 1);
    chat_across(&["--redis", &url, "--redis-insecure"], 2);
    assert_eq!(plain.metric("switchboard_bus_connected"), 0, "plain text to a TLS port is not a link");

    // A restart of the TLS Redis: the node reconnects over TLS and chats again.
    let a = NodeProc::start(&["--redis", &url, "--redis-ca", ca]);
    // Up before the restart: a node whose first link came up only after it
    // would count no reconnect.
    assert!(wait_until(Duration::from_secs(5), || a.metric("switchboard_bus_connected") == 1));
    let mut carol = connect(&a.url("/ws"));
    assert!(cluster_login(&mut carol, "carol"));
    redis.restart();
    let back = wait_until(Duration::from_secs(20), || {
        a.metric("switchboard_bus_reconnects_total") >= 1 && a.metric("switchboard_bus_connected") == 1
    });
    assert!(
        back,
        "not back over TLS: reconnects {}, connected {}",
        a.metric("switchboard_bus_reconnects_total"),
        a.metric("switchboard_bus_connected")
    );
    let mut dave = connect(&a.url("/ws"));
    assert!(cluster_login(&mut dave, "dave"));
    assert!(wait_until(Duration::from_secs(5), || a.metric("switchboard_bus_subscriptions") == 2));
    chat(&mut dave, "carol", "after the restart");
    assert_eq!(recv_text(&mut carol), chat_bytes("after the restart", "carol", "dave"));
}
