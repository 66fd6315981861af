//! History on the bus: kept messages' publishes, recoveries and catch-ups
//! handed to the publisher, and their replies handed back (to reactors,
//! and to the subscriber thread); what they are made of is in
//! [`super::streams`].

use std::sync::atomic::Ordering::Relaxed;

use compact_str::CompactString;

use super::cluster;
use super::resp::Frame;
use super::shared::{Job, RoomJob, Shared, MAX_QUEUED_BYTES};
use super::streams::{Purpose, Read, ReadJob, ToSubscriber};
use crate::bus::{Kept, Published};
use crate::directory::ConnRef;
use crate::inbox::{Command, Recovered, Stored};
use crate::protocol::{Outcome, Resume, StreamId};

/// Queues a kept message's script for the publisher, within the bound on
/// what may wait for Redis (as a plain publish is).
pub(crate) fn publish(shared: &Shared, channel: Kept<'_>, json: &[u8], from: ConnRef) -> Published {
    let Some(history) = &shared.history else {
        return Published::NoRecipient;
    };
    let command = history.encode_publish(channel, json);
    // In Redis Cluster the script goes to the master of the channel's hash tag.
    let slot = match channel {
        Kept::User(key) | Kept::Room(key) if shared.settings.cluster => {
            cluster::slot(&[b"{", key.as_bytes(), b"}"].concat())
        }
        _ => 0,
    };
    let size = command.len();
    if shared.queued_bytes.fetch_add(size, Relaxed) + size > MAX_QUEUED_BYTES {
        shared.queued_bytes.fetch_sub(size, Relaxed);
        shared.hub.metrics.bus.publish_dropped.fetch_add(1, Relaxed);
        return Published::Dropped;
    }
    shared.push_pub(Job::Publish { slot, command, from });
    Published::Sent
}

/// Asks for a recovery: a user's channel is subscribed before its login is
/// decided, so it goes now; a room's waits until Redis confirmed the room's
/// subscription.
pub(crate) fn recover(shared: &Shared, channel: Kept<'_>, resume: &Resume<'_>, from: ConnRef) {
    let Some(history) = &shared.history else {
        return;
    };
    let job = history.read_job(channel, resume, Purpose::Client(from));
    if let Kept::Room(key) = channel {
        let mut gate = history.rooms.lock();
        if !gate.listening.contains(key) {
            gate.waiting.entry(CompactString::from(key)).or_default().push(job);
            return;
        }
    }
    push_read(shared, job);
}

/// Hands a history read to the publisher.
fn push_read(shared: &Shared, (command, read): ReadJob) {
    shared.push_pub(Job::Room(RoomJob::Recover { command, read }));
}

/// The subscriber is listening to `channel` again after its link dropped:
/// read what it kept after `since`.
pub(crate) fn catch_up(shared: &Shared, channel: &[u8], since: StreamId) {
    if let Some(job) = catch_up_job(shared, channel, since) {
        push_read(shared, job);
    }
}

fn catch_up_job(shared: &Shared, channel: &[u8], since: StreamId) -> Option<ReadJob> {
    let history = shared.history.as_ref()?;
    let kept = match (super::channels::room_of_channel(channel), super::channels::user_name_of_channel(channel)) {
        (Some(room), _) => Kept::Room(room),
        (None, Some(user)) => Kept::User(user),
        (None, None) => return None,
    };
    let offset = since.to_string();
    let resume = Resume { offset: offset.as_str().into(), epoch: "".into() };
    Some(history.read_job(kept, &resume, Purpose::CatchUp))
}

/// The publisher's link is up: catch-up reads lost with it go again.
pub(crate) fn on_publisher_up(shared: &Shared) {
    if let Some(history) = &shared.history {
        for job in std::mem::take(&mut *history.retry.lock()) {
            push_read(shared, job);
        }
    }
}

/// Redis confirmed the subscription of room `key`: its recoveries may go.
pub(crate) fn room_listening(shared: &Shared, key: &str) {
    let Some(history) = &shared.history else {
        return;
    };
    let waiting = {
        let mut gate = history.rooms.lock();
        gate.listening.insert(CompactString::from(key));
        gate.waiting.remove(key)
    };
    for job in waiting.into_iter().flatten() {
        push_read(shared, job);
    }
}

/// The node stops listening to room `key` (or, `None`, to every room: the link dropped).
pub(crate) fn room_deaf(shared: &Shared, key: Option<&str>) {
    if let Some(history) = &shared.history {
        let mut gate = history.rooms.lock();
        match key {
            Some(key) => gate.listening.remove(key),
            None => {
                gate.listening.clear();
                true
            }
        };
    }
}

/// The reply to a kept message's script: `{id, receivers}`. A user's
/// message that reached nobody was kept for them: its sender is told.
pub(crate) fn on_published(shared: &Shared, command: &[u8], from: ConnRef, items: &[Frame<'_>]) {
    shared.hub.metrics.bus.published.fetch_add(1, Relaxed);
    let receivers = items.get(1).and_then(Frame::integer);
    if let Some(receivers @ 1..) = receivers {
        // Only a caller that is no reactor (the server API) waits for this.
        shared.hub.published(from, receivers);
    }
    let (Some(id), Some(0)) = (items.first().and_then(Frame::bytes), receivers) else {
        return;
    };
    let Some(name) = super::channels::recipient_of_command(command) else {
        return;
    };
    let stored = Stored {
        token: from.token,
        to: CompactString::from_utf8_lossy(name),
        offset: String::from_utf8_lossy(id).into_owned(),
    };
    shared.hub.send(from, Command::Stored(Box::new(stored)));
}

/// The reply to a recovery's script, judged and handed to the reactor.
pub(crate) fn on_read(shared: &Shared, read: Box<Read>, frame: &Frame<'_>) {
    let Some(items) = frame.items().filter(|items| items.len() == 6) else {
        if let Frame::Error(e) = frame {
            log::warn!("a history read was refused: {}", String::from_utf8_lossy(e));
        }
        return on_read_lost(shared, read);
    };
    let text = |i: usize| items[i].bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let (epoch, marker, last) = (text(0), text(1), text(2));
    let first = items[3].bytes().and_then(StreamId::parse);
    let trimmed = items[4].integer() == Some(1);
    let entries: Vec<Box<[u8]>> = items[5].items().unwrap_or_default().iter().filter_map(entry_json).collect();
    let lost_before = |since: StreamId| trimmed && first.is_some_and(|first| first > since);
    let outcome = if !read.epoch.is_empty() && read.epoch != epoch {
        Outcome::Reset
    } else if let Some(offset) = read.offset {
        // No stream: what the client saw is gone, unless it saw nothing ("0-0", the
        // offset of a channel with no history yet) and there still is nothing.
        let expired = epoch.is_empty() && offset != StreamId::default();
        if expired || lost_before(offset) {
            Outcome::Gap
        } else {
            Outcome::Recovered
        }
    } else {
        match StreamId::parse(marker.as_bytes()) {
            Some(marker) if lost_before(marker) => Outcome::Gap,
            _ => Outcome::Fresh,
        }
    };
    let Read { purpose, channel, room, .. } = *read;
    let Some(history) = &shared.history else {
        return;
    };
    match purpose {
        Purpose::Client(from) => {
            if let Some(last) = StreamId::parse(last.as_bytes()) {
                history.to_subscriber.push(ToSubscriber::Note { channel, last });
            }
            let recovered = Recovered { token: from.token, room, outcome: Some(outcome), epoch, last, entries };
            shared.hub.send(from, Command::Recovered(Box::new(recovered)));
        }
        Purpose::CatchUp => {
            // As published: a room's message in its envelope (no node: every node delivers it).
            let entries = if room.is_some() {
                entries.into_iter().map(|json| [&b"\n"[..], &json].concat().into_boxed_slice()).collect()
            } else {
                entries
            };
            history.to_subscriber.push(ToSubscriber::CaughtUp { channel, entries });
        }
    }
    shared.sub_bell.ring();
}

/// A recovery whose command or reply was lost: the reactor says so and goes on live.
#[allow(clippy::boxed_local)] // it travels boxed; taken apart here
pub(crate) fn on_read_lost(shared: &Shared, read: Box<Read>) {
    let Read { purpose, channel, room, offset, .. } = *read;
    let from = match purpose {
        Purpose::Client(from) => from,
        Purpose::CatchUp => {
            let job = catch_up_job(shared, &channel, offset.unwrap_or_default());
            if let (Some(history), Some(job)) = (&shared.history, job) {
                history.retry.lock().push(job);
            }
            return;
        }
    };
    let recovered = Recovered {
        token: from.token,
        room,
        outcome: None,
        epoch: String::new(),
        last: String::new(),
        entries: vec![],
    };
    shared.hub.send(from, Command::Recovered(Box::new(recovered)));
}

/// A stream entry `[id, [field, value, ...]]` as the JSON a live message
/// carries: its `p` with the `Offset` field added.
fn entry_json(entry: &Frame<'_>) -> Option<Box<[u8]>> {
    let [id, fields] = entry.items()? else {
        return None;
    };
    let id = id.bytes()?;
    let fields = fields.items()?;
    let p = fields.chunks(2).find(|pair| pair[0].bytes() == Some(b"p")).and_then(|pair| pair.get(1)?.bytes())?;
    let body = p.strip_suffix(b"}\n")?;
    let mut json = Vec::with_capacity(p.len() + id.len() + 14);
    json.extend_from_slice(body);
    json.extend_from_slice(b",\"Offset\":\"");
    json.extend_from_slice(id);
    json.extend_from_slice(b"\"}\n");
    Some(json.into_boxed_slice())
}
