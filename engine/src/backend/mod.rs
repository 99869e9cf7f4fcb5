//! The backend boundary: one method per op family the OneRec model needs.
//!
//! The model (`model.rs`) and the beam search (`generate.rs`) sit above this trait and
//! own the data flow; a backend owns memory and kernels. Buffers are row-major `f32`
//! matrices as far as the caller is concerned (a backend may store them otherwise).

pub mod cpu;

use crate::error::Result;
use crate::tensor::WeightView;

/// Which keys each query row attends to.
#[derive(Debug, Clone, Copy)]
pub enum KeyMap<'a> {
    /// Row `r` attends the contiguous key rows `spans[r].0 .. spans[r].0 + spans[r].1`.
    Spans(&'a [(u32, u32)]),
    /// Row `r` attends the `per_row` key rows `index[r * per_row ..][..per_row]`.
    Gather { per_row: usize, index: &'a [u32] },
}

/// The four weights of one SwiGLU feed-forward block (one expert of a MoE, or a dense FFN).
pub struct Ffn<W> {
    pub gate: W,
    pub up: W,
    pub down: W,
}

/// A MoE layer: router `[E, d]` and `E` experts.
pub struct Moe<W> {
    pub router: W,
    pub experts: Vec<Ffn<W>>,
    pub top_k: usize,
}

pub trait Backend: Send + Sync {
    /// A weight matrix `[rows, cols]` resident in the backend, in its stored type.
    type Weight: Send + Sync;
    /// An `f32` activation matrix `[rows, cols]`.
    type Buf: Send + Sync;

    /// Human-readable description (device, features) for `--verbose`.
    fn describe(&self) -> String;

    /// Makes a weight resident (upload, or a zero-copy view of the mapped file).
    fn weight(&self, view: &WeightView<'_>) -> Result<Self::Weight>;

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn zeros(&self, rows: usize, cols: usize) -> Result<Self::Buf>;
    fn shape(&self, buf: &Self::Buf) -> (usize, usize);

    /// `out[r] = Σ_p table_p[index_p[r]]`: embedding lookups summed (codes + positions).
    fn gather_sum(&self, parts: &[(&Self::Weight, &[u32])], rows: usize) -> Result<Self::Buf>;

    /// `y = x · Wᵀ`.
    fn matmul(&self, x: &Self::Buf, w: &Self::Weight) -> Result<Self::Buf>;

    /// `y = x / sqrt(mean(x²) + eps) ⊙ w`, per row.
    fn rms_norm(&self, x: &Self::Buf, w: &Self::Weight, eps: f32) -> Result<Self::Buf>;

    /// `x += y`.
    fn add_assign(&self, x: &mut Self::Buf, y: &Self::Buf) -> Result<()>;

    /// `dst[row0 + r] = src[r]`: writes new K/V rows into a cache.
    fn write_rows(&self, dst: &mut Self::Buf, row0: usize, src: &Self::Buf) -> Result<()>;

    /// Multi-head scaled dot-product attention; `q` `[R, d]`, `k`/`v` `[S, d]`.
    fn attention(&self, q: &Self::Buf, k: &Self::Buf, v: &Self::Buf, n_heads: usize, keys: KeyMap<'_>) -> Result<Self::Buf>;

    /// `SwiGLU(x) = (silu(x Wgateᵀ) ⊙ x Wupᵀ) Wdownᵀ`.
    fn ffn(&self, x: &Self::Buf, ffn: &Ffn<Self::Weight>) -> Result<Self::Buf>;

    /// `Σ_{e∈TopK(p)} p_e SwiGLU_e(x)`, `p = softmax(x Wrouterᵀ)`, ties to the lower
    /// expert. When `routes` is given, the chosen experts (`[rows, top_k]`, best first)
    /// are appended to it.
    fn moe(&self, x: &Self::Buf, moe: &Moe<Self::Weight>, routes: Option<&mut Vec<u32>>) -> Result<Self::Buf>;

    /// Row-wise log-softmax.
    fn log_softmax(&self, x: &Self::Buf) -> Result<Self::Buf>;
}
