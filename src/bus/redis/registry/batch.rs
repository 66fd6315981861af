//! Claims and releases go to Redis many names to a script call: a burst of
//! logins costs Redis one `EVAL` (one command to parse, one script to hash
//! and start, one reply) per [`BATCH`] names instead of one per name, and
//! the publisher one command to copy.
//!
//! The registry fills one open batch at a time, of one kind; a name of the
//! other kind, a full batch or the end of the publisher's turn
//! ([`Registry::flush`]) closes it into [`Registry::out`]. So commands keep
//! the order the registry decided them in: a release of a name and the
//! next claim of it, in the same turn, reach Redis in that order.
//!
//! In Redis Cluster every key of a script must live in one slot, and each
//! name is a slot of its own (`sb:reg:{NAME}`), so there a batch holds one
//! name: the calls still go out together, pipelined, in one write.

use compact_str::CompactString;

use super::{Awaiting, Outgoing, Registry};
use crate::bus::redis::resp;

/// Names per script call outside Redis Cluster. Redis runs a script to the
/// end before anything else, at 1 to 2 us a name: 256 names keep that
/// pause for other clients (chat) near half a millisecond, and cut the
/// per-command cost of a login burst by as much as it can be cut.
pub const BATCH: usize = 256;

/// For each of KEYS: takes it for ARGV[1] (for ARGV[2] ms) when it is
/// free, ours, or held by ARGV[3] (a dead node, or "" for none); answers
/// "" for a name that is ours now, the holder otherwise. `SET NX` first:
/// a free name, the common case, costs one call.
pub(super) const CLAIMS_SCRIPT: &[u8] = b"local r = {} for i, k in ipairs(KEYS) do \
if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then r[i] = '' else \
local o = redis.call('GET', k) \
if not o or o == ARGV[1] or o == ARGV[3] then redis.call('SET', k, ARGV[1], 'PX', ARGV[2]) r[i] = '' \
else r[i] = o end end end return r";
/// Deletes each of KEYS that ARGV[1] holds.
pub(super) const RELEASES_SCRIPT: &[u8] = b"for _, k in ipairs(KEYS) do \
if redis.call('GET', k) == ARGV[1] then redis.call('DEL', k) end end return 0";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Claim,
    Release,
}

/// The script call being filled.
pub(super) struct Batch {
    kind: Kind,
    names: Vec<CompactString>,
}

impl Registry {
    /// Adds `name` to the open batch of `kind`, closing the open one first
    /// if it is of the other kind or full.
    pub(super) fn batch(&mut self, kind: Kind, name: &CompactString) {
        if self.open.as_ref().is_some_and(|b| b.kind != kind || b.names.len() >= self.batch_max) {
            self.flush();
        }
        let batch = self.open.get_or_insert_with(|| Batch { kind, names: Vec::new() });
        batch.names.push(name.clone());
    }

    /// Closes the open batch into [`Registry::out`]; the publisher calls it
    /// before it sends what the registry queued.
    pub fn flush(&mut self) {
        let Some(Batch { kind, names }) = self.open.take() else {
            return;
        };
        let slot = Self::slot_of_name(&names[0]);
        let me = self.node_id.as_bytes();
        let (command, awaiting) = match kind {
            Kind::Claim => (
                self.encode(CLAIMS_SCRIPT, &names, &[me, self.ttl_ms.as_bytes(), b""]),
                Awaiting::Claims { names, attempt: 0 },
            ),
            Kind::Release => (self.encode(RELEASES_SCRIPT, &names, &[me]), Awaiting::Releases { names }),
        };
        self.out.push(Outgoing { slot, command, awaiting });
    }

    /// A takeover of `name` from `dead_holder` (whose lease expired), on
    /// its own: it follows a reply, not a login.
    pub(super) fn send_takeover(&mut self, name: &CompactString, dead_holder: &[u8], attempt: u8) {
        let names = vec![name.clone()];
        let command =
            self.encode(CLAIMS_SCRIPT, &names, &[self.node_id.as_bytes(), self.ttl_ms.as_bytes(), dead_holder]);
        let slot = Self::slot_of_name(name);
        self.out.push(Outgoing { slot, command, awaiting: Awaiting::Claims { names, attempt } });
    }

    /// `EVAL SCRIPT N sb:reg:{NAME}... ARGV...`, sized exactly.
    fn encode(&self, script: &[u8], names: &[CompactString], argv: &[&[u8]]) -> Box<[u8]> {
        let key_len = |name: &CompactString| USER_KEY_PREFIX.len() + name.len() + 1;
        let count = names.len().to_string();
        let args = 3 + names.len() + argv.len();
        let size = resp::header_len(args)
            + resp::bulk_len(4)
            + resp::bulk_len(script.len())
            + resp::bulk_len(count.len())
            + names.iter().map(|n| resp::bulk_len(key_len(n))).sum::<usize>()
            + argv.iter().map(|a| resp::bulk_len(a.len())).sum::<usize>();
        let mut out = Vec::with_capacity(size);
        resp::push_header(&mut out, b'*', args);
        resp::push_bulk(&mut out, b"EVAL");
        resp::push_bulk(&mut out, script);
        resp::push_bulk(&mut out, count.as_bytes());
        for name in names {
            resp::push_header(&mut out, b'$', key_len(name));
            out.extend_from_slice(USER_KEY_PREFIX);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"}\r\n");
        }
        for arg in argv {
            resp::push_bulk(&mut out, arg);
        }
        debug_assert_eq!(out.len(), size, "a batch is sized exactly");
        out.into_boxed_slice()
    }
}

/// `sb:reg:{NAME}` starts with this ([`Registry::user_key`]).
const USER_KEY_PREFIX: &[u8] = b"sb:reg:{";

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bus::redis::cluster;

    fn fresh(cluster: bool) -> Registry {
        Registry::new("me".into(), Duration::from_secs(15), cluster)
    }

    /// The bulk strings of a command.
    fn args(command: &[u8]) -> Vec<Vec<u8>> {
        let (frame, n) = resp::parse(command).expect("valid RESP").expect("a whole command");
        assert_eq!(n, command.len(), "one command");
        frame.items().expect("an array").iter().map(|a| a.bytes().expect("bulk").to_vec()).collect()
    }

    #[test]
    fn a_burst_of_claims_is_one_script_call_per_batch() {
        let mut registry = fresh(false);
        let names: Vec<CompactString> = (0..BATCH + 3).map(|i| format!("u{i}").into()).collect();
        for name in &names {
            registry.batch(Kind::Claim, name);
        }
        registry.flush();
        assert_eq!(registry.out.len(), 2);
        let first = args(&registry.out[0].command);
        assert_eq!(first[0], b"EVAL");
        assert_eq!(first[1], CLAIMS_SCRIPT);
        assert_eq!(first[2], BATCH.to_string().as_bytes());
        assert_eq!(first[3], Registry::user_key("u0"));
        assert_eq!(first[2 + BATCH], Registry::user_key(&format!("u{}", BATCH - 1)));
        assert_eq!(&first[3 + BATCH..], [&b"me"[..], b"300000", b""]);
        let second = args(&registry.out[1].command);
        assert_eq!(second[2], b"3");
        assert!(matches!(&registry.out[1].awaiting, Awaiting::Claims { names, attempt: 0 } if names.len() == 3));
    }

    #[test]
    fn kinds_keep_their_order_and_cluster_batches_hold_one_name() {
        let mut registry = fresh(false);
        for (kind, name) in [(Kind::Release, "a"), (Kind::Claim, "a"), (Kind::Claim, "b"), (Kind::Release, "c")] {
            registry.batch(kind, &name.into());
        }
        registry.flush();
        let scripts: Vec<(Vec<u8>, Vec<u8>)> =
            registry.out.iter().map(|o| args(&o.command)).map(|a| (a[1].clone(), a[2].clone())).collect();
        assert_eq!(
            scripts,
            [
                (RELEASES_SCRIPT.to_vec(), b"1".to_vec()),
                (CLAIMS_SCRIPT.to_vec(), b"2".to_vec()),
                (RELEASES_SCRIPT.to_vec(), b"1".to_vec()),
            ]
        );
        assert_eq!(args(&registry.out[0].command)[4], b"me", "a release passes only the node");

        let mut registry = fresh(true);
        registry.batch(Kind::Claim, &"a".into());
        registry.batch(Kind::Claim, &"b".into());
        registry.flush();
        assert_eq!(registry.out.len(), 2);
        assert_eq!(registry.out[1].slot, cluster::slot(b"b"));
    }

    #[test]
    fn a_takeover_names_the_dead_holder() {
        let mut registry = fresh(false);
        registry.send_takeover(&"alice".into(), b"old", 2);
        let sent = &registry.out[0];
        assert_eq!(
            args(&sent.command)[3..],
            [Registry::user_key("alice"), b"me".to_vec(), b"300000".to_vec(), b"old".to_vec()]
        );
        assert!(matches!(&sent.awaiting, Awaiting::Claims { attempt: 2, .. }));
    }
}
