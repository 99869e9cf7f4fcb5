//! Multi-head attention of query rows over selected key/value rows.

use super::{err, CpuBuf};
use crate::backend::KeyMap;
use crate::error::Result;
use rayon::prelude::*;

pub fn attention(
    q: &CpuBuf,
    k: &CpuBuf,
    v: &CpuBuf,
    n_heads: usize,
    keys: KeyMap<'_, Vec<u32>>,
) -> Result<CpuBuf> {
    keys.check(
        (q.rows, q.cols),
        (k.rows, k.cols),
        (v.rows, v.cols),
        n_heads,
    )
    .map_err(err)?;
    let (d, rows) = (q.cols, q.rows);
    let hd = d / n_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = CpuBuf::new(rows, d);
    out.data.par_chunks_mut(d).enumerate().for_each(|(r, o)| {
        let key_rows: Box<dyn Fn(usize) -> usize + Sync> = match keys {
            KeyMap::Spans(s) => {
                let start = s[r].0 as usize;
                Box::new(move |j| start + j)
            }
            KeyMap::Gather { stride, index, .. } => {
                Box::new(move |j| index[r * stride + j] as usize)
            }
        };
        let n = match keys {
            KeyMap::Spans(s) => s[r].1 as usize,
            KeyMap::Gather { per_row, .. } => per_row,
        };
        let qr = q.row(r);
        let mut scores = vec![0f32; n];
        for h in 0..n_heads {
            let qh = &qr[h * hd..(h + 1) * hd];
            for (j, s) in scores.iter_mut().enumerate() {
                let kr = &k.row(key_rows(j))[h * hd..(h + 1) * hd];
                *s = dot(qh, kr) * scale;
            }
            super::softmax_row(&mut scores);
            let oh = &mut o[h * hd..(h + 1) * hd];
            for (j, &p) in scores.iter().enumerate() {
                let vr = &v.row(key_rows(j))[h * hd..(h + 1) * hd];
                axpy(p, vr, oh);
            }
        }
    });
    Ok(out)
}

/// Dot product with eight independent partial sums, so the compiler can keep them in
/// one SIMD register instead of a serial chain of dependent adds.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `y += a * x`
#[inline]
fn axpy(a: f32, x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).for_each(|(y, x)| *y += a * x);
}
