//! Rooms on one node, as clients see them: joinmsg, leavemsg and roommsg
//! (every member gets a room message exactly once, the sender included, in
//! the seed's shape), join and leave notices, quiet rooms, membersmsg and
//! presencemsg, and every error and limit.
#![allow(clippy::unwrap_used)] // a failed step of a test is a failed test

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{connect, login_and_confirm, recv_text, send, NodeProc, Ws};

fn join(ws: &mut Ws, room: &str) {
    send(ws, &format!(r#"{{"MessageType":"joinmsg","Reciever":"{room}"}}"#));
}

fn say(ws: &mut Ws, room: &str, data: &str) {
    send(ws, &format!(r#"{{"MessageType":"roommsg","Data":"{data}","Reciever":"{room}","Sender":"mallory"}}"#));
}

fn room_bytes(kind: &str, data: &str, room: &str, from: &str) -> String {
    format!("{{\"MessageType\":\"{kind}\",\"Data\":\"{data}\",\"Reciever\":\"{room}\",\"Sender\":\"{from}\"}}\n")
}

fn error_of(reply: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(reply).expect("JSON");
    assert_eq!(v["MessageType"], "errormsg", "{reply}");
    v["Data"].as_str().unwrap().to_string()
}

/// A logged-in client of `node` that has joined `room` (its confirmation read).
fn member(node: &NodeProc, name: &str, room: &str) -> Ws {
    let mut ws = connect(&node.url("/ws"));
    login_and_confirm(&mut ws, name);
    join(&mut ws, room);
    assert_eq!(recv_text(&mut ws), room_bytes("joinmsg", "", room, name));
    ws
}

/// Nothing more arrives within a short while.
fn silent(ws: &mut Ws) {
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    assert!(ws.read().is_err(), "nothing more was expected");
    ws.get_ref().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
}

#[test]
fn a_room_message_reaches_every_member_once_on_every_reactor() {
    let node = NodeProc::start(&["--reactors", "2", "--join-notices", "false"]);
    let mut members: Vec<Ws> = (0..40).map(|i| member(&node, &format!("m{i}"), "lobby")).collect();
    let mut outsider = connect(&node.url("/ws"));
    login_and_confirm(&mut outsider, "outsider");
    for round in 0..5 {
        let from = round * 7 % members.len();
        say(&mut members[from], "lobby", &format!("round {round}"));
        let want = room_bytes("roommsg", &format!("round {round}"), "lobby", &format!("m{from}"));
        for m in members.iter_mut() {
            assert_eq!(recv_text(m), want);
        }
    }
    for m in members.iter_mut() {
        silent(m);
    }
    silent(&mut outsider);
}

#[test]
fn joins_and_leaves_are_announced_to_the_members() {
    let node = NodeProc::start(&[]);
    let mut alice = member(&node, "alice", "lobby");
    let mut bob = member(&node, "bob", "lobby");
    assert_eq!(recv_text(&mut alice), room_bytes("joinmsg", "", "lobby", "bob"));
    send(&mut bob, r#"{"MessageType":"leavemsg","Reciever":"lobby"}"#);
    assert_eq!(recv_text(&mut bob), room_bytes("leavemsg", "", "lobby", "bob"));
    assert_eq!(recv_text(&mut alice), room_bytes("leavemsg", "", "lobby", "bob"));
    // A member who disconnects leaves every room.
    let carol = member(&node, "carol", "lobby");
    assert_eq!(recv_text(&mut alice), room_bytes("joinmsg", "", "lobby", "carol"));
    drop(carol);
    assert_eq!(recv_text(&mut alice), room_bytes("leavemsg", "", "lobby", "carol"));
    say(&mut alice, "lobby", "still here");
    assert_eq!(recv_text(&mut alice), room_bytes("roommsg", "still here", "lobby", "alice"));
    silent(&mut bob);
}

#[test]
fn quiet_rooms_confirm_only_to_the_one_who_joins() {
    let node = NodeProc::start(&["--quiet-room", "big-*"]);
    let mut alice = member(&node, "alice", "big-news");
    let _bob = member(&node, "bob", "big-news");
    silent(&mut alice);
    let mut carol = member(&node, "carol", "chatty");
    let _dave = member(&node, "dave", "chatty");
    assert_eq!(recv_text(&mut carol), room_bytes("joinmsg", "", "chatty", "dave"));
}

#[test]
fn a_room_is_named_by_its_key() {
    let node = NodeProc::start(&[]);
    let mut alice = member(&node, "alice", "lobby");
    let mut bob = connect(&node.url("/ws"));
    login_and_confirm(&mut bob, "bob");
    join(&mut bob, "Lobby");
    assert_eq!(recv_text(&mut bob), room_bytes("joinmsg", "", "lobby", "bob"));
    assert_eq!(recv_text(&mut alice), room_bytes("joinmsg", "", "lobby", "bob"));
    say(&mut bob, "ＬＯＢＢＹ", "same room");
    assert_eq!(recv_text(&mut alice), room_bytes("roommsg", "same room", "lobby", "bob"));
}

#[test]
fn every_mistake_gets_its_errormsg_and_the_connection_stays() {
    let node = NodeProc::start(&["--max-rooms-per-conn", "2", "--max-room-members", "2", "--max-presence-names", "3"]);
    let mut anonymous = connect(&node.url("/ws"));
    join(&mut anonymous, "lobby");
    assert!(error_of(&recv_text(&mut anonymous)).starts_with("log in first"));
    let mut alice = member(&node, "alice", "a");
    let cases = [
        (r#"{"MessageType":"joinmsg"}"#, "joinmsg needs a non-empty Reciever (the room)"),
        (r#"{"MessageType":"joinmsg","Reciever":"a"}"#, "already in room \"a\""),
        (r#"{"MessageType":"roommsg","Data":"x","Reciever":"b"}"#, "not in room \"b\": join it first"),
        (r#"{"MessageType":"leavemsg","Reciever":"b"}"#, "not in room \"b\": join it first"),
        (r#"{"MessageType":"joinmsg","Reciever":"x\u202Ey"}"#, "the room name must not contain bidirectional"),
        (r#"{"MessageType":"joinmsg","Reciever":"a,b"}"#, "the room name must not contain a comma"),
        (r#"{"MessageType":"presencemsg","Reciever":"a,b,c,d"}"#, "at most 3"),
    ];
    for (request, says) in cases {
        send(&mut alice, request);
        let error = error_of(&recv_text(&mut alice));
        assert!(error.contains(says), "{request}: {error}");
    }
    join(&mut alice, "b");
    assert_eq!(recv_text(&mut alice), room_bytes("joinmsg", "", "b", "alice"));
    join(&mut alice, "c");
    assert_eq!(error_of(&recv_text(&mut alice)), "too many rooms: at most 2 per connection");
    let _bob = member(&node, "bob", "b");
    assert_eq!(recv_text(&mut alice), room_bytes("joinmsg", "", "b", "bob"));
    let mut carol = connect(&node.url("/ws"));
    login_and_confirm(&mut carol, "carol");
    join(&mut carol, "b");
    assert_eq!(error_of(&recv_text(&mut carol)), "room \"b\" is full on this node: at most 2 members");
}

#[test]
fn members_and_presence_are_answered() {
    let node = NodeProc::start(&["--max-members-listed", "2", "--reactors", "2"]);
    let mut alice = member(&node, "alice", "lobby");
    let _bob = member(&node, "bob", "lobby");
    let _carol = member(&node, "carol", "lobby");
    for _ in 0..2 {
        let _ = recv_text(&mut alice); // bob's and carol's joins
    }
    send(&mut alice, r#"{"MessageType":"membersmsg","Reciever":"Lobby"}"#);
    let v: serde_json::Value = serde_json::from_str(&recv_text(&mut alice)).unwrap();
    assert_eq!(
        (v["MessageType"].as_str(), v["Reciever"].as_str(), v["Count"].as_u64()),
        (Some("membersmsg"), Some("lobby"), Some(3))
    );
    let listed: Vec<&str> = v["Data"].as_str().unwrap().split(',').collect();
    assert_eq!(listed.len(), 2, "{v}");
    assert!(listed.iter().all(|n| ["alice", "bob", "carol"].contains(n)));
    send(&mut alice, r#"{"MessageType":"membersmsg","Reciever":"empty"}"#);
    assert_eq!(
        recv_text(&mut alice),
        "{\"MessageType\":\"membersmsg\",\"Data\":\"\",\"Reciever\":\"empty\",\"Count\":0}\n"
    );
    send(&mut alice, r#"{"MessageType":"presencemsg","Reciever":"carol,nobody,ALICE"}"#);
    assert_eq!(
        recv_text(&mut alice),
        "{\"MessageType\":\"presencemsg\",\"Data\":\"carol,ALICE\",\"Reciever\":\"carol,nobody,ALICE\"}\n"
    );
}

#[test]
fn many_rooms_many_members_each_message_once() {
    // 60 members in 6 rooms of 10 (overlapping): each gets exactly the
    // messages of its rooms.
    let node = NodeProc::start(&["--reactors", "2", "--join-notices", "false"]);
    let mut clients: Vec<(Ws, Vec<usize>)> = Vec::new();
    for i in 0..30 {
        let mut ws = connect(&node.url("/ws"));
        login_and_confirm(&mut ws, &format!("u{i}"));
        let rooms = vec![i % 6, (i + 1) % 6];
        for r in &rooms {
            join(&mut ws, &format!("r{r}"));
            let _ = recv_text(&mut ws);
        }
        clients.push((ws, rooms));
    }
    for r in 0..6 {
        let sender = clients.iter().position(|(_, rooms)| rooms.contains(&r)).unwrap();
        say(&mut clients[sender].0, &format!("r{r}"), &format!("to r{r}"));
    }
    for (ws, rooms) in clients.iter_mut() {
        let mut got: HashMap<String, usize> = HashMap::new();
        for _ in 0..rooms.len() {
            let v: serde_json::Value = serde_json::from_str(&recv_text(ws)).unwrap();
            *got.entry(v["Reciever"].as_str().unwrap().to_string()).or_default() += 1;
        }
        let want: HashMap<String, usize> = rooms.iter().map(|r| (format!("r{r}"), 1)).collect();
        assert_eq!(got, want);
        silent(ws);
    }
}
