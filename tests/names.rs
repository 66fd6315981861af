//! Names that cannot impersonate: with `alice` online, every look-alike
//! either is her (`"User already exists"`) or is refused with a reason; a
//! message to any spelling of a name reaches its holder, who is shown to
//! others as they spelled their own name. Across nodes too, through Redis,
//! whose registry holds the key.

// Helpers of tests: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::raw::{text, RawClient};
use common::redis::RedisServer;
use common::NodeProc;

const USER_EXISTS: &str = "\"User already exists\"\n";

fn login(c: &mut RawClient, name: &str) {
    let name = serde_json::to_string(name).unwrap();
    c.send(&text(&format!(r#"{{"MessageType":"loginmsg","Sender":{name}}}"#)));
}

fn chat(c: &mut RawClient, to: &str, data: &str) {
    let to = serde_json::to_string(to).unwrap();
    c.send(&text(&format!(r#"{{"MessageType":"chatmsg","Data":"{data}","Reciever":{to}}}"#)));
}

fn whoami(c: &mut RawClient) -> String {
    c.send(&text(r#"{"MessageType":"whoamimsg"}"#));
    let reply: serde_json::Value = serde_json::from_str(&c.read_text()).unwrap();
    reply["Data"].as_str().unwrap().to_string()
}

/// A chat message as received: (Data, Reciever, Sender).
fn received(c: &mut RawClient) -> (String, String, String) {
    let v: serde_json::Value = serde_json::from_str(&c.read_text()).unwrap();
    assert_eq!(v["MessageType"], "chatmsg", "{v}");
    let field = |k: &str| v[k].as_str().unwrap().to_string();
    (field("Data"), field("Reciever"), field("Sender"))
}

/// Logs `name` in on a fresh connection and returns it with the reply (None: no reply, logged in).
fn try_login(node: &NodeProc, name: &str) -> (RawClient, Option<String>) {
    let mut c = RawClient::open(node.addr, "/ws");
    login(&mut c, name);
    c.send(&text(r#"{"MessageType":"whoamimsg"}"#));
    let first = c.read_text();
    if first.contains("whoamimsg") {
        assert!(!first.contains("\"Data\":\"\""), "{name:?}: no reply and not logged in: {first}");
        return (c, None);
    }
    assert!(c.read_text().contains("\"Data\":\"\""), "{name:?} refused yet logged in");
    (c, Some(first))
}

fn error_data(reply: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(reply).unwrap();
    assert_eq!(v["MessageType"], "errormsg", "{reply}");
    v["Data"].as_str().unwrap().to_string()
}

#[test]
fn look_alikes_of_an_online_user_are_her_or_refused() {
    let node = NodeProc::start(&["--reactors", "2"]);
    let (mut alice, reply) = try_login(&node, "alice");
    assert_eq!(reply, None);
    let same = Some(USER_EXISTS);
    let cases: [(&str, Option<&str>); 9] = [
        ("Alice", same),
        ("ALICE", same),
        ("ａｌｉｃｅ", same),
        ("alice\u{0307}", same),
        ("alice\u{200B}", Some("Sender must not contain invisible or format characters (U+200B)")),
        ("\u{0430}lice", Some("Sender mixes scripts")),
        ("alice ", Some("Sender must not begin or end with whitespace")),
        ("\u{202E}ecila", Some("Sender must not contain bidirectional controls (U+202E)")),
        ("\u{3164}alice", Some("Sender must not contain invisible or format characters (U+3164)")),
    ];
    for (name, expected) in cases {
        let (_c, reply) = try_login(&node, name);
        let reply = reply.unwrap_or_else(|| panic!("{name:?} logged in beside alice"));
        match expected {
            Some(USER_EXISTS) => assert_eq!(reply, USER_EXISTS, "{name:?}"),
            Some(why) => assert!(error_data(&reply).starts_with(why), "{name:?}: {reply}"),
            None => unreachable!(),
        }
    }
    // café in NFC and in NFD is one user.
    let (_cafe, reply) = try_login(&node, "caf\u{e9}");
    assert_eq!(reply, None);
    assert_eq!(try_login(&node, "cafe\u{301}").1.as_deref(), Some(USER_EXISTS));
    // Nothing of that reached alice; she is still herself.
    assert_eq!(whoami(&mut alice), "alice");
}

#[test]
fn any_spelling_of_a_name_reaches_its_holder_who_is_shown_as_they_chose() {
    let node = NodeProc::start(&["--reactors", "2"]);
    let (mut bob, _) = try_login(&node, "Bob");
    let (mut zoe, _) = try_login(&node, "Zoë");
    for spelling in ["bob", "BOB", "Ｂｏｂ", "Bob"] {
        chat(&mut zoe, spelling, "hi");
        assert_eq!(received(&mut bob), ("hi".into(), spelling.into(), "Zoë".into()), "{spelling:?}");
    }
    // Zoë in NFD reaches Zoë; so does "zoe" (marks on Latin letters are not part of the key).
    for spelling in ["zoe\u{308}", "ZOE", "zoe"] {
        chat(&mut bob, spelling, "back");
        assert_eq!(received(&mut zoe), ("back".into(), spelling.into(), "Bob".into()), "{spelling:?}");
    }
    // A name no one may hold reaches no one.
    chat(&mut bob, "zoe\u{200B}", "lost");
    assert!(error_data(&bob.read_text()).contains("is not online"));
}

#[test]
fn across_nodes_the_registry_and_channels_use_the_key() {
    let redis = RedisServer::start();
    let a = NodeProc::start(&["--redis", &redis.url()]);
    let b = NodeProc::start(&["--redis", &redis.url()]);
    let (mut alice, reply) = try_login(&a, "Alice");
    assert_eq!(reply, None);
    assert_eq!(redis.command(&["EXISTS", "sb:reg:{alice}"]).as_deref(), Some(":1\r\n"));
    assert_eq!(try_login(&b, "ａｌｉｃｅ").1.as_deref(), Some(USER_EXISTS));
    let (mut carol, _) = try_login(&b, "carol");
    chat(&mut carol, "ALICE", "over there");
    assert_eq!(received(&mut alice), ("over there".into(), "ALICE".into(), "carol".into()));
    drop(alice);
    // Her key comes free in the registry when she leaves.
    assert!(common::wait_until(std::time::Duration::from_secs(3), || {
        redis.command(&["EXISTS", "sb:reg:{alice}"]).as_deref() == Some(":0\r\n")
    }));
}
