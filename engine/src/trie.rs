//! A trie over the catalog's semantic IDs with per-request eligible-item counts.
//!
//! Nodes are numbered breadth-first: the root is 0 and the node reached through the
//! `j`-th entry of the child arrays is `j + 1`, so children of one node are contiguous
//! and sorted by code. This flat layout is also what device backends upload.

use crate::catalog::Catalog;

#[derive(Debug, Clone)]
pub struct Trie {
    levels: usize,
    /// `child_start[n]..child_start[n + 1]` indexes the children of node `n`.
    child_start: Vec<u32>,
    child_code: Vec<u32>,
    /// Items under each node.
    item_count: Vec<u32>,
    /// Catalog row of a leaf node; `u32::MAX` for inner nodes.
    leaf_item: Vec<u32>,
    /// `[N, L]`: the node at depth `d + 1` on each item's path.
    item_path: Vec<u32>,
    /// The most children of any node at each depth.
    fanout: Vec<usize>,
}

pub const ROOT: u32 = 0;

impl Trie {
    pub fn new(cat: &Catalog) -> Self {
        let levels = cat.levels();
        let n = cat.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by(|&a, &b| cat.sid(a as usize).cmp(cat.sid(b as usize)));

        let mut child_start = vec![0u32];
        let mut child_code = Vec::new();
        let mut item_count = vec![n as u32];
        let mut leaf_item = vec![u32::MAX];
        let mut item_path = vec![0u32; n * levels];
        // Ranges of `order` covered by the nodes of the current depth, in node order.
        let mut frontier: Vec<(usize, usize)> = vec![(0, n)];
        let mut fanout = vec![0usize; levels];
        for depth in 0..levels {
            let mut next = Vec::new();
            for &(start, end) in &frontier {
                let before = child_code.len();
                let mut i = start;
                while i < end {
                    let code = cat.sid(order[i] as usize)[depth];
                    let mut j = i;
                    while j < end && cat.sid(order[j] as usize)[depth] == code {
                        j += 1;
                    }
                    child_code.push(code);
                    let node = child_code.len() as u32;
                    item_count.push((j - i) as u32);
                    leaf_item.push(if depth + 1 == levels {
                        order[i]
                    } else {
                        u32::MAX
                    });
                    for &it in &order[i..j] {
                        item_path[it as usize * levels + depth] = node;
                    }
                    next.push((i, j));
                    i = j;
                }
                child_start.push(child_code.len() as u32);
                fanout[depth] = fanout[depth].max(child_code.len() - before);
            }
            frontier = next;
        }
        // Leaves have no children.
        while child_start.len() < item_count.len() + 1 {
            child_start.push(child_code.len() as u32);
        }
        Trie {
            levels,
            child_start,
            child_code,
            item_count,
            leaf_item,
            item_path,
            fanout,
        }
    }

    /// The most children any node at trie depth `level` has (the root is depth 0).
    pub fn max_fanout(&self, level: usize) -> usize {
        self.fanout.get(level).copied().unwrap_or(0)
    }

    pub fn levels(&self) -> usize {
        self.levels
    }

    pub fn n_nodes(&self) -> usize {
        self.item_count.len()
    }

    /// `(code, child node)` pairs of `node`, sorted by code.
    pub fn children(&self, node: u32) -> impl Iterator<Item = (u32, u32)> + '_ {
        let (s, e) = (
            self.child_start[node as usize] as usize,
            self.child_start[node as usize + 1] as usize,
        );
        (s..e).map(move |j| (self.child_code[j], j as u32 + 1))
    }

    pub fn child(&self, node: u32, code: u32) -> Option<u32> {
        let (s, e) = (
            self.child_start[node as usize] as usize,
            self.child_start[node as usize + 1] as usize,
        );
        self.child_code[s..e]
            .binary_search(&code)
            .ok()
            .map(|j| (s + j) as u32 + 1)
    }

    /// Catalog row of a leaf node.
    pub fn leaf_item(&self, node: u32) -> Option<usize> {
        let v = self.leaf_item[node as usize];
        (v != u32::MAX).then_some(v as usize)
    }

    /// Node at depth `depth + 1` on the path of catalog row `item`.
    pub fn path_node(&self, item: usize, depth: usize) -> u32 {
        self.item_path[item * self.levels + depth]
    }

    /// Eligible-item counts per node once `excluded` catalog rows are removed.
    pub fn eligible_counts(&self, excluded: &[usize]) -> Vec<u32> {
        let mut counts = self.item_count.clone();
        let mut seen = vec![false; self.leaf_item.len()];
        for &it in excluded {
            let leaf = self.path_node(it, self.levels - 1) as usize;
            if std::mem::replace(&mut seen[leaf], true) {
                continue;
            }
            counts[ROOT as usize] -= 1;
            for d in 0..self.levels {
                counts[self.path_node(it, d) as usize] -= 1;
            }
        }
        counts
    }

    pub fn flat(&self) -> (&[u32], &[u32], &[u32]) {
        (&self.child_start, &self.child_code, &self.leaf_item)
    }
}
