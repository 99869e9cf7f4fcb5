//! Multi-head attention of query rows over selected key/value rows.
//!
//! Rows that attend the same key span (cross-attention: every beam of a user reads that
//! user's encoder rows; the encoder over its history) are taken together: per head, a
//! block's keys and values are packed once into the panels of `packed.rs`, and its scores
//! `Q_h · K_hᵀ` and output `P · V_h` are two products of its broadcast microkernel, so K
//! and V are read once per block and no dot product ends in a horizontal sum (head
//! dimensions of 32 made those sums most of the work). Rows with their own keys (the
//! decoder's self-attention through the ancestry lists) run one by one with the same
//! SIMD kernels. Key indices are resolved by a monomorphised closure, never a `dyn` call.

use super::packed::{product_serial, Packed};
use super::simd::SimdLevel;
use super::vmath::{softmax_row, softmax_row_s};
use super::{err, CpuBuf};
use crate::backend::KeyMap;
use crate::error::Result;
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// Rows per block of a shared span: a block's scores (rows × keys) stay in L2, and its
/// keys and values are packed once for all of them (a 24th of the block's work).
const BLOCK_ROWS: usize = 24;

pub fn attention(
    level: SimdLevel,
    q: &CpuBuf,
    k: &CpuBuf,
    v: &CpuBuf,
    n_heads: usize,
    keys: KeyMap<'_, Vec<u32>>,
    zeros: impl FnOnce(usize, usize) -> CpuBuf,
) -> Result<CpuBuf> {
    keys.check(
        (q.rows, q.cols),
        (k.rows, k.cols),
        (v.rows, v.cols),
        n_heads,
    )
    .map_err(err)?;
    let (d, rows) = (q.cols, q.rows);
    let mut out = zeros(rows, d);
    if rows == 0 || d == 0 {
        return Ok(out);
    }
    let a = Attend {
        level,
        q,
        k,
        v,
        hd: d / n_heads,
        n_heads,
    };
    match keys {
        KeyMap::Spans(spans) => {
            // Blocks of consecutive rows with one span, at most BLOCK_ROWS each.
            let mut blocks = Vec::new();
            let mut rest: &mut [f32] = &mut out.data;
            let mut r = 0;
            while r < rows {
                let mut e = r + 1;
                while e < rows && e - r < BLOCK_ROWS && spans[e] == spans[r] {
                    e += 1;
                }
                let (o, tail) = rest.split_at_mut((e - r) * d);
                rest = tail;
                blocks.push((r, e - r, spans[r], o));
                r = e;
            }
            blocks
                .into_par_iter()
                .for_each(|(r0, n_rows, (start, n), o)| {
                    a.shared_block(r0, n_rows, start as usize, n as usize, o)
                });
        }
        KeyMap::Gather {
            per_row,
            stride,
            index,
        } => {
            out.data.par_chunks_mut(d).enumerate().for_each(|(r, o)| {
                let idx = &index[r * stride..r * stride + per_row];
                a.own_keys(r, per_row, |j| idx[j] as usize, o)
            });
        }
    }
    Ok(out)
}

struct Attend<'a> {
    level: SimdLevel,
    q: &'a CpuBuf,
    k: &'a CpuBuf,
    v: &'a CpuBuf,
    hd: usize,
    n_heads: usize,
}

impl Attend<'_> {
    /// Rows `r0 .. r0 + n_rows` over key rows `start .. start + n`.
    fn shared_block(&self, r0: usize, n_rows: usize, start: usize, n: usize, o: &mut [f32]) {
        let (d, hd) = (self.q.cols, self.hd);
        if n == 0 {
            return; // no keys: the output stays 0
        }
        let scale = 1.0 / (hd as f32).sqrt();
        let mut scores = vec![0f32; n_rows * n];
        let (mut kp, mut vp) = (Packed::empty(self.level), Packed::empty(self.level));
        let (keys, values) = (&self.k.data[start * d..], &self.v.data[start * d..]);
        for h in 0..self.n_heads {
            let c0 = h * hd;
            kp.repack_rows(&keys[c0..], d, n, hd);
            let q = &self.q.data[r0 * d + c0..];
            product_serial(self.level, q, d, n_rows, &kp, &mut scores, n);
            for s in scores.chunks_exact_mut(n) {
                softmax_row(self.level, s, scale);
            }
            vp.repack_cols(&values[c0..], d, hd, n);
            product_serial(self.level, &scores, n, n_rows, &vp, &mut o[c0..], d);
        }
    }

    /// Row `r` over its own `n` key rows `key(0) ..`, all heads in one SIMD region (a
    /// row reads few keys: no dispatch per key).
    fn own_keys(&self, r: usize, n: usize, key: impl Fn(usize) -> usize + Copy, o: &mut [f32]) {
        struct Op<'a, 'b, F> {
            a: &'a Attend<'b>,
            r: usize,
            n: usize,
            key: F,
            o: &'a mut [f32],
        }
        impl<F: Fn(usize) -> usize + Copy> WithSimd for Op<'_, '_, F> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: Simd>(self, simd: S) {
                let Op { a, r, n, key, o } = self;
                let (d, hd) = (a.q.cols, a.hd);
                let scale = 1.0 / (hd as f32).sqrt();
                let mut scores = vec![0f32; n];
                for h in 0..a.n_heads {
                    let c0 = h * hd;
                    let qh = &a.q.data[r * d + c0..r * d + c0 + hd];
                    for (j, s) in scores.iter_mut().enumerate() {
                        let kr = key(j) * d + c0;
                        *s = dot_s(simd, qh, &a.k.data[kr..kr + hd]);
                    }
                    softmax_row_s(simd, &mut scores, scale);
                    weighted_sum_s(simd, &scores, key, &a.v.data, d, c0, &mut o[c0..c0 + hd]);
                }
            }
        }
        self.level.run(Op {
            a: self,
            r,
            n,
            key,
            o,
        })
    }
}

/// `out = Σ_j p[j] · v[key(j)][c0 .. c0 + out.len()]` with `out` held in registers.
#[inline(always)]
fn weighted_sum_s<S: Simd>(
    simd: S,
    p: &[f32],
    key: impl Fn(usize) -> usize,
    v: &[f32],
    d: usize,
    c0: usize,
    out: &mut [f32],
) {
    let lanes = S::F32_LANES;
    let nv = out.len() / lanes;
    // Chunks of 8, 4, 2, 1 vectors: each a fixed count, so its accumulators stay in
    // registers across every key.
    let mut c = 0;
    for width in [8, 4, 2, 1] {
        while nv - c / lanes >= width {
            match width {
                8 => ws_chunk::<S, 8>(simd, p, &key, v, d, c0 + c, &mut out[c..]),
                4 => ws_chunk::<S, 4>(simd, p, &key, v, d, c0 + c, &mut out[c..]),
                2 => ws_chunk::<S, 2>(simd, p, &key, v, d, c0 + c, &mut out[c..]),
                _ => ws_chunk::<S, 1>(simd, p, &key, v, d, c0 + c, &mut out[c..]),
            }
            c += width * lanes;
        }
    }
    let t0 = c;
    out[t0..].fill(0.0);
    for (j, &pj) in p.iter().enumerate() {
        let row = &v[key(j) * d + c0..];
        for (cc, o) in out[t0..].iter_mut().enumerate() {
            *o += pj * row[t0 + cc];
        }
    }
}

/// `NV` vectors of the output from column `col` of `v`'s rows.
#[inline(always)]
fn ws_chunk<S: Simd, const NV: usize>(
    simd: S,
    p: &[f32],
    key: &impl Fn(usize) -> usize,
    v: &[f32],
    d: usize,
    col: usize,
    out: &mut [f32],
) {
    let w = NV * S::F32_LANES;
    let mut acc = [simd.splat_f32s(0.0); NV];
    for (j, &pj) in p.iter().enumerate() {
        let (rv, _) = S::as_simd_f32s(&v[key(j) * d + col..][..w]);
        let pv = simd.splat_f32s(pj);
        for i in 0..NV {
            acc[i] = simd.mul_add_e_f32s(pv, rv[i], acc[i]);
        }
    }
    let (head, _) = S::as_mut_simd_f32s(&mut out[..w]);
    head.copy_from_slice(&acc);
}

#[inline(always)]
fn dot_s<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let (ah, at) = S::as_simd_f32s(a);
    let (bh, bt) = S::as_simd_f32s(&b[..a.len()]);
    let mut acc = [simd.splat_f32s(0.0); 4];
    let (ac, bc) = (ah.chunks_exact(4), bh.chunks_exact(4));
    let mut s = 0.0;
    for (x, y) in ac.remainder().iter().zip(bc.remainder()) {
        acc[0] = simd.mul_add_e_f32s(*x, *y, acc[0]);
    }
    for (x, y) in ac.zip(bc) {
        for i in 0..4 {
            acc[i] = simd.mul_add_e_f32s(x[i], y[i], acc[i]);
        }
    }
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    let t = simd.add_f32s(simd.add_f32s(acc[0], acc[1]), simd.add_f32s(acc[2], acc[3]));
    simd.reduce_sum_f32s(t) + s
}
