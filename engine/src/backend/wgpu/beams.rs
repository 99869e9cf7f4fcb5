//! Host side of the device beam search (beams.wgsl): the trie, the eligible counts and
//! the beams (scores, trie nodes, sessions, ancestries, codes) live in device buffers.
//! A scored step records four dispatches and one submission; nothing comes back until
//! [`finish`] reads the survivors once per request.

use super::context::{err, Ctx, GpuBuf};
use super::shaders::Variant;
use super::{WgpuBackend, WgpuBuf, WgpuIds};
use crate::backend::{BeamPlan, BeamStep, Finished, Rows};
use crate::error::Result;
use crate::trie::Trie;
use bytemuck::{Pod, Zeroable};

/// The trie on the device, its arrays packed in one buffer:
/// `[child_start | child_code | item_path | leaf_item]`.
pub struct Index {
    n_nodes: usize,
    levels: usize,
    fanout: Vec<usize>,
    code_off: u32,
    path_off: u32,
    leaf_off: u32,
    trie: GpuBuf,
}

impl Index {
    pub fn new(ctx: &Ctx, trie: &Trie) -> Result<Self> {
        let (child_start, child_code, leaf_item) = trie.flat();
        let levels = trie.levels();
        let n_items = leaf_item.iter().filter(|&&v| v != u32::MAX).count();
        let mut packed = Vec::with_capacity(
            child_start.len() + child_code.len() + n_items * levels + leaf_item.len(),
        );
        packed.extend_from_slice(child_start);
        let code_off = packed.len();
        packed.extend_from_slice(child_code);
        let path_off = packed.len();
        for it in 0..n_items {
            packed.extend((0..levels).map(|d| trie.path_node(it, d)));
        }
        let leaf_off = packed.len();
        packed.extend_from_slice(leaf_item);
        let off = |o: usize| {
            u32::try_from(o)
                .map_err(|_| err(format!("trie of {} words is too large", packed.len())))
        };
        Ok(Index {
            n_nodes: trie.n_nodes(),
            levels,
            fanout: (0..levels).map(|l| trie.max_fanout(l)).collect(),
            code_off: off(code_off)?,
            path_off: off(path_off)?,
            leaf_off: off(leaf_off)?,
            trie: ctx.upload(bytemuck::cast_slice(&packed))?,
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

/// The beams of one batch, double-buffered: a step reads one half and writes the other.
pub struct Beams {
    plan: BeamPlan,
    rows: Vec<Rows>,
    /// Items every live session holds.
    items_done: usize,
    side: usize,
    /// `[cap, 2 + items]`: score bits, trie node, session items.
    beam: [GpuBuf; 2],
    codes: [WgpuIds; 2],
    ancestry: [WgpuIds; 2],
    /// Live beams per request.
    alive: GpuBuf,
    chosen: GpuBuf,
    scratch: GpuBuf,
}

impl Beams {
    pub fn inputs(&self) -> (&WgpuIds, &WgpuIds) {
        (&self.codes[self.side], &self.ancestry[self.side])
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    level: u32,
    levels: u32,
    codebook: u32,
    fanout: u32,
    t: u32,
    positions: u32,
    beam_stride: u32,
    sess_len: u32,
    last_level: u32,
    trie_code: u32,
    trie_path: u32,
    trie_leaf: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GpuGroup {
    row0: u32,
    n: u32,
    next_row0: u32,
    next_n: u32,
    width: u32,
    key_off: u32,
    counts_off: u32,
    _pad: u32,
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| err(format!("beam search: {what} {v} does not fit in 32 bits")))
}

pub fn start(be: &WgpuBackend, plan: &BeamPlan) -> Result<Beams> {
    plan.check()?;
    let ctx = &be.ctx;
    let (cap, tn) = (plan.cap, plan.positions);
    if plan.widths.len() > 65535 {
        return Err(err(format!(
            "beam search: {} requests in one batch (at most 65535)",
            plan.widths.len()
        )));
    }
    let stride = 2 + plan.items;
    let zeros = |bytes: usize| -> Result<GpuBuf> {
        let b = ctx.alloc(bytes.max(4) as u64)?;
        ctx.fill(&b, 0)?;
        Ok(b)
    };
    // Every ancestry entry starts as the row's own cache row (see backend/beams.rs).
    let anc = crate::backend::beams::identity_ancestry(cap, tn)?;
    let codes = || -> Result<WgpuIds> {
        Ok(WgpuIds {
            g: zeros(cap * 4)?,
            len: cap,
            limit: plan.codes as u64,
        })
    };
    let ancestry = || -> Result<WgpuIds> {
        Ok(WgpuIds {
            g: ctx.upload(bytemuck::cast_slice(&anc))?,
            len: anc.len(),
            limit: (cap * tn) as u64,
        })
    };
    let alive: Vec<u32> = plan.first.iter().map(|r| r.n as u32).collect();
    Ok(Beams {
        plan: plan.clone(),
        rows: plan.first.clone(),
        items_done: 0,
        side: 0,
        beam: [zeros(cap * stride * 4)?, zeros(cap * stride * 4)?],
        codes: [codes()?, codes()?],
        ancestry: [ancestry()?, ancestry()?],
        alive: ctx.upload(bytemuck::cast_slice(&alive))?,
        chosen: ctx.alloc((cap * 16).max(16) as u64)?,
        scratch: ctx.alloc((cap * 8).max(8) as u64)?,
    })
}

pub fn step(
    be: &WgpuBackend,
    b: &mut Beams,
    logp: &WgpuBuf,
    index: &Index,
    counts: &Counts,
    step: &BeamStep<'_>,
) -> Result<()> {
    step.check(&b.plan, &b.rows)?;
    let plan = &b.plan;
    let n_groups = plan.widths.len();
    let total_rows: usize = b.rows.iter().map(|r| r.n).sum();
    let fanout = index.fanout.get(step.level).copied().unwrap_or(0);
    if index.levels != plan.levels
        || counts.n_users != n_groups
        || counts.n_nodes != index.n_nodes
        || logp.cols != plan.codes
        || logp.rows < total_rows
        || step.fanout < fanout
    {
        return Err(err(format!(
            "beam step: log-probs [{}, {}] for {total_rows} rows of {} codes, {} requests \
             counted of {n_groups}, fanout {} of {fanout}",
            logp.rows, logp.cols, plan.codes, counts.n_users, step.fanout
        )));
    }
    let last_level = step.level + 1 == plan.levels;
    let mut groups = Vec::with_capacity(n_groups);
    let mut key_off = 0usize;
    for (g, ((r, nx), &w)) in b.rows.iter().zip(step.next).zip(&plan.widths).enumerate() {
        groups.push(GpuGroup {
            row0: u32_of(r.row0, "row")?,
            n: u32_of(r.n, "rows")?,
            next_row0: u32_of(nx.row0, "row")?,
            next_n: u32_of(nx.n, "rows")?,
            width: u32_of(w, "width")?,
            key_off: u32_of(key_off, "candidates")?,
            counts_off: u32_of(g * counts.n_nodes, "counts")?,
            _pad: 0,
        });
        key_off += r.n * fanout;
    }
    u32_of(key_off, "candidates")?;
    let p = Params {
        level: step.level as u32,
        levels: plan.levels as u32,
        codebook: u32_of(plan.codes, "codes")?,
        fanout: u32_of(fanout, "fanout")?,
        t: u32_of(step.t, "position")?,
        positions: u32_of(plan.positions, "positions")?,
        beam_stride: u32_of(2 + plan.items, "items")?,
        sess_len: u32_of(b.items_done, "items")?,
        last_level: u32::from(last_level),
        trie_code: index.code_off,
        trie_path: index.path_off,
        trie_leaf: index.leaf_off,
    };
    let ctx = &be.ctx;
    let groups_b = ctx.upload(bytemuck::cast_slice(&groups))?;
    let keys = ctx.alloc((key_off.max(1) * 4) as u64)?;
    let (cur, nxt) = (b.side, 1 - b.side);
    let v = Variant::new("beams.wgsl", &[]);
    let pb = bytemuck::bytes_of(&p);
    let max_rows = b.rows.iter().map(|r| r.n).max().unwrap_or(0);
    let max_next = step.next.iter().map(|r| r.n).max().unwrap_or(0);
    let ng = n_groups as u32;
    if max_rows > 0 && fanout > 0 {
        let binds = [
            (1, (&groups_b).into()),
            (2, (&b.alive).into()),
            (3, (&index.trie).into()),
            (4, (&counts.buf).into()),
            (5, (&logp.g).into()),
            (6, (&keys).into()),
            (7, (&b.beam[cur]).into()),
        ];
        ctx.dispatch_xy(
            &*ctx.pipe(&v, "keys_main")?,
            pb,
            &binds,
            max_rows as u32,
            ng,
        )?;
    }
    let binds = [
        (1, (&groups_b).into()),
        (2, (&b.alive).into()),
        (6, (&keys).into()),
        (8, (&b.scratch).into()),
    ];
    ctx.dispatch_xy(&*ctx.pipe(&v, "top_main")?, pb, &binds, ng, 1)?;
    if max_next > 0 {
        let binds = [
            (1, (&groups_b).into()),
            (2, (&b.alive).into()),
            (3, (&index.trie).into()),
            (7, (&b.beam[cur]).into()),
            (8, (&b.scratch).into()),
            (9, (&b.chosen).into()),
        ];
        let x = max_next.div_ceil(64) as u32;
        ctx.dispatch_xy(&*ctx.pipe(&v, "rank_main")?, pb, &binds, x, ng)?;
        let binds = [
            (1, (&groups_b).into()),
            (2, (&b.alive).into()),
            (7, (&b.beam[cur]).into()),
            (9, (&b.chosen).into()),
            (10, (&b.beam[nxt]).into()),
            (11, (&b.codes[nxt].g).into()),
            (12, (&b.ancestry[cur].g).into()),
            (13, (&b.ancestry[nxt].g).into()),
        ];
        let x = max_next.div_ceil(64) as u32;
        ctx.dispatch_xy(&*ctx.pipe(&v, "advance_main")?, pb, &binds, x, ng)?;
    }
    b.side = nxt;
    b.rows = step.next.to_vec();
    if last_level {
        b.items_done += 1;
    }
    // The step goes to the device now, so that it runs while the host records the next.
    ctx.flush()
}

/// Reads every request's live beams: the one readback of a batch.
pub fn finish(be: &WgpuBackend, b: &Beams) -> Result<Vec<Finished>> {
    let ctx = &be.ctx;
    let stride = 2 + b.plan.items;
    let alive: Vec<u32> =
        bytemuck::pod_collect_to_vec(&ctx.read(b.alive.raw(), 0, (b.rows.len() * 4) as u64)?);
    // Only the rows that can hold live beams: up to the end of the last request's rows.
    let end = b.rows.iter().map(|r| r.row0 + r.n).max().unwrap_or(0);
    let words: Vec<u32> = bytemuck::pod_collect_to_vec(&ctx.read(
        b.beam[b.side].raw(),
        0,
        (end * stride * 4) as u64,
    )?);
    Ok(b.rows
        .iter()
        .zip(&alive)
        .map(|(r, &n)| {
            let rows = r.row0..r.row0 + (n as usize).min(r.n);
            Finished {
                scores: rows
                    .clone()
                    .map(|row| f32::from_bits(words[row * stride]))
                    .collect(),
                sessions: rows
                    .map(|row| words[row * stride + 2..][..b.items_done].to_vec())
                    .collect(),
            }
        })
        .collect())
}
