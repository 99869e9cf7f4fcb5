//! The CPU backend: the reference every other backend is tested against, and the
//! fallback where no GPU exists. Matrix products run on the packed microkernel of
//! `packed.rs` (f32 weights), the integer kernels of `q8_vnni.rs` / `quant_x86.rs` or the
//! decoded panels of `quant.rs`, at the SIMD level chosen at run time (`simd.rs`);
//! everything else is plain Rust parallelised over rows with rayon.

mod attention;
mod gemm_nt;
mod matmul;
mod moe;
mod packed;
mod pool;
mod profile;
#[cfg(target_arch = "x86_64")]
mod q8_vnni;
mod quant;
#[cfg(target_arch = "x86_64")]
mod quant_x86;
mod select;
mod simd;
mod vmath;
mod weight;

use pool::BufPool;
use profile::Op;
pub use profile::OpProfile;
pub use simd::SimdLevel;
pub use weight::CpuWeight;

use super::{
    Backend, BeamInputs, BeamPlan, BeamStep, Candidate, Ffn, Finished, HostBeams, KeyMap, Moe,
    SelectGroup,
};
use crate::error::{Error, Result};
use crate::tensor::WeightView;
use crate::trie::Trie;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// Row-major `f32` matrix. The backend's buffers return their storage to its pool
/// when dropped (`pool.rs`).
pub struct CpuBuf {
    pub data: Vec<f32>,
    pub rows: usize,
    pub cols: usize,
    pool: Option<Arc<BufPool>>,
}

impl CpuBuf {
    /// Zeros, outside any pool.
    pub fn new(rows: usize, cols: usize) -> Self {
        CpuBuf {
            data: vec![0.0; rows * cols],
            rows,
            cols,
            pool: None,
        }
    }
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }
}

impl Drop for CpuBuf {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.give(std::mem::take(&mut self.data));
        }
    }
}

impl Clone for CpuBuf {
    fn clone(&self) -> Self {
        CpuBuf {
            data: match &self.pool {
                Some(pool) => pool.copy_of(&self.data),
                None => self.data.clone(),
            },
            rows: self.rows,
            cols: self.cols,
            pool: self.pool.clone(),
        }
    }
}

impl PartialEq for CpuBuf {
    fn eq(&self, other: &Self) -> bool {
        (self.rows, self.cols, &self.data) == (other.rows, other.cols, &other.data)
    }
}

impl std::fmt::Debug for CpuBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuBuf")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("data", &self.data)
            .finish()
    }
}

/// Which q8_0/q4_0 products quantise their activations to q8 (per block of 32) and use
/// integer dot products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8 {
    /// None: decoded weights times f32 activations, the reference's arithmetic.
    Off,
    /// q8_0 products at every row count, on CPUs with AVX-512 VNNI (`q8_vnni.rs`); the
    /// kernel never depends on the row count, so a request's answer does not depend on
    /// what it is batched with. The default.
    Vnni,
    /// Besides, q8_0/q4_0 products of at most 8 rows on the AVX2 kernel (`quant_x86.rs`):
    /// faster on CPUs without VNNI, but then the kernel depends on the row count, and a
    /// request's answer on its batch (`ONEREC_CPU_INT8=1`).
    All,
}

#[derive(Debug)]
pub struct CpuBackend {
    simd: SimdLevel,
    /// Which q8_0/q4_0 products quantise their activations to q8 for integer dots.
    int8: Int8,
    /// Floating-point operations of the products and attention run so far (one relaxed
    /// add per op call), for `onerec bench`'s GFLOP/s.
    flops: Arc<AtomicU64>,
    /// K/V cache rows are stored rounded to f16 (what a GPU's f16 cache holds), so the
    /// f16-cache path of every backend can be checked at the f32 tolerance.
    kv_f16: bool,
    /// Wall time per op (`onerec bench --profile`); off by default.
    profile: Arc<OpProfile>,
    /// Whether q8_0 / q4_0 weights were loaded (`QUANT_Q8 | QUANT_Q4`), so `describe`
    /// says ", int8" only where integer products can run.
    quantized: AtomicU8,
    /// Storage of dropped buffers, reused by the next ones.
    pool: Arc<BufPool>,
}

const QUANT_Q8: u8 = 1;
const QUANT_Q4: u8 = 2;

impl Default for CpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuBackend {
    /// At the best SIMD level this CPU runs (or `ONEREC_CPU_SIMD`'s), with `Int8::Vnni`
    /// (`ONEREC_CPU_INT8=0`: `Off`, `=1`: `All`).
    pub fn new() -> Self {
        let int8 = match std::env::var("ONEREC_CPU_INT8").as_deref().map(str::trim) {
            Ok("0") => Int8::Off,
            Ok("1") => Int8::All,
            _ => Int8::Vnni,
        };
        Self::with_simd(SimdLevel::detect()).with_int8_mode(int8)
    }

    /// At a given level (tests force every level the CPU runs).
    pub fn with_simd(simd: SimdLevel) -> Self {
        CpuBackend {
            simd,
            int8: Int8::Off,
            flops: Arc::default(),
            kv_f16: false,
            profile: Arc::default(),
            quantized: AtomicU8::new(0),
            pool: Arc::default(),
        }
    }

    /// `Int8::All` (every integer kernel, as the op suite tests them) or `Int8::Off`.
    /// Integer products are faster; scores move by ~1e-3 relative on the built-in model,
    /// which can reorder near-tied sessions against the reference.
    pub fn with_int8(self, on: bool) -> Self {
        self.with_int8_mode(if on { Int8::All } else { Int8::Off })
    }

    pub fn with_int8_mode(mut self, mode: Int8) -> Self {
        self.int8 = mode;
        self
    }

    /// Whether some product of this backend's weights quantises its activations.
    fn int8_active(&self) -> bool {
        let loaded = self.quantized.load(Ordering::Relaxed);
        match self.int8 {
            Int8::Off => false,
            #[cfg(target_arch = "x86_64")]
            Int8::All => self.simd.has_avx2() && loaded != 0,
            #[cfg(target_arch = "x86_64")]
            Int8::Vnni => q8_vnni::supported(self.simd) && loaded & QUANT_Q8 != 0,
            #[cfg(not(target_arch = "x86_64"))]
            Int8::All | Int8::Vnni => false,
        }
    }

    /// The reference every backend's kernels are tested against: scalar code, and
    /// quantised weights multiplied as their decoded f32 values (activations never
    /// quantised), so results differ from exact arithmetic only by f32 rounding.
    pub fn reference() -> Self {
        CpuBackend {
            simd: SimdLevel::Scalar,
            int8: Int8::Off,
            flops: Arc::default(),
            kv_f16: false,
            profile: Arc::default(),
            quantized: AtomicU8::new(0),
            pool: Arc::default(),
        }
    }

    /// Stores K/V cache rows rounded to f16 (round to nearest even), as a GPU's f16
    /// cache does: the model of `KvPrecision::F16` that the GPU backends are checked
    /// against.
    pub fn with_kv_f16(mut self, on: bool) -> Self {
        self.kv_f16 = on;
        self
    }

    /// Times every op call (wall time per op, read through `op_profile`).
    pub fn with_profile(mut self, on: bool) -> Self {
        self.profile = Arc::new(OpProfile::new(on));
        self
    }

    /// The per-op times so far; readable after the backend moved into an `Engine`.
    pub fn op_profile(&self) -> Arc<OpProfile> {
        self.profile.clone()
    }

    pub fn kv_f16(&self) -> bool {
        self.kv_f16
    }

    pub fn simd(&self) -> SimdLevel {
        self.simd
    }

    /// The counter of floating-point operations (2 per multiply-add of the matrix
    /// products, the SwiGLU experts and attention); it stays readable after the backend
    /// moved into an `Engine`.
    pub fn flop_counter(&self) -> Arc<AtomicU64> {
        self.flops.clone()
    }

    /// `Backend::matmul` without its op timer, for the backend's own ops (the MoE router)
    /// so that timed ops never nest.
    pub(crate) fn product(&self, x: &CpuBuf, w: &CpuWeight) -> Result<CpuBuf> {
        check_cols("matmul", x.cols, w.cols)?;
        let mut y = self.buf(x.rows, w.rows);
        self.count_macs(x.rows * w.rows * w.cols);
        matmul::matmul(self, &x.data, x.rows, w, &mut y.data);
        Ok(y)
    }

    /// Zeros `[rows, cols]`, in pooled storage.
    pub(crate) fn buf(&self, rows: usize, cols: usize) -> CpuBuf {
        self.wrap(self.pool.zeroed(rows * cols), rows, cols)
    }

    /// A pooled copy of `src` as `[rows, cols]` (`src` holds `rows · cols` values).
    fn buf_from(&self, src: &[f32], rows: usize, cols: usize) -> CpuBuf {
        self.wrap(self.pool.copy_of(src), rows, cols)
    }

    /// Pooled storage as `[rows, cols]`: returned to the pool when the buffer drops.
    fn wrap(&self, data: Vec<f32>, rows: usize, cols: usize) -> CpuBuf {
        CpuBuf {
            data,
            rows,
            cols,
            pool: Some(self.pool.clone()),
        }
    }

    /// `len` zeros in pooled storage, for scratch that is not a `CpuBuf`; hand it back
    /// with `recycle`.
    pub(crate) fn pool_vec(&self, len: usize) -> Vec<f32> {
        self.pool.zeroed(len)
    }

    pub(crate) fn recycle(&self, v: Vec<f32>) {
        self.pool.give(v)
    }

    pub(crate) fn count_macs(&self, macs: usize) {
        self.flops.fetch_add(2 * macs as u64, Ordering::Relaxed);
    }
}

/// An rms_norm of fewer values than this stays on one thread: a fork-join costs more
/// than the work (a 16-beam decode step of the small config: 20 µs threaded against
/// 6 µs, `onerec bench --profile`). log_softmax stays threaded: its exps pay for it.
const PARALLEL_MIN_VALUES: usize = 1 << 15;

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error::Backend {
        backend: "cpu".into(),
        msg: msg.into(),
    }
}

fn check_cols(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(err(format!("{what}: width {got}, expected {want}")));
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Weight = CpuWeight;
    type Buf = CpuBuf;
    type Ids = Vec<u32>;
    type Beams = HostBeams;
    type Index = Trie;
    type Counts = Vec<Vec<u32>>;

    fn describe(&self) -> String {
        format!(
            "cpu ({} threads, {}{}{})",
            rayon::current_num_threads(),
            self.simd.name(),
            if self.int8_active() { ", int8" } else { "" },
            if self.kv_f16 { ", f16 KV cache" } else { "" }
        )
    }

    fn weight(&self, view: &WeightView<'_>) -> Result<CpuWeight> {
        let kind = match view.dtype {
            crate::tensor::DType::Q8_0 => QUANT_Q8,
            crate::tensor::DType::Q4_0 => QUANT_Q4,
            _ => 0,
        };
        self.quantized.fetch_or(kind, Ordering::Relaxed);
        CpuWeight::new(view)
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::Upload);
        if data.len() != rows * cols {
            return Err(err(format!(
                "upload of {} values into [{rows}, {cols}]",
                data.len()
            )));
        }
        Ok(self.buf_from(data, rows, cols))
    }

    fn download(&self, buf: &CpuBuf) -> Result<Vec<f32>> {
        let _t = self.profile.time(Op::Download);
        Ok(buf.data.clone())
    }

    fn zeros(&self, rows: usize, cols: usize) -> Result<CpuBuf> {
        Ok(self.buf(rows, cols))
    }

    fn shape(&self, buf: &CpuBuf) -> (usize, usize) {
        (buf.rows, buf.cols)
    }

    fn ids(&self, data: &[u32]) -> Result<Vec<u32>> {
        Ok(data.to_vec())
    }

    fn gather_sum(&self, parts: &[(&CpuWeight, &Vec<u32>)], rows: usize) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::GatherSum);
        let cols = parts.first().map(|(w, _)| w.cols).unwrap_or(0);
        let mut out = self.buf(rows, cols);
        for (w, idx) in parts {
            check_cols("gather_sum", w.cols, cols)?;
            if idx.len() < rows {
                return Err(err(format!(
                    "gather_sum: {} indices for {rows} rows",
                    idx.len()
                )));
            }
            let idx = &idx[..rows];
            if let Some(&bad) = idx.iter().find(|&&i| i as usize >= w.rows) {
                return Err(err(format!(
                    "gather_sum: row {bad} of a {}-row table",
                    w.rows
                )));
            }
            for (r, &i) in idx.iter().enumerate() {
                let dst = &mut out.data[r * cols..(r + 1) * cols];
                w.add_row_into(i as usize, dst);
            }
        }
        Ok(out)
    }

    fn matmul(&self, x: &CpuBuf, w: &CpuWeight) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::Matmul);
        self.product(x, w)
    }

    fn rms_norm(&self, x: &CpuBuf, w: &CpuWeight, eps: f32) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::RmsNorm);
        check_cols("rms_norm", x.cols, w.rows * w.cols)?;
        let g = w.to_f32_cow();
        let mut y = x.clone();
        let (cols, level) = (x.cols.max(1), self.simd);
        if y.data.len() >= PARALLEL_MIN_VALUES {
            // Blocks of rows: one SIMD dispatch each, and enough work per task.
            let per = (PARALLEL_MIN_VALUES / 4 / cols).max(1) * cols;
            y.data
                .par_chunks_mut(per)
                .for_each(|b| vmath::rms_norm_rows(level, b, cols, &g, eps));
        } else {
            vmath::rms_norm_rows(level, &mut y.data, cols, &g, eps);
        }
        Ok(y)
    }

    fn add_assign(&self, x: &mut CpuBuf, y: &CpuBuf) -> Result<()> {
        let _t = self.profile.time(Op::Add);
        if (x.rows, x.cols) != (y.rows, y.cols) {
            return Err(err(format!(
                "add: [{}, {}] += [{}, {}]",
                x.rows, x.cols, y.rows, y.cols
            )));
        }
        x.data.iter_mut().zip(&y.data).for_each(|(a, b)| *a += b);
        Ok(())
    }

    fn write_rows(&self, dst: &mut CpuBuf, row0: usize, src: &CpuBuf) -> Result<()> {
        let _t = self.profile.time(Op::WriteRows);
        check_cols("write_rows", src.cols, dst.cols)?;
        if row0 + src.rows > dst.rows {
            return Err(err(format!(
                "write_rows: rows {row0}..{} of {}",
                row0 + src.rows,
                dst.rows
            )));
        }
        let dst = &mut dst.data[row0 * dst.cols..(row0 + src.rows) * dst.cols];
        if self.kv_f16 {
            // `write_rows` only ever fills K/V caches (the trait's contract).
            for (d, &x) in dst.iter_mut().zip(&src.data) {
                *d = half::f16::from_f32(x).to_f32();
            }
        } else {
            dst.copy_from_slice(&src.data);
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &CpuBuf,
        k: &CpuBuf,
        v: &CpuBuf,
        n_heads: usize,
        keys: KeyMap<'_, Vec<u32>>,
    ) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::Attention);
        let keys_per_row = match keys {
            KeyMap::Spans(s) => s.iter().map(|&(_, n)| n as usize).sum::<usize>(),
            KeyMap::Gather { per_row, .. } => per_row * q.rows,
        };
        // Scores and the weighted sum: two multiply-adds per key and query column.
        self.count_macs(2 * keys_per_row * q.cols);
        attention::attention(self.simd, q, k, v, n_heads, keys, |r, c| self.buf(r, c))
    }

    fn ffn(&self, x: &CpuBuf, ffn: &Ffn<CpuWeight>) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::Ffn);
        moe::swiglu(self, x, ffn)
    }

    fn moe(
        &self,
        x: &CpuBuf,
        moe: &Moe<CpuWeight>,
        routes: Option<&mut Vec<u32>>,
    ) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::Moe);
        moe::moe(self, x, moe, routes)
    }

    fn log_softmax(&self, x: &CpuBuf) -> Result<CpuBuf> {
        let _t = self.profile.time(Op::LogSoftmax);
        let mut y = x.clone();
        y.data
            .par_chunks_mut(x.cols.max(1))
            .for_each(|row| vmath::log_softmax_row(self.simd, row));
        Ok(y)
    }

    fn index(&self, trie: &Trie) -> Result<Trie> {
        Ok(trie.clone())
    }

    fn counts(&self, per_user: &[Vec<u32>]) -> Result<Vec<Vec<u32>>> {
        Ok(per_user.to_vec())
    }

    fn beams_start(&self, plan: &BeamPlan) -> Result<Self::Beams> {
        let _t = self.profile.time(Op::Beams);
        HostBeams::start(plan)
    }

    fn beams_inputs<'a>(&self, beams: &'a Self::Beams) -> BeamInputs<'a, Vec<u32>> {
        beams.inputs()
    }

    fn beams_step(
        &self,
        beams: &mut Self::Beams,
        logp: &CpuBuf,
        index: &Trie,
        counts: &Vec<Vec<u32>>,
        step: &BeamStep<'_>,
    ) -> Result<()> {
        let _t = self.profile.time(Op::BeamStep);
        beams.step(step, |groups| {
            self.select(logp, index, counts, step.level, groups)
        })
    }

    fn beams_finish(&self, beams: &Self::Beams) -> Result<Vec<Finished>> {
        let _t = self.profile.time(Op::Beams);
        Ok(beams.finish())
    }
}

impl CpuBackend {
    /// Constrained top-B over host beams (the reference of every backend's beam step).
    pub fn select(
        &self,
        logp: &CpuBuf,
        index: &Trie,
        counts: &[Vec<u32>],
        level: usize,
        groups: &[SelectGroup<'_>],
    ) -> Result<Vec<Vec<Candidate>>> {
        select::select(logp, index, counts, level, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dropped buffer's storage comes back for the next one (the KV caches and logits
    /// of the next request), zeroed, and clones come from the pool too.
    #[test]
    fn dropped_buffers_are_reused_zeroed() {
        let b = CpuBackend::new();
        let (rows, cols) = (512, 512);
        let mut first = b.zeros(rows, cols).unwrap();
        first.data.fill(3.0);
        let ptr = first.data.as_ptr();
        drop(first);
        let second = b.zeros(rows, cols).unwrap();
        assert_eq!(second.data.as_ptr(), ptr, "storage not reused");
        assert!(
            second.data.iter().all(|&v| v == 0.0),
            "reused storage not zeroed"
        );
        let copy = second.clone();
        drop(second);
        let third = b.upload(&vec![2.0; rows * cols], rows, cols).unwrap();
        assert_eq!(third.data.as_ptr(), ptr, "upload does not reuse");
        assert!(third.data.iter().all(|&v| v == 2.0));
        assert_eq!(copy, CpuBuf::new(rows, cols), "the clone kept its values");
    }
}
