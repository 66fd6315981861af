//! The write path: frames are queued into a connection's [`Output`] during a
//! turn and written at its end, one `write` per connection however many
//! messages it got. Sockets are registered for READABLE | WRITABLE once, so no
//! `epoll_ctl` is needed when output backs up: the WRITABLE edge resumes it.
//! Buffers come from and go back to a small per-reactor [`BufferPool`].

use std::io::{self, Write};
use std::mem;
use std::net::Shutdown;
use std::sync::atomic::Ordering::Relaxed;

use mio::Token;

use super::conn::{flag, Closing, Conn, Phase};
use super::{Context, Outcome, Stop};
use crate::codec::{self, close, op};

/// Bytes one connection may write per turn before others get their go.
const WRITE_BUDGET: usize = 1024 * 1024;
/// Spare buffers kept for reuse, and the largest one worth keeping.
const POOL_BUFFERS: usize = 256;
const POOL_MAX_CAPACITY: usize = 64 * 1024;

/// Bytes queued for a connection; `buf[pos..]` is still to be written.
/// Holds no allocation while nothing is pending.
#[derive(Default)]
pub(super) struct Output {
    buf: Vec<u8>,
    pos: usize,
}

impl Output {
    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The buffer to append to: taken from the pool when there is none, and
    /// with its written front reclaimed rather than letting a busy one grow.
    pub fn bytes(&mut self, pool: &mut BufferPool) -> &mut Vec<u8> {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        &mut self.buf
    }

    /// The buffer to append to, allocated only if something is appended.
    pub fn unpooled(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Hands the buffer back (to the pool, by the caller).
    pub fn take(&mut self) -> Vec<u8> {
        self.pos = 0;
        mem::take(&mut self.buf)
    }
}

/// Spare buffers of one reactor, so that connections which hold a buffer
/// only while something is pending do not allocate each time.
#[derive(Default)]
pub(super) struct BufferPool {
    spare: Vec<Vec<u8>>,
}

impl BufferPool {
    /// A cleared buffer from the pool (or a new empty one).
    pub fn take(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Returns a buffer to the pool; large ones are freed so memory goes back.
    pub fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > POOL_MAX_CAPACITY || self.spare.len() >= POOL_BUFFERS {
            return;
        }
        buf.clear();
        self.spare.push(buf);
    }
}

/// What one [`flush`] achieved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flushed {
    /// Everything queued was written.
    Drained,
    /// The socket is full; the WRITABLE edge resumes the write.
    Blocked,
    /// The per-turn budget ran out; the connection is listed for the next turn.
    Budget,
    /// The socket failed: the peer is gone.
    Gone,
}

/// Lists `conn` for flushing at the end of this turn (once).
pub(super) fn mark_dirty(conn: &mut Conn, token: Token, dirty: &mut Vec<Token>) {
    if !conn.has(flag::DIRTY) {
        conn.flags |= flag::DIRTY;
        dirty.push(token);
    }
}

/// Queues one unfragmented frame to a connection and lists it for flushing.
///
/// A client is slow when its socket is full and what it has not taken yet
/// is over `--max-output`: it is closed with 1008, after what was already
/// queued for it (so the close frame never lands inside a half-written
/// frame), and dropped at its EOF or after the close grace period. One
/// message may be larger than the limit on its own (an echo of a big
/// message), so pending output is bounded by `--max-output` plus one message.
pub(super) fn queue_frame(conn: &mut Conn, token: Token, cx: &mut Context, opcode: u8, payload: &[u8]) -> Outcome {
    if matches!(conn.phase, Phase::Closing(_) | Phase::Gone) {
        return Ok(());
    }
    let max_output = cx.config.max_output;
    // Output is written at the end of a turn, so a burst within one turn
    // can pass the limit for a client that reads at once: write now, and
    // call the client slow only if that leaves it over the limit.
    if conn.output.unsent() > max_output && write_until_blocked(conn, token, cx)? && conn.output.unsent() > max_output {
        cx.stats().slow_closed.fetch_add(1, Relaxed);
        return Err(Stop::Close(
            close::POLICY,
            format!("slow consumer: over {max_output} bytes of unsent output").into(),
        ));
    }
    codec::write_frame(conn.output.bytes(&mut cx.pool), opcode, payload);
    if opcode == op::TEXT || opcode == op::BINARY {
        cx.stats().messages_out.fetch_add(1, Relaxed);
    }
    mark_dirty(conn, token, &mut cx.dirty);
    Ok(())
}

/// Writes until the socket is full: true when it is, false when the output
/// drained first.
fn write_until_blocked(conn: &mut Conn, token: Token, cx: &mut Context) -> Result<bool, Stop> {
    loop {
        match flush(conn, token, cx) {
            Flushed::Budget => {}
            Flushed::Blocked => return Ok(true),
            Flushed::Drained => return Ok(false),
            Flushed::Gone => return Err(Stop::Drop),
        }
    }
}

/// Writes what a connection has queued, up to the per-turn budget. Drained
/// output goes back to the pool, and a closing connection shuts its sending
/// side once its last bytes are out. The caller drops a connection that is
/// [`Flushed::Gone`].
pub(super) fn flush(conn: &mut Conn, token: Token, cx: &mut Context) -> Flushed {
    let mut written = 0;
    let result = loop {
        let out = &mut conn.output;
        if out.pos == out.buf.len() {
            break Flushed::Drained;
        }
        if written >= WRITE_BUDGET {
            break Flushed::Budget;
        }
        match (&conn.socket).write(&out.buf[out.pos..]) {
            Ok(0) => break Flushed::Gone,
            Ok(n) => {
                out.pos += n;
                written += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Flushed::Blocked,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break Flushed::Gone,
        }
    };
    cx.stats().bytes_out.fetch_add(written as u64, Relaxed);
    match result {
        Flushed::Drained => {
            cx.pool.give(conn.output.take());
            if conn.phase == Phase::Closing(Closing::Flushing) {
                let _ = conn.socket.shutdown(Shutdown::Write);
                conn.phase = Phase::Closing(Closing::Shut);
            }
        }
        Flushed::Budget => mark_dirty(conn, token, &mut cx.dirty),
        // Socket full: the WRITABLE edge brings us back. Gone: the caller drops it.
        Flushed::Blocked | Flushed::Gone => {}
    }
    result
}
