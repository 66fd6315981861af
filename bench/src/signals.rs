//! Stop signals. The coordinator turns SIGINT and SIGTERM into an orderly early end: the
//! phase under way stops, the workers are told to finish, and every output (JSON summary,
//! human summary, CSV, chart) is still written, saying the run was cut short. Workers
//! ignore both (a Ctrl-C reaches the whole process group) and leave when the coordinator
//! closes their stdin, or at once if it dies.

use std::sync::atomic::{AtomicI32, Ordering};

/// The stop signal received, 0 before any.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_stop(signal: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(signal, Ordering::Relaxed);
}

/// Coordinator: SIGINT and SIGTERM set a flag that the run checks between reports.
pub fn catch_stop() {
    let handler = on_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, handler) };
    }
}

/// Worker: SIGINT and SIGTERM are for the coordinator, which finishes the workers itself.
pub fn ignore_stop() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: SIG_IGN is always a valid disposition.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
}

/// The name of the stop signal received, if one was.
pub fn stop_requested() -> Option<&'static str> {
    match RECEIVED.load(Ordering::Relaxed) {
        0 => None,
        libc::SIGINT => Some("SIGINT"),
        libc::SIGTERM => Some("SIGTERM"),
        _ => Some("a signal"),
    }
}
