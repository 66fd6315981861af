//! The server API over a real Redis Cluster of three masters (sharded
//! pub/sub): a publish and a disconnect reach users whose channels live on
//! every shard, and history is read from the master that holds the stream.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use common::api::{close_of, get, post, KEY};
use common::redis::{cluster_login, RedisCluster};
use common::{chat_bytes, connect, recv_text, NodeProc};
use serde_json::json;

#[test]
fn publish_disconnect_and_history_reach_every_shard() {
    let cluster = RedisCluster::start(3);
    let url = cluster.url();
    let args = ["--redis", &url, "--reactors", "1", "--api-key", KEY];
    let (api_node, user_node) = (NodeProc::start(&args), NodeProc::start(&args));
    let names = cluster.names_on_every_master(1);
    for name in &names {
        let mut ws = connect(&user_node.url("/ws"));
        assert!(cluster_login(&mut ws, name));
        let published = post(&api_node, "/api/publish", &format!(r#"{{"Reciever":"{name}","Data":"hi"}}"#));
        assert_eq!(published.body["Result"], "delivered", "{name}: {published:?}");
        assert_eq!(recv_text(&mut ws), chat_bytes("hi", name, "server"));
        let closed = post(&api_node, "/api/disconnect", &format!(r#"{{"User":"{name}"}}"#));
        assert_eq!(closed.body["Found"], "another node", "{name}: {closed:?}");
        assert_eq!(close_of(&mut ws).0, 4000);

        let stream = format!("sb:h:{{{name}}}");
        let master = cluster.node(cluster.master_port_of(&stream));
        master.command(&["XADD", &stream, "7-1", "p", "stored"]).unwrap();
        let history = get(&api_node, &format!("/api/history?user={name}"));
        assert_eq!(history.body["Entries"], json!([{"Offset":"7-1","Message":"stored"}]), "{name}: {history:?}");
    }
}
