//! Broadcast routing (`--routing broadcast`) speaks the seed's scheme on the
//! same Redis as the seed's Go nodes: every chat message on channel `msg` as
//! `json.Marshal` bytes, every node delivering those whose recipient it holds.

mod common;

use std::time::Duration;

use common::redis::{cluster_login, try_recv, RedisServer, SeedPeer, SlowSubscribeProxy};
use common::*;

const SEED_CHAT: &str = r#"{"MessageType":"chatmsg","Data":"hi from go","Reciever":"bob","Sender":"gopher"}"#;

#[test]
fn a_seed_nodes_message_reaches_a_switchboard_user() {
    let redis = RedisServer::start();
    let node = NodeProc::start(&["--redis", &redis.url(), "--routing", "broadcast"]);
    let mut bob = connect(&node.url("/ws"));
    assert!(cluster_login(&mut bob, "bob"));
    let seed = SeedPeer::subscribe(&redis);
    assert!(seed.publish(SEED_CHAT) >= 2, "the node is not subscribed to msg");
    // What gorilla's WriteJSON sends: the seed's bytes plus a newline.
    assert_eq!(recv_text(&mut bob), format!("{SEED_CHAT}\n"));
}

/// A login is decided only once the node's `msg` subscription is confirmed,
/// so the next message published reaches the user, however late Redis
/// confirms the subscription (here 500 ms, behind a proxy).
#[test]
fn a_login_waits_for_the_msg_subscription() {
    let redis = RedisServer::start();
    let proxy = SlowSubscribeProxy::start(&redis, Duration::from_millis(500));
    let node = NodeProc::start(&["--redis", &proxy.url(), "--routing", "broadcast"]);
    let mut bob = connect(&node.url("/ws"));
    assert!(cluster_login(&mut bob, "bob"));
    let seed = SeedPeer::subscribe(&redis);
    assert!(seed.publish(SEED_CHAT) >= 2, "bob's login was decided before the node subscribed to msg");
    assert_eq!(recv_text(&mut bob), format!("{SEED_CHAT}\n"));
}

#[test]
fn a_switchboard_users_message_appears_on_msg_in_the_seeds_format() {
    let redis = RedisServer::start();
    let node = NodeProc::start(&["--redis", &redis.url(), "--routing", "broadcast"]);
    let mut seed = SeedPeer::subscribe(&redis);
    let mut alice = connect(&node.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    chat(&mut alice, "gopher", "hello <go>");
    assert_eq!(
        seed.next_message(),
        r#"{"MessageType":"chatmsg","Data":"hello \u003cgo\u003e","Reciever":"gopher","Sender":"alice"}"#
    );
}

#[test]
fn broadcast_nodes_chat_with_each_other_without_duplicates() {
    let redis = RedisServer::start();
    let args = ["--redis", &redis.url(), "--routing", "broadcast"];
    let nodes: Vec<NodeProc> = (0..3).map(|_| NodeProc::start(&args)).collect();
    let mut a = connect(&nodes[0].url("/ws"));
    let mut b = connect(&nodes[1].url("/ws"));
    let mut c = connect(&nodes[2].url("/ws"));
    assert!(cluster_login(&mut a, "a"));
    assert!(cluster_login(&mut b, "b"));
    assert!(cluster_login(&mut c, "c"));
    assert!(!cluster_login(&mut connect(&nodes[2].url("/ws")), "a"));
    chat(&mut a, "b", "1");
    chat(&mut b, "c", "2");
    chat(&mut c, "a", "3");
    assert_eq!(recv_text(&mut b), chat_bytes("1", "b", "a"));
    assert_eq!(recv_text(&mut c), chat_bytes("2", "c", "b"));
    assert_eq!(recv_text(&mut a), chat_bytes("3", "a", "c"));
    for ws in [&mut a, &mut b, &mut c] {
        assert_eq!(try_recv(ws, Duration::from_millis(300)), None, "a duplicate arrived");
    }
}
