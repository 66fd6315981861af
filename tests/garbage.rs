//! Bad input never crashes, hangs or leaks: hundreds of clients send random
//! bytes (after a valid upgrade, and instead of one) and random frames with
//! random JSON-ish payloads; afterwards the node still serves a fresh client
//! and holds no connection or name of theirs. The parsers, the token
//! verifier and the name profile take random and mutated input without a
//! panic, and the verifier accepts nothing it did not see signed.

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
    use switchboard::auth::OriginPolicy;
    use switchboard::handshake::{handle, Routes};
    use switchboard::{codec, protocol};
    let origins = OriginPolicy::new(&["https://*.example.com".to_string()], true).unwrap();
    let routes = Routes { ws_path: "/ws", echo_path: Some("/echo"), max_header_bytes: 8192, origins: &origins };
    let mut noise = Noise(0x5EED);
    let mut out = Vec::new();
    for _ in 0..50_000 {
        let json = noise.jsonish();
        if let Ok(text) = std::str::from_utf8(&json) {
            let _ = protocol::parse(text);
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

/// Characters names are made of in the noise: plain, capitals, fullwidth,
/// Cyrillic and Greek look-alikes, marks, invisibles, bidi controls, spaces,
/// unassigned and private-use code points, CJK, emoji.
const NAME_PIECES: [char; 32] = [
    'a', 'l', 'i', 'c', 'e', 'A', 'Z', '0', '_', ' ', '\u{a0}', '\u{3000}', 'ａ', 'Ａ', 'а', 'ο', 'é', '\u{301}',
    '\u{307}', '\u{200b}', '\u{200d}', '\u{202e}', '\u{2067}', '\u{fe0f}', '\u{3164}', '\u{e000}', '\u{378}', '東',
    'か', '\u{3099}', '😀', 'ß',
];

#[test]
fn names_of_any_kind_are_judged_without_panicking_and_keys_are_stable() {
    use switchboard::names;
    let mut noise = Noise(0xA11CE);
    let mut accepted = 0;
    for _ in 0..50_000 {
        let name: String = (0..1 + noise.below(8)).map(|_| NAME_PIECES[noise.below(32) as usize]).collect();
        let looked_up = names::key(&name).to_string();
        if let Ok(key) = names::check(&name, 64) {
            accepted += 1;
            assert_eq!(&*key, looked_up, "{name:?}: a login and a lookup agree on the key");
            assert_eq!(&*names::key(&key), &*key, "{name:?}: a key is its own key");
        }
    }
    // The noise reached both sides of the profile.
    assert!(accepted > 1_000 && accepted < 49_000, "{accepted} of 50000 accepted");
}

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_800_000_000;
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64url(noise: &mut Noise, n: usize) -> String {
    (0..n).map(|_| B64URL[noise.below(64) as usize] as char).collect()
}

/// A token of random bytes, random base64url parts, or real JSON headers
/// and claims (any alg) with a random signature.
fn random_token(noise: &mut Noise) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    match noise.below(3) {
        0 => {
            let n = noise.below(300) as usize;
            String::from_utf8_lossy(&noise.bytes(n)).into_owned()
        }
        1 => (0..noise.below(5))
            .map(|_| {
                let n = noise.below(60) as usize;
                b64url(noise, n)
            })
            .collect::<Vec<_>>()
            .join("."),
        _ => {
            let alg = ["none", "HS256", "HS512", "RS256", "ES256", "EdDSA", "hs256", ""][noise.below(8) as usize];
            let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let claims = format!(r#"{{"sub":"mallory","exp":{},"nbf":{}}}"#, NOW + noise.below(7200), NOW);
            let n = noise.below(90) as usize;
            format!("{header}.{}.{}", URL_SAFE_NO_PAD.encode(claims), b64url(noise, n))
        }
    }
}

#[test]
fn the_token_verifier_accepts_nothing_it_did_not_see_signed() {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    use switchboard::auth::Verifier;
    let secret = Verifier::from_secret(SECRET.as_bytes(), 60, None);
    let rsa_pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa.pub.pem")).unwrap();
    let rsa = Verifier::from_public_key(&rsa_pem, 60, None).unwrap();
    let mut noise = Noise(0x7E57);
    for _ in 0..20_000 {
        let token = random_token(&mut noise);
        assert!(secret.verify(&token, NOW).is_err(), "{token:?}");
        assert!(rsa.verify(&token, NOW).is_err(), "{token:?}");
    }
    // Every one-character change, deletion and cut of real tokens.
    let claims = serde_json::json!({ "sub": "alice", "exp": NOW + 3600, "iat": NOW });
    let hs = encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap());
    let rsa_key = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa.key.pem")).unwrap();
    let rs = encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(&rsa_key).unwrap());
    for (verifier, token) in [(&secret, hs.unwrap()), (&rsa, rs.unwrap())] {
        assert!(verifier.verify(&token, NOW).is_ok());
        let mut tried = 0;
        for i in 0..token.len() {
            let mut variants = vec![format!("{}{}", &token[..i], &token[i + 1..]), token[..i].to_string()];
            for _ in 0..3 {
                let c = B64URL[noise.below(64) as usize] as char;
                variants.push(format!("{}{c}{}", &token[..i], &token[i + 1..]));
            }
            variants.push(format!("{}.{}", &token[..i], &token[i..]));
            for v in variants.into_iter().filter(|v| *v != token) {
                tried += 1;
                assert!(verifier.verify(&v, NOW).is_err(), "a changed token was accepted: {v}");
            }
        }
        assert!(tried > 4 * token.len(), "{tried}");
    }
}
