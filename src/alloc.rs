//! The allocator's settings, compiled in: jemalloc (the binary's global
//! allocator) reads `malloc_conf` when it starts.
//!
//! A burst of connections with buffers (partial messages, output to slow
//! readers) leaves freed pages behind. By default jemalloc returns them on a
//! 10 s decay that only advances when the same arena allocates again, and
//! first as MADV_FREE pages, which still count as resident: an idle node kept
//! 46 MB resident 25 s after 300 stalled 64 KiB messages closed. Here:
//!
//! - `background_thread:true`: a jemalloc thread purges on time, so a node
//!   that goes quiet after a burst still gives memory back;
//! - `dirty_decay_ms:1000`: freed pages are kept one second for reuse (a
//!   busy node reuses them at once) before they go back;
//! - `muzzy_decay_ms:0`: they go back with MADV_DONTNEED, so RSS shows it.
//!
//! `_RJEM_MALLOC_CONF` in the environment still overrides any of these.

/// Read by jemalloc at its first allocation (the C side sees a `const char *`).
#[cfg(not(target_env = "msvc"))]
#[export_name = "_rjem_malloc_conf"]
pub static MALLOC_CONF: &[u8; 60] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
