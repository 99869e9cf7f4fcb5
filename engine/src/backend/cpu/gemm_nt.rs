//! `y = x · wᵀ` with `x [m, k]` and `w [n, k]` both row-major (any row stride): every
//! output is the dot product of two contiguous rows, so neither operand is packed. It
//! multiplies decoded weight panels of few rows (`quant.rs`); f32 weights run on the
//! packed microkernel (`packed.rs`). A tile of `MR` activation rows × `NR` weight rows
//! keeps `MR · NR` vector accumulators in registers (7 loads per 12 FMAs), and `k` and
//! `m` are cut into blocks so a weight tile stays in L1 and the activation block in L2
//! while the tiles pass over them. The callers thread over panels.

use super::simd::SimdLevel;
use pulp::{Simd, WithSimd};

/// Activation rows per tile.
const MR: usize = 3;
/// Weight rows per tile: 3 × 4 accumulators + 3 + 1 operands fit 16 vector registers.
const NR: usize = 4;
/// `k` per pass: a 4-row weight tile of 16 KiB stays in L1 beside 3 activation rows
/// (28 KiB). Each pass ends in horizontal sums of the 12 accumulators; 1024 rather than
/// 512 halves them for the experts' down products (k = d_expert = 1024 in the medium
/// config; medium q8 beam 128: 570 -> 540, 575 -> 550 ms, two interleaved rounds).
const KC: usize = 1024;
/// Activation rows per pass: `MC × KC` floats (384 KiB) stay in L2 while every weight
/// tile of the pass runs over them.
const MC: usize = 96;
/// Products smaller than this (multiply-adds) stay on one thread (`packed.rs`, `quant.rs`,
/// `q8_vnni.rs`).
pub const PARALLEL_MIN_MACS: usize = 1 << 20;

/// Operands of one product; `y[i·ldy + j] (+)= Σ_p x[i·ldx + p] · w[j·ldw + p]`.
#[derive(Clone, Copy)]
pub struct Nt<'a> {
    pub x: &'a [f32],
    pub ldx: usize,
    pub m: usize,
    pub w: &'a [f32],
    pub ldw: usize,
    pub n: usize,
    pub k: usize,
}

impl Nt<'_> {
    /// Whether the slices hold the extents the strides and sizes describe.
    fn fits(&self, y: &[f32], ldy: usize) -> bool {
        let need = |rows: usize, ld: usize, cols: usize| {
            if rows == 0 || cols == 0 {
                0
            } else {
                (rows - 1) * ld + cols
            }
        };
        ld_ok(self.ldx, self.k, self.m)
            && ld_ok(self.ldw, self.k, self.n)
            && ld_ok(ldy, self.n, self.m)
            && self.x.len() >= need(self.m, self.ldx, self.k)
            && self.w.len() >= need(self.n, self.ldw, self.k)
            && y.len() >= need(self.m, ldy, self.n)
    }
}

fn ld_ok(ld: usize, cols: usize, rows: usize) -> bool {
    rows <= 1 || ld >= cols
}

/// `y = x · wᵀ` (or `y += …` with `accumulate`) on the calling thread (callers thread
/// over panels themselves).
pub fn gemm_nt_serial(level: SimdLevel, p: Nt<'_>, y: &mut [f32], ldy: usize, accumulate: bool) {
    assert!(
        p.fits(y, ldy),
        "gemm_nt: operands shorter than their shapes"
    );
    if p.m == 0 || p.n == 0 {
        return;
    }
    // SAFETY: `fits` checked every extent the kernel touches; `y` is borrowed mutably.
    unsafe { serial(level, p, 0, p.n, y.as_mut_ptr(), ldy, accumulate) };
}

#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub(super) *mut f32);
// SAFETY: used only to hand disjoint column ranges of one output to rayon tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Columns `j0..j1` of the product on this thread.
///
/// # Safety
/// `p.fits(y, ldy)` for the `y` that `y` points into; no other thread writes these
/// columns meanwhile.
unsafe fn serial(
    level: SimdLevel,
    p: Nt<'_>,
    j0: usize,
    j1: usize,
    y: *mut f32,
    ldy: usize,
    accumulate: bool,
) {
    struct Op<'a> {
        p: Nt<'a>,
        j0: usize,
        j1: usize,
        y: *mut f32,
        ldy: usize,
        accumulate: bool,
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let Op {
                p,
                j0,
                j1,
                y,
                ldy,
                accumulate,
            } = self;
            let (x, w) = (p.x.as_ptr(), p.w.as_ptr());
            let mut k0 = 0;
            while k0 < p.k || (k0 == 0 && p.k == 0) {
                let kc = KC.min(p.k - k0);
                let acc = accumulate || k0 > 0;
                let mut i0 = 0;
                while i0 < p.m {
                    let i1 = (i0 + MC).min(p.m);
                    let mut j = j0;
                    while j < j1 {
                        let nr = NR.min(j1 - j);
                        let mut i = i0;
                        while i < i1 {
                            let mr = MR.min(i1 - i);
                            // SAFETY: rows i..i+mr, j..j+nr and columns k0..k0+kc lie
                            // inside the checked extents.
                            unsafe {
                                tile_any(
                                    simd,
                                    mr,
                                    nr,
                                    x.add(i * p.ldx + k0),
                                    p.ldx,
                                    w.add(j * p.ldw + k0),
                                    p.ldw,
                                    kc,
                                    y.add(i * ldy + j),
                                    ldy,
                                    acc,
                                )
                            };
                            i += mr;
                        }
                        j += nr;
                    }
                    i0 = i1;
                }
                if p.k == 0 {
                    break;
                }
                k0 += kc;
            }
        }
    }
    level.run(Op {
        p,
        j0,
        j1,
        y,
        ldy,
        accumulate,
    })
}

/// `tile` for any edge size up to `MR × NR`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_any<S: Simd>(
    simd: S,
    mr: usize,
    nr: usize,
    x: *const f32,
    ldx: usize,
    w: *const f32,
    ldw: usize,
    k: usize,
    y: *mut f32,
    ldy: usize,
    acc: bool,
) {
    macro_rules! go {
        ($r:literal, $c:literal) => {
            tile::<S, $r, $c>(simd, x, ldx, w, ldw, k, y, ldy, acc)
        };
    }
    match (mr, nr) {
        (3, 4) => go!(3, 4),
        (3, 3) => go!(3, 3),
        (3, 2) => go!(3, 2),
        (3, _) => go!(3, 1),
        (2, 4) => go!(2, 4),
        (2, 3) => go!(2, 3),
        (2, 2) => go!(2, 2),
        (2, _) => go!(2, 1),
        (_, 4) => go!(1, 4),
        (_, 3) => go!(1, 3),
        (_, 2) => go!(1, 2),
        _ => go!(1, 1),
    }
}

#[inline(always)]
unsafe fn load<S: Simd>(p: *const f32) -> S::f32s {
    (p as *const S::f32s).read_unaligned()
}

/// `R × C` outputs over `k` values: `y[i, j] (+)= x_i · w_j`.
#[inline(always)]
// Indexing the register tile by (i, j) says what it is; iterators would hide it.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<S: Simd, const R: usize, const C: usize>(
    simd: S,
    x: *const f32,
    ldx: usize,
    w: *const f32,
    ldw: usize,
    k: usize,
    y: *mut f32,
    ldy: usize,
    accumulate: bool,
) {
    let lanes = S::F32_LANES;
    let kv = k / lanes * lanes;
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; C]; R];
    let mut p = 0;
    while p < kv {
        // R activation vectors, then one weight vector at a time: R·C accumulators +
        // R + 1 operands = 16 registers for 3 × 4 on AVX2, no spills.
        let xv: [S::f32s; R] = core::array::from_fn(|i| load::<S>(x.add(i * ldx + p)));
        for j in 0..C {
            let wv = load::<S>(w.add(j * ldw + p));
            for i in 0..R {
                acc[i][j] = simd.mul_add_e_f32s(xv[i], wv, acc[i][j]);
            }
        }
        p += lanes;
    }
    for (i, acc) in acc.iter().enumerate() {
        for (j, &a) in acc.iter().enumerate() {
            let mut s = simd.reduce_sum_f32s(a);
            for q in kv..k {
                s += *x.add(i * ldx + q) * *w.add(j * ldw + q);
            }
            let d = y.add(i * ldy + j);
            *d = if accumulate { *d + s } else { s };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(p: &Nt<'_>) -> Vec<f32> {
        let mut y = vec![0f32; p.m * p.n];
        for i in 0..p.m {
            for j in 0..p.n {
                y[i * p.n + j] = (0..p.k)
                    .map(|q| p.x[i * p.ldx + q] as f64 * p.w[j * p.ldw + q] as f64)
                    .sum::<f64>() as f32;
            }
        }
        y
    }

    /// Every level this CPU runs, edge tiles, strides and k blocks.
    #[test]
    fn matches_a_plain_loop_at_every_level() {
        let vals = |n: usize, s: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * s) % 97) as f32 / 48.0 - 1.0).collect()
        };
        for level in SimdLevel::available() {
            for (m, n, k) in [
                (1, 1, 1),
                (5, 7, 9),
                (3, 4, 8),
                (7, 13, 700),
                (130, 70, 1100),
                (1, 300, 4096),
            ] {
                let (ldx, ldw) = (k + 3, k + 1);
                let x = vals(m * ldx, 31);
                let w = vals(n * ldw, 17);
                let p = Nt {
                    x: &x,
                    ldx,
                    m,
                    w: &w,
                    ldw,
                    n,
                    k,
                };
                let want = reference(&p);
                let mut y = vec![f32::NAN; m * n];
                gemm_nt_serial(level, p, &mut y, n, false);
                let mut y2 = want.clone();
                gemm_nt_serial(level, p, &mut y2, n, true);
                for ((a, b), c) in y.iter().zip(&want).zip(&y2) {
                    let tol = 1e-4 * (k as f32).sqrt() * (1.0 + b.abs());
                    assert!((a - b).abs() <= tol, "{level:?} {m}x{n}x{k}: {a} vs {b}");
                    assert!((c - 2.0 * b).abs() <= 2.0 * tol, "{level:?} accumulate");
                }
            }
        }
    }
}
