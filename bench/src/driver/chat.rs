//! Sending chat messages: a random ready sender, a recipient by `--pattern`, a timed
//! `Data` marker.

use super::conn::State;
use super::Driver;
use crate::clock::monotonic_ns;
use crate::codec;
use crate::message;
use crate::stats::Counter;

/// Output a connection may have waiting before chat sends pass it by: a server that stops
/// reading must not make the load generator grow without bound.
const OUTPUT_LIMIT: usize = 256 * 1024;

impl Driver {
    pub(super) fn send_chat(&mut self) {
        let count = self.conns.len() as u64;
        if count == 0 {
            return;
        }
        let mut chosen = None;
        for _ in 0..8 {
            let slot = (self.next_random() % count) as usize;
            let conn = &self.conns[slot];
            if conn.state == State::Ready && conn.out.len() < OUTPUT_LIMIT {
                chosen = Some(slot);
                break;
            }
        }
        let Some(slot) = chosen else {
            self.shared.counters.add(Counter::SendSkipped, 1);
            return;
        };
        let sender = self.first + slot as u32;
        let random = self.next_random();
        let recipient =
            self.plan.pattern.pick_recipient(sender, 0..self.plan.connections, self.plan.targets.len() as u32, random);
        let seq = self.conns[slot].seq;
        self.conns[slot].seq += 1;
        self.data.clear();
        message::write_chat_data(&mut self.data, monotonic_ns(), sender, seq, self.plan.payload);
        self.json.clear();
        message::write_chat(&mut self.json, &self.plan.name_prefix, sender, recipient, &self.data);
        self.wbuf.clear();
        let mask = self.next_mask();
        codec::encode_client_frame(&mut self.wbuf, codec::OP_TEXT, &self.json, mask);
        if self.send_wbuf(slot as u32) {
            self.shared.counters.add(Counter::Sent, 1);
        }
    }
}
