//! Output that cannot be written at once: partial writes resumed on the
//! WRITABLE edge, and a client that stops reading closed with 1008 without
//! slowing anyone else down.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::raw::{frame, RawClient};
use common::{chat, chat_bytes, connect, login_and_confirm, recv_text, NodeProc};

#[test]
fn a_large_message_to_a_slow_reader_arrives_whole() {
    let node = NodeProc::start(&["--echo-path", "/echo", "--max-message-size", "8388608", "--max-output", "16777216"]);
    let mut slow = RawClient::open(node.addr, "/echo");
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    slow.send(&frame(true, 2, &payload));
    // Far more than the socket buffers hold: the server must stop and resume.
    std::thread::sleep(Duration::from_millis(300));

    // Meanwhile the node serves others without delay.
    let mut a = connect(&node.url("/ws"));
    login_and_confirm(&mut a, "a");

    let mut head = [0u8; 10];
    slow.stream.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x82);
    assert_eq!(head[1], 127);
    assert_eq!(u64::from_be_bytes(head[2..10].try_into().unwrap()), payload.len() as u64);
    let mut got = vec![0u8; payload.len()];
    for chunk in got.chunks_mut(256 * 1024) {
        slow.stream.read_exact(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(got == payload, "echoed bytes differ");
}

#[test]
fn a_client_that_stops_reading_is_closed_with_1008_and_others_are_unaffected() {
    // The sender floods (over any sane message rate) on purpose.
    let node = NodeProc::start(&["--max-output", "65536", "--reactors", "1", "--message-rate", "0"]);
    let mut stalled = RawClient::open(node.addr, "/ws");
    stalled.send(&common::raw::text(r#"{"MessageType":"loginmsg","Sender":"stalled"}"#));
    let mut sender = connect(&node.url("/ws"));
    login_and_confirm(&mut sender, "sender");
    let mut bystander = connect(&node.url("/ws"));
    login_and_confirm(&mut bystander, "bystander");

    // Send to a client that reads nothing until the node gives up on it: past
    // the socket buffers (several MB on loopback) plus 64 KiB of our own.
    let line = "x".repeat(1000);
    let mut sent = 0;
    while node.metric("switchboard_slow_closed_total") == 0 {
        assert!(sent < 64_000, "64 MB sent and the stalled client is still open");
        for _ in 0..500 {
            chat(&mut sender, "stalled", &line);
        }
        sent += 500;
    }

    // The bystander, on the same reactor, is served at once.
    let start = Instant::now();
    chat(&mut sender, "bystander", "still quick");
    assert_eq!(recv_text(&mut bystander), chat_bytes("still quick", "bystander", "sender"));
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());

    // The stalled client finds its backlog cut short by a 1008 close.
    let mut delivered = 0;
    let code = loop {
        let f = stalled.read_frame();
        match f.opcode {
            1 => delivered += 1,
            8 => break f.close_code(),
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(code.0, 1008, "{code:?}");
    assert!(code.1.contains("slow consumer"), "{code:?}");
    assert!(delivered < sent, "{delivered} of {sent}");
    // Its name is free again; the sender is told the recipient is gone.
    assert_eq!(node.metric("switchboard_users"), 2);
}

#[test]
fn a_burst_for_a_reader_that_keeps_up_is_not_cut_off() {
    // More than --max-output arrives for one client within one reactor turn;
    // the client reads at once, so it must not be taken for a slow one.
    const SENDERS: usize = 8;
    const EACH: usize = 40;
    let node = NodeProc::start(&["--reactors", "1", "--max-output", "65536"]);
    let mut reader = RawClient::open(node.addr, "/ws");
    reader.send(&common::raw::text(r#"{"MessageType":"loginmsg","Sender":"reader"}"#));
    let mut senders: Vec<_> = (0..SENDERS)
        .map(|i| {
            let mut ws = connect(&node.url("/ws"));
            login_and_confirm(&mut ws, &format!("s{i}"));
            ws
        })
        .collect();
    let line = "y".repeat(1000);
    node.pause();
    let writers: Vec<_> = senders
        .drain(..)
        .map(|mut ws| {
            let line = line.clone();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    chat(&mut ws, "reader", &line);
                }
                ws
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    node.resume();
    let mut got = 0;
    while got < SENDERS * EACH {
        let f = reader.read_frame();
        assert_eq!(f.opcode, 1, "after {got} messages: {f:?}");
        got += 1;
    }
    let _senders: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert_eq!(node.metric("switchboard_slow_closed_total"), 0);
}

#[test]
fn the_1008_close_of_a_slow_client_follows_whole_frames() {
    // A stalled reader with a small receive buffer, written to in small steps,
    // so the node's output stops in the middle of a frame: the close frame
    // must still come after whole frames, never inside one.
    let node = NodeProc::start(&["--max-output", "65536", "--message-rate", "0"]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&node.addr.into()).unwrap();
    let mut stalled = RawClient::from_stream(socket.into());
    stalled.send(common::raw::upgrade_request("/ws").as_bytes());
    stalled.read_http_head();
    stalled.send(&common::raw::text(r#"{"MessageType":"loginmsg","Sender":"stalled"}"#));
    let mut sender = connect(&node.url("/ws"));
    login_and_confirm(&mut sender, "sender");
    let line = "z".repeat(1400);
    let mut sent = 0;
    while node.metric("switchboard_slow_closed_total") == 0 {
        assert!(sent < 20_000, "the stalled client was never closed");
        chat(&mut sender, "stalled", &line);
        sent += 1;
        if sent % 8 == 0 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut delivered = 0;
    let code = loop {
        let f = stalled.read_frame();
        match f.opcode {
            1 => {
                assert_eq!(f.payload.len(), chat_bytes(&line, "stalled", "sender").len(), "a cut frame");
                delivered += 1;
            }
            8 => break f.close_code(),
            other => panic!("unexpected opcode {other} after {delivered} frames"),
        }
    };
    assert_eq!(code.0, 1008, "{code:?}");
}
