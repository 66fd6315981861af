//! Limits that make a node safe on the internet, as a client or an operator
//! sees them: idle and anonymous sockets closed, rates enforced, upgrades
//! refused with 429/503 and Retry-After, memory bounded and given back, and
//! invalid UTF-8 failed before its frame is complete.

// Helpers of tests: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::raw::{frame, text, upgrade_request, RawClient};
use common::{chat, connect, login_and_confirm, wait_until, NodeProc};

const LOGIN: &str = r#"{"MessageType":"loginmsg","Sender":"NAME"}"#;
const WHOAMI: &str = r#"{"MessageType":"whoamimsg"}"#;

fn login_frame(name: &str) -> Vec<u8> {
    text(&LOGIN.replace("NAME", name))
}

fn hits(node: &NodeProc, limit: &str) -> u64 {
    node.metric(&format!("switchboard_limit_hits_total{{limit=\"{limit}\"}}"))
}

/// Sends an upgrade request (with `extra` header lines) and returns the response head.
fn try_upgrade(node: &NodeProc, extra: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = match extra {
        "" => upgrade_request("/ws"),
        _ => upgrade_request("/ws").replacen("\r\n\r\n", &format!("\r\n{extra}\r\n\r\n"), 1),
    };
    s.write_all(request.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), s)
}

/// The text frames a client gets until the server has been quiet for `quiet`.
fn texts_until_quiet(client: &mut RawClient, quiet: Duration) -> Vec<String> {
    client.stream.set_read_timeout(Some(quiet)).unwrap();
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 65536];
    while let Ok(n @ 1..) = client.stream.read(&mut chunk) {
        bytes.extend_from_slice(&chunk[..n]);
    }
    let mut texts = Vec::new();
    let mut at = 0;
    while at + 2 <= bytes.len() {
        let (len, head) = match bytes[at + 1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])), 4),
            n => (usize::from(n), 2),
        };
        if bytes[at] & 0x0F == 1 {
            texts.push(String::from_utf8_lossy(&bytes[at + head..at + head + len]).into_owned());
        }
        at += head + len;
    }
    texts
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

// 4. Idle and unauthenticated sockets.

#[test]
fn a_websocket_that_does_not_log_in_is_told_and_closed_with_1008() {
    let node = NodeProc::start(&["--login-timeout", "1"]);
    let start = Instant::now();
    let mut anonymous = RawClient::open(node.addr, "/ws");
    let mut member = RawClient::open(node.addr, "/ws");
    member.send(&login_frame("member"));
    let told = anonymous.read_text();
    assert!(told.contains("errormsg") && told.contains("no login within 1 s"), "{told}");
    let (code, reason) = anonymous.expect_close();
    assert_eq!(code, 1008, "{reason}");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "{waited:?}");
    // The logged-in connection stays.
    member.send(&text(WHOAMI));
    assert_eq!(member.read_text(), "{\"MessageType\":\"whoamimsg\",\"Data\":\"member\"}\n");
    assert_eq!(hits(&node, "login_timeout"), 1);
}

#[test]
fn a_peer_that_does_not_answer_pings_is_closed_and_one_that_does_stays() {
    let node = NodeProc::start(&["--ping-interval", "2", "--pong-timeout", "1"]);
    let mut deaf = RawClient::open(node.addr, "/ws");
    deaf.send(&login_frame("deaf"));
    let mut alive = RawClient::open(node.addr, "/ws");
    alive.send(&login_frame("alive"));
    alive.stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();

    let start = Instant::now();
    let mut alive_pings = 0;
    let mut deaf_frames = Vec::new();
    while start.elapsed() < Duration::from_secs(8) {
        // The live client answers every ping, as browsers do.
        let mut chunk = [0u8; 256];
        if let Ok(n) = alive.stream.read(&mut chunk) {
            assert!(n > 0, "the answering client was disconnected");
            // Server pings without payload: 0x89 0x00.
            let pings = chunk[..n].windows(2).filter(|w| w == &[0x89, 0x00]).count();
            for _ in 0..pings {
                alive.send(&frame(true, 0xA, b""));
            }
            alive_pings += pings;
        }
        if deaf_frames.last().is_some_and(|&(op, _): &(u8, u16)| op == 8) {
            continue;
        }
        deaf.stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut head = [0u8; 2];
        if deaf.stream.read_exact(&mut head).is_ok() {
            let mut payload = vec![0u8; usize::from(head[1] & 0x7F)];
            deaf.stream.read_exact(&mut payload).unwrap();
            let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 0 };
            deaf_frames.push((head[0] & 0x0F, code));
        }
    }
    assert_eq!(deaf_frames.first().map(|f| f.0), Some(9), "the silent client was not pinged: {deaf_frames:?}");
    assert_eq!(deaf_frames.last(), Some(&(8, 1008)), "the silent client was not closed: {deaf_frames:?}");
    assert!(alive_pings >= 2, "pings to the live client: {alive_pings}");
    alive.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    alive.send(&text(WHOAMI));
    let answer = loop {
        let f = alive.read_frame();
        if f.opcode == 1 {
            break String::from_utf8(f.payload).unwrap();
        }
    };
    assert!(answer.contains("alive"), "{answer}");
    assert_eq!(hits(&node, "pong_timeout"), 1);
}

// 5. Rates.

#[test]
fn messages_over_the_rate_get_one_errormsg_then_a_1008_close() {
    let node = NodeProc::start(&["--message-rate", "10", "--message-burst", "20"]);
    let mut client = RawClient::open(node.addr, "/ws");
    let mut burst = login_frame("eager");
    for _ in 0..100 {
        burst.extend(text(WHOAMI));
    }
    client.send(&burst);
    let (mut answered, mut warnings) = (0, 0);
    let code = loop {
        let f = client.read_frame();
        match f.opcode {
            1 if String::from_utf8_lossy(&f.payload).contains("whoamimsg") => answered += 1,
            1 => {
                let t = String::from_utf8(f.payload).unwrap();
                assert!(t.contains("slow down: over 10 messages/s"), "{t}");
                warnings += 1;
            }
            8 => break f.close_code(),
            other => panic!("opcode {other}"),
        }
    };
    // The login and 19 requests fit the burst of 20; a second burst's worth is dropped.
    assert!((15..=20).contains(&answered), "{answered} answered");
    assert_eq!(warnings, 1);
    assert_eq!(code.0, 1008, "{code:?}");
    assert!(hits(&node, "message_rate") >= 19);
    assert_eq!(hits(&node, "message_rate_close"), 1);
}

#[test]
fn logins_past_the_limit_close_the_connection() {
    let node = NodeProc::start(&["--max-login-attempts", "3"]);
    let mut holder = connect(&node.url("/ws"));
    login_and_confirm(&mut holder, "taken");
    let mut prober = RawClient::open(node.addr, "/ws");
    for _ in 0..3 {
        prober.send(&login_frame("taken"));
        assert_eq!(prober.read_text(), "\"User already exists\"\n");
    }
    prober.send(&login_frame("taken"));
    let told = prober.read_text();
    assert!(told.contains("too many login attempts: at most 3"), "{told}");
    assert_eq!(prober.expect_close().0, 1008);
    assert_eq!(hits(&node, "login_attempts"), 1);
}

#[test]
fn upgrades_past_the_per_address_cap_get_429_until_one_closes() {
    let node = NodeProc::start(&["--max-connections-per-address", "3"]);
    let mut held: Vec<RawClient> = (0..3).map(|_| RawClient::open(node.addr, "/ws")).collect();
    let (head, _) = try_upgrade(&node, "");
    assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{head}");
    assert!(head.contains("\r\nRetry-After: 10\r\n"), "{head}");
    // Plain HTTP is never refused.
    assert!(node.http_get("/healthz").starts_with("HTTP/1.1 200"));
    held.pop();
    assert!(wait_until(Duration::from_secs(3), || try_upgrade(&node, "").0.starts_with("HTTP/1.1 101")));
    assert!(hits(&node, "per_address") >= 1);
}

#[test]
fn a_full_node_and_a_connection_storm_get_503_with_retry_after() {
    let full = NodeProc::start(&["--max-connections", "3"]);
    let _held: Vec<RawClient> = (0..3).map(|_| RawClient::open(full.addr, "/ws")).collect();
    let (head, _) = try_upgrade(&full, "");
    assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
    assert!(head.contains("Retry-After: 10\r\n"), "{head}");

    let paced = NodeProc::start(&["--connect-rate", "5"]);
    let heads: Vec<String> = (0..12).map(|_| try_upgrade(&paced, "").0).collect();
    let upgraded = heads.iter().filter(|h| h.starts_with("HTTP/1.1 101")).count();
    let refused: Vec<&String> = heads.iter().filter(|h| h.starts_with("HTTP/1.1 503")).collect();
    // A burst of 5, then one more per 200 ms while the loop runs.
    assert!((5..=10).contains(&upgraded) && upgraded < 12, "{heads:?}");
    assert_eq!(upgraded + refused.len(), 12, "{heads:?}");
    assert!(refused.iter().all(|h| h.contains("Retry-After: 1\r\n")), "{refused:?}");
    assert_eq!(paced.metric("switchboard_limit_hits_total{limit=\"connect_rate\"}"), refused.len() as u64);
}

#[test]
fn behind_a_trusted_proxy_the_source_is_the_forwarded_client() {
    let proxied = NodeProc::start(&["--trusted-proxy", "127.0.0.0/8", "--max-connections-per-address", "2"]);
    let xff = |ip: &str| format!("X-Forwarded-For: {ip}");
    let mut keep = Vec::new();
    for _ in 0..2 {
        let (head, s) = try_upgrade(&proxied, &xff("203.0.113.7"));
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        keep.push(s);
    }
    assert!(try_upgrade(&proxied, &xff("203.0.113.7")).0.starts_with("HTTP/1.1 429"));
    // A client may prepend anything; the proxy's own entry is the last one.
    assert!(try_upgrade(&proxied, &xff("203.0.113.8, 203.0.113.7")).0.starts_with("HTTP/1.1 429"));
    let (head, other) = try_upgrade(&proxied, &xff("203.0.113.7, 203.0.113.8"));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    keep.push(other);

    // From a peer that is not a trusted proxy, the header is ignored.
    let direct = NodeProc::start(&["--max-connections-per-address", "2"]);
    let heads: Vec<(String, TcpStream)> =
        ["198.51.100.1", "198.51.100.2", "198.51.100.3"].iter().map(|ip| try_upgrade(&direct, &xff(ip))).collect();
    assert!(heads[1].0.starts_with("HTTP/1.1 101"), "{}", heads[1].0);
    assert!(heads[2].0.starts_with("HTTP/1.1 429"), "{}", heads[2].0);
}

// 6. Bounded everything.

#[test]
fn unfinished_messages_past_the_node_budget_are_closed_with_1008() {
    let node = NodeProc::start(&["--max-partial-bytes", "1048576"]);
    // Each client starts a 60,000-byte message and sends only its first bytes:
    // the node holds room for each whole one.
    let mut head = frame(true, 1, &vec![b'a'; 60_000]);
    head.truncate(8 + 100);
    let mut clients: Vec<RawClient> = (0..30).map(|_| RawClient::open(node.addr, "/ws")).collect();
    for c in clients.iter_mut() {
        c.send(&head);
    }
    let mut closed = 0;
    for c in clients.iter_mut() {
        c.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut first = [0u8; 2];
        if c.stream.read_exact(&mut first).is_ok() {
            assert_eq!(first[0], 0x88, "a close frame");
            let mut payload = vec![0u8; usize::from(first[1])];
            c.stream.read_exact(&mut payload).unwrap();
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1008);
            assert!(String::from_utf8_lossy(&payload[2..]).contains("unfinished messages"));
            closed += 1;
        }
    }
    // About 1 MiB / 60 KB held; every client past that is closed.
    assert!((10..=16).contains(&closed), "{closed} of 30 closed");
    assert!(node.metric("switchboard_partial_bytes") <= 1_048_576);
    assert_eq!(hits(&node, "partial_bytes"), closed);
    drop(clients);
    assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_partial_bytes") == 0));
}

#[test]
fn memory_of_a_burst_of_stalled_messages_goes_back_to_the_system() {
    let node = NodeProc::start(&["--max-connections-per-address", "0", "--connect-rate", "0"]);
    let pid = node.child.id();
    let mut head = frame(true, 2, &vec![0u8; 65_536]);
    head.truncate(14 + 60_000);
    std::thread::sleep(Duration::from_millis(500));
    let before = rss_kib(pid);
    let clients: Vec<RawClient> = (0..300)
        .map(|_| {
            let mut c = RawClient::open(node.addr, "/ws");
            c.send(&head);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let during = rss_kib(pid);
    drop(clients);
    // (Scrapes go to the admin listener: they are no connections of the chat port.)
    assert!(wait_until(Duration::from_secs(5), || node.metric("switchboard_connections") == 0));
    std::thread::sleep(Duration::from_secs(10));
    let after = rss_kib(pid);
    eprintln!("node RSS: {before} KiB before, {during} KiB with 300 stalled 64 KiB messages, {after} KiB 10 s after they closed");
    assert!(during > before + 15_000, "{before} -> {during}");
    assert!(after < before + 4_096, "{after} KiB still resident, {before} KiB before the burst");
}

#[test]
fn a_slow_consumer_is_reset_when_the_close_grace_ends() {
    let node = NodeProc::start(&["--max-output", "65536", "--message-rate", "0"]);
    let mut stalled = RawClient::open(node.addr, "/ws");
    stalled.send(&login_frame("stalled"));
    let mut sender = connect(&node.url("/ws"));
    login_and_confirm(&mut sender, "sender");
    let line = "x".repeat(1000);
    let mut sent = 0;
    while node.metric("switchboard_slow_closed_total") == 0 {
        assert!(sent < 64_000, "the stalled client is still open");
        for _ in 0..500 {
            chat(&mut sender, "stalled", &line);
        }
        sent += 500;
    }
    // The close grace (5 s) passes without the client reading or hanging up.
    std::thread::sleep(Duration::from_secs(7));
    let mut sink = vec![0u8; 1 << 20];
    let end = loop {
        match stalled.stream.read(&mut sink) {
            Ok(0) => break "EOF",
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("{e}"),
        }
    };
    // A reset frees the node's socket buffer at once; an orderly close would
    // have kept the kernel sending the backlog.
    assert_eq!(end, "reset");
    assert_eq!(hits(&node, "close_grace_reset"), 1);
}

#[test]
fn accepted_sockets_get_the_send_buffer_asked_for() {
    let node = NodeProc::start(&["--send-buffer", "32768"]);
    let _client = RawClient::open(node.addr, "/ws");
    let filter = format!("( sport = :{} )", node.addr.port());
    let out = std::process::Command::new("ss").args(["-tmnH", "state", "established", &filter]).output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    // The kernel doubles what SO_SNDBUF asks for (room for its bookkeeping).
    assert!(out.contains(",tb65536,"), "{out}");
}

#[test]
fn a_message_for_a_full_inbox_is_refused_to_its_sender() {
    let node = NodeProc::start(&["--reactors", "2", "--accept", "handoff", "--inbox-size", "1", "--message-rate", "0"]);
    // Handoff gives connections to the least-loaded reactor: 0, then 1.
    let mut sender = RawClient::open(node.addr, "/ws");
    sender.send(&login_frame("sender"));
    let mut recipient = RawClient::open(node.addr, "/ws");
    recipient.send(&login_frame("recipient"));
    recipient.send(&text(WHOAMI));
    assert!(recipient.read_text().contains("recipient"));
    const SENT: usize = 2000;
    let one = text(r#"{"MessageType":"chatmsg","Data":"d","Reciever":"recipient"}"#);
    let burst: Vec<u8> = (0..SENT).flat_map(|_| one.iter().copied()).collect();
    // Frozen, the node finds the whole burst at once and pushes it to the
    // other reactor's inbox faster than that reactor takes it.
    node.pause();
    sender.send(&burst);
    node.resume();
    // Login, login, whoami, then the burst.
    assert!(wait_until(Duration::from_secs(10), || node.metric("switchboard_messages_in_total") >= SENT as u64 + 3));
    let refusals = texts_until_quiet(&mut sender, Duration::from_secs(1));
    let delivered = texts_until_quiet(&mut recipient, Duration::from_secs(1));
    assert!(!refusals.is_empty(), "nothing refused; {} delivered", delivered.len());
    for t in &refusals {
        assert!(t.contains("too many messages are waiting for \\\"recipient\\\""), "{t}");
    }
    assert!(delivered.iter().all(|t| t.contains("chatmsg")));
    // Every message was either delivered or refused, and counted.
    assert_eq!(delivered.len() + refusals.len(), SENT);
    assert_eq!(hits(&node, "inbox_full"), refusals.len() as u64);
}

// 7. Invalid UTF-8 inside one frame.

#[test]
fn invalid_utf8_fails_before_its_frame_is_complete() {
    let node = NodeProc::start(&[]);
    let mut client = RawClient::open(node.addr, "/ws");
    let mut bad = b"{\"MessageType\":\"".to_vec();
    bad.extend_from_slice(&[0xFF; 8]);
    bad.resize(10_000, b'a');
    let whole = frame(true, 1, &bad);
    // The header and the first 30 bytes of 10,000: the rest never comes.
    client.send(&whole[..4 + 4 + 30]);
    assert_eq!(client.read_frame().close_code().0, 1007);

    // Fragments: the first ends inside a sequence that the second's first
    // (arrived) byte does not continue.
    let mut client = RawClient::open(node.addr, "/ws");
    client.send(&frame(false, 1, &"caf\u{e9}".as_bytes()[..4]));
    let second = frame(true, 0, &[b'x'; 500]);
    client.send(&second[..4 + 4 + 10]);
    assert_eq!(client.read_frame().close_code().0, 1007);
}

#[test]
fn valid_text_arriving_in_pieces_is_unmasked_once_and_whole() {
    let node = NodeProc::start(&["--echo-path", "/echo"]);
    let mut client = RawClient::open(node.addr, "/echo");
    let message: String = "añ€😀".repeat(700);
    let whole = frame(true, 1, message.as_bytes());
    // Cut inside multi-byte characters, read by the node piece by piece.
    for piece in whole.chunks(997) {
        client.send(piece);
        client.stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let echoed = client.read_text();
    assert!(echoed == message, "echo differs from what was sent");
    // And a fragmented one whose pieces split a character across fragments.
    let bytes = message.as_bytes();
    client.send(&frame(false, 1, &bytes[..1004]));
    let rest = frame(true, 0, &bytes[1004..]);
    for piece in rest.chunks(333) {
        client.send(piece);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(client.read_text() == message);
}
