//! Node-to-node delivery.
//!
//! A reactor first looks a recipient up in this node's [`Directory`]; only a
//! recipient held elsewhere goes to the [`Bus`]. The embedded default
//! ([`local::LocalBus`]) has no elsewhere; the Redis bus publishes to the node
//! that holds the recipient and routes what it receives into reactor inboxes.
//!
//! [`Directory`]: crate::directory::Directory

pub mod local;
pub mod redis;

use compact_str::CompactString;

use crate::directory::ConnRef;
use crate::protocol::Resume;

/// The outcome of claiming a user name for the whole cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The name is ours; the user is logged in.
    Granted,
    /// The bus will decide and send [`Command::LoginDecided`] to the reactor.
    Pending,
}

/// The outcome of publishing to a recipient that this node does not hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Published {
    /// Handed to the cluster; delivery is up to the node that holds the recipient.
    /// Should it fail later, the bus sends the sender's reactor
    /// [`Command::Undelivered`](crate::inbox::Command::Undelivered).
    Sent,
    /// Nobody in reach holds the recipient (always the case for the embedded bus).
    NoRecipient,
    /// Not sent: too much already waits for a link between nodes that is down.
    Dropped,
}

/// Why a message the bus took ([`Published::Sent`]) never reached its
/// recipient. The bus reports it; the reactor tells the sender in the
/// protocol's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Undelivered {
    /// The recipient's channel had no subscriber anywhere.
    NotOnline(CompactString),
    /// The link between nodes failed before Redis confirmed the message
    /// (it may or may not have been delivered), or Redis refused it.
    Lost(CompactString),
}

/// A channel that keeps history, by key: a user's inbox or a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kept<'a> {
    User(&'a str),
    Room(&'a str),
}

/// What a reactor needs from the cluster. Implementations never block the
/// caller on the network: work that needs a round trip is queued and its result
/// comes back through the reactor's inbox.
pub trait Bus: Send + Sync {
    /// Claims `name` (already held locally by `at`) for the whole cluster.
    fn claim(&self, name: &str, at: ConnRef) -> Claim;
    /// Gives up `name`, held by `at` until now, cluster-wide.
    fn release(&self, name: &str, at: ConnRef);
    /// Sends one chat message (the exact text frame payload the recipient gets)
    /// to `recipient`, who is not held on this node.
    fn publish(&self, recipient: &str, payload: &[u8], from: ConnRef) -> Published;
    /// Asks the node that holds the user `key` (not held here) to close its
    /// connection; answered like [`Bus::publish`] (`from` hears whether anyone
    /// held it). The embedded bus has no other node: nobody.
    fn disconnect(&self, _key: &str, _from: ConnRef) -> Published {
        Published::NoRecipient
    }
    /// `member` joined room `key` on this node (`first`: the room's first
    /// member here, whose channel the node now listens to).
    fn join_room(&self, _key: &str, _member: &str, _first: bool) {}
    /// `member` left room `key` (`last`: nobody here is in it any more).
    fn leave_room(&self, _key: &str, _member: &str, _last: bool) {}
    /// Sends a room message (the JSON its members get) to the room's members
    /// on other nodes.
    fn publish_room(&self, _key: &str, _payload: &[u8]) {}
    /// Asks which of `keys` (the names in `asked`) are online anywhere; true
    /// when the answer will come as [`Command::Presence`](crate::inbox::Command::Presence),
    /// false when this node's own view is all there is (the embedded bus).
    fn ask_presence(&self, _asked: &str, _keys: &[CompactString], _from: ConnRef) -> bool {
        false
    }
    /// Asks who is in room `key` (up to `limit` names); true when the answer
    /// will come as [`Command::Members`](crate::inbox::Command::Members).
    fn ask_members(&self, _key: &str, _limit: usize, _from: ConnRef) -> bool {
        false
    }
    /// Sends a message (the JSON its recipients get, without `Offset`) to a
    /// channel with history: kept, then delivered to every subscriber of
    /// the channel, this node's included, with its `Offset`.
    fn publish_kept(&self, _channel: Kept<'_>, _payload: &[u8], _from: ConnRef) -> Published {
        Published::NoRecipient
    }
    /// Reads what `channel` kept after `resume` for `from`, once the node
    /// listens to the channel; the answer comes as
    /// [`Command::Recovered`](crate::inbox::Command::Recovered).
    fn recover(&self, _channel: Kept<'_>, _resume: &Resume<'_>, _from: ConnRef) {}
    /// Stops background threads; called once when the node shuts down.
    fn shutdown(&self) {}
}
