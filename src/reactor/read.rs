//! The read path: edge-triggered reads into the reactor's scratch buffer,
//! and the parsing of HTTP heads and frames out of what was read.
//!
//! A socket is read until `WouldBlock` or a short read, and one that used up
//! its per-turn budget goes on a "still readable" list, since no new event
//! will come for it. Complete frames are parsed and unmasked in place in the
//! scratch buffer; only a partial frame is copied into the connection. The
//! arrived part of a partial text frame is unmasked and checked as UTF-8 at
//! once, so bad bytes fail (1007) without waiting for the rest of the frame.

use std::io::{self, Read};
use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use mio::Token;

use super::admit::{self, Source};
use super::conn::{flag, Closing, Conn, Phase};
use super::context::{Context, Outcome, Stop};
use super::frames;
use super::login;
use super::stalled;
use super::timers::CLOSE_GRACE;
use super::write::{self, mark_dirty};
use crate::codec::{self, close, op, FrameHead};
use crate::handshake::{self, Endpoint, Routes};

/// Bytes read per `read` call: one buffer per reactor, shared by all its connections.
pub(super) const SCRATCH_SIZE: usize = 64 * 1024;
/// Bytes one connection may read per turn before others get their go.
const READ_BUDGET: usize = 256 * 1024;

/// Reads until `WouldBlock`, a short read or the budget. `to_eof` (the peer
/// shut its side) reads on past a short read, since the EOF's edge has
/// already been reported with this event.
pub(super) fn read(conn: &mut Conn, token: Token, cx: &mut Context, scratch: &mut [u8], to_eof: bool) -> Outcome {
    let mut budget = READ_BUDGET;
    loop {
        if conn.is_pending() {
            // Read on once the bus has decided (see `resume`); a peer that
            // hung up meanwhile is dropped now, its claim released.
            return if to_eof { Err(Stop::Drop) } else { Ok(()) };
        }
        match (&conn.socket).read(scratch) {
            Ok(0) => {
                // EOF: the peer is gone (or finished its side of a close).
                // What it asked for may still be sent (a half-closed HTTP client).
                write::flush(conn, token, cx);
                return Err(Stop::Drop);
            }
            Ok(n) => {
                // Any bytes are a sign of life (see `liveness`).
                conn.flags |= flag::HEARD;
                cx.stats().bytes_in.fetch_add(n as u64, Relaxed);
                ingest(conn, token, cx, &mut scratch[..n])?;
                // A short read means the socket is drained: any later data
                // raises a new edge.
                if n < scratch.len() && !to_eof {
                    return Ok(());
                }
                budget = budget.saturating_sub(n);
                if budget == 0 {
                    cx.still_readable.push((token, to_eof));
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(Stop::Drop),
        }
    }
}

/// Picks up input held back while a login was pending: what is buffered is
/// processed now, and the socket is read again, since its edges may have
/// passed meanwhile.
pub(super) fn resume(conn: &mut Conn, token: Token, cx: &mut Context) -> Outcome {
    cx.still_readable.push((token, true));
    ingest(conn, token, cx, &mut [])
}

/// Consumes freshly read bytes: straight from the scratch buffer when
/// nothing is pending, else appended to the connection's pending input.
fn ingest(conn: &mut Conn, token: Token, cx: &mut Context, data: &mut [u8]) -> Outcome {
    if conn.input().is_empty() {
        let (consumed, need) = process(conn, token, cx, data)?;
        if consumed < data.len() {
            let mut rest = cx.pool.take();
            // Room once for the whole unit rather than growing in steps.
            rest.reserve(need.max(data.len() - consumed));
            rest.extend_from_slice(&data[consumed..]);
            conn.partial_mut().input = rest;
        }
    } else {
        let mut input = conn.partial.as_mut().map(|p| mem::take(&mut p.input)).unwrap_or_default();
        input.extend_from_slice(data);
        let (consumed, need) = match process(conn, token, cx, &mut input) {
            Ok(progress) => progress,
            Err(stop) => {
                cx.pool.give(input);
                return Err(stop);
            }
        };
        input.drain(..consumed);
        input.reserve(need.saturating_sub(input.len()));
        match conn.partial.as_mut() {
            Some(partial) if !input.is_empty() => partial.input = input,
            _ => cx.pool.give(input),
        }
    }
    let released = conn.trim_partial(|buf| cx.pool.give(buf));
    stalled::release(cx, released);
    stalled::note_stalled(conn, token, cx);
    stalled::account(conn, cx)
}

/// Handles every complete unit (HTTP head or frame) at the front of `buf`;
/// returns how many bytes were consumed, and the whole size of a partial
/// frame left at the end (0 when unknown).
fn process(conn: &mut Conn, token: Token, cx: &mut Context, buf: &mut [u8]) -> Result<(usize, usize), Stop> {
    let mut pos = 0;
    loop {
        match conn.phase {
            Phase::Closing(_) | Phase::Gone => return Ok((buf.len(), 0)),
            Phase::Handshake => match upgrade(conn, token, cx, &buf[pos..])? {
                Some(consumed) if conn.is_open() => pos += consumed,
                Some(_) => return Ok((buf.len(), 0)),
                None => return Ok((pos, 0)),
            },
            // What follows a login waits for its decision, so a client may
            // chat right after logging in, as seed clients do.
            Phase::Chat | Phase::Echo if conn.is_pending() => return Ok((pos, 0)),
            Phase::Chat | Phase::Echo => {
                let head = match codec::parse_client_header(&buf[pos..]) {
                    Ok(Some(head)) => head,
                    Ok(None) => return Ok((pos, 0)),
                    Err(e) => return Err(Stop::Fail(close::PROTOCOL, e.reason().into())),
                };
                let assembled = conn.message().map_or(0, |m| m.data.len() as u64);
                let max = cx.config.max_message_size;
                if !head.is_control() && assembled + head.payload_len > max as u64 {
                    return Err(Stop::Fail(close::TOO_BIG, format!("message over {max} bytes").into()));
                }
                let total = head.header_len + head.payload_len as usize;
                // Only the frame at the front of held input can have been
                // unmasked in part, as it arrived.
                let done = match conn.partial.as_mut() {
                    Some(p) if pos == 0 => mem::take(&mut p.unmasked),
                    _ => 0,
                };
                if buf.len() - pos < total {
                    if let Some(p) = conn.partial.as_mut() {
                        p.unmasked = done;
                    }
                    if head.opcode == op::TEXT || conn.message().is_some_and(|m| m.opcode == op::TEXT) {
                        check_partial_text(conn, head, &mut buf[pos + head.header_len..], done)?;
                    }
                    return Ok((pos, total));
                }
                if done > 0 {
                    if let Some(p) = conn.partial.as_mut() {
                        p.frame_valid = 0;
                    }
                }
                let payload = &mut buf[pos + head.header_len..pos + total];
                if done == 0 {
                    codec::apply_mask(payload, head.mask, 0);
                } else {
                    codec::apply_mask(&mut payload[done..], head.mask, done);
                }
                pos += total;
                frames::on_frame(conn, token, cx, head, payload)?;
            }
        }
    }
}

/// Unmasks what has arrived of a text frame's payload (past the `done`
/// bytes unmasked before) and checks it as UTF-8, continuing the message's
/// fragments so far: bad bytes fail with 1007 before the frame is complete.
fn check_partial_text(conn: &mut Conn, head: FrameHead, payload: &mut [u8], done: usize) -> Outcome {
    if payload.len() <= done || (head.opcode == op::TEXT && conn.message().is_some()) {
        return Ok(());
    }
    codec::apply_mask(&mut payload[done..], head.mask, done);
    let partial = conn.partial_mut();
    partial.unmasked = payload.len();
    let mut valid = partial.frame_valid;
    let carry = match (&partial.message, valid) {
        (Some(m), 0) => &m.data[m.utf8_valid..],
        _ => &[][..],
    };
    if !carry.is_empty() {
        // The fragments so far end inside a UTF-8 sequence: finish it first.
        let mut joint = [0u8; 8];
        let take = (4 - carry.len()).min(payload.len());
        joint[..carry.len()].copy_from_slice(carry);
        joint[carry.len()..carry.len() + take].copy_from_slice(&payload[..take]);
        match codec::check_utf8_prefix(&joint[..carry.len() + take], 0) {
            None => return Err(Stop::Fail(close::INVALID_PAYLOAD, "text message is not valid UTF-8".into())),
            Some(0) => return Ok(()),
            Some(v) => valid = v - carry.len(),
        }
    }
    match codec::check_utf8_prefix(payload, valid) {
        Some(v) => {
            partial.frame_valid = v;
            Ok(())
        }
        None => Err(Stop::Fail(close::INVALID_PAYLOAD, "text message is not valid UTF-8".into())),
    }
}

/// Answers the HTTP request at the front of `buf`: the upgrade (the
/// connection is then open, and logged in if the request carried a token)
/// or a plain response (it is then closing). Returns the bytes the request
/// took, or `None` while it is incomplete.
fn upgrade(conn: &mut Conn, token: Token, cx: &mut Context, buf: &[u8]) -> Result<Option<usize>, Stop> {
    let routes = Routes {
        ws_path: &cx.config.ws_path,
        echo_path: cx.config.echo_path.as_deref(),
        max_header_bytes: cx.config.max_header_bytes,
        origins: cx.auth.origins(),
    };
    let shared: &Context = cx;
    let source = Source { key: conn.source, counted: conn.has(flag::COUNTED) };
    let mut newly = None;
    // Written straight into the (empty) output: no pooled buffer is held
    // by a connection whose request is still incomplete.
    let outcome = handshake::handle_admitting(buf, &routes, conn.output.unpooled(), |forwarded| {
        admit::admit(shared, source, forwarded, &mut newly)
    });
    if let Some(key) = newly {
        conn.source = key;
        conn.flags |= flag::COUNTED;
    }
    let consumed = match outcome {
        handshake::Outcome::Incomplete => return Ok(None),
        handshake::Outcome::Upgrade { endpoint, consumed, token: jwt } => {
            conn.phase = Phase::open(endpoint);
            cx.stats().handshakes.fetch_add(1, Relaxed);
            mark_dirty(conn, token, &mut cx.dirty);
            if endpoint == Endpoint::Chat {
                login::on_upgrade(conn, token, cx, jwt)?;
            }
            return Ok(Some(consumed));
        }
        handshake::Outcome::Respond { .. } => {
            conn.phase = Phase::Closing(Closing::Flushing);
            cx.timers.closing.push(Instant::now() + CLOSE_GRACE, token);
            buf.len()
        }
    };
    mark_dirty(conn, token, &mut cx.dirty);
    Ok(Some(consumed))
}
