//! The read path: edge-triggered reads into the reactor's scratch buffer,
//! and the parsing of HTTP heads and frames out of what was read.
//!
//! A socket is read until `WouldBlock` or a short read, and one that used up
//! its per-turn budget goes on a "still readable" list, since no new event
//! will come for it. Complete frames are parsed and unmasked in place in the
//! scratch buffer; only a partial frame is copied into the connection.

use std::io::{self, Read};
use std::mem;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::Token;

use crate::codec::{self, close};
use crate::conn::{flag, split_token, Phase};
use crate::handshake::{self, Outcome, Routes};
use crate::reactor::{Reactor, CLOSE_GRACE};

/// Bytes read per `read` call: one buffer per reactor, shared by all its connections.
pub(crate) const SCRATCH_SIZE: usize = 64 * 1024;
/// Bytes one connection may read per turn before others get their go.
const READ_BUDGET: usize = 256 * 1024;

impl Reactor {
    /// Reads until `WouldBlock`, a short read or the budget. `to_eof` (the peer
    /// shut its side) reads on past a short read, since the EOF's edge has
    /// already been reported with this event.
    pub(crate) fn read_from(&mut self, token: Token, to_eof: bool) {
        let mut scratch = mem::take(&mut self.scratch);
        let mut budget = READ_BUDGET;
        while let Some(conn) = self.conn_mut(token) {
            if conn.has(flag::LOGIN_PENDING) {
                // Read on once the bus has decided (see `resume_input`); a peer
                // that hung up meanwhile is dropped now, its claim released.
                if to_eof {
                    self.drop_conn(token);
                }
                break;
            }
            match (&conn.socket).read(&mut scratch) {
                Ok(0) => {
                    // EOF: the peer is gone (or finished its side of a close).
                    // What it asked for may still be sent (a half-closed HTTP client).
                    self.flush(token);
                    self.drop_conn(token);
                    break;
                }
                Ok(n) => {
                    self.stats().bytes_in.fetch_add(n as u64, Relaxed);
                    self.ingest(token, &mut scratch[..n]);
                    // A short read means the socket is drained: any later data
                    // raises a new edge.
                    if n < scratch.len() && !to_eof {
                        break;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.still_readable.push((token, to_eof));
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.drop_conn(token);
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    /// Picks up input held back while a login was pending: what is buffered is
    /// processed now, and the socket is read again, since its edges may have
    /// passed meanwhile.
    pub(crate) fn resume_input(&mut self, token: Token) {
        self.ingest(token, &mut []);
        self.still_readable.push((token, true));
    }

    pub(crate) fn read_still_readable(&mut self) {
        for (token, to_eof) in mem::take(&mut self.still_readable) {
            self.read_from(token, to_eof);
        }
    }

    /// Consumes freshly read bytes: straight from the scratch buffer when
    /// nothing is pending, else appended to the connection's pending input.
    fn ingest(&mut self, token: Token, data: &mut [u8]) {
        let (key, _) = split_token(token);
        if self.conns[key].input.is_empty() {
            let (consumed, need) = self.process(token, data);
            if consumed < data.len() {
                let mut rest = self.take_buffer();
                // Room once for the whole unit rather than growing in steps.
                rest.reserve(need.max(data.len() - consumed));
                rest.extend_from_slice(&data[consumed..]);
                if let Some(conn) = self.conn_mut(token) {
                    conn.input = rest;
                }
            }
        } else {
            let mut input = mem::take(&mut self.conns[key].input);
            input.extend_from_slice(data);
            let (consumed, need) = self.process(token, &mut input);
            input.drain(..consumed);
            input.reserve(need.saturating_sub(input.len()));
            match self.conn_mut(token) {
                Some(conn) if !input.is_empty() => conn.input = input,
                _ => self.give_buffer(input),
            }
        }
        self.note_stalled(token);
    }

    /// Starts the clock on a connection that now holds an unfinished message
    /// (a partial frame, or fragments without the final one), or stops it.
    /// The clock is read only when a connection starts to stall, not per read.
    fn note_stalled(&mut self, token: Token) {
        let (key, _) = split_token(token);
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let stalled = matches!(conn.phase, Phase::Open(_)) && (!conn.input.is_empty() || conn.message.is_some());
        if !stalled {
            conn.flags &= !flag::STALLED;
            return;
        }
        if conn.has(flag::STALLED) {
            return;
        }
        let now = Instant::now();
        let clock = self.clock_at(now);
        let timeout = Duration::from_secs(self.config.message_timeout);
        let conn = &mut self.conns[key];
        conn.flags |= flag::STALLED;
        conn.stalled_since = clock;
        if !conn.has(flag::STALL_TIMER) {
            conn.flags |= flag::STALL_TIMER;
            self.stalled_deadlines.push_back((now + timeout, token));
        }
    }

    /// A stalled-message timer fired: close the connection if it has held the
    /// same unfinished message for `--message-timeout`, else wait for its turn.
    pub(crate) fn check_stalled(&mut self, token: Token, now: Instant) {
        let timeout_ms = self.config.message_timeout * 1000;
        let clock = self.clock_ms();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        conn.flags &= !flag::STALL_TIMER;
        if !conn.has(flag::STALLED) {
            return;
        }
        let held = u64::from(clock.wrapping_sub(conn.stalled_since));
        if held >= timeout_ms {
            let reason = format!("message not completed within {} s", self.config.message_timeout);
            self.fail(token, close::POLICY, &reason);
        } else {
            conn.flags |= flag::STALL_TIMER;
            self.stalled_deadlines.push_back((now + Duration::from_millis(timeout_ms - held), token));
        }
    }

    /// Milliseconds on the reactor's clock, wrapping (differences stay right
    /// for 49 days, far beyond any timeout).
    fn clock_ms(&self) -> u32 {
        self.clock_at(Instant::now())
    }

    fn clock_at(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.started).as_millis() as u32
    }

    /// Handles every complete unit (HTTP head or frame) at the front of `buf`;
    /// returns how many bytes were consumed, and the whole size of a partial
    /// frame left at the end (0 when unknown).
    fn process(&mut self, token: Token, buf: &mut [u8]) -> (usize, usize) {
        let mut pos = 0;
        loop {
            let Some(conn) = self.conn_mut(token) else {
                return (buf.len(), 0);
            };
            match conn.phase {
                Phase::Closing => return (buf.len(), 0),
                Phase::Handshake => {
                    let mut out = mem::take(&mut conn.output);
                    let routes = Routes {
                        ws_path: &self.config.ws_path,
                        echo_path: self.config.echo_path.as_deref(),
                        max_header_bytes: self.config.max_header_bytes,
                    };
                    let hub = &self.hub;
                    let outcome = handshake::handle(&buf[pos..], &routes, &mut out, || hub.metrics.render());
                    let conn = self.conn_mut(token).expect("checked above");
                    conn.output = out;
                    match outcome {
                        Outcome::Incomplete => return (pos, 0),
                        Outcome::Upgrade { endpoint, consumed } => {
                            conn.phase = Phase::Open(endpoint);
                            pos += consumed;
                            self.stats().handshakes.fetch_add(1, Relaxed);
                            self.mark_dirty(token);
                        }
                        Outcome::Respond { .. } => {
                            conn.phase = Phase::Closing;
                            conn.flags |= flag::SHUTDOWN_AFTER_FLUSH;
                            self.mark_dirty(token);
                            self.closing_deadlines.push_back((Instant::now() + CLOSE_GRACE, token));
                            return (buf.len(), 0);
                        }
                    }
                }
                // What follows a login waits for its decision, so a client may
                // chat right after logging in, as seed clients do.
                Phase::Open(_) if conn.has(flag::LOGIN_PENDING) => return (pos, 0),
                Phase::Open(_) => {
                    let head = match codec::parse_client_header(&buf[pos..]) {
                        Ok(Some(head)) => head,
                        Ok(None) => return (pos, 0),
                        Err(e) => {
                            self.fail(token, close::PROTOCOL, e.reason());
                            return (buf.len(), 0);
                        }
                    };
                    let assembled = conn.message.as_ref().map_or(0, |m| m.data.len() as u64);
                    if !head.is_control() && assembled + head.payload_len > self.config.max_message_size as u64 {
                        let reason = format!("message over {} bytes", self.config.max_message_size);
                        self.fail(token, close::TOO_BIG, &reason);
                        return (buf.len(), 0);
                    }
                    let total = head.header_len + head.payload_len as usize;
                    if buf.len() - pos < total {
                        return (pos, total);
                    }
                    let payload = &mut buf[pos + head.header_len..pos + total];
                    codec::apply_mask(payload, head.mask, 0);
                    pos += total;
                    self.on_frame(token, head, payload);
                }
            }
        }
    }
}
