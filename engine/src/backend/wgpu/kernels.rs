//! Host side of the dense kernels: checks shapes, fills each kernel's `Params` (mirrored
//! from its .wgsl file) and records the dispatches.

use super::context::{err, Bind};
use super::shaders::{weight_define, Variant};
use super::weight::WgpuWeight;
use super::{WgpuBackend, WgpuBuf, WgpuIds};
use crate::backend::{Ffn, KeyMap};
use crate::error::Result;
use bytemuck::{Pod, Zeroable};
use std::sync::Arc;

pub(super) fn w_variant(
    file: &'static str,
    w: &WgpuWeight,
    extra: &[&'static str],
) -> Result<Variant> {
    let d = weight_define(w.dtype)
        .ok_or_else(|| err(format!("{file}: weights of type {}", w.dtype)))?;
    let mut defs = vec![d];
    defs.extend_from_slice(extra);
    Ok(Variant::new(file, &defs))
}

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| {
        err(format!(
            "{what} = {v} does not fit the kernels' 32-bit indices"
        ))
    })
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(super) struct MatmulParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub y_stride: u32,
    pub y_col: u32,
    pub w_base: u32,
    pub s_base: u32,
    pub w_estride: u32,
    pub s_estride: u32,
    pub gather_x: u32,
    pub only_expert: u32,
    /// GROUPED + SWIGLU: where the up matrices start in the same binding as the gates.
    pub u_base: u32,
    pub u_sbase: u32,
    /// KV: the first cache row written.
    pub y_row0: u32,
    /// KV + Q: where the query matrix starts in the same binding.
    pub q_base: u32,
    pub q_sbase: u32,
}

/// Output tile of one matmul workgroup (matmul.wgsl: 8×4 invocations of 8 rows × 4 columns).
pub(super) const MM_TILE: usize = 32;

pub fn matmul(be: &WgpuBackend, x: &WgpuBuf, w: &WgpuWeight) -> Result<WgpuBuf> {
    if x.cols != w.cols {
        return Err(err(format!(
            "matmul: x [{}, {}] · W [{}, {}]ᵀ",
            x.rows, x.cols, w.rows, w.cols
        )));
    }
    let y = be.new_buf(x.rows, w.rows)?;
    matmul_into(be, x, w, &y)?;
    Ok(y)
}

/// Whether matmul.wgsl may store 4 outputs at once (`Y4`): the row stride of y (the
/// weight's rows) and every part's first row and row count are multiples of 4.
pub(super) fn y4(w: &WgpuWeight) -> bool {
    w.rows.is_multiple_of(4)
        && w.parts
            .iter()
            .all(|p| p.row0.is_multiple_of(4) && p.rows.is_multiple_of(4))
}

pub(super) fn matmul_into(
    be: &WgpuBackend,
    x: &WgpuBuf,
    w: &WgpuWeight,
    y: &WgpuBuf,
) -> Result<()> {
    if x.rows == 0 || w.rows == 0 {
        return Ok(());
    }
    let ctx = &be.ctx;
    let extra: &[&'static str] = if y4(w) { &["Y4"] } else { &[] };
    let pipe = ctx.pipe(&w_variant("matmul.wgsl", w, extra)?, "main")?;
    let m = u32_of(x.rows, "rows")?;
    let flops = 2 * (x.rows * w.rows * w.cols) as u64;
    ctx.stats
        .matmul_flops
        .fetch_add(flops, std::sync::atomic::Ordering::Relaxed);
    for part in &w.parts {
        let p = MatmulParams {
            m,
            n: part.rows,
            k: u32_of(w.cols, "cols")?,
            y_stride: u32_of(w.rows, "rows")?,
            y_col: part.row0,
            w_base: part.base,
            s_base: part.sbase,
            w_estride: 0,
            s_estride: 0,
            gather_x: 0,
            only_expert: u32::MAX,
            u_base: 0,
            u_sbase: 0,
            y_row0: 0,
            q_base: 0,
            q_sbase: 0,
        };
        let wb = Bind {
            buf: &part.buf,
            offset: 0,
            size: part.buf.size(),
        };
        let gx = (part.rows as usize).div_ceil(MM_TILE) as u32;
        let gy = x.rows.div_ceil(MM_TILE);
        if gy > 65535 || gx > 65535 {
            return Err(err(format!(
                "matmul: [{}, {}] · [{}, {}]ᵀ is too large for one launch",
                x.rows, x.cols, w.rows, w.cols
            )));
        }
        ctx.dispatch_xy(
            &pipe,
            bytemuck::bytes_of(&p),
            &[(1, (&x.g).into()), (2, wb), (3, (&y.g).into())],
            gx,
            gy as u32,
        )?;
    }
    Ok(())
}

/// `Backend::project_kv` in one launch (matmul.wgsl KV), and with `q` (its weight and
/// a `[rows, n]` output) `Backend::project_qkv` (KV + Q): the weights in one buffer, a
/// width of whole 4-value groups, caches of one precision (two `&mut` caches are two
/// buffers). `Ok(false)` where that does not hold: the caller runs separate products
/// and stores.
#[allow(clippy::too_many_arguments)]
pub(super) fn project_kv(
    be: &WgpuBackend,
    x: &WgpuBuf,
    wk: &WgpuWeight,
    wv: &WgpuWeight,
    kc: &WgpuBuf,
    vc: &WgpuBuf,
    row0: usize,
    q: Option<(&WgpuWeight, &WgpuBuf)>,
) -> Result<bool> {
    let ([pk], [pv]) = (&wk.parts[..], &wv.parts[..]) else {
        return Ok(false);
    };
    let n = wk.rows;
    let fits =
        |c: &WgpuBuf| c.cols == n && row0.checked_add(x.rows).is_some_and(|end| end <= c.rows);
    if !Arc::ptr_eq(&pk.buf, &pv.buf)
        || wk.dtype != wv.dtype
        || (wv.rows, wv.cols, wk.cols) != (n, wk.cols, x.cols)
        || !n.is_multiple_of(4)
        || x.half
        || kc.half != vc.half
        || !fits(kc)
        || !fits(vc)
    {
        return Ok(false);
    }
    // The query matrix beside the other two, same shape and type, into f32 [rows, n].
    let pq = match q {
        None => None,
        Some((wq, y)) => match &wq.parts[..] {
            [pq] if Arc::ptr_eq(&pq.buf, &pk.buf)
                && wq.dtype == wk.dtype
                && (wq.rows, wq.cols) == (n, wk.cols)
                && (y.rows, y.cols, y.half) == (x.rows, n, false) =>
            {
                Some((pq, y))
            }
            _ => return Ok(false),
        },
    };
    if x.rows == 0 {
        return Ok(true);
    }
    let mut extra = vec!["KV"];
    if kc.half {
        extra.push("KV_F16");
    }
    if pq.is_some() {
        extra.push("Q");
    }
    let parts = if pq.is_some() { 3 } else { 2 };
    let ctx = &be.ctx;
    let pipe = ctx.pipe(&w_variant("matmul.wgsl", wk, &extra)?, "main")?;
    ctx.stats.matmul_flops.fetch_add(
        2 * parts * (x.rows * n * wk.cols) as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let p = MatmulParams {
        m: u32_of(x.rows, "rows")?,
        n: u32_of(n, "rows")?,
        k: u32_of(wk.cols, "cols")?,
        y_stride: u32_of(n, "rows")?,
        y_col: 0,
        w_base: pk.base,
        s_base: pk.sbase,
        w_estride: 0,
        s_estride: 0,
        gather_x: 0,
        only_expert: u32::MAX,
        u_base: pv.base,
        u_sbase: pv.sbase,
        y_row0: u32_of(row0, "cache row")?,
        q_base: pq.map_or(0, |(p, _)| p.base),
        q_sbase: pq.map_or(0, |(p, _)| p.sbase),
    };
    // Column tiles of K, then as many of V (and of Q).
    let gx = parts as usize * n.div_ceil(MM_TILE);
    let gy = x.rows.div_ceil(MM_TILE);
    if gx > 65535 || gy > 65535 {
        return Ok(false);
    }
    let wb = Bind {
        buf: &pk.buf,
        offset: 0,
        size: pk.buf.size(),
    };
    let mut binds = vec![
        (1, (&x.g).into()),
        (2, wb),
        (3, (&kc.g).into()),
        (6, (&vc.g).into()),
    ];
    if let Some((_, y)) = pq {
        binds.push((7, (&y.g).into()));
    }
    ctx.dispatch_xy(&pipe, bytemuck::bytes_of(&p), &binds, gx as u32, gy as u32)?;
    Ok(true)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct RmsParams {
    rows: u32,
    cols: u32,
    eps: f32,
    w_base: u32,
    s_base: u32,
    top_k: u32,
    _pad: [u32; 2],
}

pub fn rms_norm(be: &WgpuBackend, x: &WgpuBuf, w: &WgpuWeight, eps: f32) -> Result<WgpuBuf> {
    norm(be, x, None, None, w, eps)
}

/// `x += r`, then `rms_norm(x)`, in one launch.
pub fn add_rms_norm(
    be: &WgpuBackend,
    x: &mut WgpuBuf,
    r: &WgpuBuf,
    w: &WgpuWeight,
    eps: f32,
) -> Result<WgpuBuf> {
    if (x.rows, x.cols) != (r.rows, r.cols) {
        return Err(err(format!(
            "add_rms_norm: [{}, {}] += [{}, {}]",
            x.rows, x.cols, r.rows, r.cols
        )));
    }
    norm(be, x, Some(r), None, w, eps)
}

/// A MoE layer's output still as its experts' rows (moe.rs): `eo` `[rows·top_k, d]` by
/// slot, each row's slots and weights in `slot_of` and `probs` (moe.wgsl `combine`).
pub(super) struct Combine {
    pub eo: WgpuBuf,
    pub probs: WgpuBuf,
    pub slot_of: WgpuBuf,
    pub top_k: usize,
}

/// `add_rms_norm` with the MoE output summed inside the norm's pass (rms_norm.wgsl
/// ADD + COMBINE): one launch for the combine, the residual add and the norm.
pub(super) fn add_combined_rms_norm(
    be: &WgpuBackend,
    x: &mut WgpuBuf,
    c: &Combine,
    w: &WgpuWeight,
    eps: f32,
) -> Result<WgpuBuf> {
    let slots = x.rows.checked_mul(c.top_k);
    if c.eo.cols != x.cols
        || Some(c.eo.rows) != slots
        || Some(c.probs.rows * c.probs.cols) != slots
        || Some(c.slot_of.rows * c.slot_of.cols) != slots
    {
        return Err(err(format!(
            "add_rms_norm: [{}, {}] += the MoE rows [{}, {}] of top-{}",
            x.rows, x.cols, c.eo.rows, c.eo.cols, c.top_k
        )));
    }
    norm(be, x, Some(&c.eo), Some(c), w, eps)
}

fn norm(
    be: &WgpuBackend,
    x: &WgpuBuf,
    add: Option<&WgpuBuf>,
    combine: Option<&Combine>,
    w: &WgpuWeight,
    eps: f32,
) -> Result<WgpuBuf> {
    if x.cols != w.rows * w.cols || w.parts.len() != 1 {
        return Err(err(format!(
            "rms_norm: width {} with a weight of {}",
            x.cols,
            w.rows * w.cols
        )));
    }
    let y = be.new_buf(x.rows, x.cols)?;
    if x.rows == 0 {
        return Ok(y);
    }
    let part = &w.parts[0];
    let p = RmsParams {
        rows: u32_of(x.rows, "rows")?,
        cols: u32_of(x.cols, "cols")?,
        eps,
        w_base: part.base,
        s_base: part.sbase,
        top_k: u32_of(combine.map_or(0, |c| c.top_k), "top_k")?,
        _pad: [0; 2],
    };
    let mut extra = Vec::new();
    if add.is_some() {
        extra.push("ADD");
    }
    if combine.is_some() {
        extra.push("COMBINE");
    }
    if x.cols.is_multiple_of(4) {
        extra.push("X4");
    }
    let pipe = be
        .ctx
        .pipe(&w_variant("rms_norm.wgsl", w, &extra)?, "main")?;
    let wb = Bind {
        buf: &part.buf,
        offset: 0,
        size: part.buf.size(),
    };
    let mut binds = vec![(1, (&x.g).into()), (2, wb), (3, (&y.g).into())];
    if let Some(r) = add {
        binds.push((4, (&r.g).into()));
    }
    if let Some(c) = combine {
        binds.push((5, (&c.probs.g).into()));
        binds.push((6, (&c.slot_of.g).into()));
    }
    be.ctx
        .dispatch(&pipe, bytemuck::bytes_of(&p), &binds, p.rows.div_ceil(64))?;
    Ok(y)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct GatherParams {
    rows: u32,
    cols: u32,
    part_row0: u32,
    part_rows: u32,
    w_base: u32,
    s_base: u32,
    accumulate: u32,
    _pad: u32,
}

pub fn gather_sum(
    be: &WgpuBackend,
    parts: &[(&WgpuWeight, &WgpuIds)],
    rows: usize,
) -> Result<WgpuBuf> {
    let cols = parts.first().map(|(w, _)| w.cols).unwrap_or(0);
    let out = be.new_buf(rows, cols)?;
    if rows == 0 || cols == 0 {
        return Ok(out);
    }
    if parts.is_empty() {
        be.ctx.fill(&out.g, 0)?;
    }
    let mut first = true;
    for (w, idx) in parts {
        if w.cols != cols || idx.len < rows {
            return Err(err(format!(
                "gather_sum: table [{}, {}] with {} indices for [{rows}, {cols}]",
                w.rows, w.cols, idx.len
            )));
        }
        if idx.limit > w.rows as u64 {
            return Err(err(format!(
                "gather_sum: rows up to {} of a {}-row table",
                idx.limit - 1,
                w.rows
            )));
        }
        let ib = &idx.g;
        let pipe = be.ctx.pipe(&w_variant("gather.wgsl", w, &[])?, "main")?;
        // A split table writes only the rows it holds, so the first table zeroes `out`.
        if first && w.parts.len() > 1 {
            be.ctx.fill(&out.g, 0)?;
        }
        for part in &w.parts {
            let p = GatherParams {
                rows: u32_of(rows, "rows")?,
                cols: u32_of(cols, "cols")?,
                part_row0: part.row0,
                part_rows: part.rows,
                w_base: part.base,
                s_base: part.sbase,
                accumulate: u32::from(!first || w.parts.len() > 1),
                _pad: 0,
            };
            let wb = Bind {
                buf: &part.buf,
                offset: 0,
                size: part.buf.size(),
            };
            let n = u32_of(rows * cols, "elements")?;
            be.ctx.dispatch(
                &pipe,
                bytemuck::bytes_of(&p),
                &[(1, ib.into()), (2, wb), (3, (&out.g).into())],
                n.div_ceil(256),
            )?;
        }
        first = false;
    }
    Ok(out)
}

/// `add` (x += y) or `swiglu` (x = silu(x) ⊙ y) from elementwise.wgsl.
pub fn binary(be: &WgpuBackend, entry: &'static str, x: &mut WgpuBuf, y: &WgpuBuf) -> Result<()> {
    if (x.rows, x.cols) != (y.rows, y.cols) {
        return Err(err(format!(
            "{entry}: [{}, {}] with [{}, {}]",
            x.rows, x.cols, y.rows, y.cols
        )));
    }
    let n = u32_of(x.rows * x.cols, "elements")?;
    if n == 0 {
        return Ok(());
    }
    let pipe = be.ctx.pipe(&Variant::new("elementwise.wgsl", &[]), entry)?;
    let p = [n, 0, 0, 0];
    be.ctx.dispatch(
        &pipe,
        bytemuck::bytes_of(&p),
        &[(1, (&x.g).into()), (2, (&y.g).into())],
        n.div_ceil(256),
    )
}

pub fn swiglu_ffn(be: &WgpuBackend, x: &WgpuBuf, f: &Ffn<WgpuWeight>) -> Result<WgpuBuf> {
    if x.cols != f.gate.cols
        || x.cols != f.up.cols
        || f.gate.rows != f.up.rows
        || f.down.cols != f.gate.rows
    {
        return Err(err("ffn: weight shapes do not chain"));
    }
    let mut g = matmul(be, x, &f.gate)?;
    let u = matmul(be, x, &f.up)?;
    binary(be, "swiglu", &mut g, &u)?;
    matmul(be, &g, &f.down)
}

pub fn log_softmax(be: &WgpuBackend, x: &WgpuBuf) -> Result<WgpuBuf> {
    let y = be.new_buf(x.rows, x.cols)?;
    if x.rows == 0 || x.cols == 0 {
        return Ok(y);
    }
    let defs: &[&'static str] = if x.cols.is_multiple_of(4) {
        &["X4"]
    } else {
        &[]
    };
    let pipe = be
        .ctx
        .pipe(&Variant::new("log_softmax.wgsl", defs), "main")?;
    let p = [u32_of(x.rows, "rows")?, u32_of(x.cols, "cols")?, 0, 0];
    be.ctx.dispatch(
        &pipe,
        bytemuck::bytes_of(&p),
        &[(1, (&x.g).into()), (2, (&y.g).into())],
        p[0].div_ceil(64),
    )?;
    Ok(y)
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct AttnParams {
    rows: u32,
    d: u32,
    n_heads: u32,
    head_dim: u32,
    per_row: u32,
    max_keys: u32,
    scale: f32,
    stride: u32,
    cols: u32,
    wcols: u32,
    _pad: [u32; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct StoreParams {
    n: u32,
    offset: u32,
    _pad: [u32; 2],
}

/// `dst[offset ..] = f16(src)`: new rows into an f16 KV cache.
pub fn store_f16(be: &WgpuBackend, dst: &WgpuBuf, offset: usize, src: &WgpuBuf) -> Result<()> {
    let n = src.rows * src.cols;
    if n == 0 {
        return Ok(());
    }
    let p = StoreParams {
        n: u32_of(n, "cache elements")?,
        offset: u32_of(offset, "cache offset")?,
        _pad: [0; 2],
    };
    let x4 = n.is_multiple_of(4) && offset.is_multiple_of(4);
    let v = Variant::new("kv_cache.wgsl", if x4 { &["X4"] } else { &[] });
    let per = if x4 { 4 } else { 1 };
    be.ctx.dispatch(
        &*be.ctx.pipe(&v, "store")?,
        bytemuck::bytes_of(&p),
        &[(1, (&src.g).into()), (2, (&dst.g).into())],
        (p.n / per).div_ceil(256),
    )
}

const ATTN_TILE: usize = 4;
// Keys per `scores` invocation (attention.wgsl KEYS).
const ATTN_KEYS: usize = 8;
// Limits of the one-pass kernel (attention.wgsl FUSED_KEYS, FUSED_HD).
const ATTN_FUSED_KEYS: usize = 32;
const ATTN_FUSED_HD: usize = 64;

pub fn attention(
    be: &WgpuBackend,
    q: &WgpuBuf,
    k: &WgpuBuf,
    v: &WgpuBuf,
    n_heads: usize,
    keys: KeyMap<'_, WgpuIds>,
) -> Result<WgpuBuf> {
    keys.check(
        (q.rows, q.cols),
        (k.rows, k.cols),
        (v.rows, v.cols),
        n_heads,
    )
    .map_err(err)?;
    if q.half || k.half != v.half {
        return Err(err(
            "attention: queries must be f32 and keys/values of one precision",
        ));
    }
    let d = q.cols;
    let hd = d / n_heads;
    let rows = q.rows;
    let spans_buf;
    let (define, per_row, stride, max_keys, keybuf) = match keys {
        KeyMap::Spans(spans) => {
            let flat: Vec<u32> = spans.iter().flat_map(|&(a, b)| [a, b]).collect();
            let max = spans.iter().map(|s| s.1 as usize).max().unwrap_or(1);
            spans_buf = be.ctx.upload(bytemuck::cast_slice(&flat))?;
            ("SPANS", 0, 0, max, &spans_buf)
        }
        KeyMap::Gather {
            per_row,
            stride,
            index,
        } => ("GATHER", per_row, stride, per_row, &index.g),
    };
    let out = be.new_buf(rows, d)?;
    if rows == 0 {
        return Ok(out);
    }
    // attention.wgsl reads 4 values at a time where every head starts on a multiple of 4,
    // and 8 (two such groups) where heads allow it.
    let cols_per = if (hd | d).is_multiple_of(8) {
        8
    } else if (hd | d).is_multiple_of(4) {
        4
    } else {
        1
    };
    // `weighted` columns per invocation: 16 where heads allow it, so each weight load
    // serves two 16-byte value loads.
    let wcols = if (hd | d).is_multiple_of(16) {
        16
    } else {
        cols_per
    };
    let p = AttnParams {
        rows: u32_of(rows, "rows")?,
        d: u32_of(d, "d")?,
        n_heads: n_heads as u32,
        head_dim: hd as u32,
        per_row: u32_of(per_row, "keys per row")?,
        max_keys: u32_of(max_keys, "keys")?,
        scale: 1.0 / (hd as f32).sqrt(),
        stride: u32_of(stride, "key index stride")?,
        cols: cols_per as u32,
        wcols: wcols as u32,
        _pad: [0; 2],
    };
    let pb = bytemuck::bytes_of(&p);
    let ctx = &be.ctx;
    let mut defs = vec![define];
    if k.half {
        defs.push("KV_F16");
    }
    if cols_per >= 4 {
        defs.push("OUT4");
    }
    let v_ = Variant::new("attention.wgsl", &defs);
    // One launch where every row reads few keys (attention.wgsl `fused`).
    if max_keys <= ATTN_FUSED_KEYS && (hd | d).is_multiple_of(4) && hd <= ATTN_FUSED_HD {
        let binds = [
            (1, (&q.g).into()),
            (2, (&k.g).into()),
            (3, (&v.g).into()),
            (4, keybuf.into()),
            (5, (&out.g).into()),
        ];
        ctx.dispatch(
            &*ctx.pipe(&v_, "fused")?,
            pb,
            &binds,
            u32_of(rows * n_heads, "attention rows")?.div_ceil(64),
        )?;
        return Ok(out);
    }
    // Every pass works on tiles of ATTN_TILE rows (attention.wgsl TILE); a (tile, head)
    // holds max_keys + 1 slots of ATTN_TILE scores.
    let tiles = rows.div_ceil(ATTN_TILE);
    let scores = be.new_buf(tiles * n_heads * (max_keys + 1), ATTN_TILE)?;
    let n_scores = u32_of(
        tiles * n_heads * max_keys.div_ceil(ATTN_KEYS),
        "attention scores",
    )?;
    let binds = [
        (1, (&q.g).into()),
        (2, (&k.g).into()),
        (4, keybuf.into()),
        (6, (&scores.g).into()),
    ];
    ctx.dispatch(
        &*ctx.pipe(&v_, "scores")?,
        pb,
        &binds,
        n_scores.div_ceil(64),
    )?;
    // The softmax reads the spans (lengths) but never the gather index.
    let binds: &[(u32, Bind<'_>)] = if define == "SPANS" {
        &[(4, keybuf.into()), (6, (&scores.g).into())]
    } else {
        &[(6, (&scores.g).into())]
    };
    ctx.dispatch(
        &*ctx.pipe(&v_, "softmax")?,
        pb,
        binds,
        u32_of(tiles * n_heads, "attention tiles")?.div_ceil(64),
    )?;
    let binds = [
        (3, (&v.g).into()),
        (4, keybuf.into()),
        (5, (&out.g).into()),
        (6, (&scores.g).into()),
    ];
    ctx.dispatch(
        &*ctx.pipe(&v_, "weighted")?,
        pb,
        &binds,
        u32_of(tiles * (d / wcols), "attention outputs")?.div_ceil(64),
    )?;
    Ok(out)
}
