//! The backend boundary: one method per op family the OneRec model needs.
//!
//! The model (`model.rs`) and the beam search (`generate.rs`) sit above this trait and
//! own the data flow; a backend owns memory and kernels. Buffers are row-major `f32`
//! matrices as far as the caller is concerned (a backend may store them otherwise).

pub mod beams;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod wgpu;

pub use beams::{BeamInputs, BeamPlan, BeamStep, Finished, HostBeams, Rows};

use crate::error::Result;
use crate::tensor::{TensorView, WeightView};
use crate::trie::Trie;

/// What a caller may ask of a resident list of `u32` indices without reading it back.
pub trait IdList {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Every value is below this (what bounds checks before a launch use).
    fn limit(&self) -> u64;
}

impl IdList for Vec<u32> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn limit(&self) -> u64 {
        self.iter().max().map_or(0, |&m| m as u64 + 1)
    }
}

/// Which keys each query row attends to; `I` is the backend's index list.
pub enum KeyMap<'a, I: ?Sized> {
    /// Row `r` attends the contiguous key rows `spans[r].0 .. spans[r].0 + spans[r].1`.
    Spans(&'a [(u32, u32)]),
    /// Row `r` attends the `per_row` key rows `index[r * stride ..][..per_row]`.
    Gather {
        per_row: usize,
        stride: usize,
        index: &'a I,
    },
}

impl<I: ?Sized> Clone for KeyMap<'_, I> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I: ?Sized> Copy for KeyMap<'_, I> {}

impl<I: ?Sized> std::fmt::Debug for KeyMap<'_, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMap::Spans(s) => write!(f, "Spans({s:?})"),
            KeyMap::Gather {
                per_row, stride, ..
            } => write!(f, "Gather {{ per_row: {per_row}, stride: {stride} }}"),
        }
    }
}

impl<I: IdList + ?Sized> KeyMap<'_, I> {
    /// Checks the shapes every attention kernel relies on, so kernels can index freely:
    /// `q` `[R, d]`, `k`/`v` `[S, d]`, `d` split into `n_heads`, and a key map for `R`
    /// rows whose keys all lie in `0..S` (no row without keys). The message names the
    /// mismatch.
    pub fn check(
        &self,
        q: (usize, usize),
        k: (usize, usize),
        v: (usize, usize),
        n_heads: usize,
    ) -> Result<(), String> {
        let ((rows, d), (kr, kc), (vr, vc)) = (q, k, v);
        if kc != d || vc != d || kr != vr {
            return Err(format!(
                "attention: q [{rows}, {d}], k [{kr}, {kc}], v [{vr}, {vc}]"
            ));
        }
        if n_heads == 0 || d % n_heads != 0 {
            return Err(format!(
                "attention: {d} columns do not split into {n_heads} heads"
            ));
        }
        match *self {
            KeyMap::Spans(spans) => {
                if spans.len() != rows {
                    return Err(format!("attention: {} spans for {rows} rows", spans.len()));
                }
                if let Some(s) = spans
                    .iter()
                    .find(|s| s.1 == 0 || s.0 as usize + s.1 as usize > kr)
                {
                    return Err(format!(
                        "attention: key span {s:?} outside {kr} keys (or empty)"
                    ));
                }
            }
            KeyMap::Gather {
                per_row,
                stride,
                index,
            } => {
                let need = rows
                    .checked_sub(1)
                    .map_or(Some(0), |r| r.checked_mul(stride)?.checked_add(per_row));
                if per_row == 0 || stride < per_row || need.is_none_or(|n| index.len() < n) {
                    return Err(format!(
                        "attention: {} key indices for {rows} rows x {per_row} (stride {stride})",
                        index.len()
                    ));
                }
                if index.limit() > kr as u64 {
                    return Err(format!(
                        "attention: key rows up to {} outside {kr} keys",
                        index.limit() - 1
                    ));
                }
            }
        }
        Ok(())
    }
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

/// One beam entering a constrained selection step.
#[derive(Debug, Clone, Copy)]
pub struct BeamIn<'a> {
    /// Sum of the log-probabilities of its codes so far.
    pub score: f32,
    /// Trie node of the current item's prefix.
    pub node: u32,
    /// Catalog rows of the items its session already holds.
    pub session: &'a [u32],
}

/// One request's beams in a selection step: log-prob rows `row0 .. row0 + beams.len()`,
/// eligible counts of request `user`, and the number of survivors wanted.
#[derive(Debug, Clone, Copy)]
pub struct SelectGroup<'a> {
    pub user: usize,
    pub row0: usize,
    pub width: usize,
    pub beams: &'a [BeamIn<'a>],
}

/// A surviving (beam, code) pair: `beam` indexes the group's beams, `child` is the trie
/// node the code leads to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub beam: u32,
    pub code: u32,
    pub child: u32,
}

pub trait Backend: Send + Sync {
    /// A weight matrix `[rows, cols]` resident in the backend, in its stored type.
    type Weight: Send + Sync;
    /// An `f32` activation matrix `[rows, cols]`.
    type Buf: Send + Sync;
    /// A list of `u32` indices (embedding rows, cache rows), resident.
    type Ids: IdList + Send + Sync;
    /// The beam state of one batch's session search, resident.
    type Beams: Send + Sync;
    /// The SID trie, resident (made once per catalog snapshot, before it serves).
    type Index: Send + Sync + 'static;
    /// Eligible-item counts per trie node of a batch of requests, resident for a request.
    type Counts: Send + Sync;

    /// Human-readable description (device, features) for `--verbose`.
    fn describe(&self) -> String;

    /// Makes a weight resident (upload, or a zero-copy view of the mapped file).
    fn weight(&self, view: &WeightView<'_>) -> Result<Self::Weight>;

    /// Makes the matrices of a 3-D tensor `[n, rows, cols]` resident, one weight each (a
    /// MoE layer's experts). A backend may keep them together so that one kernel reaches
    /// every expert; by default each slice is its own weight.
    fn weight_stack(&self, t: &TensorView<'_>) -> Result<Vec<Self::Weight>> {
        let n = t.shape.first().copied().unwrap_or(0);
        (0..n).map(|i| self.weight(&t.slice3(i)?)).collect()
    }

    /// [`Backend::weight_stack`] of several 3-D tensors of one type and shape (a MoE
    /// layer's gate and up matrices). A backend may keep them together so that one kernel
    /// reads them all; by default each is stacked on its own.
    fn weight_stacks(&self, ts: &[&TensorView<'_>]) -> Result<Vec<Vec<Self::Weight>>> {
        ts.iter().map(|t| self.weight_stack(t)).collect()
    }

    /// Makes several matrices resident that one kernel may read together (a layer's key
    /// and value projections, for [`Backend::project_kv`], or its query, key and value
    /// projections, for [`Backend::project_qkv`]); by default each is its own weight.
    fn weights_together(&self, views: &[&WeightView<'_>]) -> Result<Vec<Self::Weight>> {
        views.iter().map(|v| self.weight(v)).collect()
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Buf>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    fn zeros(&self, rows: usize, cols: usize) -> Result<Self::Buf>;
    fn shape(&self, buf: &Self::Buf) -> (usize, usize);

    /// A zeroed key/value cache `[rows, cols]`: written only by `write_rows`, read only
    /// by `attention` (and `download`). A backend may store it in reduced precision (the
    /// CUDA backend keeps it in f16); by default it is an ordinary buffer.
    fn kv_cache(&self, rows: usize, cols: usize) -> Result<Self::Buf> {
        self.zeros(rows, cols)
    }

    /// Makes a list of indices resident.
    fn ids(&self, data: &[u32]) -> Result<Self::Ids>;

    /// `out[r] = Σ_p table_p[index_p[r]]` for `r < rows`: embedding lookups summed
    /// (codes + positions). An index list may be longer than `rows`.
    fn gather_sum(&self, parts: &[(&Self::Weight, &Self::Ids)], rows: usize) -> Result<Self::Buf>;

    /// `y = x · Wᵀ`.
    fn matmul(&self, x: &Self::Buf, w: &Self::Weight) -> Result<Self::Buf>;

    /// `y = x / sqrt(mean(x²) + eps) ⊙ w`, per row.
    fn rms_norm(&self, x: &Self::Buf, w: &Self::Weight, eps: f32) -> Result<Self::Buf>;

    /// `x += y`, then `rms_norm(x, w, eps)`: every residual add of the model is followed
    /// by a norm, and a backend may fuse the two passes (by default, the two ops).
    fn add_rms_norm(
        &self,
        x: &mut Self::Buf,
        y: &Self::Buf,
        w: &Self::Weight,
        eps: f32,
    ) -> Result<Self::Buf> {
        self.add_assign(x, y)?;
        self.rms_norm(x, w, eps)
    }

    /// `x += y`.
    fn add_assign(&self, x: &mut Self::Buf, y: &Self::Buf) -> Result<()>;

    /// `dst[row0 + r] = src[r]`: writes new K/V rows into a cache.
    fn write_rows(&self, dst: &mut Self::Buf, row0: usize, src: &Self::Buf) -> Result<()>;

    /// `k_cache[row0 + r] = (x · Wkᵀ)[r]` and `v_cache[row0 + r] = (x · Wvᵀ)[r]`: a layer's
    /// new keys and values straight into its caches. A backend may do it in one kernel
    /// (where [`Backend::weights_together`] kept the two weights together); by default,
    /// two products and two `write_rows`.
    fn project_kv(
        &self,
        x: &Self::Buf,
        wk: &Self::Weight,
        wv: &Self::Weight,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        row0: usize,
    ) -> Result<()> {
        self.write_rows(k_cache, row0, &self.matmul(x, wk)?)?;
        self.write_rows(v_cache, row0, &self.matmul(x, wv)?)
    }

    /// [`Backend::project_kv`], and the same rows' queries `x · Wqᵀ` returned: a
    /// self-attention layer's three projections of one input. A backend may do all three
    /// in one kernel (where [`Backend::weights_together`] kept the three weights
    /// together); by default, `project_kv` and one product.
    #[allow(clippy::too_many_arguments)]
    fn project_qkv(
        &self,
        x: &Self::Buf,
        wq: &Self::Weight,
        wk: &Self::Weight,
        wv: &Self::Weight,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        row0: usize,
    ) -> Result<Self::Buf> {
        self.project_kv(x, wk, wv, k_cache, v_cache, row0)?;
        self.matmul(x, wq)
    }

    /// Multi-head scaled dot-product attention; `q` `[R, d]`, `k`/`v` `[S, d]`.
    fn attention(
        &self,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        n_heads: usize,
        keys: KeyMap<'_, Self::Ids>,
    ) -> Result<Self::Buf>;

    /// `SwiGLU(x) = (silu(x Wgateᵀ) ⊙ x Wupᵀ) Wdownᵀ`.
    fn ffn(&self, x: &Self::Buf, ffn: &Ffn<Self::Weight>) -> Result<Self::Buf>;

    /// `Σ_{e∈TopK(p)} p_e SwiGLU_e(x)`, `p = softmax(x Wrouterᵀ)`, ties to the lower
    /// expert. When `routes` is given, the chosen experts (`[rows, top_k]`, best first)
    /// are appended to it.
    fn moe(
        &self,
        x: &Self::Buf,
        moe: &Moe<Self::Weight>,
        routes: Option<&mut Vec<u32>>,
    ) -> Result<Self::Buf>;

    /// `x += moe(h)`, then `rms_norm(x, w, eps)`: a MoE layer's output added to the
    /// residual and the norm after it. A backend may fold the experts' weighted sum into
    /// that pass; by default, `moe` and `add_rms_norm`.
    fn moe_add_rms_norm(
        &self,
        x: &mut Self::Buf,
        h: &Self::Buf,
        moe: &Moe<Self::Weight>,
        routes: Option<&mut Vec<u32>>,
        w: &Self::Weight,
        eps: f32,
    ) -> Result<Self::Buf> {
        let y = self.moe(h, moe, routes)?;
        self.add_rms_norm(x, &y, w, eps)
    }

    /// Row-wise log-softmax.
    fn log_softmax(&self, x: &Self::Buf) -> Result<Self::Buf>;

    /// Makes the trie resident for [`Backend::select`].
    fn index(&self, trie: &Trie) -> Result<Self::Index>;

    /// Makes the eligible counts (`Trie::eligible_counts`, one vector per request of the
    /// batch, in order) resident for the steps of one batch.
    fn counts(&self, per_user: &[Vec<u32>]) -> Result<Self::Counts>;

    /// The beam state of a batch before its first position (see [`beams`]).
    fn beams_start(&self, plan: &BeamPlan) -> Result<Self::Beams>;

    /// What the next decoder position reads of the beams: each row's last code and
    /// the cache rows of its ancestry.
    fn beams_inputs<'a>(&self, beams: &'a Self::Beams) -> BeamInputs<'a, Self::Ids>;

    /// One scored step (MODEL_SPEC "Constrained session decoding"), per request: every
    /// (beam, code) pair where the code is a child of the beam's trie node and the
    /// child's eligible count exceeds the number of the beam's session items under it
    /// competes with score `beam.score + logp[row, code]`; the best `width` survive,
    /// best first, ties to the lower beam, then the lower code, and become the beams of
    /// the next position. Nothing needs to come back to the host.
    fn beams_step(
        &self,
        beams: &mut Self::Beams,
        logp: &Self::Buf,
        index: &Self::Index,
        counts: &Self::Counts,
        step: &BeamStep<'_>,
    ) -> Result<()>;

    /// The beams of every request as they stand, best first, each session holding the
    /// items completed so far: read once at the end (every surviving beam), and once
    /// right after the first item when a request asks for the item list. It must not
    /// change the state.
    fn beams_finish(&self, beams: &Self::Beams) -> Result<Vec<Finished>>;
}
