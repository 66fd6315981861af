//! A connection's pending output, and the reactor's pool of spare buffers.
//! A connection holds a buffer only while something is pending; the pool
//! saves an allocation each time one comes back.
//!
//! Output is a run of bytes the connection owns, or, once a room message is
//! queued, a queue of chunks: owned bytes and frames shared with every other
//! member the room message went to (encoded once, reference-counted, written
//! with `writev`, never copied per recipient).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::mem;
use std::sync::Arc;

/// Spare buffers kept for reuse, and the largest one worth keeping.
const POOL_BUFFERS: usize = 256;
const POOL_MAX_CAPACITY: usize = 64 * 1024;
/// Chunks handed to one `writev` (Linux takes up to 1,024; a few dozen
/// frames fill a socket buffer anyway).
const WRITEV_CHUNKS: usize = 64;

/// What a connection has queued and not yet written.
pub(super) enum Output {
    /// Owned bytes only, `buf[pos..]` unsent: the usual case, and no
    /// allocation at all while nothing is pending.
    Bytes { buf: Vec<u8>, pos: usize },
    /// One shared frame, `frame[pos..]` unsent: what an idle member of a room
    /// holds for a room message, without an allocation of its own.
    One { frame: Arc<[u8]>, pos: usize },
    /// Owned bytes and shared frames, in the order they were queued.
    Chunks(Box<Chunks>),
}

pub(super) struct Chunks {
    queue: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    pos: usize,
    /// Bytes of every chunk not yet written.
    unsent: usize,
}

enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(s) => s,
        }
    }
}

impl Default for Output {
    fn default() -> Output {
        Output::Bytes { buf: Vec::new(), pos: 0 }
    }
}

impl Output {
    /// Bytes queued and not yet written.
    pub fn unsent(&self) -> usize {
        match self {
            Output::Bytes { buf, pos } => buf.len() - pos,
            Output::One { frame, pos } => frame.len() - pos,
            Output::Chunks(c) => c.unsent,
        }
    }

    /// Appends what `write` writes into an owned buffer: taken from the pool
    /// when there is none, and with its written front reclaimed rather than
    /// letting a busy one grow.
    pub fn append(&mut self, pool: &mut BufferPool, write: impl FnOnce(&mut Vec<u8>)) {
        if let Output::One { .. } = self {
            self.make_chunks();
        }
        match self {
            Output::Bytes { buf, pos } => {
                if buf.capacity() == 0 {
                    *buf = pool.take();
                } else if *pos > 0 && *pos >= buf.len() / 2 {
                    buf.drain(..*pos);
                    *pos = 0;
                }
                write(buf);
            }
            Output::One { .. } => {}
            Output::Chunks(c) => match c.queue.back_mut() {
                Some(Chunk::Owned(buf)) => {
                    let before = buf.len();
                    write(buf);
                    c.unsent += buf.len() - before;
                }
                _ => {
                    let mut buf = pool.take();
                    write(&mut buf);
                    c.unsent += buf.len();
                    c.queue.push_back(Chunk::Owned(buf));
                }
            },
        }
    }

    /// Queues a frame shared with other connections.
    pub fn push_shared(&mut self, pool: &mut BufferPool, frame: &Arc<[u8]>) {
        if self.unsent() == 0 {
            // Nothing pending: hold the frame itself.
            if let Output::Bytes { buf, .. } = mem::replace(self, Output::One { frame: Arc::clone(frame), pos: 0 }) {
                pool.give(buf);
            }
            return;
        }
        self.make_chunks();
        if let Output::Chunks(c) = self {
            c.unsent += frame.len();
            c.queue.push_back(Chunk::Shared(Arc::clone(frame)));
        }
    }

    /// Turns what is pending into a queue of chunks (nothing written is lost).
    fn make_chunks(&mut self) {
        let (first, pos) = match mem::take(self) {
            Output::Chunks(c) => {
                *self = Output::Chunks(c);
                return;
            }
            Output::Bytes { buf, pos } if buf.len() > pos => (Some(Chunk::Owned(buf)), pos),
            Output::Bytes { .. } => (None, 0),
            Output::One { frame, pos } => (Some(Chunk::Shared(frame)), pos),
        };
        let unsent = first.as_ref().map_or(0, |c| c.bytes().len() - pos);
        let mut queue = VecDeque::with_capacity(4);
        queue.extend(first);
        *self = Output::Chunks(Box::new(Chunks { queue, pos, unsent }));
    }

    /// The buffer to append to, allocated only if something is appended
    /// (the HTTP response of a connection still upgrading: no chunks yet).
    pub fn unpooled(&mut self) -> &mut Vec<u8> {
        match self {
            Output::Bytes { buf, .. } => buf,
            Output::One { .. } | Output::Chunks(_) => {
                *self = Output::default();
                self.unpooled()
            }
        }
    }

    /// Writes what the socket takes, once: `write` for owned bytes, `writev`
    /// for chunks. Returns the bytes written (0 with something unsent means
    /// the peer is gone).
    pub fn write_to(&mut self, mut socket: impl Write) -> io::Result<usize> {
        match self {
            Output::Bytes { buf, pos } => {
                let n = socket.write(&buf[*pos..])?;
                *pos += n;
                Ok(n)
            }
            Output::One { frame, pos } => {
                let n = socket.write(&frame[*pos..])?;
                *pos += n;
                Ok(n)
            }
            Output::Chunks(c) => {
                let mut slices = [IoSlice::new(&[]); WRITEV_CHUNKS];
                let mut count = 0;
                for (i, chunk) in c.queue.iter().take(WRITEV_CHUNKS).enumerate() {
                    slices[i] = IoSlice::new(if i == 0 { &chunk.bytes()[c.pos..] } else { chunk.bytes() });
                    count += 1;
                }
                let n = socket.write_vectored(&slices[..count])?;
                c.advance(n);
                Ok(n)
            }
        }
    }

    /// Hands the owned buffer back (to the pool, by the caller) once all is
    /// written; shared frames are let go.
    pub fn take(&mut self) -> Vec<u8> {
        match mem::take(self) {
            Output::Bytes { buf, .. } => buf,
            Output::One { .. } | Output::Chunks(_) => Vec::new(),
        }
    }
}

impl Chunks {
    /// `n` more bytes were written: drops the chunks they finished.
    fn advance(&mut self, mut n: usize) {
        self.unsent -= n;
        while let Some(front) = self.queue.front() {
            let left = front.bytes().len() - self.pos;
            if n < left {
                self.pos += n;
                return;
            }
            n -= left;
            self.pos = 0;
            self.queue.pop_front();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per call.
    struct Trickle {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room);
            self.got.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.room - n);
                self.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn owned_and_shared_bytes_come_out_in_order_however_the_socket_takes_them() {
        for room in [1, 3, 7, 1000] {
            let (mut out, mut pool) = (Output::default(), BufferPool::default());
            let shared: Arc<[u8]> = Arc::from(&b"<shared>"[..]);
            out.append(&mut pool, |b| b.extend_from_slice(b"one "));
            out.push_shared(&mut pool, &shared);
            out.append(&mut pool, |b| b.extend_from_slice(b" two "));
            out.push_shared(&mut pool, &shared);
            out.push_shared(&mut pool, &shared);
            assert_eq!(out.unsent(), 4 + 8 + 5 + 16);
            let mut socket = Trickle { got: Vec::new(), room };
            while out.unsent() > 0 {
                out.write_to(&mut socket).unwrap();
            }
            assert_eq!(socket.got, b"one <shared> two <shared><shared>", "room {room}");
            assert_eq!(Arc::strong_count(&shared), 1, "written frames are let go");
        }
    }

    #[test]
    fn an_idle_connection_holds_a_shared_frame_without_a_queue() {
        let (mut out, mut pool) = (Output::default(), BufferPool::default());
        let shared: Arc<[u8]> = Arc::from(&b"frame"[..]);
        out.push_shared(&mut pool, &shared);
        assert!(matches!(out, Output::One { .. }));
        out.append(&mut pool, |b| b.extend_from_slice(b"+own"));
        out.push_shared(&mut pool, &shared);
        let mut socket = Trickle { got: Vec::new(), room: 3 };
        while out.unsent() > 0 {
            out.write_to(&mut socket).unwrap();
        }
        assert_eq!(socket.got, b"frame+ownframe");
    }

    #[test]
    fn a_shared_frame_after_a_partly_written_buffer_keeps_what_is_left() {
        let (mut out, mut pool) = (Output::default(), BufferPool::default());
        out.append(&mut pool, |b| b.extend_from_slice(b"abcdef"));
        let mut socket = Trickle { got: Vec::new(), room: 2 };
        out.write_to(&mut socket).unwrap();
        out.push_shared(&mut pool, &Arc::from(&b"XY"[..]));
        socket.room = 100;
        out.write_to(&mut socket).unwrap();
        assert_eq!(socket.got, b"abcdefXY");
        assert_eq!(out.unsent(), 0);
    }
}
