//! Who a chat message goes to. Connection `i` is on node `i % nodes` (see `config`), so
//! any thread can pick a recipient on the sender's node or another one without asking.

use std::ops::Range;

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
pub enum Pattern {
    /// Any connection, on any node.
    Random,
    /// A connection on a different target URL (needs two URLs or more).
    CrossNode,
    /// A connection on the same target URL as the sender.
    SameNode,
}

impl Pattern {
    /// Picks the recipient of a message from `sender` among the connection indices
    /// `among` (which holds `sender`), given a random number.
    pub fn pick_recipient(self, sender: u32, among: Range<u32>, nodes: u32, random: u64) -> u32 {
        let nodes = nodes.max(1);
        let (first, end) = (among.start, among.end.max(among.start + 1));
        let len = end - first;
        // Indices on node r are r, r + nodes, r + 2 * nodes, ...: in `among`, from the
        // first of them at or after `first`, up to `end`.
        let on_node = |node: u32, random: u64| {
            let start = first + (node + nodes - first % nodes) % nodes;
            let count = end.saturating_sub(start).div_ceil(nodes).max(1);
            start + (random % count as u64) as u32 * nodes
        };
        match self {
            Pattern::Random => first + (random % len as u64) as u32,
            Pattern::SameNode => on_node(sender % nodes, random),
            Pattern::CrossNode => {
                // The nodes with a connection in `among` are `nodes_used` consecutive ones,
                // counting from the node of `first`.
                let nodes_used = nodes.min(len);
                if nodes_used < 2 {
                    return sender;
                }
                let position = (sender % nodes + nodes - first % nodes) % nodes;
                let offset = 1 + (random % (nodes_used as u64 - 1)) as u32;
                let node = (first % nodes + (position + offset) % nodes_used) % nodes;
                on_node(node, random >> 20)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::splitmix64;

    #[test]
    fn recipients_follow_the_pattern() {
        let (total, nodes) = (100u32, 3u32);
        for r in 0..5000u64 {
            let random = splitmix64(r);
            let sender = (r % total as u64) as u32;
            let same = Pattern::SameNode.pick_recipient(sender, 0..total, nodes, random);
            assert!(same < total);
            assert_eq!(same % nodes, sender % nodes);
            let cross = Pattern::CrossNode.pick_recipient(sender, 0..total, nodes, random);
            assert!(cross < total);
            assert_ne!(cross % nodes, sender % nodes);
            assert!(Pattern::Random.pick_recipient(sender, 0..total, nodes, random) < total);
        }
    }

    #[test]
    fn same_node_covers_every_recipient() {
        let mut seen = [false; 10];
        for r in 0..1000u64 {
            let j = Pattern::SameNode.pick_recipient(1, 0..10, 3, splitmix64(r));
            seen[j as usize] = true;
        }
        assert_eq!(seen.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i).collect::<Vec<_>>(), vec![1, 4, 7]);
    }

    #[test]
    fn recipients_stay_within_a_range() {
        // One driver thread's share, as closed-loop chat uses it; and one smaller than the
        // node count, where every connection is on a node of its own.
        for (among, nodes) in [(37u32..101u32, 3u32), (37..101, 8), (5..7, 4), (5..9, 4)] {
            let mut cross_seen = std::collections::HashSet::new();
            for r in 0..5000u64 {
                let random = splitmix64(r);
                let sender = among.start + (r % among.len() as u64) as u32;
                let same = Pattern::SameNode.pick_recipient(sender, among.clone(), nodes, random);
                assert!(among.contains(&same), "{same} outside {among:?}");
                assert_eq!(same % nodes, sender % nodes);
                let cross = Pattern::CrossNode.pick_recipient(sender, among.clone(), nodes, random);
                assert!(among.contains(&cross), "{cross} outside {among:?}");
                assert_ne!(cross % nodes, sender % nodes);
                cross_seen.insert(cross);
                let any = Pattern::Random.pick_recipient(sender, among.clone(), nodes, random);
                assert!(among.contains(&any));
            }
            assert_eq!(cross_seen.len(), among.len(), "every connection in {among:?} gets messages");
        }
    }
}
