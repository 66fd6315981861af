//! The seed's server reads messages with Go's `encoding/json`, and its
//! clients may rely on how that reads them: keys match case-insensitively
//! and the last of duplicate keys wins. So does this node.

// Helpers of tests: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::raw::{text, RawClient};
use common::{chat_bytes, NodeProc};

#[test]
fn keys_match_whatever_their_case() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(r#"{"messagetype":"loginmsg","SENDER":"alice"}"#));
    c.send(&text(r#"{"messageType":"chatmsg","data":"lower","reciever":"alice"}"#));
    assert_eq!(c.read_text(), chat_bytes("lower", "alice", "alice"));
    // Go folds U+017F (long s) to s as well.
    c.send(&text(r#"{"Me\u017f\u017fageType":"chatmsg","Data":"long s","Reciever":"alice"}"#));
    assert_eq!(c.read_text(), chat_bytes("long s", "alice", "alice"));
}

#[test]
fn the_last_of_duplicate_keys_wins() {
    let node = NodeProc::start(&[]);
    let mut c = RawClient::open(node.addr, "/ws");
    c.send(&text(r#"{"MessageType":"loginmsg","Sender":"bob"}"#));
    c.send(&text(r#"{"MessageType":"chatmsg","Data":"a","Data":"b","Reciever":"nobody","Reciever":"bob"}"#));
    assert_eq!(c.read_text(), chat_bytes("b", "bob", "bob"));
    c.send(&text(r#"{"MessageType":"whoamimsg","MessageType":"chatmsg","Data":"a","data":"c","Reciever":"bob"}"#));
    assert_eq!(c.read_text(), chat_bytes("c", "bob", "bob"));
    // null leaves a field as it was, as in Go.
    c.send(&text(r#"{"MessageType":"chatmsg","Data":"kept","Data":null,"Reciever":"bob"}"#));
    assert_eq!(c.read_text(), chat_bytes("kept", "bob", "bob"));
}
