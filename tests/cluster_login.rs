//! A seed client logs in and chats at once, without waiting for anything:
//! on a Redis-joined node the login is decided by the cluster registry, and
//! what the client sends meanwhile waits for that decision instead of failing.

mod common;

use common::raw::{text, upgrade_request, RawClient};
use common::redis::{RedisServer, SlowSubscribeProxy};
use common::{chat_bytes, NodeProc};

#[test]
fn chat_sent_in_the_same_packet_as_the_login_is_delivered() {
    let redis = RedisServer::start();
    let a = NodeProc::start(&["--redis", &redis.url()]);
    let b = NodeProc::start(&["--redis", &redis.url()]);

    let mut bob = RawClient::connect(b.addr);
    let mut bytes = upgrade_request("/ws").into_bytes();
    bytes.extend(text(r#"{"MessageType":"loginmsg","Sender":"bob"}"#));
    bytes.extend(text(r#"{"MessageType":"chatmsg","Data":"me first","Reciever":"bob"}"#));
    bob.send(&bytes);
    bob.read_http_head();
    assert_eq!(bob.read_text(), chat_bytes("me first", "bob", "bob"));

    let mut alice = RawClient::connect(a.addr);
    let mut bytes = upgrade_request("/ws").into_bytes();
    bytes.extend(text(r#"{"MessageType":"loginmsg","Sender":"alice"}"#));
    bytes.extend(text(r#"{"MessageType":"chatmsg","Data":"hi across","Reciever":"bob"}"#));
    alice.send(&bytes);
    alice.read_http_head();
    assert_eq!(bob.read_text(), chat_bytes("hi across", "bob", "alice"));

    // A refused login answers the seed's way, and what followed it is then
    // treated as coming from a client that is not logged in.
    let mut second = RawClient::connect(a.addr);
    let mut bytes = upgrade_request("/ws").into_bytes();
    bytes.extend(text(r#"{"MessageType":"loginmsg","Sender":"bob"}"#));
    bytes.extend(text(r#"{"MessageType":"chatmsg","Data":"as bob?","Reciever":"alice"}"#));
    second.send(&bytes);
    second.read_http_head();
    assert_eq!(second.read_text(), "\"User already exists\"\n");
    assert!(second.read_text().contains("log in first"));
}

#[test]
fn a_client_that_hangs_up_while_its_login_is_pending_is_let_go() {
    let redis = RedisServer::start();
    let node = NodeProc::start(&["--redis", &redis.url()]);
    let mut first = RawClient::open(node.addr, "/ws");
    first.send(&text(r#"{"MessageType":"loginmsg","Sender":"early"}"#));
    first.send(&text(r#"{"MessageType":"chatmsg","Data":"x","Reciever":"early"}"#));
    first.read_text();
    // Redis frozen: the next login stays pending; its client gives up.
    redis.pause();
    let mut waiting = RawClient::open(node.addr, "/ws");
    waiting.send(&text(r#"{"MessageType":"loginmsg","Sender":"late"}"#));
    std::thread::sleep(std::time::Duration::from_millis(200));
    drop(waiting);
    // The node lets go of the connection at once.
    let open = || node.metric("switchboard_connections");
    let gone = common::wait_until(std::time::Duration::from_secs(3), || open() == 1);
    redis.resume();
    assert!(gone, "{} connections still open", open());
}

/// A node starts on the port where a dead node's clients come back: their
/// names are still held by the dead node's lease, and the new node's Redis
/// links fail their first attempts after its check at start passed. Their logins, sent the
/// moment the new node's port accepts (before it says it listens), are
/// decided by Redis ("User already exists"), never granted by the outage
/// rules and taken back once the links are up.
#[test]
fn a_node_that_starts_where_another_died_decides_its_first_logins_through_redis() {
    const HELD: usize = 10;
    let redis = RedisServer::start();
    let url = redis.url();
    let a = NodeProc::start(&["--redis", &url, "--lease-secs", "30"]);
    let _held: Vec<RawClient> = (0..HELD)
        .map(|i| {
            let mut held = RawClient::open(a.addr, "/ws");
            held.send(&text(&format!(r#"{{"MessageType":"loginmsg","Sender":"bob{i}"}}"#)));
            held.send(&text(&format!(r#"{{"MessageType":"chatmsg","Data":"in","Reciever":"bob{i}"}}"#)));
            assert_eq!(held.read_text(), chat_bytes("in", &format!("bob{i}"), &format!("bob{i}")));
            held
        })
        .collect();
    a.signal(libc::SIGKILL);
    let port = common::ports::free_port(false);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let listen = addr.to_string();
    // Its links' first attempts fail after its check at start passed: a node that
    // served before they were up would decide these logins by the outage rules.
    let proxy = SlowSubscribeProxy::refusing_links(&redis, 4);
    let via = proxy.url();
    let starting = std::thread::spawn(move || {
        NodeProc::start_on(&listen, &["--redis", &via, "--lease-secs", "30", "--redis-timeout-ms", "3000"])
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let first = loop {
        if let Ok(stream) = std::net::TcpStream::connect(addr) {
            break stream;
        }
        assert!(std::time::Instant::now() < deadline, "the new node never bound {addr}");
        std::thread::sleep(std::time::Duration::from_micros(200));
    };
    // Every held name, the first the moment the port accepts.
    let streams = std::iter::once(first).chain((1..HELD).map(|_| std::net::TcpStream::connect(addr).expect("connect")));
    let mut clients: Vec<RawClient> = streams
        .enumerate()
        .map(|(i, stream)| {
            let mut bob = RawClient::from_stream(stream);
            let mut bytes = upgrade_request("/ws").into_bytes();
            bytes.extend(text(&format!(r#"{{"MessageType":"loginmsg","Sender":"bob{i}"}}"#)));
            bytes.extend(text(&format!(r#"{{"MessageType":"chatmsg","Data":"granted?","Reciever":"bob{i}"}}"#)));
            bob.send(&bytes);
            bob
        })
        .collect();
    for (i, bob) in clients.iter_mut().enumerate() {
        bob.read_http_head();
        assert_eq!(bob.read_text(), "\"User already exists\"\n", "bob{i}'s first login was not decided by Redis");
    }
    drop(starting.join().expect("the new node started"));
}
