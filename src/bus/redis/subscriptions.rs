//! The subscriber's (S)SUBSCRIBE and (S)UNSUBSCRIBE commands, many user
//! channels to a command: a burst of logins costs Redis one command per
//! [`CHUNK`] channels (Redis acknowledges each channel on its own, so
//! every login still learns when its channel is confirmed).
//!
//! Within a turn the subscriber gathers the channels asked for on each
//! link ([`Gathered`]), then writes them before the turn's one `write`. A
//! command holds one verb: a channel of the other verb writes what was
//! gathered first, so a user's subscribe and unsubscribe reach Redis in
//! the order the reactors asked for them.
//!
//! In Redis Cluster the channels of one SSUBSCRIBE must share a slot, and
//! each user's channel is a slot of its own (`sb:u:{NAME}`): there each
//! channel is a command, all of them still in the one write.

use compact_str::CompactString;

use super::channels;
use super::resp;

/// Channels per command. Redis answers every channel of a command before
/// anything else; 512 keep that under a millisecond and amortise the
/// command's own cost.
pub const CHUNK: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Subscribe,
    Unsubscribe,
}

impl Verb {
    fn command(self, cluster: bool) -> &'static [u8] {
        match (self, cluster) {
            (Verb::Subscribe, false) => b"SUBSCRIBE",
            (Verb::Subscribe, true) => b"SSUBSCRIBE",
            (Verb::Unsubscribe, false) => b"UNSUBSCRIBE",
            (Verb::Unsubscribe, true) => b"SUNSUBSCRIBE",
        }
    }
}

/// User channels gathered for one link's next command.
#[derive(Default)]
pub(crate) struct Gathered {
    verb: Option<Verb>,
    names: Vec<CompactString>,
}

impl Gathered {
    /// Adds `name`'s channel; what was gathered under the other verb, or a
    /// full command, is written to `out` first.
    pub fn add(&mut self, out: &mut Vec<u8>, verb: Verb, name: CompactString, cluster: bool) {
        if self.verb != Some(verb) || self.names.len() >= CHUNK {
            self.write(out, cluster);
        }
        self.verb = Some(verb);
        self.names.push(name);
    }

    /// Writes what was gathered to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, cluster: bool) {
        if let Some(verb) = self.verb.take() {
            write_commands(out, verb, &self.names, cluster);
            self.names.clear();
        }
    }

    /// Hands back what a burst grew.
    pub fn trim_idle(&mut self) {
        if self.names.is_empty() && self.names.capacity() > CHUNK {
            self.names = Vec::new();
        }
    }
}

/// `VERB sb:u:{NAME}...` for `names` (at most [`CHUNK`] a command), or in
/// Redis Cluster one command per channel.
pub fn write_commands(out: &mut Vec<u8>, verb: Verb, names: &[CompactString], cluster: bool) {
    let verb = verb.command(cluster);
    let per_command = if cluster { 1 } else { CHUNK };
    for chunk in names.chunks(per_command) {
        let size = resp::header_len(chunk.len() + 1)
            + resp::bulk_len(verb.len())
            + chunk.iter().map(|name| resp::bulk_len(channels::user_channel_len(name.len()))).sum::<usize>();
        out.reserve(size);
        resp::push_header(out, b'*', chunk.len() + 1);
        resp::push_bulk(out, verb);
        for name in chunk {
            channels::push_user_channel(out, name.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::redis::resp::Frame;

    /// Every command in `out`, as its strings.
    fn commands(out: &[u8]) -> Vec<Vec<String>> {
        let mut rest = out;
        let mut all = Vec::new();
        while let Some((frame, n)) = resp::parse(rest).expect("valid RESP") {
            let Frame::Array(Some(items)) = frame else { panic!("a command") };
            all.push(items.iter().map(|a| String::from_utf8_lossy(a.bytes().expect("bulk")).into()).collect());
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "whole commands");
        all
    }

    #[test]
    fn channels_of_one_verb_share_a_command_in_order() {
        let mut out = Vec::new();
        let mut gathered = Gathered::default();
        for (verb, name) in [
            (Verb::Subscribe, "a"),
            (Verb::Subscribe, "b"),
            (Verb::Unsubscribe, "a"),
            (Verb::Subscribe, "a"),
            (Verb::Subscribe, "c}d"),
        ] {
            gathered.add(&mut out, verb, name.into(), false);
        }
        gathered.write(&mut out, false);
        assert_eq!(
            commands(&out),
            [
                vec!["SUBSCRIBE", "sb:u:{a}", "sb:u:{b}"],
                vec!["UNSUBSCRIBE", "sb:u:{a}"],
                vec!["SUBSCRIBE", "sb:u:{a}", "sb:u:{c}d}"],
            ]
        );
        gathered.write(&mut out, false);
        assert_eq!(commands(&out).len(), 3, "nothing gathered, nothing written");
    }

    #[test]
    fn a_command_holds_at_most_a_chunk_and_cluster_one_channel() {
        let names: Vec<CompactString> = (0..CHUNK + 1).map(|i| format!("u{i}").into()).collect();
        let mut out = Vec::new();
        let mut gathered = Gathered::default();
        for name in &names {
            gathered.add(&mut out, Verb::Subscribe, name.clone(), false);
        }
        gathered.write(&mut out, false);
        let sent = commands(&out);
        assert_eq!(sent.iter().map(Vec::len).collect::<Vec<_>>(), [CHUNK + 1, 2]);
        assert_eq!(sent[1][1], format!("sb:u:{{u{CHUNK}}}"));

        let mut out = Vec::new();
        write_commands(&mut out, Verb::Unsubscribe, &names[..2], true);
        assert_eq!(commands(&out), [vec!["SUNSUBSCRIBE", "sb:u:{u0}"], vec!["SUNSUBSCRIBE", "sb:u:{u1}"]]);
    }
}
