//! The process's open-file limit: every connection is one descriptor.

use std::io;

/// Descriptors kept back for listeners, the waker, Redis, logs and stdio.
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit.
///
/// # Errors
/// When the limit cannot be read or set.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}
