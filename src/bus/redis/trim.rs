//! What an idle bus thread hands back: a login burst grows queues and maps to
//! its peak in flight (tens of bytes per entry), which steady state does not
//! need, so each thread shrinks them once it finds itself idle.

/// Entries an idle bus thread's empty queue or map may keep allocated.
pub const IDLE_KEEP: usize = 1024;

/// Shrinks an empty collection that a burst grew past [`IDLE_KEEP`].
macro_rules! trim_if_empty {
    ($($c:expr),+ $(,)?) => {$(
        if $c.is_empty() && $c.capacity() > $crate::bus::redis::trim::IDLE_KEEP {
            $c.shrink_to_fit();
        }
    )+};
}
pub(crate) use trim_if_empty;

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    #[test]
    fn only_empty_collections_past_the_bound_shrink() {
        let mut grown: VecDeque<u32> = VecDeque::with_capacity(4 * super::IDLE_KEEP);
        let mut busy: Vec<u32> = Vec::with_capacity(4 * super::IDLE_KEEP);
        busy.push(1);
        let mut small: Vec<u32> = Vec::with_capacity(8);
        trim_if_empty!(grown, busy, small);
        assert!(grown.capacity() < super::IDLE_KEEP);
        assert!(busy.capacity() >= 4 * super::IDLE_KEEP);
        assert_eq!(small.capacity(), 8);
    }
}
