//! Bytes in and out of a connection's socket: readiness events, writes that queue what the
//! socket does not take, and reads through the thread's one buffer. A `wss://`
//! connection's bytes go through its TLS session instead (`tls`), and come back here as
//! plaintext.

use std::io::{self, Read as _, Write as _};

use mio::event::Event;

use super::conn::State;
use super::Driver;
use crate::cause::Cause;
use crate::codec;

impl Driver {
    pub(super) fn on_event(&mut self, event: &Event) {
        let slot = (event.token().0 & 0xFFFF_FFFF) as u32;
        let generation = (event.token().0 >> 32) as u16;
        let Some(conn) = self.conns.get(slot as usize) else {
            return;
        };
        if conn.generation != generation || conn.stream.is_none() {
            return;
        }
        if conn.state == State::Connecting {
            if event.is_writable() || event.is_error() || event.is_write_closed() {
                self.finish_connect(slot);
            }
            return;
        }
        let tls = self.sessions.active(slot);
        if event.is_writable() {
            if tls {
                self.tls_flush(slot);
            } else {
                self.flush(slot);
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            if tls {
                self.tls_read(slot);
            } else {
                // After a FIN or an error no new edge will come: read until EOF/WouldBlock.
                self.read(slot, event.is_read_closed() || event.is_error());
            }
        }
    }

    /// Writes `self.wbuf` to a connection (or queues what the socket does not take).
    pub(super) fn send_wbuf(&mut self, slot: u32) -> bool {
        let buf = std::mem::take(&mut self.wbuf);
        let ok = self.send(slot, &buf);
        self.wbuf = buf;
        ok
    }

    fn send(&mut self, slot: u32, bytes: &[u8]) -> bool {
        if self.sessions.active(slot) {
            return self.tls_send(slot, bytes);
        }
        let conn = &mut self.conns[slot as usize];
        let Some(stream) = conn.stream.as_mut() else {
            return false;
        };
        if !conn.out.is_empty() {
            conn.out.extend_from_slice(bytes);
            return true;
        }
        let mut written = 0;
        while written < bytes.len() {
            match stream.write(&bytes[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let detail = format!("write to {}: {e}", self.describe(slot));
                    self.fail(slot, Cause::kernel(&e), detail);
                    return false;
                }
            }
        }
        if written < bytes.len() {
            self.conns[slot as usize].out.extend_from_slice(&bytes[written..]);
        }
        true
    }

    fn flush(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let Some(stream) = conn.stream.as_mut() else {
            return;
        };
        let mut written = 0;
        while written < conn.out.len() {
            match stream.write(&conn.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let detail = format!("write to {}: {e}", self.describe(slot));
                    self.fail(slot, Cause::kernel(&e), detail);
                    return;
                }
            }
        }
        if written == conn.out.len() {
            // Free the buffer: idle connections own no heap.
            conn.out = Vec::new();
        } else {
            conn.out.drain(..written);
        }
        if written > 0 {
            // Closed loop: a sender that held back while its output was full may go on.
            self.windows.drained(slot);
        }
    }

    fn read(&mut self, slot: u32, until_would_block: bool) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        while let Some(stream) = self.conns[slot as usize].stream.as_mut() {
            match stream.read(&mut rbuf) {
                Ok(0) => {
                    let state = self.conns[slot as usize].state;
                    let detail = format!("{} closed the TCP connection ({:?})", self.describe(slot), state);
                    self.fail(slot, Cause::node_eof(), detail);
                    break;
                }
                Ok(n) => {
                    self.take_input(slot, &rbuf[..n]);
                    // A short read emptied the socket's receive queue. Linux re-arms an
                    // edge-triggered EPOLLIN on every arrival after this, so the read that
                    // would only say WouldBlock is skipped: one syscall less per message.
                    if n < rbuf.len() && !until_would_block {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let detail = format!("read from {}: {e}", self.describe(slot));
                    self.fail(slot, Cause::kernel(&e), detail);
                    break;
                }
            }
        }
        self.rbuf = rbuf;
    }

    /// Processes freshly read bytes, keeping any incomplete tail in the connection.
    pub(super) fn take_input(&mut self, slot: u32, fresh: &[u8]) {
        if self.conns[slot as usize].inp.is_empty() {
            let used = self.process(slot, fresh);
            let conn = &mut self.conns[slot as usize];
            if conn.stream.is_some() && used < fresh.len() {
                conn.inp.extend_from_slice(&fresh[used..]);
            }
        } else {
            let mut input = std::mem::take(&mut self.conns[slot as usize].inp);
            input.extend_from_slice(fresh);
            let used = self.process(slot, &input);
            let conn = &mut self.conns[slot as usize];
            if conn.stream.is_some() && used < input.len() {
                input.drain(..used);
                conn.inp = input;
            }
        }
    }

    /// Consumes complete handshake answers and frames from `bytes`; returns bytes used.
    fn process(&mut self, slot: u32, bytes: &[u8]) -> usize {
        let mut used = 0;
        if self.conns[slot as usize].state == State::Handshaking {
            let index = self.first + slot;
            let key = codec::handshake_key(index, self.conns[slot as usize].generation, self.plan.seed);
            match codec::parse_upgrade_response(bytes, &key) {
                Ok(None) => return 0,
                Ok(Some(n)) => {
                    used = n;
                    self.on_handshake(slot);
                }
                Err(e) => {
                    self.fail_protocol(slot, e);
                    return bytes.len();
                }
            }
        }
        while matches!(
            self.conns[slot as usize].state,
            State::Joining | State::Open | State::LoginPending | State::RoomJoining | State::Ready | State::Closing
        ) {
            match codec::decode_server_frame(&bytes[used..]) {
                Ok(None) => break,
                Ok(Some((frame, n))) => {
                    used += n;
                    self.on_frame(slot, frame);
                }
                Err(e) => {
                    self.fail_protocol(slot, e);
                    return bytes.len();
                }
            }
        }
        used
    }
}
