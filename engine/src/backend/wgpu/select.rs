//! Host side of the constrained top-B (select.wgsl): the trie and the eligible counts
//! live in device buffers; per step only the beams (score, node, session items) go up
//! and only the survivors (16 bytes each) come back.

use super::context::{err, Ctx, GpuBuf};
use super::shaders::Variant;
use super::{WgpuBackend, WgpuBuf};
use crate::backend::{Candidate, SelectGroup};
use crate::error::Result;
use crate::trie::Trie;
use bytemuck::{Pod, Zeroable};

/// The trie on the device (flat arrays of `Trie`, plus each item's path).
pub struct Index {
    child_start_host: Vec<u32>,
    n_nodes: usize,
    levels: usize,
    child_start: GpuBuf,
    child_code: GpuBuf,
    item_path: GpuBuf,
}

impl Index {
    pub fn new(ctx: &Ctx, trie: &Trie) -> Result<Self> {
        let (child_start, child_code, leaf_item) = trie.flat();
        let levels = trie.levels();
        let n_items = leaf_item.iter().filter(|&&v| v != u32::MAX).count();
        let mut path = Vec::with_capacity(n_items * levels);
        for it in 0..n_items {
            for d in 0..levels {
                path.push(trie.path_node(it, d));
            }
        }
        Ok(Index {
            child_start_host: child_start.to_vec(),
            n_nodes: trie.n_nodes(),
            levels,
            child_start: ctx.upload(bytemuck::cast_slice(child_start))?,
            child_code: ctx.upload(bytemuck::cast_slice(child_code))?,
            item_path: ctx.upload(bytemuck::cast_slice(&path))?,
        })
    }
}

/// Eligible counts of every request of a batch, request `u` at `u * n_nodes`.
pub struct Counts {
    n_users: usize,
    n_nodes: usize,
    buf: GpuBuf,
}

impl Counts {
    pub fn new(ctx: &Ctx, per_user: &[Vec<u32>]) -> Result<Self> {
        let n_nodes = per_user.first().map_or(0, Vec::len);
        if per_user.iter().any(|c| c.len() != n_nodes) {
            return Err(err(
                "counts: requests of one batch have different trie sizes",
            ));
        }
        let flat: Vec<u32> = per_user.concat();
        Ok(Counts {
            n_users: per_user.len(),
            n_nodes,
            buf: ctx.upload(bytemuck::cast_slice(&flat))?,
        })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n_beams: u32,
    levels: u32,
    level: u32,
    codebook: u32,
    n_groups: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GpuBeam {
    score: f32,
    node: u32,
    sess_off: u32,
    sess_len: u32,
    key_off: u32,
    logp_row: u32,
    counts_off: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GpuGroup {
    key_off: u32,
    n_keys: u32,
    beam0: u32,
    n_beams: u32,
    width: u32,
    out_off: u32,
    _pad: [u32; 2],
}

pub fn select(
    be: &WgpuBackend,
    logp: &WgpuBuf,
    index: &Index,
    counts: &Counts,
    level: usize,
    groups: &[SelectGroup<'_>],
) -> Result<Vec<Vec<Candidate>>> {
    if level >= index.levels || counts.n_nodes != index.n_nodes {
        return Err(err(format!(
            "select: level {level} of {}, counts for {} nodes of {}",
            index.levels, counts.n_nodes, index.n_nodes
        )));
    }
    let mut beams = Vec::new();
    let mut sessions: Vec<u32> = Vec::new();
    let mut gg = Vec::with_capacity(groups.len());
    let (mut key_off, mut out_off) = (0u64, 0u64);
    for g in groups {
        if g.user >= counts.n_users || g.row0 + g.beams.len() > logp.rows {
            return Err(err(format!(
                "select: request {} with rows {}+{} of {}",
                g.user,
                g.row0,
                g.beams.len(),
                logp.rows
            )));
        }
        let (k0, b0) = (key_off, beams.len());
        for (bi, b) in g.beams.iter().enumerate() {
            let node = b.node as usize;
            if node + 1 >= index.child_start_host.len() {
                return Err(err(format!("select: trie node {node} out of range")));
            }
            let n_child = index.child_start_host[node + 1] - index.child_start_host[node];
            beams.push(GpuBeam {
                score: b.score,
                node: b.node,
                sess_off: sessions.len() as u32,
                sess_len: b.session.len() as u32,
                key_off: key_off as u32,
                logp_row: (g.row0 + bi) as u32,
                counts_off: (g.user * counts.n_nodes) as u32,
                _pad: 0,
            });
            sessions.extend_from_slice(b.session);
            key_off += n_child as u64;
        }
        gg.push(GpuGroup {
            key_off: k0 as u32,
            n_keys: (key_off - k0) as u32,
            beam0: b0 as u32,
            n_beams: g.beams.len() as u32,
            width: g.width as u32,
            out_off: out_off as u32,
            _pad: [0; 2],
        });
        out_off += g.width as u64;
    }
    if key_off > u32::MAX as u64 / 2 || beams.len() > u32::MAX as usize / 2 {
        return Err(err(format!(
            "select: {key_off} candidates are more than one launch handles"
        )));
    }
    let ng = groups.len();
    if ng == 0 {
        return Ok(Vec::new());
    }
    let ctx = &be.ctx;
    let p = Params {
        n_beams: beams.len() as u32,
        levels: index.levels as u32,
        level: level as u32,
        codebook: logp.cols as u32,
        n_groups: ng as u32,
        _pad: [0; 3],
    };
    let beams_b = ctx.upload(bytemuck::cast_slice(&beams))?;
    let sess_b = ctx.upload(bytemuck::cast_slice(&sessions))?;
    let groups_b = ctx.upload(bytemuck::cast_slice(&gg))?;
    let keys = ctx.alloc(key_off.max(1) * 4)?;
    let out = ctx.alloc((ng as u64 + out_off).max(1) * 16)?;
    let scratch = ctx.alloc(out_off.max(1) * 8)?;
    let v = Variant::new("select.wgsl", &[]);
    let pb = bytemuck::bytes_of(&p);
    if !beams.is_empty() {
        let binds = [
            (1, (&beams_b).into()),
            (2, (&index.child_start).into()),
            (3, (&index.child_code).into()),
            (4, (&index.item_path).into()),
            (5, (&counts.buf).into()),
            (6, (&sess_b).into()),
            (7, (&logp.g).into()),
            (8, (&keys).into()),
        ];
        ctx.dispatch(&*ctx.pipe(&v, "keys_main")?, pb, &binds, beams.len() as u32)?;
    }
    let binds = [
        (1, (&beams_b).into()),
        (2, (&index.child_start).into()),
        (3, (&index.child_code).into()),
        (8, (&keys).into()),
        (9, (&groups_b).into()),
        (10, (&out).into()),
        (11, (&scratch).into()),
    ];
    ctx.dispatch_xy(&*ctx.pipe(&v, "top_main")?, pb, &binds, ng as u32, 1)?;
    let bytes = ctx.read(out.raw(), 0, (ng as u64 + out_off) * 16)?;
    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&bytes);
    let mut res = Vec::with_capacity(ng);
    for (gi, g) in gg.iter().enumerate() {
        let n = (words[gi * 4] as usize).min(g.width as usize);
        let at = (ng + g.out_off as usize) * 4;
        res.push(
            (0..n)
                .map(|i| {
                    let w = &words[at + 4 * i..at + 4 * i + 4];
                    Candidate {
                        score: f32::from_bits(w[0]),
                        beam: w[1],
                        code: w[2],
                        child: w[3],
                    }
                })
                .collect(),
        );
    }
    Ok(res)
}
