//! Nodes joined through a real Redis Cluster of three masters: targeted
//! routing over sharded pub/sub, users whose channels live on different
//! shards, the registry across slots, a slot that moves mid-chat, and rooms
//! and presence over the shards.

mod common;

use std::time::{Duration, Instant};

use common::redis::{cluster_login, login_round_robin, try_recv, RedisCluster};
use common::*;

#[test]
fn chat_crosses_nodes_over_sharded_pubsub_and_follows_a_slot_move() {
    let cluster = RedisCluster::start(3);
    let nodes: Vec<NodeProc> =
        (0..3).map(|_| NodeProc::start(&["--redis", &cluster.url(), "--reactors", "1"])).collect();
    let names = cluster.names_on_every_master(2);
    let mut clients = login_round_robin(&nodes, &names);
    // Every channel is a shard channel on the master that owns its slot.
    for name in &names {
        let channel = format!("sb:u:{{{name}}}");
        let port = cluster.master_port_of(&channel);
        let master = cluster.nodes.iter().find(|n| n.port == port).unwrap();
        let count = master.cli(&["pubsub", "shardnumsub", &channel]);
        assert!(count.ends_with("1\n"), "{channel} on {port}: {count:?}");
    }
    for from in 0..names.len() {
        let to = (from + 1) % names.len();
        let data = format!("m{from}");
        chat(&mut clients[from], &names[to], &data);
        assert_eq!(recv_text(&mut clients[to]), chat_bytes(&data, &names[to], &names[from]));
    }
    // The registry works across slots: a second login elsewhere is refused.
    let mut impostor = connect(&nodes[1].url("/ws"));
    assert!(!cluster_login(&mut impostor, &names[0]));

    // Move the slot of names[1]'s channel (and registry key) to another master.
    let moving = &names[1];
    let channel = format!("sb:u:{{{moving}}}");
    let slot = cluster.nodes[0].cli(&["cluster", "keyslot", &channel]).trim().to_string();
    let src_port = cluster.master_port_of(&channel);
    let src = cluster.nodes.iter().find(|n| n.port == src_port).unwrap();
    let dst = cluster.nodes.iter().find(|n| n.port != src_port).unwrap();
    let src_id = src.cli(&["cluster", "myid"]).trim().to_string();
    let dst_id = dst.cli(&["cluster", "myid"]).trim().to_string();
    assert!(dst.cli(&["cluster", "setslot", &slot, "importing", &src_id]).contains("OK"));
    assert!(src.cli(&["cluster", "setslot", &slot, "migrating", &dst_id]).contains("OK"));
    let keys = src.cli(&["cluster", "getkeysinslot", &slot, "100"]);
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let reply = src.cli(&["migrate", "127.0.0.1", &dst.port.to_string(), key, "0", "5000"]);
        assert!(reply.contains("OK"), "MIGRATE {key}: {reply}");
    }
    for node in &cluster.nodes {
        assert!(node.cli(&["cluster", "setslot", &slot, "node", &dst_id]).contains("OK"));
    }
    assert_eq!(cluster.master_port_of(&channel), dst.port);
    let moved = Instant::now();
    let mut probe = 0;
    loop {
        assert!(moved.elapsed() < Duration::from_secs(5), "delivery to {moving} did not resume after its slot moved");
        probe += 1;
        chat(&mut clients[0], moving, &format!("p{probe}"));
        if try_recv(&mut clients[1], Duration::from_millis(200)).is_some() {
            break;
        }
    }
    eprintln!("delivery followed the slot move after {:?}", moved.elapsed());
    let count = dst.cli(&["pubsub", "shardnumsub", &channel]);
    assert!(count.ends_with("1\n"), "{channel} not subscribed on its new master: {count:?}");
}

#[test]
fn rooms_use_sharded_pubsub_and_their_members_live_on_the_rooms_master() {
    let cluster = RedisCluster::start(3);
    let nodes: Vec<NodeProc> = (0..2)
        .map(|_| NodeProc::start(&["--redis", &cluster.url(), "--reactors", "1", "--join-notices", "false"]))
        .collect();
    // Rooms named like users that land on every master.
    let rooms = cluster.names_on_every_master(1);
    let names = ["ann", "ben"];
    let mut clients = login_round_robin(&nodes, &names.map(String::from));
    for room in &rooms {
        for (client, name) in clients.iter_mut().zip(names) {
            send(client, &format!(r#"{{"MessageType":"joinmsg","Reciever":"{room}"}}"#));
            // Its own confirmation only (quiet rooms).
            let joined = recv_text(client);
            assert!(joined.contains(&format!("\"Sender\":\"{name}\"")), "{joined}");
        }
        let channel = format!("sb:r:{{{room}}}");
        let master = cluster.node(cluster.master_port_of(&channel));
        assert!(
            common::wait_until(Duration::from_secs(5), || master
                .cli(&["pubsub", "shardnumsub", &channel])
                .ends_with("2\n")),
            "{channel} not subscribed by both nodes on its master"
        );
        send(&mut clients[0], &format!(r#"{{"MessageType":"roommsg","Data":"hi {room}","Reciever":"{room}"}}"#));
        for client in clients.iter_mut() {
            let got = recv_text(client);
            assert!(got.contains(&format!("\"Data\":\"hi {room}\"")), "{got}");
        }
        send(&mut clients[1], &format!(r#"{{"MessageType":"membersmsg","Reciever":"{room}"}}"#));
        let v: serde_json::Value = serde_json::from_str(&recv_text(&mut clients[1])).unwrap();
        assert_eq!(v["Count"], 2, "{v}");
    }
    // Presence asks each user's channel on its own master.
    send(&mut clients[0], r#"{"MessageType":"presencemsg","Reciever":"ben,nobody"}"#);
    let v: serde_json::Value = serde_json::from_str(&recv_text(&mut clients[0])).unwrap();
    assert_eq!(v["Data"], "ben");
}
