//! The node on the wire: HTTP upgrade and errors, RFC 6455 framing, control
//! frames, the close handshake, and what happens to bad or broken peers.
//! Every assertion is on bytes the server sent.

mod common;

use std::time::Duration;

use common::raw::{frame, text, upgrade_request, RawClient};
use common::{chat_bytes, raw_exchange, NodeProc};

const LOGIN_ALICE: &str = r#"{"MessageType":"loginmsg","Sender":"alice"}"#;

fn self_chat(name: &str, data: &str) -> String {
    format!(r#"{{"MessageType":"chatmsg","Data":"{data}","Reciever":"{name}","Sender":"x"}}"#)
}

#[test]
fn http_errors_are_clear() {
    let node = NodeProc::start(&[]);
    let not_found = raw_exchange(node.addr, upgrade_request("/nope").as_bytes());
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    assert!(not_found.contains("chat is at /ws"));
    let plain = raw_exchange(node.addr, b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 426 "), "{plain}");
    assert!(plain.contains("Upgrade: websocket"));
    let huge = format!("GET /ws HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    assert!(raw_exchange(node.addr, huge.as_bytes()).starts_with("HTTP/1.1 431 "));
    assert!(raw_exchange(node.addr, b"BREW /ws HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405 "));
    assert!(node.http_get("/healthz").ends_with("\r\n\r\nok\n"));
}

#[test]
fn an_unfinished_handshake_is_cut_off() {
    let node = NodeProc::start(&["--handshake-timeout", "1"]);
    let mut slow = RawClient::connect(node.addr);
    slow.send(b"GET /ws HTTP/1.1\r\nHost: x\r\n");
    let start = std::time::Instant::now();
    assert!(slow.at_eof());
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "{waited:?}");
}

#[test]
fn the_first_frame_may_arrive_with_the_upgrade_request() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::connect(node.addr);
    let mut bytes = upgrade_request("/ws").into_bytes();
    bytes.extend(text(LOGIN_ALICE));
    bytes.extend(text(&self_chat("alice", "same packet")));
    c.send(&bytes);
    let head = c.read_http_head();
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
    assert_eq!(c.read_text(), chat_bytes("same packet", "alice", "alice"));
}

#[test]
fn frames_split_across_reads_are_reassembled() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    let mut bytes = text(LOGIN_ALICE);
    bytes.extend(text(&self_chat("alice", "byte by byte")));
    for b in bytes {
        c.send(&[b]);
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(c.read_text(), chat_bytes("byte by byte", "alice", "alice"));
}

#[test]
fn fragmented_messages_with_pings_between_them() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(LOGIN_ALICE));
    let msg = self_chat("alice", "in three parts");
    let (a, rest) = msg.as_bytes().split_at(10);
    let (b, d) = rest.split_at(20);
    c.send(&frame(false, 1, a));
    c.send(&frame(true, 9, b"are you there"));
    c.send(&frame(false, 0, b));
    c.send(&frame(true, 0, d));
    let pong = c.read_frame();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (10, &b"are you there"[..]));
    assert_eq!(c.read_text(), chat_bytes("in three parts", "alice", "alice"));
}

#[test]
fn utf8_is_checked_in_whole_and_fragmented_messages() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&frame(true, 1, b"{\"x\":\"\xff\"}"));
    assert_eq!(c.expect_close().0, 1007);

    // "é" is C3 A9: split across fragments it is fine...
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(LOGIN_ALICE));
    let msg = self_chat("alice", "caf\u{e9}");
    let cut = msg.find('\u{e9}').unwrap() + 1;
    c.send(&frame(false, 1, &msg.as_bytes()[..cut]));
    c.send(&frame(true, 0, &msg.as_bytes()[cut..]));
    assert_eq!(c.read_text(), chat_bytes("caf\u{e9}", "alice", "alice"));
    // ...but a bad byte fails fast, before the message ends.
    c.send(&frame(false, 1, b"{\"a\":\"\xc3\x28"));
    assert_eq!(c.expect_close().0, 1007);
}

#[test]
fn protocol_violations_close_with_1002() {
    let node = NodeProc::start(&[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked", vec![0x81, 0x02, b'h', b'i']),
        ("reserved bits", {
            let mut f = text("{}");
            f[0] |= 0x40;
            f
        }),
        ("reserved opcode", frame(true, 3, b"")),
        ("continuation first", frame(true, 0, b"x")),
        ("fragmented ping", frame(false, 9, b"")),
        ("new message inside a fragmented one", {
            let mut f = frame(false, 1, b"{");
            f.extend(frame(true, 1, b"{}"));
            f
        }),
        ("invalid close code", frame(true, 8, &1005u16.to_be_bytes())),
        ("one-byte close", frame(true, 8, &[3])),
    ];
    for (what, bytes) in cases {
        let mut c = RawClient::open(node.addr, "/ws");
        c.send(&bytes);
        assert_eq!(c.expect_close().0, 1002, "{what}");
    }
    // The node is unharmed: a fresh client still chats.
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(LOGIN_ALICE));
    c.send(&text(&self_chat("alice", "still here")));
    assert_eq!(c.read_text(), chat_bytes("still here", "alice", "alice"));
}

#[test]
fn the_close_handshake_echoes_the_code() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    let mut payload = 4000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    c.send(&frame(true, 8, &payload));
    let reply = c.read_frame();
    assert_eq!(reply.close_code().0, 4000);
    assert!(c.at_eof(), "server closes TCP after the close handshake");

    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&frame(true, 8, b""));
    assert_eq!(c.read_frame().close_code().0, 1000);
    assert!(c.at_eof());
}

#[test]
fn oversize_and_binary_messages_are_refused_with_their_codes() {
    let node = NodeProc::start(&["--max-message-size", "1000"]);
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&frame(true, 1, &vec![b' '; 1001]));
    let (code, reason) = c.expect_close();
    assert_eq!(code, 1009);
    assert!(reason.contains("1000"), "{reason}");

    // The limit counts the whole message, not each fragment.
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&frame(false, 1, &vec![b' '; 600]));
    c.send(&frame(true, 0, &vec![b' '; 600]));
    assert_eq!(c.expect_close().0, 1009);

    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&frame(true, 2, b"\x00\x01"));
    let (code, reason) = c.expect_close();
    assert_eq!(code, 1003);
    assert!(reason.contains("JSON text"), "{reason}");
}

#[test]
fn an_abrupt_disconnect_mid_frame_frees_the_name() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(LOGIN_ALICE));
    c.send(&text(&self_chat("alice", "ok")));
    c.read_text();
    let half = text(&self_chat("alice", "never finished"));
    c.send(&half[..half.len() / 2]);
    drop(c);
    // The name comes free once the node sees the EOF.
    assert!(common::wait_until(Duration::from_secs(3), || node.metric("switchboard_users") == 0));
    let mut again = RawClient::open(node.addr, "/ws");
    again.send(&text(LOGIN_ALICE));
    again.send(&text(&self_chat("alice", "back")));
    assert_eq!(again.read_text(), chat_bytes("back", "alice", "alice"));
    let open = || node.metric("switchboard_connections");
    assert!(common::wait_until(Duration::from_secs(3), || open() == 1), "{} connections open", open());
}

#[test]
fn sigterm_closes_every_connection_with_1001() {
    let mut node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(LOGIN_ALICE));
    c.send(&text(&self_chat("alice", "x")));
    c.read_text();
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(c.read_frame().close_code().0, 1001);
}

/// The server-side socket of a connection from `client_port`, as /proc/net/tcp shows it.
fn server_socket_timer(node_port: u16, client_port: u16) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{node_port:04X}");
    let remote = format!(":{client_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols[1].ends_with(&local) && cols[2].ends_with(&remote)).then(|| cols[5].to_string())
    })
}

#[test]
fn accepted_sockets_carry_tcp_keepalive() {
    let node = NodeProc::start(&["--keepalive", "30"]);
    let c = RawClient::open(node.addr, "/ws");
    let client_port = c.stream.local_addr().unwrap().port();
    let timer = server_socket_timer(node.addr.port(), client_port).expect("the server socket in /proc/net/tcp");
    // "02:" is the keepalive timer; its expiry is in jiffies, under 30 s.
    assert!(timer.starts_with("02:"), "timer {timer}");
    let off = NodeProc::start(&["--keepalive", "0"]);
    let c = RawClient::open(off.addr, "/ws");
    let timer = server_socket_timer(off.addr.port(), c.stream.local_addr().unwrap().port()).unwrap();
    assert!(timer.starts_with("00:"), "timer {timer}");
}

#[test]
fn a_message_left_unfinished_is_cut_off_after_the_message_timeout() {
    let node = NodeProc::start(&["--message-timeout", "1"]);
    // Half a frame, then silence.
    let mut half = RawClient::open(node.addr, "/ws");
    let big = text(&format!(r#"{{"MessageType":"chatmsg","Data":"{}","Reciever":"x"}}"#, "a".repeat(20_000)));
    half.send(&big[..big.len() / 2]);
    // Fragments without the final one.
    let mut fragments = RawClient::open(node.addr, "/ws");
    fragments.send(&frame(false, 1, b"{\"MessageType\":"));
    let start = std::time::Instant::now();
    for c in [&mut half, &mut fragments] {
        let (code, reason) = c.expect_close();
        assert_eq!(code, 1008);
        assert!(reason.contains("not completed within 1 s"), "{reason}");
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(4), "{waited:?}");
    // A client that finishes its messages, however large, is left alone.
    let mut steady = RawClient::open(node.addr, "/ws");
    steady.send(&text(LOGIN_ALICE));
    for i in 0..3 {
        let msg = text(&self_chat("alice", &format!("part {i}")));
        steady.send(&msg[..5]);
        std::thread::sleep(Duration::from_millis(600));
        steady.send(&msg[5..]);
        assert_eq!(steady.read_text(), chat_bytes(&format!("part {i}"), "alice", "alice"));
    }
}
