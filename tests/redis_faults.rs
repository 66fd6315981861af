//! Redis goes away in the middle of cross-node chat (`kill -9`) and comes
//! back empty on the same port: local chat never stops, and cross-node
//! delivery resumes within 5 s for every user, with every name re-registered.

mod common;

use std::time::{Duration, Instant};

use common::redis::{cluster_login, try_recv, RedisServer};
use common::*;

#[test]
fn delivery_resumes_for_every_user_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let nodes: Vec<NodeProc> = (0..3).map(|_| NodeProc::start(&["--redis", &redis.url(), "--reactors", "2"])).collect();
    // Per node: 4 senders, 4 recipients (whose senders are on the next node),
    // and a local pair that chats through the outage.
    const PER_NODE: usize = 4;
    let mut senders = Vec::new();
    let mut recipients = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for k in 0..PER_NODE {
            let mut s = connect(&node.url("/ws"));
            assert!(cluster_login(&mut s, &format!("s{n}-{k}")));
            senders.push((s, format!("s{n}-{k}"), format!("r{}-{k}", (n + 1) % 3)));
            let mut r = connect(&node.url("/ws"));
            assert!(cluster_login(&mut r, &format!("r{n}-{k}")));
            recipients.push(r);
        }
    }
    let recipient_index = |name: &str| {
        let (n, k) = name[1..].split_once('-').unwrap();
        n.parse::<usize>().unwrap() * PER_NODE + k.parse::<usize>().unwrap()
    };
    let mut local_a = connect(&nodes[0].url("/ws"));
    let mut local_b = connect(&nodes[0].url("/ws"));
    assert!(cluster_login(&mut local_a, "local-a"));
    assert!(cluster_login(&mut local_b, "local-b"));

    for (s, from, to) in senders.iter_mut() {
        chat(s, to, "before");
        let r = &mut recipients[recipient_index(to)];
        assert_eq!(recv_text(r), chat_bytes("before", to, from));
    }

    redis.kill9();
    assert!(wait_until(Duration::from_secs(5), || nodes.iter().all(|n| n.metric("switchboard_bus_connected") == 0)));
    for i in 0..5 {
        let data = format!("outage {i}");
        chat(&mut local_a, "local-b", &data);
        assert_eq!(recv_text(&mut local_b), chat_bytes(&data, "local-b", "local-a"));
        std::thread::sleep(Duration::from_millis(100));
    }

    redis.restart();
    let back = Instant::now();
    let mut waiting: Vec<usize> = (0..senders.len()).collect();
    let mut probe = 0;
    while !waiting.is_empty() {
        assert!(
            back.elapsed() < Duration::from_secs(5),
            "cross-node delivery did not resume within 5 s for {:?}",
            waiting.iter().map(|&i| &senders[i].1).collect::<Vec<_>>()
        );
        probe += 1;
        let data = format!("after {probe}");
        for &i in &waiting {
            let (s, _, to) = &mut senders[i];
            chat(s, to, &data);
        }
        std::thread::sleep(Duration::from_millis(100));
        waiting.retain(|&i| {
            let (_, from, to) = &senders[i];
            let r = &mut recipients[recipient_index(to)];
            let mut got = false;
            while let Some(text) = try_recv(r, Duration::from_millis(5)) {
                assert!(text.contains(&format!("\"Sender\":\"{from}\"")), "{text}");
                got = true;
            }
            !got
        });
    }
    eprintln!("cross-node delivery resumed for every user {:?} after Redis came back", back.elapsed());
    // Every name was registered again: a second login elsewhere is refused.
    let mut impostor = connect(&nodes[1].url("/ws"));
    assert!(!cluster_login(&mut impostor, "s0-0"));
    assert!(nodes[0].metric("switchboard_bus_reconnects_total") >= 1);
    assert_eq!(nodes[0].metric("switchboard_bus_subscriptions"), 2 * PER_NODE as u64 + 2);
}

/// A login on a clustered node, decided within `bound`: whether it was accepted.
fn login_within(ws: &mut common::Ws, name: &str, bound: Duration) -> bool {
    let started = Instant::now();
    let accepted = cluster_login(ws, name);
    assert!(started.elapsed() < bound, "the login of {name} took {:?}", started.elapsed());
    accepted
}

/// Redis hangs (SIGSTOP) past the PING timeout, so every link gives it up
/// with commands unanswered, then goes on (SIGCONT): logins after that are
/// decided at once and correctly, and cross-node chat works. `--lease-secs 3`
/// makes the PING timeout 2 s after 1 s of silence (`PingTimers::for_lease`).
#[test]
fn logins_are_decided_after_redis_hangs_and_resumes() {
    let redis = RedisServer::start();
    let args = ["--redis", &redis.url(), "--lease-secs", "3"];
    let a = NodeProc::start(&args);
    let b = NodeProc::start(&args);
    let mut alice = connect(&a.url("/ws"));
    let mut dave = connect(&b.url("/ws"));
    assert!(cluster_login(&mut alice, "alice"));
    assert!(cluster_login(&mut dave, "dave"));
    chat(&mut alice, "dave", "before");
    assert_eq!(recv_text(&mut dave), chat_bytes("before", "dave", "alice"));

    redis.pause();
    // Sent to a Redis that answers nothing. Either it was written and stays
    // unconfirmed when the link is given up (counted lost, alice told), or it
    // waited behind a command already in flight and is sent once the link is
    // back (dave gets it then): never both, never neither.
    chat(&mut alice, "dave", "while hung");
    // Redis cannot answer eve's claim: it is decided (granted locally) only
    // once the PING timeout gives the publisher's link up.
    let mut eve = connect(&a.url("/ws"));
    assert!(login_within(&mut eve, "eve", Duration::from_secs(6)), "a login while Redis hangs is granted locally");
    assert!(
        wait_until(Duration::from_secs(10), || a.metric("switchboard_bus_connected") == 0),
        "the PING timeout did not give up the hung Redis"
    );
    std::thread::sleep(Duration::from_secs(2));
    let told_lost = a.metric("switchboard_bus_publish_lost_total") == 1;
    redis.resume();
    assert!(wait_until(Duration::from_secs(10), || [&a, &b]
        .iter()
        .all(|n| n.metric("switchboard_bus_connected") == 1)));
    let delivered = try_recv(&mut dave, Duration::from_secs(2));
    if told_lost {
        let told = recv_text(&mut alice);
        assert!(told.contains("errormsg") && told.contains("may not have been delivered"), "{told}");
        assert_eq!(delivered, None, "a message counted lost was delivered too");
    } else {
        assert_eq!(delivered, Some(chat_bytes("while hung", "dave", "alice")), "neither told lost nor delivered");
    }
    eprintln!("the message sent while Redis hung was {}", if told_lost { "told lost" } else { "delivered late" });

    let bound = Duration::from_secs(3);
    let mut bob = connect(&a.url("/ws"));
    let mut carol = connect(&b.url("/ws"));
    assert!(login_within(&mut bob, "bob", bound));
    assert!(login_within(&mut carol, "carol", bound));
    assert!(!login_within(&mut connect(&b.url("/ws")), "bob", bound), "a second bob was accepted");
    assert!(!login_within(&mut connect(&a.url("/ws")), "carol", bound), "a second carol was accepted");
    chat(&mut bob, "carol", "after");
    assert_eq!(recv_text(&mut carol), chat_bytes("after", "carol", "bob"));
    chat(&mut carol, "bob", "back");
    assert_eq!(recv_text(&mut bob), chat_bytes("back", "bob", "carol"));
}
