//! A tournament tree over the latency scores of one pool's members, so that latency-based
//! finds the lowest score with room, and the members within the buffer of it, without reading
//! every member.
//!
//! A member's score is the mean of its samples while its newest sample is younger than the
//! TTL, and 0 without a fresh sample (see `latency.rs`). It changes only when a sample is
//! recorded (the tree is told: a point update, O(log N)) and when the newest sample ages past
//! the TTL, which the tree needs no update for: each node keeps the lowest mean and the oldest
//! "newest sample" of its subtree, so at any time `now` its lowest score is exactly 0 when some
//! member below has no sample or an expired one, and its lowest mean otherwise.

use parking_lot::RwLock;

/// One node: the lowest mean and the oldest newest-sample time among its members with a
/// sample, and whether one has none.
#[derive(Debug, Clone, Copy)]
struct Node {
    min_mean: f64,
    min_newest: u64,
    unsampled: bool,
}

impl Node {
    /// A node over no member (the padding past the pool): never lowest.
    const EMPTY: Node = Node {
        min_mean: f64::INFINITY,
        min_newest: u64::MAX,
        unsampled: false,
    };

    /// A member whose newest sample was taken at `newest_ms` (0: never) and whose samples'
    /// mean is `mean` (NaN: none).
    fn leaf(mean: f64, newest_ms: u64) -> Self {
        if newest_ms == 0 || mean.is_nan() {
            Node {
                unsampled: true,
                ..Node::EMPTY
            }
        } else {
            Node {
                min_mean: mean,
                min_newest: newest_ms,
                unsampled: false,
            }
        }
    }

    fn join(a: Node, b: Node) -> Node {
        Node {
            min_mean: a.min_mean.min(b.min_mean),
            min_newest: a.min_newest.min(b.min_newest),
            unsampled: a.unsampled || b.unsampled,
        }
    }

    /// The lowest score below this node at `now_ms`.
    #[inline]
    fn lowest(&self, now_ms: u64, ttl_ms: u64) -> f64 {
        if self.unsampled || self.min_newest.saturating_add(ttl_ms) <= now_ms {
            0.0
        } else {
            self.min_mean
        }
    }
}

/// The tree over one pool's members (leaf `p` is the member at position `p`).
#[derive(Debug)]
pub(crate) struct ScoreTree {
    /// How many members.
    len: usize,
    /// Leaves, a power of two >= `len`; node `i`'s children are `2i` and `2i + 1`.
    width: usize,
    ttl_ms: u64,
    nodes: RwLock<Vec<Node>>,
}

impl ScoreTree {
    /// A tree over `len` members, each without a sample until [`set`](Self::set).
    pub(crate) fn new(len: usize, ttl_ms: u64) -> Self {
        let width = len.max(1).next_power_of_two();
        ScoreTree {
            len,
            width,
            ttl_ms,
            nodes: RwLock::new(vec![Node::EMPTY; 2 * width]),
        }
    }

    /// Sets every member's samples (`state(p)` is `(mean, newest_ms)` of the member at `p`)
    /// and builds the nodes above them.
    pub(crate) fn fill(&self, mut state: impl FnMut(usize) -> (f64, u64)) {
        let mut nodes = self.nodes.write();
        for p in 0..self.len {
            let (mean, newest) = state(p);
            nodes[self.width + p] = Node::leaf(mean, newest);
        }
        for i in (1..self.width).rev() {
            nodes[i] = Node::join(nodes[2 * i], nodes[2 * i + 1]);
        }
    }

    /// The member at `position` has new samples: `state()` is their mean (NaN: none) and the
    /// newest one's time (0: never), read under the tree's lock (of two updates racing, the
    /// later one reads the later state).
    pub(crate) fn set(&self, position: usize, state: impl FnOnce() -> (f64, u64)) {
        if position >= self.len {
            return;
        }
        let mut nodes = self.nodes.write();
        let (mean, newest_ms) = state();
        let mut i = self.width + position;
        nodes[i] = Node::leaf(mean, newest_ms);
        while i > 1 {
            i /= 2;
            nodes[i] = Node::join(nodes[2 * i], nodes[2 * i + 1]);
        }
    }

    /// The lowest score that `leaf` accepts at `now_ms`, infinite when it accepts none.
    /// `leaf(p, below)` gives the member at `p`'s score when it is lower than `below` and the
    /// member is accepted (a candidate with room), `None` otherwise. Subtrees that cannot beat
    /// the lowest found so far are skipped, the lower child is visited first: a descent, plus
    /// one per member passed over for want of room.
    pub(crate) fn floor(
        &self,
        now_ms: u64,
        mut leaf: impl FnMut(usize, f64) -> Option<f64>,
    ) -> f64 {
        let nodes = self.nodes.read();
        let mut best = f64::INFINITY;
        self.floor_below(&nodes, 1, now_ms, &mut best, &mut leaf);
        best
    }

    fn floor_below(
        &self,
        nodes: &[Node],
        i: usize,
        now_ms: u64,
        best: &mut f64,
        leaf: &mut impl FnMut(usize, f64) -> Option<f64>,
    ) {
        let Some(node) = nodes.get(i) else { return };
        if node.lowest(now_ms, self.ttl_ms) >= *best {
            return;
        }
        if i >= self.width {
            let position = i - self.width;
            if position < self.len {
                if let Some(score) = leaf(position, *best).filter(|s| *s < *best) {
                    *best = score;
                }
            }
            return;
        }
        let (left, right) = (2 * i, 2 * i + 1);
        let lower_left = match (nodes.get(left), nodes.get(right)) {
            (Some(l), Some(r)) => l.lowest(now_ms, self.ttl_ms) <= r.lowest(now_ms, self.ttl_ms),
            _ => true,
        };
        let (first, second) = if lower_left {
            (left, right)
        } else {
            (right, left)
        };
        self.floor_below(nodes, first, now_ms, best, leaf);
        self.floor_below(nodes, second, now_ms, best, leaf);
    }

    /// The lowest score of any member at `now_ms` (room not considered).
    pub(crate) fn lowest(&self, now_ms: u64) -> f64 {
        self.nodes
            .read()
            .get(1)
            .map_or(f64::INFINITY, |root| root.lowest(now_ms, self.ttl_ms))
    }

    /// Calls `visit` with the position of every member whose score at `now_ms` may be at most
    /// `ceiling` (exactly those, while the tree is up to date), in position order; subtrees
    /// whose lowest score is above it are skipped. Stops after `limit` members: whether it
    /// visited them all.
    pub(crate) fn each_within(
        &self,
        now_ms: u64,
        ceiling: f64,
        limit: usize,
        mut visit: impl FnMut(usize),
    ) -> bool {
        let nodes = self.nodes.read();
        // A depth-first walk holds at most one pending sibling per level.
        let mut stack = [0usize; 2 * usize::BITS as usize];
        let mut depth = 1;
        stack[0] = 1;
        let mut visited = 0usize;
        while depth > 0 {
            depth -= 1;
            let i = stack[depth];
            let Some(node) = nodes.get(i) else { continue };
            if node.lowest(now_ms, self.ttl_ms) > ceiling {
                continue;
            }
            if i >= self.width {
                let position = i - self.width;
                if position < self.len {
                    if visited == limit {
                        return false;
                    }
                    visited += 1;
                    visit(position);
                }
            } else if depth + 2 <= stack.len() {
                stack[depth] = 2 * i + 1;
                stack[depth + 1] = 2 * i;
                depth += 2;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::ScoreTree;

    #[test]
    fn the_floor_follows_updates_and_expiry() {
        let tree = ScoreTree::new(5, 1_000);
        tree.fill(|p| (1.0 + p as f64, 10_000));
        let all = |_: usize, _: f64| None::<f64>;
        assert!(tree.floor(10_500, all).is_infinite());
        let score = |p: usize| 1.0 + p as f64;
        assert_eq!(tree.floor(10_500, |p, _| Some(score(p))), 1.0);
        // Without room at the lowest, the next.
        assert_eq!(tree.floor(10_500, |p, _| (p != 0).then(|| score(p))), 2.0);
        // A new sample moves a member.
        tree.set(3, || (0.5, 10_400));
        let mut within = Vec::new();
        assert!(tree.each_within(10_500, 1.0, usize::MAX, |p| within.push(p)));
        assert_eq!(within, vec![0, 3]);
        // Past the TTL of the samples at 10,000 every other member scores 0.
        let mut within = Vec::new();
        assert!(tree.each_within(11_000, 0.0, usize::MAX, |p| within.push(p)));
        assert_eq!(within, vec![0, 1, 2, 4]);
        let mut within = Vec::new();
        assert!(!tree.each_within(11_000, 0.0, 2, |p| within.push(p)));
        assert_eq!(within, vec![0, 1]);
        assert_eq!(tree.lowest(11_000), 0.0);
        assert_eq!(tree.lowest(10_500), 0.5);
        // No sample: 0.
        tree.set(3, || (f64::NAN, 0));
        let mut within = Vec::new();
        assert!(tree.each_within(10_500, 0.0, usize::MAX, |p| within.push(p)));
        assert_eq!(within, vec![3]);
    }
}
