//! `wss://` through nginx terminating TLS in front of a real switchboard node (the
//! deployment deploy/nginx.conf describes, rendered by scripts/cluster.sh), with test
//! certificates made here: verification on by default, `--ca` to trust a test CA,
//! `--insecure` for a self-signed certificate; Socket.IO over TLS as well.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{metric, run_loadgen, Nginx, Node, Redis, SioNode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A server certificate for localhost and 127.0.0.1, its key, and the CA that signed it
/// (written to a file for `--ca`).
struct Certificates {
    cert: String,
    key: String,
    ca_file: PathBuf,
}

impl Certificates {
    /// Signed by a test CA of its own.
    fn signed() -> Certificates {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "loadgen test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = server_params().signed_by(&key, &issuer).unwrap();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ca_file = std::env::temp_dir().join(format!("loadgen-test-ca-{}-{n}.pem", std::process::id()));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Certificates { cert: cert.pem(), key: key.serialize_pem(), ca_file }
    }

    /// Self-signed (no CA at all).
    fn self_signed() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = server_params().self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn server_params() -> CertificateParams {
    CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap()
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

#[test]
fn chat_through_nginx_terminating_tls_with_the_certificate_verified() {
    let certs = Certificates::signed();
    let node = Node::start(1);
    let nginx = Nginx::start_tls(&certs.cert, &certs.key, &[node.port]);
    let url = format!("wss://localhost:{}/ws", nginx.port);

    // Verification is on by default, and the test CA is no system root.
    let refused = run_loadgen(&["--url", &url, "--connections", "20"]);
    assert_eq!(refused.code, 2, "stderr: {}", refused.stderr);
    assert!(refused.stderr.contains("invalid peer certificate: UnknownIssuer"), "{}", refused.stderr);
    assert!(refused.stderr.contains("needs --ca FILE, or --insecure"), "{}", refused.stderr);
    assert!(refused.stderr.contains("loadgen: refused the TLS certificate: UnknownIssuer during handshake 20"));

    let ca = certs.ca_file.to_str().unwrap();
    let run = run_loadgen(&[
        "--url",
        &url,
        "--ca",
        ca,
        "--connections",
        "300",
        "--rate",
        "1000",
        "--duration",
        "2",
        "--churn-rate",
        "20",
        "--churn-duration",
        "1",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let s = &run.summary;
    let sent = s["chat"]["sent"].as_u64().unwrap();
    assert!(sent >= 1900, "sent {sent}");
    assert_eq!((s["chat"]["delivered"].as_u64(), s["chat"]["lost"].as_u64()), (Some(sent), Some(0)));
    assert_eq!(s["errors"]["total"], 0);
    let churned = s["churn"]["ok"].as_u64().unwrap();
    assert!(churned >= 15, "{}", s["churn"]);
    // The node behind nginx saw every upgrade, every message and one login marker per
    // login: the bytes went through TLS and came out whole.
    assert_eq!(metric(node.admin_port, "switchboard_handshakes_total"), 300 + churned);
    assert_eq!(metric(node.admin_port, "switchboard_messages_out_total"), sent + 300 + churned);
}

#[test]
fn insecure_accepts_a_self_signed_certificate() {
    let (cert, key) = Certificates::self_signed();
    let node = Node::start(1);
    let nginx = Nginx::start_tls(&cert, &key, &[node.port]);
    let url = format!("wss://127.0.0.1:{}/ws", nginx.port);
    let refused = run_loadgen(&["--url", &url, "--connections", "10"]);
    assert_eq!(refused.code, 2, "stderr: {}", refused.stderr);
    assert!(refused.stderr.contains("refused the TLS certificate"), "{}", refused.stderr);

    let run = run_loadgen(&["--url", &url, "--insecure", "--connections", "100", "--rate", "500", "--duration", "1"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary["chat"]["lost"], 0);
    assert!(run.summary["chat"]["delivered"].as_u64().unwrap() >= 450);
}

#[test]
fn socketio_over_wss_through_nginx() {
    let certs = Certificates::signed();
    let redis = Redis::start();
    let (a, b) = (SioNode::start(&redis.url(), &[]), SioNode::start(&redis.url(), &[]));
    let nginx = Nginx::start_tls(&certs.cert, &certs.key, &[a.port, b.port]);
    let url = format!("wss://localhost:{}", nginx.port);
    let ca = certs.ca_file.to_str().unwrap();
    let run = run_loadgen(&[
        "--protocol",
        "socketio",
        "--url",
        &url,
        "--ca",
        ca,
        "--connections",
        "100",
        "--rate",
        "500",
        "--duration",
        "1",
    ]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.summary["chat"]["lost"], 0);
    assert!(run.summary["chat"]["delivered"].as_u64().unwrap() >= 450);
}
