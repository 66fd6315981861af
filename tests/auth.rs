//! Authenticated mode as clients see it: a login needs a signed token (in a
//! `loginmsg`, or with the upgrade), the token's `sub` is the name others
//! see, a bad token gets an errormsg saying what is wrong and close 1008,
//! and a connection is closed when its token expires unless refreshed.
//! Also `switchboard token`, bad key settings, and the open-mode warning.

// Helpers of tests: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use common::raw::{text, RawClient, KEY};
use common::{chat_bytes, NodeProc};

const SECRET: &str = "a-test-secret-of-more-than-32-bytes!";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn sign(claims: &Value) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap()).unwrap()
}

/// A token for `sub` that expires `ttl` seconds from now.
fn token(sub: &str, ttl: u64) -> String {
    sign(&json!({ "sub": sub, "exp": now() + ttl, "iat": now() }))
}

fn node() -> NodeProc {
    NodeProc::start(&["--auth-secret", SECRET, "--reactors", "2"])
}

fn login_msg(jwt: &str) -> String {
    format!(r#"{{"MessageType":"loginmsg","Data":"{jwt}"}}"#)
}

fn whoami(c: &mut RawClient) -> String {
    c.send(&text(r#"{"MessageType":"whoamimsg"}"#));
    c.read_text()
}

fn whoami_is(name: &str) -> String {
    format!("{{\"MessageType\":\"whoamimsg\",\"Data\":\"{name}\"}}\n")
}

fn error_data(reply: &str) -> String {
    let v: Value = serde_json::from_str(reply).unwrap_or_else(|e| panic!("{reply:?}: {e}"));
    assert_eq!(v["MessageType"], "errormsg", "{reply}");
    v["Data"].as_str().expect("Data").to_string()
}

/// Upgrades with extra request headers and the path given; returns the client
/// and the response head.
fn upgrade_with(addr: std::net::SocketAddr, path: &str, headers: &str) -> (RawClient, String) {
    let mut c = RawClient::connect(addr);
    c.send(
        format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        )
        .as_bytes(),
    );
    let head = c.read_http_head();
    (c, head)
}

/// Expects an errormsg containing `expected`, then close 1008.
fn expect_refusal(c: &mut RawClient, expected: &str) {
    let data = error_data(&c.read_text());
    assert!(data.contains(expected), "{data:?} lacks {expected:?}");
    assert_eq!(c.expect_close().0, 1008);
}

#[test]
fn a_token_logs_in_as_its_sub_whatever_sender_says() {
    let node = node();
    let mut alice = RawClient::open(node.addr, "/ws");
    alice.send(&text(&format!(r#"{{"MessageType":"loginmsg","Sender":"mallory","Data":"{}"}}"#, token("alice", 600))));
    assert_eq!(whoami(&mut alice), whoami_is("alice"));
    let mut bob = RawClient::open(node.addr, "/ws");
    bob.send(&text(&login_msg(&token("bob", 600))));
    bob.send(&text(r#"{"MessageType":"chatmsg","Data":"hi","Reciever":"alice","Sender":"mallory"}"#));
    assert_eq!(alice.read_text(), chat_bytes("hi", "alice", "bob"));
    // The same user twice: the seed's reply, and that connection stays open.
    let mut again = RawClient::open(node.addr, "/ws");
    again.send(&text(&login_msg(&token("alice", 600))));
    assert_eq!(again.read_text(), "\"User already exists\"\n");
    assert_eq!(whoami(&mut again), whoami_is(""));
}

#[test]
fn missing_forged_expired_and_unsigned_tokens_are_refused_with_1008() {
    let node = node();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({ "sub": "alice", "exp": now() + 600 }),
        &EncodingKey::from_secret(b"another secret, another issuer!!").unwrap(),
    )
    .unwrap();
    let payload = token("alice", 600).split('.').nth(1).unwrap().to_string();
    let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let cases = [
        (r#"{"MessageType":"loginmsg","Sender":"alice"}"#.to_string(), "token missing"),
        (login_msg("not-a-jwt"), "token malformed"),
        (login_msg(&forged), "token forged"),
        (login_msg(&sign(&json!({ "sub": "alice", "exp": now() - 5 }))), "token expired"),
        (login_msg(&unsigned), "algorithm \"none\" is not accepted"),
        (login_msg(&sign(&json!({ "sub": "alice" }))), "no exp claim"),
        (login_msg(&sign(&json!({ "sub": "alice", "exp": now() + 600, "nbf": now() + 600 }))), "not valid yet"),
        (login_msg(&sign(&json!({ "sub": "alice", "exp": now() + 600, "aud": "billing" }))), "aud"),
        (login_msg(&token("alice\u{200b}", 600)), "its sub must not contain invisible"),
    ];
    for (request, expected) in cases {
        let mut c = RawClient::open(node.addr, "/ws");
        c.send(&text(&request));
        expect_refusal(&mut c, expected);
    }
    // Each is counted for the operator, by kind.
    for (reason, count) in [("missing", 1), ("malformed", 2), ("signature", 1), ("expired", 2), ("claims", 3)] {
        assert_eq!(node.metric(&format!("switchboard_token_failures_total{{reason=\"{reason}\"}}")), count, "{reason}");
    }
    // None of them took the name.
    let mut alice = RawClient::open(node.addr, "/ws");
    alice.send(&text(&login_msg(&token("alice", 600))));
    assert_eq!(whoami(&mut alice), whoami_is("alice"));
}

#[test]
fn a_token_with_the_upgrade_logs_in_without_a_loginmsg() {
    let node = node();
    let bearer = format!("Authorization: Bearer {}\r\n", token("carol", 600));
    let (mut carol, head) = upgrade_with(node.addr, "/ws", &bearer);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(whoami(&mut carol), whoami_is("carol"));
    // A seed client's loginmsg for the same user changes nothing (no reply);
    // one for someone else is refused and the login stays.
    carol.send(&text(r#"{"MessageType":"loginmsg","Sender":"carol"}"#));
    assert_eq!(whoami(&mut carol), whoami_is("carol"));
    carol.send(&text(r#"{"MessageType":"loginmsg","Sender":"dave"}"#));
    assert!(error_data(&carol.read_text()).contains("already logged in as \"carol\""));

    let (mut dave, _) = upgrade_with(node.addr, &format!("/ws?x=1&token={}", token("dave", 600)), "");
    assert_eq!(whoami(&mut dave), whoami_is("dave"));
    dave.send(&text(r#"{"MessageType":"chatmsg","Data":"yo","Reciever":"carol"}"#));
    assert_eq!(carol.read_text(), chat_bytes("yo", "carol", "dave"));

    // A bad token with the upgrade: upgraded, told why, closed.
    let (mut eve, head) = upgrade_with(node.addr, "/ws", "Authorization: Bearer x.y.z\r\n");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    expect_refusal(&mut eve, "token malformed");
}

#[test]
fn a_connection_is_closed_when_its_token_expires_unless_refreshed() {
    let node = node();
    let mut short = RawClient::open(node.addr, "/ws");
    short.send(&text(&login_msg(&token("short", 2))));
    assert_eq!(whoami(&mut short), whoami_is("short"));
    let mut refreshed = RawClient::open(node.addr, "/ws");
    refreshed.send(&text(&login_msg(&token("refreshed", 2))));
    refreshed.send(&text(&format!(r#"{{"MessageType":"refreshmsg","Data":"{}"}}"#, token("refreshed", 600))));
    assert_eq!(whoami(&mut refreshed), whoami_is("refreshed"));

    let started = Instant::now();
    let data = error_data(&short.read_text());
    assert!(data.starts_with("token expired"), "{data}");
    assert_eq!(short.expect_close(), (1008, "token expired".into()));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(whoami(&mut refreshed), whoami_is("refreshed"), "the refreshed login outlives its first token");
    // Its name is free again.
    let mut next = RawClient::open(node.addr, "/ws");
    next.send(&text(&login_msg(&token("short", 600))));
    assert_eq!(whoami(&mut next), whoami_is("short"));
}

#[test]
fn a_refresh_must_be_for_the_same_user_and_needs_authenticated_mode() {
    let node = node();
    let mut alice = RawClient::open(node.addr, "/ws");
    alice.send(&text(r#"{"MessageType":"refreshmsg","Data":"x"}"#));
    assert!(error_data(&alice.read_text()).starts_with("log in first: {\"MessageType\":\"loginmsg\",\"Data\":"));
    alice.send(&text(&login_msg(&token("Alice", 600))));
    // Same user under the name profile: fine.
    alice.send(&text(&format!(r#"{{"MessageType":"refreshmsg","Data":"{}"}}"#, token("alice", 900))));
    assert_eq!(whoami(&mut alice), whoami_is("Alice"));
    alice.send(&text(&format!(r#"{{"MessageType":"refreshmsg","Data":"{}"}}"#, token("bob", 900))));
    expect_refusal(&mut alice, "it is for \"bob\"");

    let open = NodeProc::start(&[]);
    let mut c = RawClient::open(open.addr, "/ws");
    c.send(&text(r#"{"MessageType":"loginmsg","Sender":"x"}"#));
    c.send(&text(r#"{"MessageType":"refreshmsg","Data":"a.b.c"}"#));
    assert!(error_data(&c.read_text()).contains("open mode"));
    assert_eq!(whoami(&mut c), whoami_is("x"));
}

#[test]
fn a_public_key_node_takes_its_algorithm_and_refuses_hs256_made_with_the_key() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let node = NodeProc::start(&["--auth-public-key", &format!("{keys}/ec256.pub.pem")]);
    let private = std::fs::read(format!("{keys}/ec256.key.pem")).unwrap();
    let claims = json!({ "sub": "erin", "exp": now() + 600 });
    let es = encode(&Header::new(Algorithm::ES256), &claims, &EncodingKey::from_ec_pem(&private).unwrap()).unwrap();
    let mut erin = RawClient::open(node.addr, "/ws");
    erin.send(&text(&login_msg(&es)));
    assert_eq!(whoami(&mut erin), whoami_is("erin"));
    let public = std::fs::read(format!("{keys}/ec256.pub.pem")).unwrap();
    let confused =
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(&public).unwrap()).unwrap();
    let mut mallory = RawClient::open(node.addr, "/ws");
    mallory.send(&text(&login_msg(&confused)));
    expect_refusal(&mut mallory, "algorithm \"HS256\" is not accepted here (only ES256)");
}

/// Runs the binary with `args`; returns its exit code, stdout and stderr.
/// One still running after 10 s (a node that took what it should have
/// refused) is killed and reported as -1.
fn run_binary(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .env_remove("SWITCHBOARD_AUTH_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn switchboard_token_mints_a_token_the_node_takes() {
    let dir = std::env::temp_dir().join(format!("sb-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let secret_file = secret_file.to_str().unwrap();
    let (code, stdout, stderr) = run_binary(&["token", "--user", "frank", "--ttl", "1h", "--auth-secret", SECRET]);
    assert_eq!(code, 0, "{stderr}");
    let minted = stdout.lines().last().expect("a last line").to_string();
    assert_eq!(minted.split('.').count(), 3, "{stdout}");
    let node = NodeProc::start(&["--auth-secret-file", secret_file]);
    let mut frank = RawClient::open(node.addr, "/ws");
    frank.send(&text(&login_msg(&minted)));
    assert_eq!(whoami(&mut frank), whoami_is("frank"));

    for bad in [
        vec!["token", "--user", "frank", "--ttl", "1w", "--auth-secret", SECRET],
        vec!["token", "--user", "frank", "--auth-secret", "short"],
        vec!["token", "--user", "fr\u{202e}ank", "--auth-secret", SECRET],
        vec!["token", "--user", "frank"],
    ] {
        let (code, stdout, stderr) = run_binary(&bad);
        assert_ne!(code, 0, "{bad:?}");
        assert!(stdout.is_empty() && !stderr.is_empty(), "{bad:?}: {stdout} / {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_key_settings_are_refused_at_start_naming_the_flag() {
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
    let private = format!("{keys}/rsa.key.pem");
    let readme = format!("{keys}/README.md");
    let cases: [(&[&str], &str); 6] = [
        (&["--auth-secret", "too short"], "--auth-secret must be at least 32 bytes"),
        (&["--auth-secret-file", "/nonexistent/secret"], "--auth-secret-file /nonexistent/secret"),
        (&["--auth-public-key", &private], "a private key"),
        (&["--auth-public-key", &readme], "not a PEM public key"),
        (&["--auth-secret", SECRET, "--auth-public-key", &private], "cannot be used with"),
        (&["--auth-audience", "chat"], "--auth-audience needs --auth-secret"),
    ];
    for (args, expected) in cases {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let (code, _, stderr) = run_binary(&all);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// The log lines a node writes at start, up to its listening line.
fn start_log(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("SWITCHBOARD_AUTH_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert!(line.starts_with("switchboard listening on "), "{line}");
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn open_mode_says_so_in_one_warning_at_start() {
    let open = start_log(&[]);
    let warnings: Vec<&str> = open.lines().filter(|l| l.contains("WARN") && l.contains("open mode")).collect();
    assert_eq!(warnings.len(), 1, "{open}");
    assert!(warnings[0].contains("any client may log in as any name"), "{open}");
    let authenticated = start_log(&["--auth-secret", SECRET]);
    assert!(!authenticated.contains("open mode"), "{authenticated}");
    assert!(authenticated.contains("authenticated mode"), "{authenticated}");
}
