//! When connections' tokens expire: a timer wheel of one-second slots.
//!
//! Token lifetimes differ, so their deadlines do not come in the order they
//! are set and a FIFO (see `timers`) cannot hold them. A wheel can: a
//! deadline goes into the slot of its second (modulo the wheel's size), O(1);
//! each second the reactor takes the slots whose time has come. An entry is
//! only a token; the deadline that counts is the one in the connection
//! ([`Conn::expiry`](super::conn::Conn::expiry)), so a refresh just moves it
//! later, and the stale entry, when its slot comes, finds it moved and is
//! filed again at the new deadline. So does an entry whose deadline lies
//! more than a turn of the wheel ahead: a one-day token is looked at once
//! every 68 minutes, which costs nothing next to the second it lives.
//!
//! Each connection has at most one entry (`flag::EXPIRY_TIMER`), 8 bytes.
//! With no entries the wheel costs a comparison per turn; with some, the
//! reactor reads the wall clock once per turn (tokens are wall-clock times)
//! and wakes at least once a second, as it does anyway.

use std::mem;

use mio::Token;

/// Slots: seconds per turn of the wheel. 4096 s (68 min) covers the usual
/// one-hour access token in a single pass, at 24 bytes per empty slot
/// (96 KiB per reactor).
const SLOTS: u64 = 4096;

pub(super) struct ExpiryWheel {
    slots: Box<[Vec<Token>]>,
    /// The slot being handed out, taken from the wheel.
    current: Vec<Token>,
    /// The next second whose slot has not been taken.
    next: u64,
    entries: usize,
}

impl ExpiryWheel {
    /// An empty wheel; its slots are allocated when the first entry is
    /// filed (never, in open mode).
    pub fn new() -> ExpiryWheel {
        ExpiryWheel { slots: Box::default(), current: Vec::new(), next: 0, entries: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Files `token` under second `at` (Unix seconds). A second already
    /// taken is filed under the next one still to come.
    pub fn file(&mut self, at: u64, token: Token) {
        let at = at.max(self.next);
        if self.slots.is_empty() {
            self.slots = (0..SLOTS).map(|_| Vec::new()).collect();
        }
        self.slots[(at % SLOTS) as usize].push(token);
        self.entries += 1;
    }

    /// The next entry whose second has come by `now` (Unix seconds): its
    /// connection's deadline may have passed, moved, or lie a turn ahead.
    pub fn pop_due(&mut self, now: u64) -> Option<Token> {
        loop {
            if let Some(token) = self.current.pop() {
                self.entries -= 1;
                return Some(token);
            }
            if self.entries == 0 {
                // Nothing filed: no slot to visit until something is.
                self.next = self.next.max(now + 1);
                return None;
            }
            if self.next > now {
                return None;
            }
            // After a long sleep (or a clock step forward) each slot is due
            // once, not once per second missed.
            self.next = self.next.max(now.saturating_sub(SLOTS - 1));
            let slot = &mut self.slots[(self.next % SLOTS) as usize];
            // The emptied vector goes back to the slot, keeping its capacity.
            mem::swap(&mut self.current, slot);
            self.next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(wheel: &mut ExpiryWheel, now: u64) -> Vec<usize> {
        let mut out: Vec<usize> = std::iter::from_fn(|| wheel.pop_due(now)).map(|t| t.0).collect();
        out.sort_unstable();
        out
    }

    #[test]
    fn entries_come_due_in_their_second_whatever_the_order_they_were_filed() {
        let mut wheel = ExpiryWheel::new();
        assert_eq!(due(&mut wheel, 1_000), Vec::<usize>::new());
        wheel.file(1_010, Token(3));
        wheel.file(1_002, Token(1));
        wheel.file(1_005, Token(2));
        wheel.file(1_002, Token(4));
        assert_eq!(due(&mut wheel, 1_001), Vec::<usize>::new());
        assert_eq!(due(&mut wheel, 1_002), vec![1, 4]);
        assert_eq!(due(&mut wheel, 1_009), vec![2]);
        assert!(!wheel.is_empty());
        assert_eq!(due(&mut wheel, 1_010), vec![3]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn a_past_second_and_a_far_one_are_handed_out_in_time() {
        let mut wheel = ExpiryWheel::new();
        due(&mut wheel, 5_000);
        wheel.file(10, Token(1));
        assert_eq!(due(&mut wheel, 5_001), vec![1], "a deadline already past is due at once");
        // A turn and a bit ahead: handed out early (the caller files it
        // again), never late.
        wheel.file(5_001 + SLOTS + 7, Token(2));
        assert_eq!(due(&mut wheel, 5_008), vec![2]);
    }

    #[test]
    fn a_long_sleep_visits_each_slot_once() {
        let mut wheel = ExpiryWheel::new();
        due(&mut wheel, 100);
        for s in 0..SLOTS {
            wheel.file(101 + s, Token(s as usize));
        }
        assert_eq!(due(&mut wheel, 100 + 10 * SLOTS).len(), SLOTS as usize);
        assert!(wheel.is_empty());
    }
}
