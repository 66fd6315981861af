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

    /// The one recipient `sender` talks to for a whole closed-loop run: the next
    /// connection in `among` (cyclically) that the pattern allows. Cross-node that is the
    /// next one, on the next node; same-node the next one on the sender's node; random
    /// simply the next one. The sender itself when nobody else qualifies.
    pub fn partner(self, sender: u32, among: Range<u32>, nodes: u32) -> u32 {
        let nodes = nodes.max(1);
        let (first, end) = (among.start, among.end.max(among.start + 1));
        let len = end - first;
        let after = |steps: u32| first + (sender - first + steps) % len;
        match self {
            Pattern::Random => after(1),
            Pattern::CrossNode if nodes < 2 || len < 2 => sender,
            // Only at the wrap can the next one be on the sender's node; the one after it
            // then is not.
            Pattern::CrossNode if after(1) % nodes == sender % nodes => {
                if len < 3 {
                    sender
                } else {
                    after(2)
                }
            }
            Pattern::CrossNode => after(1),
            Pattern::SameNode if sender + nodes < end => sender + nodes,
            // Wrap to the sender's node's first connection in `among`.
            Pattern::SameNode => first + (sender % nodes + nodes - first % nodes) % nodes,
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
    fn partners_follow_the_pattern_within_a_range() {
        for (among, nodes) in [(0u32..512u32, 2u32), (0..512, 32), (37..101, 3), (37..102, 3), (5..8, 2), (5..7, 4)] {
            let mut partnered = std::collections::HashMap::new();
            for sender in among.clone() {
                let cross = Pattern::CrossNode.partner(sender, among.clone(), nodes);
                assert!(among.contains(&cross), "{cross} outside {among:?}");
                assert_ne!(cross % nodes, sender % nodes, "{sender} -> {cross} in {among:?}");
                *partnered.entry(cross).or_insert(0) += 1;
                let same = Pattern::SameNode.partner(sender, among.clone(), nodes);
                assert!(among.contains(&same));
                assert_eq!(same % nodes, sender % nodes);
                assert_eq!(
                    Pattern::Random.partner(sender, among.clone(), nodes),
                    if sender + 1 < among.end { sender + 1 } else { among.start }
                );
            }
            // Everyone is someone's partner, but perhaps the one after a wrap.
            assert!(partnered.len() + 1 >= among.len(), "{among:?}: {} partners", partnered.len());
        }
        // 512 users on 2 or 32 nodes: user i talks to user i + 1, the last to the first.
        assert_eq!(Pattern::CrossNode.partner(7, 0..512, 32), 8);
        assert_eq!(Pattern::CrossNode.partner(511, 0..512, 32), 0);
        assert_eq!(Pattern::CrossNode.partner(4, 0..5, 2), 1);
        assert_eq!(Pattern::CrossNode.partner(3, 3..4, 2), 3);
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
