//! Vectorised `exp` and the row functions built on it (softmax, log-softmax, SiLU), over
//! `pulp::Simd`. libm's scalar `expf` behind serial max/sum chains was about a fifth of
//! a small-config beam-128 request (perf: `__expf_fma` and the softmax loop).
//!
//! `exp` is Cephes' `expf`: `x = n·ln2 + r` with `ln2` split in two constants, a degree-6
//! polynomial for `e^r` on `|r| ≤ ln2/2`, and `2^n` added to the exponent bits. It is
//! within a few ulp of `f32::exp` (tested) from −87 to 88.37; below −87 it returns 0
//! (the true value is under 1.7e-38, a subnormal), above 88.37 +inf; NaN stays NaN.

use super::simd::SimdLevel;
use pulp::{Simd, WithSimd};

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// 1.5 · 2²³: adding it rounds to an integer, which then sits in the low mantissa bits.
const SHIFT: f32 = 12_582_912.0;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// `e^x` for `x` below this is flushed to 0; from here `2^n` stays a normal number.
const LO: f32 = -87.0;
/// Above this `n` would reach 128, past f32's exponent range.
const HI: f32 = 88.37;
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5, // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
];

#[inline(always)]
pub fn exp_s<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
    let xc = simd.min_f32s(simd.max_f32s(x, simd.splat_f32s(LO)), simd.splat_f32s(HI));
    let t = simd.mul_add_e_f32s(xc, simd.splat_f32s(LOG2E), simd.splat_f32s(SHIFT));
    let n = simd.sub_f32s(t, simd.splat_f32s(SHIFT));
    let r = simd.mul_add_e_f32s(n, simd.splat_f32s(-LN2_HI), xc);
    let r = simd.mul_add_e_f32s(n, simd.splat_f32s(-LN2_LO), r);
    let mut p = simd.splat_f32s(P[0]);
    for &k in &P[1..] {
        p = simd.mul_add_e_f32s(p, r, simd.splat_f32s(k));
    }
    let y = simd.mul_add_e_f32s(
        p,
        simd.mul_f32s(r, r),
        simd.add_f32s(r, simd.splat_f32s(1.0)),
    );
    // `t`'s bits end in `n` (two's complement): shifted into the exponent field they
    // multiply `y` by 2ⁿ.
    let scale = simd.wrapping_dyn_shl_u32s(simd.transmute_u32s_f32s(t), simd.splat_u32s(23));
    let e = simd.transmute_f32s_u32s(simd.add_u32s(simd.transmute_u32s_f32s(y), scale));
    let e = simd.select_f32s(
        simd.less_than_f32s(x, simd.splat_f32s(LO)),
        simd.splat_f32s(0.0),
        e,
    );
    let e = simd.select_f32s(
        simd.greater_than_f32s(x, simd.splat_f32s(HI)),
        simd.splat_f32s(f32::INFINITY),
        e,
    );
    // NaN compares false everywhere above: give it back as it came.
    simd.select_f32s(simd.equal_f32s(x, x), e, x)
}

/// The tail of a row (fewer values than a vector) as one vector padded with `pad`.
#[inline(always)]
fn load_tail<S: Simd>(tail: &[f32], pad: f32) -> S::f32s {
    let mut buf = [pad; 64];
    buf[..tail.len()].copy_from_slice(tail);
    S::as_simd_f32s(&buf[..S::F32_LANES]).0[0]
}

#[inline(always)]
fn store_tail<S: Simd>(v: S::f32s, tail: &mut [f32]) {
    let mut buf = [0f32; 64];
    S::as_mut_simd_f32s(&mut buf[..S::F32_LANES]).0[0] = v;
    let n = tail.len();
    tail.copy_from_slice(&buf[..n]);
}

#[inline(always)]
fn max_s<S: Simd>(simd: S, row: &[f32]) -> f32 {
    let (head, tail) = S::as_simd_f32s(row);
    let mut m = simd.splat_f32s(f32::NEG_INFINITY);
    for &v in head {
        m = simd.max_f32s(m, v);
    }
    tail.iter().copied().fold(simd.reduce_max_f32s(m), f32::max)
}

/// `row = softmax(scale · row)` (`scale > 0`: attention's `1/√head_dim`, else 1).
#[inline(always)]
pub fn softmax_row_s<S: Simd>(simd: S, row: &mut [f32], scale: f32) {
    if row.is_empty() {
        return;
    }
    let max = simd.splat_f32s(max_s(simd, row));
    let sc = simd.splat_f32s(scale);
    let mut sum = simd.splat_f32s(0.0);
    let (head, tail) = S::as_mut_simd_f32s(row);
    for v in head.iter_mut() {
        *v = exp_s(simd, simd.mul_f32s(simd.sub_f32s(*v, max), sc));
        sum = simd.add_f32s(sum, *v);
    }
    if !tail.is_empty() {
        // Padding lanes give e^(−inf) = 0 and add nothing to the sum.
        let t = simd.sub_f32s(load_tail::<S>(tail, f32::NEG_INFINITY), max);
        let e = exp_s(simd, simd.mul_f32s(t, sc));
        sum = simd.add_f32s(sum, e);
        store_tail::<S>(e, tail);
    }
    let inv = 1.0 / simd.reduce_sum_f32s(sum);
    let iv = simd.splat_f32s(inv);
    for v in head.iter_mut() {
        *v = simd.mul_f32s(*v, iv);
    }
    for v in tail.iter_mut() {
        *v *= inv;
    }
}

/// `row = log_softmax(row)`.
#[inline(always)]
pub fn log_softmax_row_s<S: Simd>(simd: S, row: &mut [f32]) {
    if row.is_empty() {
        return;
    }
    let max = max_s(simd, row);
    let mv = simd.splat_f32s(max);
    let (head, tail) = S::as_mut_simd_f32s(row);
    let mut sum = simd.splat_f32s(0.0);
    for &v in head.iter() {
        sum = simd.add_f32s(sum, exp_s(simd, simd.sub_f32s(v, mv)));
    }
    if !tail.is_empty() {
        let t = load_tail::<S>(tail, f32::NEG_INFINITY);
        sum = simd.add_f32s(sum, exp_s(simd, simd.sub_f32s(t, mv)));
    }
    let lse = max + simd.reduce_sum_f32s(sum).ln();
    let lv = simd.splat_f32s(lse);
    for v in head.iter_mut() {
        *v = simd.sub_f32s(*v, lv);
    }
    for v in tail.iter_mut() {
        *v -= lse;
    }
}

/// `g = silu(g) ⊙ u` (SwiGLU's gate), `silu(x) = x / (1 + e^−x)`.
#[inline(always)]
pub fn silu_mul_s<S: Simd>(simd: S, g: &mut [f32], u: &[f32]) {
    let one = simd.splat_f32s(1.0);
    for (gc, uc) in g.chunks_mut(256).zip(u.chunks(256)) {
        let uc = &uc[..gc.len()];
        let (gh, gt) = S::as_mut_simd_f32s(gc);
        let (uh, ut) = S::as_simd_f32s(uc);
        for (gv, &uv) in gh.iter_mut().zip(uh) {
            let e = exp_s(simd, simd.neg_f32s(*gv));
            *gv = simd.mul_f32s(simd.div_f32s(*gv, simd.add_f32s(one, e)), uv);
        }
        if !gt.is_empty() {
            let x = load_tail::<S>(gt, 0.0);
            let e = exp_s(simd, simd.neg_f32s(x));
            let y = simd.mul_f32s(
                simd.div_f32s(x, simd.add_f32s(one, e)),
                load_tail::<S>(ut, 0.0),
            );
            store_tail::<S>(y, gt);
        }
    }
}

/// `row = row / √(mean(row²) + eps) ⊙ g`.
#[inline(always)]
pub fn rms_norm_row_s<S: Simd>(simd: S, row: &mut [f32], g: &[f32], eps: f32) {
    let n = row.len();
    let g = &g[..n];
    let (head, tail) = S::as_mut_simd_f32s(row);
    let (gh, gt) = S::as_simd_f32s(g);
    // Two accumulators: the adds' latency, not their count, bounds a single chain.
    let mut acc = [simd.splat_f32s(0.0); 2];
    for (i, &v) in head.iter().enumerate() {
        acc[i & 1] = simd.mul_add_e_f32s(v, v, acc[i & 1]);
    }
    let ss = simd.reduce_sum_f32s(simd.add_f32s(acc[0], acc[1]))
        + tail.iter().map(|v| v * v).sum::<f32>();
    let inv = 1.0 / (ss / n.max(1) as f32 + eps).sqrt();
    let iv = simd.splat_f32s(inv);
    for (v, &w) in head.iter_mut().zip(gh) {
        *v = simd.mul_f32s(simd.mul_f32s(*v, iv), w);
    }
    for (v, &w) in tail.iter_mut().zip(gt) {
        *v = *v * inv * w;
    }
}

/// Level-dispatching forms for callers outside a SIMD region.
pub fn softmax_row(level: SimdLevel, row: &mut [f32], scale: f32) {
    struct Op<'a>(&'a mut [f32], f32);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            softmax_row_s(simd, self.0, self.1)
        }
    }
    level.run(Op(row, scale));
}

pub fn log_softmax_row(level: SimdLevel, row: &mut [f32]) {
    struct Op<'a>(&'a mut [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            log_softmax_row_s(simd, self.0)
        }
    }
    level.run(Op(row));
}

pub fn rms_norm_rows(level: SimdLevel, rows: &mut [f32], cols: usize, g: &[f32], eps: f32) {
    struct Op<'a>(&'a mut [f32], usize, &'a [f32], f32);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            for row in self.0.chunks_exact_mut(self.1) {
                rms_norm_row_s(simd, row, self.2, self.3)
            }
        }
    }
    if cols > 0 {
        level.run(Op(rows, cols, g, eps));
    }
}

pub fn silu_mul(level: SimdLevel, g: &mut [f32], u: &[f32]) {
    struct Op<'a>(&'a mut [f32], &'a [f32]);
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            silu_mul_s(simd, self.0, self.1)
        }
    }
    level.run(Op(g, u));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    /// Every level against `f32::exp` over the whole served range, plus the edges.
    #[test]
    fn exp_is_within_a_few_ulp_at_every_level() {
        struct Exp<'a>(&'a mut [f32]);
        impl WithSimd for Exp<'_> {
            type Output = ();
            #[inline(always)]
            fn with_simd<S: Simd>(self, simd: S) {
                let (h, t) = S::as_mut_simd_f32s(self.0);
                assert!(t.is_empty());
                h.iter_mut().for_each(|v| *v = exp_s(simd, *v));
            }
        }
        let mut xs: Vec<f32> = (0..200_000)
            .map(|i| LO + (HI - LO) * i as f32 / 199_999.0)
            .collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 1.0, -1.0, std::f32::consts::LN_2]);
        xs.resize(xs.len().next_multiple_of(64), 0.5);
        for level in SimdLevel::available() {
            let mut got = xs.clone();
            level.run(Exp(&mut got));
            for (&x, &g) in xs.iter().zip(&got) {
                let want = x.exp();
                assert!(ulps(g, want) <= 3, "{level:?} exp({x}) = {g}, want {want}");
            }
            let mut edge = vec![
                -87.5,
                -1e30,
                f32::NEG_INFINITY,
                88.5,
                f32::INFINITY,
                f32::NAN,
                0.0,
                0.0,
            ];
            edge.resize(64, 0.0);
            level.run(Exp(&mut edge));
            assert_eq!(&edge[..3], &[0.0; 3], "{level:?}");
            assert_eq!(&edge[3..5], &[f32::INFINITY; 2], "{level:?}");
            assert!(edge[5].is_nan(), "{level:?}");
        }
    }

    /// Rows of every tail length against plain f64 formulas.
    #[test]
    fn row_functions_match_their_formulas() {
        for level in SimdLevel::available() {
            for n in [1, 2, 7, 8, 9, 17, 33, 256, 1000] {
                let x: Vec<f32> = (0..n)
                    .map(|i| ((i * 37) % 101) as f32 / 7.0 - 6.0)
                    .collect();
                let max = x
                    .iter()
                    .copied()
                    .fold(f64::NEG_INFINITY, |m, v| m.max(v as f64));
                let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
                let mut sm = x.clone();
                softmax_row(level, &mut sm, 1.0);
                let mut ls = x.clone();
                log_softmax_row(level, &mut ls);
                for i in 0..n {
                    let want = (x[i] as f64 - max).exp() / sum;
                    assert!(
                        (sm[i] as f64 - want).abs() <= 1e-6 * want + 1e-12,
                        "{level:?} n={n}"
                    );
                    let lw = x[i] as f64 - max - sum.ln();
                    assert!(
                        (ls[i] as f64 - lw).abs() <= 1e-5 * (1.0 + lw.abs()),
                        "{level:?} n={n}"
                    );
                }
                let u: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 2.0).collect();
                let mut r = x.clone();
                rms_norm_rows(level, &mut r, n, &u, 1e-6);
                let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
                for i in 0..n {
                    let want = x[i] as f64 / (ms + 1e-6).sqrt() * u[i] as f64;
                    assert!(
                        (r[i] as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                        "{level:?} n={n}"
                    );
                }
                let mut g = x.iter().map(|v| v * 3.0).collect::<Vec<_>>();
                silu_mul(level, &mut g, &u);
                for i in 0..n {
                    let xv = x[i] as f64 * 3.0;
                    let want = xv / (1.0 + (-xv).exp()) * u[i] as f64;
                    assert!(
                        (g[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()),
                        "{level:?} n={n}"
                    );
                }
            }
        }
    }
}
