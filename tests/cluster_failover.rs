//! A Redis Cluster master dies (`kill -9`) under three nodes chatting over
//! sharded pub/sub; its replica is promoted. Local chat never stops, and
//! within 10 s of the promotion cross-node delivery resumes for every user,
//! every channel is subscribed on its (new) master, and a new login whose
//! name lives on the promoted master is decided.

mod common;

use std::time::{Duration, Instant};

use common::redis::{cluster_login, login_round_robin, try_recv, RedisCluster};
use common::*;

/// `cluster-node-timeout`: short, so the failover takes a few seconds.
const NODE_TIMEOUT_MS: u64 = 1000;
/// How long the cluster may take to promote a replica.
const PROMOTION_BOUND: Duration = Duration::from_secs(15);
/// How long after the promotion delivery may take to resume for every user.
const RESUME_BOUND: Duration = Duration::from_secs(10);

/// Reads `ws` until a text containing `tag` arrives (skipping late probes and
/// the sender's error replies), or `timeout` passes.
fn recv_tagged(ws: &mut Ws, tag: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match try_recv(ws, left.max(Duration::from_millis(1))) {
            Some(text) if text.contains(tag) => return true,
            Some(_) => {}
            None => return false,
        }
    }
    false
}

/// Reads and drops whatever is waiting on `ws`.
fn drain(ws: &mut Ws) {
    while try_recv(ws, Duration::from_millis(50)).is_some() {}
}

#[test]
fn delivery_follows_a_master_failover() {
    let mut cluster = RedisCluster::start_with(3, 1, NODE_TIMEOUT_MS);
    let nodes: Vec<NodeProc> =
        (0..3).map(|_| NodeProc::start(&["--redis", &cluster.url(), "--reactors", "1"])).collect();
    // Two names per master; user i on node i % 3, so names[i] and names[i + 3]
    // share a node (local chat) and every node holds channels on two shards.
    let names = cluster.names_on_every_master(2);
    let mut clients = login_round_robin(&nodes, &names);
    let n = names.len();
    for from in 0..n {
        let to = (from + 1) % n;
        chat(&mut clients[from], &names[to], &format!("m{from}"));
        assert_eq!(recv_text(&mut clients[to]), chat_bytes(&format!("m{from}"), &names[to], &names[from]));
    }

    // Kill the master that serves names[0]'s channel.
    let victim = cluster.master_port_of(&format!("sb:u:{{{}}}", names[0]));
    let replicas = cluster.replica_ports_of(victim);
    assert_eq!(replicas.len(), 1, "master {victim} should have one replica");
    cluster.kill9(victim);
    let killed = Instant::now();

    // Local chat goes on while the cluster fails over.
    let mut local_rounds = 0;
    let promoted = loop {
        assert!(killed.elapsed() < PROMOTION_BOUND, "no replica of {victim} was promoted");
        local_rounds += 1;
        let tag = format!("local{local_rounds}");
        chat(&mut clients[0], &names[3], &tag);
        assert!(
            recv_tagged(&mut clients[3], &tag, Duration::from_secs(1)),
            "local chat stopped {:?} after the master died",
            killed.elapsed()
        );
        let owner = cluster.master_port_of(&format!("sb:u:{{{}}}", names[0]));
        if owner != victim && cluster.state_ok() {
            break owner;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let promotion = Instant::now();
    eprintln!("replica {promoted} promoted {:?} after master {victim} died", killed.elapsed());
    assert_eq!(replicas, vec![promoted]);

    // Every user gets a probe from a user on another node, until it arrives.
    let mut probe = 0;
    for to in 0..n {
        let from = (to + 1) % n;
        loop {
            assert!(
                promotion.elapsed() < RESUME_BOUND,
                "delivery to {} did not resume within {RESUME_BOUND:?} of the promotion",
                names[to]
            );
            probe += 1;
            let tag = format!("probe{probe}");
            chat(&mut clients[from], &names[to], &tag);
            if recv_tagged(&mut clients[to], &tag, Duration::from_millis(300)) {
                break;
            }
        }
    }
    eprintln!("delivery resumed for all {n} users {:?} after the promotion", promotion.elapsed());

    // No subscription lost: each channel is subscribed once, on its master now.
    for name in &names {
        let channel = format!("sb:u:{{{name}}}");
        let port = cluster.master_port_of(&channel);
        let count = cluster.node(port).cli(&["pubsub", "shardnumsub", &channel]);
        assert!(count.ends_with("1\n"), "{channel} on {port}: {count:?}");
    }
    // Every link of every node is up again (the dead master is forgotten).
    for node in &nodes {
        assert!(
            wait_until(RESUME_BOUND, || node.metric("switchboard_bus_connected") == 1),
            "a node still reports a Redis link down"
        );
    }
    // A clean round: exact bytes, nothing else waiting.
    for ws in clients.iter_mut() {
        drain(ws);
    }
    for from in 0..n {
        let to = (from + 1) % n;
        chat(&mut clients[from], &names[to], &format!("after{from}"));
        assert_eq!(recv_text(&mut clients[to]), chat_bytes(&format!("after{from}"), &names[to], &names[from]));
    }
    // The registry works on the promoted master: a new name there logs in
    // once, and a second login of it elsewhere is refused.
    let fresh = (0..)
        .map(|i| format!("fresh{i}"))
        .find(|name| cluster.master_port_of(&format!("sb:u:{{{name}}}")) == promoted)
        .expect("a name on the promoted master");
    let mut first = connect(&nodes[1].url("/ws"));
    assert!(cluster_login(&mut first, &fresh));
    let mut second = connect(&nodes[2].url("/ws"));
    assert!(!cluster_login(&mut second, &fresh));
    chat(&mut clients[0], &fresh, "welcome");
    assert_eq!(recv_text(&mut first), chat_bytes("welcome", &fresh, &names[0]));
}
