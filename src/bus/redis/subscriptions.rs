//! The subscriber's (S)SUBSCRIBE and (S)UNSUBSCRIBE commands, many
//! channels (users' and rooms') to a command: a burst of logins or room
//! joins costs Redis one command per [`CHUNK`] channels (Redis acknowledges
//! each channel on its own, so every login still learns when its channel
//! is confirmed).
//!
//! Within a turn the subscriber gathers the channels asked for on each
//! link ([`Gathered`]), then writes them before the turn's one `write`. A
//! command holds one verb: a channel of the other verb writes what was
//! gathered first, so a channel's subscribe and unsubscribe reach Redis in
//! the order they were asked for.
//!
//! In Redis Cluster the channels of one SSUBSCRIBE must share a slot, and
//! each user's or room's channel is a slot of its own (`sb:u:{NAME}`,
//! `sb:r:{KEY}`): there each channel is a command, all of them still in
//! the one write.

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

/// A channel the subscriber holds, by what it is for (the name is kept,
/// the channel is written from it when the command is).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Channel {
    /// `sb:u:{NAME}`: a user on this node.
    User(CompactString),
    /// `sb:r:{KEY}`: a room with members on this node.
    Room(CompactString),
}

impl Channel {
    fn bulk_len(&self) -> usize {
        match self {
            Channel::User(name) => resp::bulk_len(channels::user_channel_len(name.len())),
            Channel::Room(key) => resp::bulk_len(channels::room_channel_len(key.len())),
        }
    }

    fn push(&self, out: &mut Vec<u8>) {
        match self {
            Channel::User(name) => channels::push_user_channel(out, name.as_bytes()),
            Channel::Room(key) => channels::push_room_channel(out, key.as_bytes()),
        }
    }
}

/// Channels gathered for one link's next command.
#[derive(Default)]
pub(crate) struct Gathered {
    verb: Option<Verb>,
    channels: Vec<Channel>,
}

impl Gathered {
    /// Adds `channel`; what was gathered under the other verb, or a full
    /// command, is written to `out` first.
    pub fn add(&mut self, out: &mut Vec<u8>, verb: Verb, channel: Channel, cluster: bool) {
        if self.verb != Some(verb) || self.channels.len() >= CHUNK {
            self.write(out, cluster);
        }
        self.verb = Some(verb);
        self.channels.push(channel);
    }

    /// Writes what was gathered to `out`.
    pub fn write(&mut self, out: &mut Vec<u8>, cluster: bool) {
        if let Some(verb) = self.verb.take() {
            write_commands(out, verb, &self.channels, cluster);
            self.channels.clear();
        }
    }

    /// Hands back what a burst grew.
    pub fn trim_idle(&mut self) {
        if self.channels.is_empty() && self.channels.capacity() > CHUNK {
            self.channels = Vec::new();
        }
    }
}

/// `VERB CHANNEL...` for `channels` (at most [`CHUNK`] a command), or in
/// Redis Cluster one command per channel.
pub fn write_commands(out: &mut Vec<u8>, verb: Verb, channels: &[Channel], cluster: bool) {
    let verb = verb.command(cluster);
    let per_command = if cluster { 1 } else { CHUNK };
    for chunk in channels.chunks(per_command) {
        let size = resp::header_len(chunk.len() + 1)
            + resp::bulk_len(verb.len())
            + chunk.iter().map(Channel::bulk_len).sum::<usize>();
        out.reserve(size);
        resp::push_header(out, b'*', chunk.len() + 1);
        resp::push_bulk(out, verb);
        for channel in chunk {
            channel.push(out);
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
        for (verb, channel) in [
            (Verb::Subscribe, Channel::User("a".into())),
            (Verb::Subscribe, Channel::Room("b".into())),
            (Verb::Unsubscribe, Channel::User("a".into())),
            (Verb::Subscribe, Channel::User("a".into())),
            (Verb::Subscribe, Channel::User("c}d".into())),
        ] {
            gathered.add(&mut out, verb, channel, false);
        }
        gathered.write(&mut out, false);
        assert_eq!(
            commands(&out),
            [
                vec!["SUBSCRIBE", "sb:u:{a}", "sb:r:{b}"],
                vec!["UNSUBSCRIBE", "sb:u:{a}"],
                vec!["SUBSCRIBE", "sb:u:{a}", "sb:u:{c}d}"],
            ]
        );
        gathered.write(&mut out, false);
        assert_eq!(commands(&out).len(), 3, "nothing gathered, nothing written");
    }

    #[test]
    fn a_command_holds_at_most_a_chunk_and_cluster_one_channel() {
        let names: Vec<Channel> = (0..CHUNK + 1).map(|i| Channel::User(format!("u{i}").into())).collect();
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
        write_commands(&mut out, Verb::Unsubscribe, &[names[0].clone(), Channel::Room("r".into())], true);
        assert_eq!(commands(&out), [vec!["SUNSUBSCRIBE", "sb:u:{u0}"], vec!["SUNSUBSCRIBE", "sb:r:{r}"]]);
    }
}
