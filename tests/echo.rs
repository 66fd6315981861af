//! The echo endpoint for conformance suites: every text and binary message
//! comes back exactly as sent, through the same codec and reactor as chat.

mod common;

use common::{connect_with, NodeProc};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::Message;

const BIG: usize = 16 * 1024 * 1024;

fn echo_node() -> NodeProc {
    NodeProc::start(&["--echo-path", "/echo", "--max-message-size", "17000000", "--max-output", "40000000"])
}

fn unlimited() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(None).max_frame_size(None)
}

#[test]
fn echoes_text_and_binary_exactly() {
    let node = echo_node();
    let mut ws = connect_with(&node.url("/echo"), unlimited());
    for msg in [Message::text("hello ☃"), Message::binary(vec![0u8, 255, 1, 2]), Message::text("")] {
        ws.send(msg.clone()).unwrap();
        assert_eq!(ws.read().unwrap(), msg);
    }
}

#[test]
fn echoes_a_16_mib_message_in_one_frame() {
    let node = echo_node();
    let mut ws = connect_with(&node.url("/echo"), unlimited());
    let payload: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    ws.send(Message::binary(payload.clone())).unwrap();
    assert!(ws.read().unwrap().into_data() == payload);
}

#[test]
fn echoes_a_16_mib_message_sent_in_fragments() {
    let node = echo_node();
    let mut ws = connect_with(&node.url("/echo"), unlimited());
    let text: String = "switchboard ".repeat(BIG / 12 + 1)[..BIG].to_string();
    let pieces: Vec<&[u8]> = text.as_bytes().chunks(1 << 20).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
        let frame = Frame::message(piece.to_vec(), opcode, i + 1 == pieces.len());
        ws.write(Message::Frame(frame)).unwrap();
    }
    ws.flush().unwrap();
    assert!(ws.read().unwrap().into_text().unwrap().as_str() == text);
}

#[test]
fn the_default_limit_refuses_a_16_mib_message_with_1009() {
    let node = NodeProc::start(&["--echo-path", "/echo"]);
    let mut ws = connect_with(&node.url("/echo"), unlimited());
    let _ = ws.send(Message::binary(vec![0u8; BIG]));
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1009);
                break;
            }
            Ok(_) => {}
            Err(e) => panic!("expected a 1009 close, got {e}"),
        }
    }
}
