//! The signals a node acts on, received synchronously by the main thread.
//!
//! They are blocked in every thread (the set is inherited by the threads
//! started after [`block`]) and taken with `sigtimedwait`, so no handler runs
//! at an arbitrary point of a reactor's work.
//!
//! - SIGTERM, SIGINT, SIGQUIT: drain (a second one: close the rest now).
//!   SIGQUIT would dump core and kill every client without a close frame.
//! - SIGHUP: logged; settings are read once, at start, so there is nothing
//!   to reload. A terminal that goes away (SIGHUP) does not kill the node.

use std::time::Duration;

/// What a received signal asks of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM, SIGINT or SIGQUIT.
    Stop(&'static str),
    /// SIGHUP.
    Reload,
}

/// The signals of this module, blocked for the calling thread and every
/// thread it starts from now on.
pub struct Signals {
    set: libc::sigset_t,
}

/// Blocks the node's signals; call before starting any thread.
pub fn block() -> Signals {
    // SAFETY: sigemptyset initialises the set before sigaddset and
    // pthread_sigmask read it; all of them only touch the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        Signals { set }
    }
}

impl Signals {
    /// The next signal, or `None` after `timeout` without one.
    pub fn wait(&self, timeout: Duration) -> Option<Signal> {
        let timeout = libc::timespec {
            tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
            // Under 10^9: fits a c_long everywhere.
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the set was initialised in `block`; sigtimedwait reads it and
        // the timeout we own, and may write the (unused, null) info.
        let sig = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &timeout) };
        match sig {
            libc::SIGTERM => Some(Signal::Stop("SIGTERM")),
            libc::SIGINT => Some(Signal::Stop("SIGINT")),
            libc::SIGQUIT => Some(Signal::Stop("SIGQUIT")),
            libc::SIGHUP => Some(Signal::Reload),
            // -1: the timeout passed (EAGAIN) or another signal interrupted (EINTR).
            _ => None,
        }
    }
}
