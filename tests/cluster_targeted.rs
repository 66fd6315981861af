//! Three nodes joined through one real redis-server with targeted routing
//! (the default): chat crosses nodes both ways, a name lives in one place,
//! and a user who moves to another node gets the next message there.

mod common;

use std::time::Duration;

use common::redis::{cluster_login, RedisServer};
use common::*;

fn three_nodes(redis: &RedisServer) -> Vec<NodeProc> {
    (0..3).map(|_| NodeProc::start(&["--redis", &redis.url(), "--reactors", "2"])).collect()
}

#[test]
fn chat_crosses_nodes_both_ways() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis);
    let names = ["ann", "ben", "cat"];
    let mut clients: Vec<Ws> = nodes
        .iter()
        .zip(names)
        .map(|(node, name)| {
            let mut ws = connect(&node.url("/ws"));
            assert!(cluster_login(&mut ws, name));
            ws
        })
        .collect();
    for from in 0..3 {
        for to in 0..3 {
            if from == to {
                continue;
            }
            let data = format!("{} to {}", names[from], names[to]);
            chat(&mut clients[from], names[to], &data);
            assert_eq!(recv_text(&mut clients[to]), chat_bytes(&data, names[to], names[from]));
        }
    }
    assert!(nodes[0].metric("switchboard_bus_published_total") >= 2);
    // The subscriber counts what it received at the end of its read round,
    // which may come just after the delivery the client saw.
    assert!(wait_until(Duration::from_secs(2), || nodes[1].metric("switchboard_bus_received_total") >= 2));
    assert_eq!(nodes[2].metric("switchboard_bus_connected"), 1);
    assert_eq!(nodes[2].metric("switchboard_bus_subscriptions"), 1);
}

#[test]
fn a_name_logged_in_on_one_node_is_refused_on_another() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis);
    let mut first = connect(&nodes[0].url("/ws"));
    assert!(cluster_login(&mut first, "dora"));
    let mut second = connect(&nodes[1].url("/ws"));
    assert!(!cluster_login(&mut second, "dora"), "a second dora was let in");
    // The refused client may take another name, and the first still works.
    assert!(cluster_login(&mut second, "dora2"));
    chat(&mut second, "dora", "hello");
    assert_eq!(recv_text(&mut first), chat_bytes("hello", "dora", "dora2"));
}

#[test]
fn a_user_who_moves_to_another_node_gets_the_next_message_there() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis);
    let mut alice = connect(&nodes[0].url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    let mut bob_a = connect(&nodes[1].url("/ws"));
    assert!(cluster_login(&mut bob_a, "bob"));
    chat(&mut alice, "bob", "one");
    assert_eq!(recv_text(&mut bob_a), chat_bytes("one", "bob", "alice"));
    bob_a.close(None).expect("close");
    drop(bob_a);
    // The release travels through node 1's bus: retry until node 2 may have the name.
    let mut bob_b = connect(&nodes[2].url("/ws"));
    assert!(
        wait_until(Duration::from_secs(5), || cluster_login(&mut bob_b, "bob")),
        "bob could not log in on another node after leaving the first"
    );
    chat(&mut alice, "bob", "two");
    assert_eq!(recv_text(&mut bob_b), chat_bytes("two", "bob", "alice"));
}

#[test]
fn a_message_to_nobody_anywhere_gets_an_error() {
    let redis = RedisServer::start();
    let nodes = three_nodes(&redis);
    let mut eve = connect(&nodes[0].url("/ws"));
    assert!(cluster_login(&mut eve, "eve"));
    chat(&mut eve, "ghost", "boo");
    let reply = recv_text(&mut eve);
    assert_eq!(reply, "{\"MessageType\":\"errormsg\",\"Data\":\"recipient \\\"ghost\\\" is not online\"}\n");
}
