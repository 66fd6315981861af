//! Bad input never crashes, hangs or leaks: hundreds of clients send random
//! bytes (after a valid upgrade, and instead of one) and random frames with
//! random JSON-ish payloads; afterwards the node still serves a fresh client
//! and holds no connection or name of theirs.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::raw::{frame, text, upgrade_request, RawClient};
use common::{chat_bytes, NodeProc};

/// xorshift64*: reproducible noise without a dependency.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Text that is often almost a chat message.
    fn jsonish(&mut self) -> Vec<u8> {
        const PIECES: [&str; 16] = [
            "{",
            "}",
            "\"MessageType\"",
            ":",
            "\"loginmsg\"",
            "\"chatmsg\"",
            ",",
            "\"Sender\"",
            "\"Reciever\"",
            "\"Data\"",
            "\"x\"",
            "null",
            "[1,{\"a\":[]}]",
            "\"\\u00e9\\ud83d\\ude00\"",
            "\"\\",
            "9e999",
        ];
        let mut out = Vec::new();
        for _ in 0..self.below(24) {
            out.extend_from_slice(PIECES[self.below(16) as usize].as_bytes());
        }
        out
    }
}

fn send_noise(node: &NodeProc, seed: u64) {
    let mut noise = Noise(seed);
    let Ok(mut s) = TcpStream::connect(node.addr) else { return };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let mut bytes = Vec::new();
    match noise.below(4) {
        // Not even HTTP.
        0 => {
            let n = 1 + noise.below(3000) as usize;
            bytes.extend(noise.bytes(n));
        }
        // An upgrade, then raw noise.
        1 => {
            bytes.extend(upgrade_request("/ws").into_bytes());
            let n = 1 + noise.below(3000) as usize;
            bytes.extend(noise.bytes(n));
        }
        // An upgrade, then well-formed frames with random opcodes, flags and payloads.
        mode => {
            bytes.extend(upgrade_request("/ws").into_bytes());
            if mode == 3 {
                let login = format!(r#"{{"MessageType":"loginmsg","Sender":"n{}"}}"#, noise.below(50));
                bytes.extend(text(&login));
            }
            for _ in 0..1 + noise.below(12) {
                let payload = if noise.below(3) == 0 {
                    let n = noise.below(200) as usize;
                    noise.bytes(n)
                } else {
                    noise.jsonish()
                };
                let opcode = [0u8, 1, 1, 1, 2, 8, 9, 10, 3][noise.below(9) as usize];
                let fin = noise.below(4) != 0;
                let payload = if opcode >= 8 { payload[..payload.len().min(125)].to_vec() } else { payload };
                bytes.extend(frame(fin, opcode, &payload));
            }
        }
    }
    // Sometimes cut short, as a peer that vanishes mid-frame.
    if noise.below(3) == 0 {
        let keep = noise.below(bytes.len() as u64 + 1) as usize;
        bytes.truncate(keep);
    }
    let _ = s.write_all(&bytes);
    let mut sink = [0u8; 4096];
    let _ = s.read(&mut sink);
}

#[test]
fn random_bytes_and_frames_leave_the_node_healthy() {
    let node = NodeProc::start(&["--reactors", "2", "--handshake-timeout", "1", "--message-timeout", "1"]);
    for seed in 1..=600u64 {
        send_noise(&node, seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    }
    // The noise got through to every layer.
    assert!(node.metric("switchboard_handshakes_total") > 300);
    assert!(node.metric("switchboard_messages_in_total") > 100);
    assert!(node.metric("switchboard_protocol_errors_total") > 100);
    // Every noisy connection is gone (within the timeouts), and so is every
    // name one of them may have logged in with.
    let settled = common::wait_until(Duration::from_secs(10), || {
        node.metric("switchboard_connections") == 0 && node.metric("switchboard_users") == 0
    });
    assert!(
        settled,
        "{} connections and {} users left",
        node.metric("switchboard_connections"),
        node.metric("switchboard_users")
    );
    let mut fresh = RawClient::open(node.addr, "/ws");
    fresh.send(&text(r#"{"MessageType":"loginmsg","Sender":"after"}"#));
    fresh.send(&text(r#"{"MessageType":"chatmsg","Data":"still fine","Reciever":"after"}"#));
    assert_eq!(fresh.read_text(), chat_bytes("still fine", "after", "after"));
}

#[test]
fn the_parsers_take_any_input_without_panicking() {
    use switchboard::handshake::{handle, Routes};
    use switchboard::{codec, protocol};
    let routes = Routes { ws_path: "/ws", echo_path: Some("/echo"), max_header_bytes: 8192 };
    let mut noise = Noise(0x5EED);
    let mut out = Vec::new();
    for _ in 0..50_000 {
        let json = noise.jsonish();
        if let Ok(text) = std::str::from_utf8(&json) {
            let _ = protocol::parse(text, 64);
        }
        let n = noise.below(64) as usize;
        let raw = noise.bytes(n);
        let _ = codec::parse_client_header(&raw);
        let mut request = b"GET /ws HTTP/1.1\r\n".to_vec();
        request.extend(noise.bytes(n));
        request.extend_from_slice(b"\r\n\r\n");
        out.clear();
        let _ = handle(&request, &routes, &mut out);
    }
}
