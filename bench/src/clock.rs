//! CLOCK_MONOTONIC in nanoseconds. It is one clock for the whole machine, so a timestamp
//! taken by a sender in one worker process can be compared by a recipient in another.

/// Nanoseconds on CLOCK_MONOTONIC.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The next whole second of CLOCK_MONOTONIC as an `Instant` (which is CLOCK_MONOTONIC on
/// Linux). Workers report on these boundaries, so that per-second figures from several
/// processes cover the same second.
pub fn next_second_boundary() -> std::time::Instant {
    let now = std::time::Instant::now();
    let wait = 1_000_000_000 - monotonic_ns() % 1_000_000_000;
    now + std::time::Duration::from_nanos(wait)
}

#[cfg(test)]
mod tests {
    #[test]
    fn monotonic_never_goes_back() {
        let a = super::monotonic_ns();
        let b = super::monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
