//! The write path: frames are queued into a connection's output buffer during
//! a turn and written at its end, one `write` per connection however many
//! messages it got. Sockets are registered for READABLE | WRITABLE once, so no
//! `epoll_ctl` is needed when output backs up: the WRITABLE edge resumes it.
//! Buffers come from and go back to a small per-reactor pool.

use std::io::{self, Write};
use std::mem;
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;

use mio::Token;

use crate::codec::{self, close, op};
use crate::conn::{flag, Phase};
use crate::reactor::{live, Reactor};

/// Bytes one connection may write per turn before others get their go.
const WRITE_BUDGET: usize = 1024 * 1024;
/// Spare buffers kept for reuse, and the largest one worth keeping.
const POOL_BUFFERS: usize = 256;
const POOL_MAX_CAPACITY: usize = 64 * 1024;

/// What one [`Reactor::flush`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flushed {
    /// Everything queued was written.
    Drained,
    /// The socket is full; the WRITABLE edge resumes the write.
    Blocked,
    /// The per-turn budget ran out; the connection is listed for the next turn.
    Budget,
    /// The connection is gone (write error or it was closed already).
    Gone,
}

impl Reactor {
    /// Queues one unfragmented frame to a connection and lists it for flushing.
    ///
    /// A client is slow when its socket is full and what it has not taken yet
    /// is over `--max-output`: it is closed with 1008, after what was already
    /// queued for it (so the close frame never lands inside a half-written
    /// frame), and dropped at its EOF or after the close grace period. One
    /// message may be larger than the limit on its own (an echo of a big
    /// message), so pending output is bounded by `--max-output` plus one message.
    pub(crate) fn queue_frame(&mut self, token: Token, opcode: u8, payload: &[u8]) {
        let max_output = self.config.max_output;
        let over = match live(&mut self.conns, token) {
            Some(conn) if conn.phase != Phase::Closing => conn.unsent() > max_output,
            _ => return,
        };
        // Output is written at the end of a turn, so a burst within one turn
        // can pass the limit for a client that reads at once: write now, and
        // call the client slow only if that leaves it over the limit.
        if over && self.write_until_blocked(token) && self.conn_mut(token).is_some_and(|c| c.unsent() > max_output) {
            self.stats().slow_closed.fetch_add(1, Relaxed);
            let reason = format!("slow consumer: over {max_output} bytes of unsent output");
            return self.begin_close(token, close::POLICY, &reason);
        }
        let Some(conn) = live(&mut self.conns, token) else {
            return;
        };
        if conn.output.capacity() == 0 {
            conn.output = self.pool.pop().unwrap_or_default();
        } else if conn.out_pos > 0 && conn.out_pos >= conn.output.len() / 2 {
            // Reclaim the written front rather than let a busy buffer grow.
            conn.output.drain(..conn.out_pos);
            conn.out_pos = 0;
        }
        codec::write_frame(&mut conn.output, opcode, payload);
        if opcode == op::TEXT || opcode == op::BINARY {
            self.stats().messages_out.fetch_add(1, Relaxed);
        }
        self.mark_dirty(token);
    }

    /// Writes until the socket is full; false when the output drained (or
    /// the connection went away) first.
    fn write_until_blocked(&mut self, token: Token) -> bool {
        loop {
            match self.flush(token) {
                Flushed::Budget => {}
                Flushed::Blocked => return true,
                Flushed::Drained | Flushed::Gone => return false,
            }
        }
    }

    pub(crate) fn mark_dirty(&mut self, token: Token) {
        if let Some(conn) = self.conn_mut(token) {
            if !conn.has(flag::DIRTY) {
                conn.flags |= flag::DIRTY;
                self.dirty.push(token);
            }
        }
    }

    pub(crate) fn flush_dirty(&mut self) {
        let mut dirty = mem::take(&mut self.dirty);
        for token in dirty.drain(..) {
            if let Some(conn) = self.conn_mut(token) {
                conn.flags &= !flag::DIRTY;
                self.flush(token);
            }
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Writes what a connection has queued, up to the per-turn budget.
    pub(crate) fn flush(&mut self, token: Token) -> Flushed {
        let mut written = 0;
        let result = loop {
            let Some(conn) = self.conn_mut(token) else {
                return Flushed::Gone;
            };
            if conn.out_pos == conn.output.len() {
                break Flushed::Drained;
            }
            if written >= WRITE_BUDGET {
                break Flushed::Budget;
            }
            match (&conn.socket).write(&conn.output[conn.out_pos..]) {
                Ok(0) => break Flushed::Gone,
                Ok(n) => {
                    conn.out_pos += n;
                    written += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Flushed::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break Flushed::Gone,
            }
        };
        self.stats().bytes_out.fetch_add(written as u64, Relaxed);
        match result {
            Flushed::Gone => self.drop_conn(token),
            Flushed::Drained => {
                let conn = self.conn_mut(token).expect("checked in the loop");
                let output = mem::take(&mut conn.output);
                conn.out_pos = 0;
                if conn.has(flag::SHUTDOWN_AFTER_FLUSH) {
                    let _ = conn.socket.shutdown(Shutdown::Write);
                    conn.flags &= !flag::SHUTDOWN_AFTER_FLUSH;
                }
                self.give_buffer(output);
            }
            Flushed::Budget => self.mark_dirty(token),
            // Socket full: the WRITABLE edge brings us back.
            Flushed::Blocked => {}
        }
        result
    }

    /// A cleared buffer from the pool (or a new empty one).
    pub(crate) fn take_buffer(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }

    /// Returns a buffer to the pool; large ones are freed so memory goes back.
    pub(crate) fn give_buffer(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY || self.pool.len() >= POOL_BUFFERS {
            return;
        }
        buf.clear();
        self.pool.push(buf);
    }
}
