//! The sparse MoE on the device: router product, softmax + top-k and grouping by expert
//! (moe.wgsl), expert-grouped SwiGLU products (matmul.wgsl GROUPED: each expert's
//! weights are read once per call for all the tokens routed to it; gate and up in one
//! launch with the SwiGLU applied where they share a buffer), then the weighted
//! combination. Nothing comes back to the host unless the caller asks for the routes.

use super::context::{err, Bind};
use super::kernels::{
    add_combined_rms_norm, add_rms_norm, binary, matmul, w_variant, y4, Combine, MatmulParams,
    MM_TILE,
};
use super::shaders::{weight_define, Variant};
use super::weight::WgpuWeight;
use super::{WgpuBackend, WgpuBuf};
use crate::backend::Moe;
use crate::error::Result;
use std::sync::Arc;

/// How to reach expert `e` of one weight family from a single binding:
/// `base + e * stride`, or `None` when the experts are not stacked in one buffer.
fn stacked(ws: &[&WgpuWeight]) -> Option<(u32, u32)> {
    let first = ws.first()?;
    let p0 = first.parts.first()?;
    let (ws_, ss) = match ws.get(1) {
        Some(w) => {
            let p1 = w.parts.first()?;
            (
                p1.base.checked_sub(p0.base)?,
                p1.sbase.checked_sub(p0.sbase)?,
            )
        }
        None => (0, 0),
    };
    let ok = ws.iter().enumerate().all(|(e, w)| {
        w.parts.len() == 1
            && Arc::ptr_eq(&w.parts[0].buf, &p0.buf)
            && w.dtype == first.dtype
            && w.parts[0].base == p0.base + e as u32 * ws_
            && w.parts[0].sbase == p0.sbase + e as u32 * ss
    });
    ok.then_some((ws_, ss))
}

/// Where the up matrices start when gate and up can run as one fused product: both
/// stacked with the same strides in one buffer (`WgpuWeight::stacks`), float or quantised
/// alike.
fn fusable(gates: &[&WgpuWeight], ups: &[&WgpuWeight]) -> Option<(u32, u32)> {
    let (g, u) = (stacked(gates)?, stacked(ups)?);
    let (g0, u0) = (gates.first()?, ups.first()?);
    let (gp, up) = (g0.parts.first()?, u0.parts.first()?);
    (g == u
        && Arc::ptr_eq(&gp.buf, &up.buf)
        && g0.dtype == u0.dtype
        && (g0.rows, g0.cols) == (u0.rows, u0.cols))
        .then_some((up.base, up.sbase))
}

/// One expert-grouped product: rows of `x` (token rows through `slot_row` when
/// `gather_x`, else slot rows) times each expert's `W`, into slot rows of `y`.
/// `up`: the fused gate/up product, `y = silu(x·Wgᵀ) ⊙ (x·Wuᵀ)` with `ws` the gates and
/// `up` the (base, sbase) of the up matrices in the gates' buffer (see [`fusable`]).
#[allow(clippy::too_many_arguments)]
fn grouped(
    be: &WgpuBackend,
    x: &WgpuBuf,
    ws: &[&WgpuWeight],
    up: Option<(u32, u32)>,
    gather_x: bool,
    tiles: &WgpuBuf,
    slot_row: &WgpuBuf,
    y: &WgpuBuf,
    max_tiles: u32,
) -> Result<()> {
    let w0 = ws[0];
    // Useful work only: the slots times one expert's matrix (two with `up`).
    let products = if up.is_some() { 2 } else { 1 };
    let flops = 2 * products * (y.rows * w0.rows * w0.cols) as u64;
    be.ctx
        .stats
        .matmul_flops
        .fetch_add(flops, std::sync::atomic::Ordering::Relaxed);
    let d =
        weight_define(w0.dtype).ok_or_else(|| err(format!("moe: experts of type {}", w0.dtype)))?;
    let mut defs = vec![d, "GROUPED"];
    if up.is_some() {
        defs.push("SWIGLU");
    }
    // Every expert has the first one's shape and, stacked or not, whole matrices.
    if y4(w0) {
        defs.push("Y4");
    }
    let pipe = be.ctx.pipe(&Variant::new("matmul.wgsl", &defs), "main")?;
    let (u_base, u_sbase) = up.unwrap_or((0, 0));
    let run = |w: &WgpuWeight,
               part: &super::weight::Part,
               estride: (u32, u32),
               only: u32|
     -> Result<()> {
        let p = MatmulParams {
            m: y.rows as u32,
            n: part.rows,
            k: w.cols as u32,
            y_stride: w.rows as u32,
            y_col: part.row0,
            w_base: part.base,
            s_base: part.sbase,
            w_estride: estride.0,
            s_estride: estride.1,
            gather_x: u32::from(gather_x),
            only_expert: only,
            u_base,
            u_sbase,
            y_row0: 0,
            q_base: 0,
            q_sbase: 0,
        };
        let wb = Bind {
            buf: &part.buf,
            offset: 0,
            size: part.buf.size(),
        };
        let binds = [
            (1, (&x.g).into()),
            (2, wb),
            (3, (&y.g).into()),
            (4, (&tiles.g).into()),
            (5, (&slot_row.g).into()),
        ];
        be.ctx.dispatch_xy(
            &pipe,
            bytemuck::bytes_of(&p),
            &binds,
            (part.rows as usize).div_ceil(MM_TILE) as u32,
            max_tiles,
        )
    };
    match stacked(ws) {
        Some(stride) => run(w0, &w0.parts[0], stride, u32::MAX)?,
        None if up.is_some() => return Err(err("moe: fused gate/up needs stacked experts")),
        // Experts in separate buffers (too large to share a binding): one launch per
        // expert and part, each skipping the other experts' tiles.
        None => {
            for (e, w) in ws.iter().enumerate() {
                for part in &w.parts {
                    run(w, part, (0, 0), e as u32)?;
                }
            }
        }
    }
    Ok(())
}

/// `x · (experts)` up to the weighted sum: routing, grouping, the grouped products, and
/// the routes read back when asked for. `None` for no rows.
fn experts(
    be: &WgpuBackend,
    x: &WgpuBuf,
    m: &Moe<WgpuWeight>,
    routes: Option<&mut Vec<u32>>,
) -> Result<Option<Combine>> {
    let e = m.experts.len();
    if m.router.rows != e || m.top_k == 0 || m.top_k > e || m.router.cols != x.cols {
        return Err(err(format!(
            "moe: router [{}, {}] for {e} experts, top_k {}, width {}",
            m.router.rows, m.router.cols, m.top_k, x.cols
        )));
    }
    let d = x.cols;
    let hidden = m.experts[0].gate.rows;
    for (i, f) in m.experts.iter().enumerate() {
        if f.gate.cols != d
            || f.up.cols != d
            || f.gate.rows != hidden
            || f.up.rows != hidden
            || f.down.cols != hidden
            || f.down.rows != d
        {
            return Err(err(format!("moe: expert {i} weight shapes do not chain")));
        }
    }
    if x.rows == 0 {
        return Ok(None);
    }
    let (rows, k) = (x.rows, m.top_k);
    let slots = rows * k;
    let route = be.new_buf(slots, 1)?;
    let probs = be.new_buf(slots, 1)?;
    let max_tiles = slots.div_ceil(MM_TILE) + e;
    let tiles = be.new_buf(4 * (1 + max_tiles), 1)?;
    let slot_row = be.new_buf(slots, 1)?;
    let slot_of = be.new_buf(slots, 1)?;
    let v = Variant::new("moe.wgsl", &[]);
    let ctx = &be.ctx;
    // The router product inside `route` (one launch) where its matrix is one part and
    // rows are whole 4-value groups; else a matmul launch first.
    let in_route = match m.router.parts.as_slice() {
        [part] if d.is_multiple_of(4) => Some(part),
        _ => None,
    };
    let params = [
        rows as u32,
        e as u32,
        k as u32,
        d as u32,
        in_route.map_or(0, |p| p.base),
        in_route.map_or(0, |p| p.sbase),
        0,
        0,
    ];
    let pb = bytemuck::bytes_of(&params);
    let mut binds = vec![(2, (&route.g).into()), (3, (&probs.g).into())];
    let n_route = (rows as u32).div_ceil(64);
    match in_route {
        Some(part) => {
            let logits = be.new_buf(rows, e)?;
            let wb = Bind {
                buf: &part.buf,
                offset: 0,
                size: part.buf.size(),
            };
            binds.extend([(1, (&logits.g).into()), (9, (&x.g).into()), (10, wb)]);
            let rv = w_variant("moe.wgsl", &m.router, &["ROUTER"])?;
            ctx.dispatch(&*ctx.pipe(&rv, "route")?, pb, &binds, n_route)?;
            // Still a matrix product: counted as matmul.wgsl's launch counted it.
            ctx.stats.matmul_flops.fetch_add(
                2 * (rows * e * d) as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        None => {
            let logits = matmul(be, x, &m.router)?;
            binds.push((1, (&logits.g).into()));
            ctx.dispatch(&*ctx.pipe(&v, "route")?, pb, &binds, n_route)?;
        }
    }
    let gbinds = [
        (2, (&route.g).into()),
        (4, (&tiles.g).into()),
        (5, (&slot_row.g).into()),
        (6, (&slot_of.g).into()),
    ];
    ctx.dispatch(&*ctx.pipe(&v, "group")?, pb, &gbinds, 1)?;

    let gates: Vec<&WgpuWeight> = m.experts.iter().map(|f| &f.gate).collect();
    let ups: Vec<&WgpuWeight> = m.experts.iter().map(|f| &f.up).collect();
    let downs: Vec<&WgpuWeight> = m.experts.iter().map(|f| &f.down).collect();
    let mut h = be.new_buf(slots, hidden)?;
    let mt = max_tiles as u32;
    match fusable(&gates, &ups) {
        Some(up) => grouped(be, x, &gates, Some(up), true, &tiles, &slot_row, &h, mt)?,
        None => {
            let u = be.new_buf(slots, hidden)?;
            grouped(be, x, &gates, None, true, &tiles, &slot_row, &h, mt)?;
            grouped(be, x, &ups, None, true, &tiles, &slot_row, &u, mt)?;
            binary(be, "swiglu", &mut h, &u)?;
        }
    }
    let eo = be.new_buf(slots, d)?;
    grouped(be, &h, &downs, None, false, &tiles, &slot_row, &eo, mt)?;
    if let Some(log) = routes {
        let bytes = ctx.read(route.g.raw(), 0, (slots * 4) as u64)?;
        log.extend(bytemuck::pod_collect_to_vec::<u8, u32>(&bytes));
    }
    Ok(Some(Combine {
        eo,
        probs,
        slot_of,
        top_k: k,
    }))
}

/// `Backend::moe`: the experts, then their weighted sum (moe.wgsl `combine`).
pub fn moe(
    be: &WgpuBackend,
    x: &WgpuBuf,
    m: &Moe<WgpuWeight>,
    routes: Option<&mut Vec<u32>>,
) -> Result<WgpuBuf> {
    let d = x.cols;
    let out = be.new_buf(x.rows, d)?;
    let Some(c) = experts(be, x, m, routes)? else {
        return Ok(out);
    };
    let params = [
        x.rows as u32,
        m.experts.len() as u32,
        c.top_k as u32,
        d as u32,
        0,
        0,
        0,
        0,
    ];
    let cbinds = [
        (3, (&c.probs.g).into()),
        (6, (&c.slot_of.g).into()),
        (7, (&c.eo.g).into()),
        (8, (&out.g).into()),
    ];
    let (cv, per) = if d.is_multiple_of(4) {
        (Variant::new("moe.wgsl", &["X4"]), 4)
    } else {
        (Variant::new("moe.wgsl", &[]), 1)
    };
    let ctx = &be.ctx;
    ctx.dispatch(
        &*ctx.pipe(&cv, "combine")?,
        bytemuck::bytes_of(&params),
        &cbinds,
        ((x.rows * d / per) as u32).div_ceil(256),
    )?;
    Ok(out)
}

/// `Backend::moe_add_rms_norm`: the experts, then their weighted sum inside the residual
/// add and the norm (one launch instead of `combine` and `add_rms_norm`).
pub fn moe_add_rms_norm(
    be: &WgpuBackend,
    x: &mut WgpuBuf,
    h: &WgpuBuf,
    m: &Moe<WgpuWeight>,
    routes: Option<&mut Vec<u32>>,
    w: &WgpuWeight,
    eps: f32,
) -> Result<WgpuBuf> {
    match experts(be, h, m, routes)? {
        Some(c) => add_combined_rms_norm(be, x, &c, w, eps),
        // No rows: what add_rms_norm makes of them (or the mismatch it names).
        None => add_rms_norm(be, x, &be.new_buf(h.rows, x.cols)?, w, eps),
    }
}
