//! What a reactor does with complete frames: control frames, the
//! reassembly of fragmented messages (UTF-8 checked as fragments arrive, so
//! a bad text message fails fast), and whole messages handed to their
//! endpoint: echo, or the chat protocol. Chat messages and pings take a
//! token of the connection's message rate first (`rate`).

use std::sync::atomic::Ordering::Relaxed;

use mio::Token;

use super::chat;
use super::conn::{Conn, Fragments, Phase};
use super::context::{Context, Outcome, Stop};
use super::rate;
use super::write::queue_frame;
use crate::codec::{self, close, op, FrameHead};
use crate::handshake::Endpoint;

/// Handles one complete, unmasked frame.
pub(super) fn on_frame(conn: &mut Conn, token: Token, cx: &mut Context, head: FrameHead, payload: &[u8]) -> Outcome {
    match head.opcode {
        op::PING if conn.phase == Phase::Chat && !rate::admit(conn, cx) => rate::over_rate(conn, token, cx),
        op::PING => queue_frame(conn, token, cx, op::PONG, payload),
        op::PONG => Ok(()),
        op::CLOSE => on_close_frame(payload),
        op::TEXT | op::BINARY if conn.message().is_some() => {
            Err(fail(close::PROTOCOL, "new message before the fragmented one finished"))
        }
        op::TEXT | op::BINARY if head.fin => on_message(conn, token, cx, head.opcode, payload),
        op::TEXT | op::BINARY => {
            let mut data = cx.pool.take();
            data.extend_from_slice(payload);
            let message = conn.partial_mut().message.insert(Fragments { opcode: head.opcode, data, utf8_valid: 0 });
            check_fragment_utf8(message)
        }
        _ => on_continuation(conn, token, cx, head.fin, payload),
    }
}

/// A continuation frame: appended to the message, which is handled once whole.
fn on_continuation(conn: &mut Conn, token: Token, cx: &mut Context, fin: bool, payload: &[u8]) -> Outcome {
    let Some(message) = conn.partial.as_mut().and_then(|p| p.message.as_mut()) else {
        return Err(fail(close::PROTOCOL, "continuation frame without a message to continue"));
    };
    message.data.extend_from_slice(payload);
    check_fragment_utf8(message)?;
    if !fin {
        return Ok(());
    }
    let Some(message) = conn.partial.as_mut().and_then(|p| p.message.take()) else {
        return Ok(());
    };
    let Fragments { opcode, data, utf8_valid } = message;
    let outcome = if opcode == op::TEXT && utf8_valid != data.len() {
        Err(fail(close::INVALID_PAYLOAD, "text message ends inside a UTF-8 sequence"))
    } else {
        on_message(conn, token, cx, opcode, &data)
    };
    cx.pool.give(data);
    outcome
}

/// Checks the UTF-8 of a text message so far, failing fast (1007) on a bad byte.
fn check_fragment_utf8(message: &mut Fragments) -> Outcome {
    if message.opcode != op::TEXT {
        return Ok(());
    }
    match codec::check_utf8_prefix(&message.data, message.utf8_valid) {
        Some(valid) => {
            message.utf8_valid = valid;
            Ok(())
        }
        None => Err(fail(close::INVALID_PAYLOAD, "text message is not valid UTF-8")),
    }
}

/// The peer's close frame: validated, then answered with the same code.
fn on_close_frame(payload: &[u8]) -> Outcome {
    let code = match payload.len() {
        0 => close::NORMAL,
        1 => return Err(fail(close::PROTOCOL, "close frame with a 1-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !codec::is_valid_close_code(code) {
                return Err(fail(close::PROTOCOL, "invalid close code"));
            }
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(fail(close::INVALID_PAYLOAD, "close reason is not valid UTF-8"));
            }
            code
        }
    };
    Err(Stop::Answer(code))
}

/// A whole message, for the endpoint the connection was upgraded to.
fn on_message(conn: &mut Conn, token: Token, cx: &mut Context, opcode: u8, payload: &[u8]) -> Outcome {
    cx.stats().messages_in.fetch_add(1, Relaxed);
    let Some(endpoint) = conn.phase.endpoint() else {
        return Ok(());
    };
    match (endpoint, opcode) {
        (Endpoint::Echo, op::BINARY) => queue_frame(conn, token, cx, opcode, payload),
        (Endpoint::Chat, op::BINARY) => {
            Err(fail(close::UNSUPPORTED_DATA, "binary messages are not accepted: send JSON text"))
        }
        // Checked whole even when its fragments were (rare): one check, then
        // the JSON parser takes it as `&str` and checks no string again.
        _ => match (endpoint, std::str::from_utf8(payload)) {
            (_, Err(_)) => Err(fail(close::INVALID_PAYLOAD, "text message is not valid UTF-8")),
            (Endpoint::Echo, Ok(_)) => queue_frame(conn, token, cx, opcode, payload),
            // The echo endpoint is for conformance suites, which send fast: unlimited.
            (Endpoint::Chat, Ok(text)) if rate::admit(conn, cx) => chat::on_text(conn, token, cx, text),
            (Endpoint::Chat, Ok(_)) => rate::over_rate(conn, token, cx),
        },
    }
}

fn fail(code: u16, reason: &'static str) -> Stop {
    Stop::Fail(code, reason.into())
}
