//! Constrained top-B on the device (topk.cu): the trie and the eligible counts live on
//! the GPU, so only the survivors of a step come back to the host.

use super::device::Arg;
use super::{err, i32_of, CudaBackend, CudaBuf};
use crate::backend::{Candidate, SelectGroup};
use crate::error::Result;
use crate::trie::Trie;
use cudarc::driver::CudaSlice;

/// The trie, resident: child ranges and codes on the device; each item's path on the
/// host, to name the trie nodes of a beam's session items.
pub struct CudaIndex {
    child_start: CudaSlice<i32>,
    child_code: CudaSlice<i32>,
    n_nodes: usize,
    levels: usize,
    max_code: u32,
    /// `[N, L]`: the node at depth `d + 1` on each item's path.
    item_path: Vec<u32>,
}

/// Eligible counts `[requests, n_nodes]`, resident for one batch.
pub struct CudaCounts {
    data: CudaSlice<u32>,
    users: usize,
    n_nodes: usize,
}

/// `SEL_THREADS` of topk.cu.
const SEL_THREADS: u32 = 256;

impl CudaBackend {
    pub(super) fn index_impl(&self, trie: &Trie) -> Result<CudaIndex> {
        let (child_start, child_code, leaf_item) = trie.flat();
        let to_i32 = |what: &str, v: &[u32]| -> Result<Vec<i32>> {
            v.iter().map(|&x| i32_of(what, x as usize)).collect()
        };
        let n_items = leaf_item.iter().filter(|&&i| i != u32::MAX).count();
        let levels = trie.levels();
        let mut item_path = Vec::with_capacity(n_items * levels);
        for it in 0..n_items {
            item_path.extend((0..levels).map(|d| trie.path_node(it, d)));
        }
        Ok(CudaIndex {
            child_start: self.dev.upload(&to_i32("trie child index", child_start)?)?,
            child_code: self.dev.upload(&to_i32("trie code", child_code)?)?,
            n_nodes: trie.n_nodes(),
            levels,
            max_code: child_code.iter().copied().max().unwrap_or(0),
            item_path,
        })
    }

    pub(super) fn counts_impl(&self, per_user: &[Vec<u32>]) -> Result<CudaCounts> {
        let n_nodes = per_user.first().map_or(0, Vec::len);
        if let Some(c) = per_user.iter().find(|c| c.len() != n_nodes) {
            return Err(err(format!(
                "counts: vectors of {} and {n_nodes} nodes in one batch",
                c.len()
            )));
        }
        let flat: Vec<u32> = per_user.concat();
        Ok(CudaCounts {
            data: self.dev.upload(&flat)?,
            users: per_user.len(),
            n_nodes,
        })
    }

    pub(super) fn select_impl(
        &self,
        logp: &CudaBuf,
        index: &CudaIndex,
        counts: &CudaCounts,
        level: usize,
        groups: &[SelectGroup<'_>],
    ) -> Result<Vec<Vec<Candidate>>> {
        let dev = &self.dev;
        let (rows, n_codes) = (logp.rows, logp.cols);
        if counts.n_nodes != index.n_nodes {
            return Err(err(format!(
                "select: counts for {} trie nodes, the trie has {}",
                counts.n_nodes, index.n_nodes
            )));
        }
        if level >= index.levels {
            return Err(err(format!(
                "select: level {level} of a {}-level trie",
                index.levels
            )));
        }
        if index.n_nodes > 0 && index.max_code as usize >= n_codes {
            return Err(err(format!(
                "select: trie code {} outside {n_codes} log-prob columns",
                index.max_code
            )));
        }
        let n_items = index.item_path.len() / index.levels.max(1);
        let n_beams: usize = groups.iter().map(|g| g.beams.len()).sum();
        let session_len = groups
            .iter()
            .flat_map(|g| g.beams.iter().map(|b| b.session.len()))
            .max()
            .unwrap_or(0);
        let cap = groups.iter().map(|g| g.width).max().unwrap_or(0);
        if n_beams == 0 || cap == 0 {
            return Ok(vec![Vec::new(); groups.len()]);
        }
        i32_of("beams x width", n_beams * cap)?;
        i32_of("groups x width", groups.len() * (1 + 4 * cap))?;

        // Every per-beam and per-group input in one upload (scores as bit patterns).
        let mut logp_row = Vec::with_capacity(n_beams);
        let mut score = Vec::with_capacity(n_beams);
        let mut node = Vec::with_capacity(n_beams);
        let mut width = Vec::with_capacity(n_beams);
        let mut count_row = Vec::with_capacity(n_beams);
        let mut session = Vec::with_capacity(n_beams * session_len);
        let mut beam_start = vec![0i32];
        let mut group_width = Vec::with_capacity(groups.len());
        for (gi, g) in groups.iter().enumerate() {
            if g.user >= counts.users {
                return Err(err(format!(
                    "select: group {gi} names request {} of {}",
                    g.user, counts.users
                )));
            }
            if g.row0 + g.beams.len() > rows {
                return Err(err(format!(
                    "select: group {gi} reads log-prob rows {}..{} of {rows}",
                    g.row0,
                    g.row0 + g.beams.len()
                )));
            }
            for (bi, b) in g.beams.iter().enumerate() {
                if b.node as usize >= index.n_nodes {
                    return Err(err(format!(
                        "select: beam {bi} of group {gi} sits at trie node {} of {}",
                        b.node, index.n_nodes
                    )));
                }
                logp_row.push(i32_of("log-prob row", g.row0 + bi)?);
                score.push(b.score.to_bits() as i32);
                node.push(b.node as i32);
                width.push(i32_of("width", g.width)?);
                count_row.push(g.user as i32);
                for s in 0..session_len {
                    let n = match b.session.get(s) {
                        Some(&it) if (it as usize) < n_items => {
                            index.item_path[it as usize * index.levels + level] as i32
                        }
                        Some(&it) => {
                            return Err(err(format!(
                                "select: session item {it} outside the {n_items}-item catalog"
                            )))
                        }
                        None => -1,
                    };
                    session.push(n);
                }
            }
            beam_start.push(i32_of("beams", logp_row.len())?);
            group_width.push(i32_of("width", g.width)?);
        }
        let parts: [&[i32]; 8] = [
            &logp_row,
            &score,
            &node,
            &width,
            &count_row,
            &session,
            &beam_start,
            &group_width,
        ];
        let mut packed = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut at = Vec::with_capacity(parts.len());
        for p in parts {
            at.push(packed.len() as u64 * 4);
            packed.extend_from_slice(p);
        }
        let inputs = dev.upload(&packed)?;
        let base = dev.ptr(&inputs);
        let input = |i: usize| Arg::Ptr(base + at[i]);

        let out_score = dev.alloc::<f32>(n_beams * cap)?;
        let out_code = dev.alloc::<i32>(n_beams * cap)?;
        let out_child = dev.alloc::<i32>(n_beams * cap)?;
        let out_count = dev.alloc::<i32>(n_beams)?;
        let rows_args = [
            Arg::Ptr(self.ptr(logp)),
            Arg::I32(i32_of("codes", n_codes)?),
            input(0),
            input(1),
            input(2),
            input(3),
            Arg::Ptr(dev.ptr(&index.child_start)),
            Arg::Ptr(dev.ptr(&index.child_code)),
            Arg::Ptr(dev.ptr(&counts.data)),
            Arg::I32(i32_of("trie nodes", index.n_nodes)?),
            input(4),
            input(5),
            Arg::I32(i32_of("session length", session_len)?),
            Arg::Ptr(dev.ptr(&out_score)),
            Arg::Ptr(dev.ptr(&out_code)),
            Arg::Ptr(dev.ptr(&out_child)),
            Arg::Ptr(dev.ptr(&out_count)),
            Arg::I32(cap as i32),
        ];
        dev.launch("topb_rows", (n_beams as u32, 1, 1), SEL_THREADS, &rows_args)?;
        let stride = 1 + 4 * cap;
        let out = dev.alloc::<i32>(groups.len() * stride)?;
        let group_args = [
            input(6),
            input(7),
            Arg::Ptr(dev.ptr(&out_score)),
            Arg::Ptr(dev.ptr(&out_code)),
            Arg::Ptr(dev.ptr(&out_child)),
            Arg::Ptr(dev.ptr(&out_count)),
            Arg::I32(cap as i32),
            Arg::Ptr(dev.ptr(&out)),
        ];
        dev.launch(
            "topb_groups",
            (groups.len() as u32, 1, 1),
            SEL_THREADS,
            &group_args,
        )?;
        let out = dev.download(&out, groups.len() * stride)?;

        groups
            .iter()
            .enumerate()
            .map(|(gi, g)| {
                let o = &out[gi * stride..(gi + 1) * stride];
                let n = o[0] as usize;
                if n > g.width {
                    return Err(err(format!(
                        "select: the device returned {n} survivors for width {}",
                        g.width
                    )));
                }
                let mut c: Vec<Candidate> = o[1..1 + 4 * n]
                    .chunks_exact(4)
                    .map(|e| Candidate {
                        score: f32::from_bits(e[0] as u32),
                        beam: e[1] as u32,
                        code: e[2] as u32,
                        child: e[3] as u32,
                    })
                    .collect();
                if let Some(bad) = c
                    .iter()
                    .find(|c| c.beam as usize >= g.beams.len() || c.child as usize >= index.n_nodes)
                {
                    return Err(err(format!(
                        "select: the device returned beam {} / node {} outside group {gi}",
                        bad.beam, bad.child
                    )));
                }
                c.sort_by(|a, b| {
                    b.score
                        .total_cmp(&a.score)
                        .then(a.beam.cmp(&b.beam))
                        .then(a.code.cmp(&b.code))
                });
                Ok(c)
            })
            .collect()
    }
}
