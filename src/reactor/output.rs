//! A connection's pending output, and the reactor's pool of spare buffers.
//! A connection holds a buffer only while something is pending; the pool
//! saves an allocation each time one comes back.

use std::mem;

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

    /// The bytes still to be written.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// `n` more bytes were written.
    pub fn advance(&mut self, n: usize) {
        self.pos += n;
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
