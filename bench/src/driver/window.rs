//! Closed-loop chat's bookkeeping for one driver thread: how many messages each
//! connection has under way, and which connections may have room to send again.

/// Messages under way per connection, against a window of `size`. Empty (no heap)
/// outside closed-loop chat; 2 bytes per connection within.
#[derive(Debug, Default)]
pub(super) struct Windows {
    /// Messages a connection may have under way.
    size: u16,
    /// Per slot: messages sent and not yet delivered.
    in_flight: Vec<u16>,
    /// Slots to refill at the end of the turn, perhaps more than once each.
    ready: Vec<u32>,
}

impl Windows {
    /// Every one of `slots` connections starts with an empty window, ready to fill.
    pub(super) fn open(size: u16, slots: usize) -> Self {
        Windows { size, in_flight: vec![0; slots], ready: (0..slots as u32).rev().collect() }
    }

    /// A connection that may have room; `None` when none is left this turn.
    pub(super) fn next_ready(&mut self) -> Option<u32> {
        self.ready.pop()
    }

    /// Messages `slot` may still send.
    pub(super) fn room(&self, slot: u32) -> u16 {
        self.size - self.in_flight[slot as usize]
    }

    /// `slot` sent `n` more messages (at most its room).
    pub(super) fn sent(&mut self, slot: u32, n: u16) {
        self.in_flight[slot as usize] += n;
    }

    /// `slot` has room left that waits for a later turn.
    pub(super) fn later(&mut self, slot: u32) {
        self.ready.push(slot);
    }

    /// One of `slot`'s messages was delivered: it may send another. A slot outside the
    /// windows (another thread's sender, or no closed loop running) is ignored.
    pub(super) fn delivered(&mut self, slot: u32) {
        if let Some(n) = self.in_flight.get_mut(slot as usize) {
            *n = n.saturating_sub(1);
            self.ready.push(slot);
        }
    }

    /// `slot`'s queued output went out: if it held back because that output was full, it
    /// may send now.
    pub(super) fn drained(&mut self, slot: u32) {
        if (slot as usize) < self.in_flight.len() {
            self.ready.push(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_reopen_on_delivery_only_for_this_threads_senders() {
        let mut w = Windows::open(2, 3);
        assert_eq!((w.next_ready(), w.next_ready(), w.next_ready(), w.next_ready()), (Some(0), Some(1), Some(2), None));
        w.sent(1, 2);
        assert_eq!(w.room(1), 0);
        w.delivered(1);
        assert_eq!((w.room(1), w.next_ready(), w.next_ready()), (1, Some(1), None));
        // A sender of another thread (an index before `first` wraps far out of range).
        w.delivered(0u32.wrapping_sub(5));
        w.drained(7);
        assert_eq!(w.next_ready(), None);
        // Outside closed loop nothing is kept.
        let mut idle = Windows::default();
        idle.delivered(0);
        idle.drained(0);
        assert_eq!(idle.next_ready(), None);
    }
}
