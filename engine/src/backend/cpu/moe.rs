//! SwiGLU feed-forward blocks and the sparse MoE built from them.

use super::vmath::{silu_mul, softmax_row};
use super::{err, matmul::matmul, CpuBackend, CpuBuf, CpuWeight};
use crate::backend::{Ffn, Moe};
use crate::error::Result;
use rayon::prelude::*;

pub fn swiglu(b: &CpuBackend, x: &CpuBuf, f: &Ffn<CpuWeight>) -> Result<CpuBuf> {
    if x.cols != f.gate.cols
        || x.cols != f.up.cols
        || f.gate.rows != f.up.rows
        || f.down.cols != f.gate.rows
    {
        return Err(err("ffn: weight shapes do not chain"));
    }
    let hidden = f.gate.rows;
    b.count_macs(x.rows * hidden * (2 * x.cols + f.down.rows));
    let mut g = b.pool_vec(x.rows * hidden);
    let mut u = b.pool_vec(x.rows * hidden);
    matmul(b, &x.data, x.rows, &f.gate, &mut g);
    matmul(b, &x.data, x.rows, &f.up, &mut u);
    silu_mul(b.simd, &mut g, &u);
    let mut y = b.buf(x.rows, f.down.rows);
    matmul(b, &g, x.rows, &f.down, &mut y.data);
    b.recycle(g);
    b.recycle(u);
    Ok(y)
}

/// Top-`k` of a probability row: indices by descending probability, ties to the lower index.
pub fn top_k(p: &[f32], k: usize) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..p.len() as u32).collect();
    idx.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

pub fn moe(
    b: &CpuBackend,
    x: &CpuBuf,
    m: &Moe<CpuWeight>,
    routes: Option<&mut Vec<u32>>,
) -> Result<CpuBuf> {
    let e = m.experts.len();
    if m.router.rows != e || m.top_k == 0 || m.top_k > e {
        return Err(err(format!(
            "moe: router has {} rows for {e} experts, top_k {}",
            m.router.rows, m.top_k
        )));
    }
    // Not the trait method: the op profile times `moe` as a whole.
    let mut probs = b.product(x, &m.router)?;
    probs
        .data
        .chunks_mut(e)
        .for_each(|row| softmax_row(b.simd, row, 1.0));

    // Group tokens by expert so each expert's weights are read once.
    let mut groups: Vec<Vec<(usize, f32)>> = vec![Vec::new(); e];
    let mut chosen = Vec::with_capacity(x.rows * m.top_k);
    for r in 0..x.rows {
        let p = probs.row(r);
        for ex in top_k(p, m.top_k) {
            groups[ex as usize].push((r, p[ex as usize]));
            chosen.push(ex);
        }
    }
    if let Some(routes) = routes {
        routes.extend_from_slice(&chosen);
    }
    let d = x.cols;
    let expert = |ex: usize| -> Result<CpuBuf> {
        let group = &groups[ex];
        let mut xs = b.buf(group.len(), d);
        for (i, &(r, _)) in group.iter().enumerate() {
            xs.data[i * d..(i + 1) * d].copy_from_slice(x.row(r));
        }
        swiglu(b, &xs, &m.experts[ex])
    };
    // Experts run side by side (largest groups first): a decode step's groups are small,
    // and one fork-join per group instead of one per product keeps both threads busy.
    // Their outputs are summed in expert order below, so the result does not depend on
    // the schedule.
    let mut active: Vec<usize> = (0..e).filter(|&ex| !groups[ex].is_empty()).collect();
    let outs: Vec<Result<CpuBuf>> = if rayon::current_num_threads() > 1 && active.len() > 1 {
        active.sort_by_key(|&ex| std::cmp::Reverse(groups[ex].len()));
        let mut outs: Vec<(usize, Result<CpuBuf>)> =
            active.par_iter().map(|&ex| (ex, expert(ex))).collect();
        outs.sort_by_key(|(ex, _)| *ex);
        active = outs.iter().map(|(ex, _)| *ex).collect();
        outs.into_iter().map(|(_, o)| o).collect()
    } else {
        active.iter().map(|&ex| expert(ex)).collect()
    };
    let mut y = b.buf(x.rows, d);
    for (&ex, out) in active.iter().zip(outs) {
        let group = &groups[ex];
        let out = out?;
        if out.cols != d {
            return Err(err(format!(
                "moe: expert {ex} returns width {}, expected {d}",
                out.cols
            )));
        }
        for (i, &(r, p)) in group.iter().enumerate() {
            y.data[r * d..(r + 1) * d]
                .iter_mut()
                .zip(out.row(i))
                .for_each(|(a, v)| *a += p * v);
        }
    }
    Ok(y)
}
