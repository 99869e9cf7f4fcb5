//! `y = x · Wᵀ` for many activation rows, with `W` packed once into the layout the
//! microkernel streams: panels of `2 × lanes` weight rows, interleaved along `k`
//! (`panel[p · width + j] = W[panel_start + j, p]`). The microkernel keeps `MR × 2`
//! vector accumulators over a whole `k` block and broadcasts one activation value per
//! row and step (the BLIS/ggml layout), so no horizontal sums and no per-call packing of
//! `W` (what the `gemm` crate paid on every product: its `pack_lhs` was 4.4% of the perf
//! samples of a medium f32 beam-128 bench run, about 8% of the requests' time).
//! Activations are read in place, row-major.

use super::gemm_nt::{SendPtr, PARALLEL_MIN_MACS};
use super::simd::SimdLevel;
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

/// Activation rows per tile: 6 × 2 accumulators + 2 weight vectors + 1 broadcast fit
/// AVX2's 16 registers.
const MR: usize = 6;
/// `k` per pass: a 16-wide panel block of 16 KiB stays in L1 while every row tile of the
/// pass runs over it.
const KC: usize = 256;
/// Activation rows per pass at most: `MC × KC` floats (256 KiB) stay in L2. Passes are
/// made equal (a short last pass would stream every panel again for a few rows).
const MC: usize = 256;
/// At most this many activation rows, a product streams its weight: each panel in one
/// pass over all of `k` (the packed matrix read front to back once, as the hardware
/// prefetcher likes it), with the microkernel prefetching `PREFETCH_AHEAD` floats ahead
/// of its weight loads. Such products (a MoE expert's ~19 rows of a medium beam-128
/// step) wait on memory, not on FMAs: on cold 19-row products the prefetch alone took
/// one thread from 75-103 to 99-135 GFLOP/s; medium f32 beam-128 requests took 0.88-0.89
/// of the time in interleaved A/Bs (with 32, 64 and 128 rows alike).
const STREAM_ROWS: usize = 64;
/// 8 KiB, about a DRAM latency of 6-row steps ahead: medium requests took 0.88 of the
/// time against 0.93 with 4 KiB and 0.89 with 16 KiB (same A/Bs).
const PREFETCH_AHEAD: usize = 2048;

/// One cache line of floats: panels start on a line, so no vector load of the
/// microkernel splits across two lines (a heap block is only 16-byte aligned).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);
// SAFETY: 16 f32 and no padding (size 64 = align 64); any bit pattern is valid.
unsafe impl bytemuck::Zeroable for Line {}
unsafe impl bytemuck::Pod for Line {}

/// A growable f32 buffer that starts on a cache line.
#[derive(Default)]
struct Aligned {
    lines: Vec<Line>,
    len: usize,
}

impl Aligned {
    /// `len` zeros (the previous contents are dropped).
    fn zeroed(&mut self, len: usize) {
        self.lines.clear();
        self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        self.len = len;
    }

    fn as_slice(&self) -> &[f32] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

/// A weight `[n, k]` packed for one SIMD level (its panel width).
pub struct Packed {
    pub n: usize,
    pub k: usize,
    /// Weight rows per panel: two vectors of the level it was packed for.
    pub width: usize,
    data: Aligned,
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed[{}, {}] width {}", self.n, self.k, self.width)
    }
}

/// Panel width for a level: two of its f32 vectors.
pub fn width(level: SimdLevel) -> usize {
    struct Lanes;
    impl WithSimd for Lanes {
        type Output = usize;
        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) -> usize {
            S::F32_LANES
        }
    }
    2 * level.run(Lanes)
}

impl Packed {
    /// Packs `w [n, k]` (row-major) for `level`. The copy is the weight's size rounded up
    /// to whole panels. Serial: it runs inside a `OnceLock` initialiser, where a rayon
    /// wait could steal a task that blocks on the same lock.
    pub fn new(level: SimdLevel, w: &[f32], n: usize, k: usize) -> Packed {
        let mut p = Packed::empty(level);
        p.repack_rows(w, k, n, k);
        p
    }

    /// No matrix yet: a buffer for `repack_rows` / `repack_cols` to reuse.
    pub fn empty(level: SimdLevel) -> Packed {
        Packed {
            n: 0,
            k: 0,
            width: width(level),
            data: Aligned::default(),
        }
    }

    /// Packs `W [n, k]` with `W[j, p] = src[j·ld + p]` (rows of a strided matrix, such as
    /// one head's keys), reusing this buffer.
    ///
    /// # Panics
    /// If `src` is shorter than the shape and stride describe (a caller bug).
    pub fn repack_rows(&mut self, src: &[f32], ld: usize, n: usize, k: usize) {
        assert!(
            n == 0 || (ld >= k && src.len() >= (n - 1) * ld + k),
            "pack: source shorter than its shape"
        );
        let width = self.width;
        self.reset(n, k);
        for (pi, panel) in self.panels_mut() {
            let rows = width.min(n - pi * width);
            let src = &src[pi * width * ld..];
            // 8 × 8 tiles: fixed-size loads and stores the compiler turns into vector
            // shuffles (one element at a time, the transposition was 11% of a medium q8
            // beam-128 request); the edges one element at a time.
            let (j8, p8) = (rows / 8 * 8, k / 8 * 8);
            for j0 in (0..j8).step_by(8) {
                for p0 in (0..p8).step_by(8) {
                    let mut t = [[0f32; 8]; 8];
                    for (a, ta) in t.iter_mut().enumerate() {
                        ta.copy_from_slice(&src[(j0 + a) * ld + p0..][..8]);
                    }
                    for b in 0..8 {
                        let dst: &mut [f32; 8] = (&mut panel[(p0 + b) * width + j0..][..8])
                            .try_into()
                            .expect("8 values");
                        for a in 0..8 {
                            dst[a] = t[a][b];
                        }
                    }
                }
            }
            for j in 0..rows {
                let p_start = if j < j8 { p8 } else { 0 };
                for p in p_start..k {
                    panel[p * width + j] = src[j * ld + p];
                }
            }
        }
    }

    /// Packs `W [n, k]` with `W[j, p] = src[p·ld + j]` (the transpose of `k` strided rows of
    /// `n` values, such as one head's values), reusing this buffer.
    ///
    /// # Panics
    /// If `src` is shorter than the shape and stride describe (a caller bug).
    pub fn repack_cols(&mut self, src: &[f32], ld: usize, n: usize, k: usize) {
        assert!(
            k == 0 || (ld >= n && src.len() >= (k - 1) * ld + n),
            "pack: source shorter than its shape"
        );
        let width = self.width;
        self.reset(n, k);
        for (pi, panel) in self.panels_mut() {
            let cols = width.min(n - pi * width);
            for p in 0..k {
                panel[p * width..][..cols].copy_from_slice(&src[p * ld + pi * width..][..cols]);
            }
        }
    }

    /// Zeroed room for `[n, k]` in whole panels.
    fn reset(&mut self, n: usize, k: usize) {
        self.n = n;
        self.k = k;
        self.data.zeroed(n.div_ceil(self.width) * k * self.width);
    }

    fn panels_mut(&mut self) -> impl Iterator<Item = (usize, &mut [f32])> {
        let len = (self.k * self.width).max(1);
        self.data.as_mut_slice().chunks_mut(len).enumerate()
    }

    fn panels(&self, p0: usize, p1: usize) -> Panels<'_> {
        let (k, width) = (self.k, self.width);
        Panels {
            n: (p1 * width).min(self.n) - p0 * width,
            k,
            width,
            data: &self.data.as_slice()[p0 * k * width..p1 * k * width],
        }
    }

    /// Bytes this copy holds.
    pub fn bytes(&self) -> usize {
        self.data.lines.len() * 64
    }
}

/// Borrowed panels: weight rows `0..n` of some product, packed as `repack_rows` does.
#[derive(Clone, Copy)]
struct Panels<'a> {
    n: usize,
    k: usize,
    width: usize,
    data: &'a [f32],
}

/// `y [m, n] = x [m, k] · Wᵀ`, threaded over panels when large.
///
/// # Panics
/// If `w` was packed for another level or the slices are shorter than the shapes (caller
/// bugs).
pub fn matmul(level: SimdLevel, x: &[f32], m: usize, w: &Packed, y: &mut [f32]) {
    assert!(w.width == width(level), "packed for another SIMD level");
    // Up to 8 tasks per thread: on a shared host a thread that is descheduled mid-task
    // leaves the others waiting for its share, and smaller shares let them steal it
    // (medium f32 beam 128, 2 threads: -3 to -5% in interleaved A/Bs). The q8 VNNI
    // path was slower with 8 on the small model and keeps 2; decode-per-panel keeps 2
    // too (not measured with more).
    by_panels(w.width, 8, x, m, w.n, w.k, y, |p0, p1, yp| {
        // SAFETY: `by_panels` checked the extents and hands out disjoint column ranges.
        unsafe { serial(level, x, w.k, m, w.panels(p0, p1), yp, w.n) }
    });
}

/// `y [m, n] = x [m, k] · Wᵀ` for a weight that is not held as f32 (f16, q8_0, q4_0):
/// each panel of `width` rows is decoded (`decode(row0, out)` fills `out.len() / k` rows
/// from `row0`) and packed into a per-thread buffer that stays in L2, then every
/// activation row runs over it with the broadcast microkernel. Decoding and packing are
/// paid once per panel per product: worth it from a few dozen rows.
///
/// # Panics
/// If the slices are shorter than the shapes (a caller bug).
pub fn matmul_decoded(
    level: SimdLevel,
    x: &[f32],
    m: usize,
    n: usize,
    k: usize,
    decode: impl Fn(usize, &mut [f32]) + Sync,
    y: &mut [f32],
) {
    let width = width(level);
    by_panels(width, 2, x, m, n, k, y, |p0, p1, yp| {
        let (mut rows, mut pk) = (Vec::new(), Packed::empty(level));
        for p in p0..p1 {
            let cols = width.min(n - p * width);
            rows.resize(cols * k, 0.0);
            decode(p * width, &mut rows);
            pk.repack_rows(&rows, k, cols, k);
            // SAFETY: as above; panel `p` is column range `p·width ..` of this task's.
            unsafe { serial(level, x, k, m, pk.panels(0, 1), yp.add((p - p0) * width), n) };
        }
    });
}

/// Checks the operands of `y [m, n] = x [m, k] · Wᵀ`, answers the empty cases, and runs
/// `task(p0, p1, y_at_p0)` for ranges of panels of `width` outputs (`y_at_p0` points to
/// column `p0·width` of row 0), on several threads when the product is large: 2 tasks
/// per thread, up to `per_thread` where each still has PARALLEL_MIN_MACS. Tasks get
/// disjoint columns. Shared by the f32 and the q8 VNNI (`q8_vnni.rs`) kernels.
#[allow(clippy::too_many_arguments)]
pub(super) fn by_panels(
    width: usize,
    per_thread: usize,
    x: &[f32],
    m: usize,
    n: usize,
    k: usize,
    y: &mut [f32],
    task: impl Fn(usize, usize, *mut f32) + Sync,
) {
    assert!(
        x.len() >= m * k && y.len() >= m * n,
        "packed matmul: short operands"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y[..m * n].fill(0.0);
        return;
    }
    let panels = n.div_ceil(width);
    let threads = rayon::current_num_threads();
    let macs = m * n * k;
    let tasks = if macs >= PARALLEL_MIN_MACS && threads > 1 {
        let most = threads * per_thread.max(2);
        panels.min((macs / PARALLEL_MIN_MACS).clamp(threads * 2, most))
    } else {
        1
    };
    let per = panels.div_ceil(tasks);
    let yp = SendPtr(y.as_mut_ptr());
    let run = |t: usize| {
        let (p0, p1) = (t * per, ((t + 1) * per).min(panels));
        // In bounds: p0 < panels, so column p0·width < n.
        task(p0, p1, { yp }.0.wrapping_add(p0 * width))
    };
    if tasks == 1 {
        run(0);
    } else {
        (0..panels.div_ceil(per)).into_par_iter().for_each(run);
    }
}

/// `y[i·ldy + j] = Σ_p x[i·ldx + p] · W[j, p]` for `i < m`, `j < w.n`, on the calling
/// thread (callers that already run in parallel, such as attention's row blocks).
///
/// # Panics
/// If `w` was packed for another level or the slices are shorter than the shapes and
/// strides describe (caller bugs).
pub fn product_serial(
    level: SimdLevel,
    x: &[f32],
    ldx: usize,
    m: usize,
    w: &Packed,
    y: &mut [f32],
    ldy: usize,
) {
    let (n, k) = (w.n, w.k);
    assert!(w.width == width(level), "packed for another SIMD level");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldx >= k && ldy >= n && x.len() >= (m - 1) * ldx + k && y.len() >= (m - 1) * ldy + n,
        "packed product: short operands"
    );
    if k == 0 {
        y.chunks_mut(ldy).take(m).for_each(|r| r[..n].fill(0.0));
        return;
    }
    // SAFETY: extents checked above; `y` is borrowed mutably.
    unsafe {
        serial(
            level,
            x,
            ldx,
            m,
            w.panels(0, n.div_ceil(w.width)),
            y.as_mut_ptr(),
            ldy,
        )
    };
}

/// `y[i, j] = x_i · w_j` for every panel of `w`, on this thread: `y` points to column 0
/// of those outputs, rows `ldy` apart.
///
/// # Safety
/// `m`, `w.n` and `w.k` are not 0 (`matmul` answers those itself); `x` holds `m`
/// rows of `w.k`, `ldx ≥ w.k` apart; `y` points to `m` rows of `w.n` writable floats, `ldy` apart;
/// `w.width` is `width(level)`; no other thread writes these outputs meanwhile.
unsafe fn serial(
    level: SimdLevel,
    x: &[f32],
    ldx: usize,
    m: usize,
    w: Panels<'_>,
    y: *mut f32,
    ldy: usize,
) {
    struct Op<'a> {
        x: &'a [f32],
        ldx: usize,
        m: usize,
        w: Panels<'a>,
        y: *mut f32,
        ldy: usize,
    }
    impl WithSimd for Op<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            let Op {
                x,
                ldx,
                m,
                w,
                y,
                ldy,
            } = self;
            let (n, k, width) = (w.n, w.k, w.width);
            let panels = n.div_ceil(width);
            let mc = m.div_ceil(m.div_ceil(MC)).next_multiple_of(MR);
            let stream = m <= STREAM_ROWS;
            let mut i0 = 0;
            while i0 < m {
                let i1 = (i0 + mc).min(m);
                let mut k0 = 0;
                while k0 < k {
                    let kc = if stream { k } else { KC.min(k - k0) };
                    for pi in 0..panels {
                        let cols = width.min(n - pi * width);
                        let b = w.data[pi * k * width + k0 * width..].as_ptr();
                        let mut i = i0;
                        while i < i1 {
                            let mr = MR.min(i1 - i);
                            // SAFETY: rows i..i+mr, columns pi·width..+cols and k0..k0+kc
                            // lie inside the extents the caller checked.
                            unsafe {
                                tile_any(
                                    simd,
                                    mr,
                                    x.as_ptr().add(i * ldx + k0),
                                    ldx,
                                    b,
                                    kc,
                                    y.add(i * ldy + pi * width),
                                    ldy,
                                    cols,
                                    k0 > 0,
                                    stream,
                                )
                            };
                            i += mr;
                        }
                    }
                    k0 += kc;
                }
                i0 = i1;
            }
        }
    }
    level.run(Op {
        x,
        ldx,
        m,
        w,
        y,
        ldy,
    })
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_any<S: Simd>(
    simd: S,
    mr: usize,
    x: *const f32,
    ldx: usize,
    b: *const f32,
    kc: usize,
    y: *mut f32,
    ldy: usize,
    cols: usize,
    acc: bool,
    prefetch: bool,
) {
    macro_rules! go {
        ($r:literal) => {
            if prefetch {
                tile::<S, $r, true>(simd, x, ldx, b, kc, y, ldy, cols, acc)
            } else {
                tile::<S, $r, false>(simd, x, ldx, b, kc, y, ldy, cols, acc)
            }
        };
    }
    match mr {
        6 => go!(6),
        5 => go!(5),
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        _ => go!(1),
    }
}

/// `R` rows × one panel over `kc` values: `y[i, j] (+)= Σ_p x[i, p] · b[p, j]`; with
/// `PREFETCH`, each step also asks for the panel's floats `PREFETCH_AHEAD` on (x86-64).
#[inline(always)]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn tile<S: Simd, const R: usize, const PREFETCH: bool>(
    simd: S,
    x: *const f32,
    ldx: usize,
    b: *const f32,
    kc: usize,
    y: *mut f32,
    ldy: usize,
    cols: usize,
    accumulate: bool,
) {
    let lanes = S::F32_LANES;
    let zero = simd.splat_f32s(0.0);
    let mut acc = [[zero; 2]; R];
    for p in 0..kc {
        let bp = b.add(p * 2 * lanes);
        let b0 = (bp as *const S::f32s).read_unaligned();
        let b1 = (bp.add(lanes) as *const S::f32s).read_unaligned();
        #[cfg(target_arch = "x86_64")]
        if PREFETCH {
            // A hint: it never faults, so the address may lie past the weight's end
            // (`wrapping_add` keeps the pointer arithmetic defined).
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let ahead = bp.wrapping_add(PREFETCH_AHEAD) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
        }
        for i in 0..R {
            let a = simd.splat_f32s(*x.add(i * ldx + p));
            acc[i][0] = simd.mul_add_e_f32s(a, b0, acc[i][0]);
            acc[i][1] = simd.mul_add_e_f32s(a, b1, acc[i][1]);
        }
    }
    if cols == 2 * lanes {
        for i in 0..R {
            for h in 0..2 {
                let d = y.add(i * ldy + h * lanes) as *mut S::f32s;
                let v = if accumulate {
                    simd.add_f32s(d.read_unaligned(), acc[i][h])
                } else {
                    acc[i][h]
                };
                d.write_unaligned(v);
            }
        }
        return;
    }
    // The last panel of a width that is not a multiple of the panel's.
    let mut buf = [0f32; 64];
    for i in 0..R {
        for h in 0..2 {
            (buf.as_mut_ptr().add(h * lanes) as *mut S::f32s).write_unaligned(acc[i][h]);
        }
        for (j, &v) in buf[..cols].iter().enumerate() {
            let d = y.add(i * ldy + j);
            *d = if accumulate { *d + v } else { v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every level this CPU runs, edge rows and panels, several k blocks and row passes,
    /// both threading paths.
    #[test]
    fn matches_a_plain_loop_at_every_level() {
        let vals = |n: usize, s: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * s) % 97) as f32 / 48.0 - 1.0).collect()
        };
        for level in SimdLevel::available() {
            for (m, n, k) in [
                (0, 3, 4),
                (4, 5, 0),
                (1, 1, 1),
                (5, 7, 9),
                (6, 16, 8),
                (7, 33, 700),
                (130, 70, 300),
                (250, 260, 513),
                (64, 4096, 64),
            ] {
                let x = vals(m * k, 31);
                let w = vals(n * k, 17);
                let packed = Packed::new(level, &w, n, k);
                let mut y = vec![f32::NAN; m * n];
                matmul(level, &x, m, &packed, &mut y);
                for i in 0..m {
                    for j in 0..n {
                        let want: f64 = (0..k)
                            .map(|p| x[i * k + p] as f64 * w[j * k + p] as f64)
                            .sum();
                        let got = y[i * n + j];
                        let tol = 1e-4 * (k as f64).sqrt() * (1.0 + want.abs());
                        assert!(
                            (got as f64 - want).abs() <= tol,
                            "{level:?} {m}x{n}x{k} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// The per-call paths: strided rows and transposed columns packed into a reused
    /// buffer for `product_serial` with strided operands, and panels decoded on the fly.
    #[test]
    fn strided_and_decoded_products_match_a_plain_loop() {
        let vals = |n: usize, s: usize| -> Vec<f32> {
            (0..n).map(|i| ((i * s) % 89) as f32 / 44.0 - 1.0).collect()
        };
        let close = |got: f32, want: f64, k: usize| {
            (got as f64 - want).abs() <= 1e-4 * (k as f64).sqrt() * (1.0 + want.abs())
        };
        for level in SimdLevel::available() {
            let mut buf = Packed::empty(level);
            for (m, n, k) in [(1, 1, 1), (5, 9, 7), (13, 40, 19), (70, 37, 96)] {
                let ld = k + 5;
                let x = vals(m * ld, 31);
                // W[j, p] = rows[j·ld + p] = cols[p·ld + j].
                let rows = vals(n * ld, 17);
                let mut cols = vec![0f32; k * ld];
                for j in 0..n.min(ld) {
                    for p in 0..k {
                        cols[p * ld + j] = rows[j * ld + p];
                    }
                }
                let want = |i: usize, j: usize| -> f64 {
                    (0..k)
                        .map(|p| x[i * ld + p] as f64 * rows[j * ld + p] as f64)
                        .sum()
                };
                let mut packs = vec![];
                buf.repack_rows(&rows, ld, n, k);
                packs.push(("rows", std::mem::replace(&mut buf, Packed::empty(level))));
                if n <= ld {
                    buf.repack_cols(&cols, ld, n, k);
                    packs.push(("cols", std::mem::replace(&mut buf, Packed::empty(level))));
                }
                let ldy = n + 3;
                for (how, w) in &packs {
                    let mut y = vec![f32::NAN; m * ldy];
                    product_serial(level, &x, ld, m, w, &mut y, ldy);
                    for i in 0..m {
                        for j in 0..n {
                            let got = y[i * ldy + j];
                            assert!(
                                close(got, want(i, j), k),
                                "{level:?} {how} {m}x{n}x{k} [{i},{j}]"
                            );
                        }
                        let pad = &y[i * ldy + n..(i + 1) * ldy];
                        assert!(
                            pad.iter().all(|v| v.is_nan()),
                            "{level:?} {how}: wrote past n"
                        );
                    }
                }
                let xc: Vec<f32> = (0..m)
                    .flat_map(|i| x[i * ld..i * ld + k].to_vec())
                    .collect();
                let decode = |row0: usize, out: &mut [f32]| {
                    for (r, o) in out.chunks_mut(k).enumerate() {
                        o.copy_from_slice(&rows[(row0 + r) * ld..][..k]);
                    }
                };
                let mut y = vec![f32::NAN; m * n];
                matmul_decoded(level, &xc, m, n, k, decode, &mut y);
                for i in 0..m {
                    for j in 0..n {
                        assert!(
                            close(y[i * n + j], want(i, j), k),
                            "{level:?} decoded {m}x{n}x{k}"
                        );
                    }
                }
            }
        }
    }
}
