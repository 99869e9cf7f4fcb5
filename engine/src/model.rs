//! The OneRec forward pass written once over the `Backend` ops: the encoder, and one
//! decoder position for a batch of beam rows with a KV cache.

use crate::backend::{Backend, BeamInputs, Ffn, IdList, KeyMap, Moe};
use crate::catalog::snapshot::ResidentIndex;
use crate::catalog::{Catalog, CatalogContents, CatalogSnapshot};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model_file::ModelFile;
use crate::tensor::WeightView;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The four projections of one attention block (`[d, d]` each, `y = x · Wᵀ`).
pub(crate) struct Attn<W> {
    pub(crate) q: W,
    pub(crate) k: W,
    pub(crate) v: W,
    pub(crate) o: W,
}

impl<W> Attn<W> {
    /// The projections `{prefix}.q/.k/.v/.o`, each through `weight`, and those a kernel
    /// may read together through `together`: the key and value projections (kept together
    /// for `Backend::project_kv`), with `qkv` the query projection too (for
    /// `Backend::project_qkv`: a self-attention's three projections of one input).
    pub(crate) fn load(
        prefix: &str,
        weight: impl Fn(&str) -> Result<W>,
        together: impl Fn(&[&str]) -> Result<Vec<W>>,
        qkv: bool,
    ) -> Result<Self> {
        let [q, k, v, o] = ["q", "k", "v", "o"].map(|p| format!("{prefix}.{p}"));
        let (q, k, v) = if qkv {
            let [q, k, v] = each(together(&[&q, &k, &v])?)?;
            (q, k, v)
        } else {
            let [k, v] = each(together(&[&k, &v])?)?;
            (weight(&q)?, k, v)
        };
        Ok(Attn {
            q,
            k,
            v,
            o: weight(&o)?,
        })
    }
}

/// `weights_together`'s answer for N matrices as an array.
fn each<W, const N: usize>(w: Vec<W>) -> Result<[W; N]> {
    w.try_into()
        .map_err(|_| Error::internal("weights_together: one weight per matrix"))
}

/// Named matrices through `Backend::weights_together`.
pub(crate) fn weights_together<B: Backend>(
    backend: &B,
    file: &ModelFile,
    names: &[&str],
) -> Result<Vec<B::Weight>> {
    let tensors = names
        .iter()
        .map(|n| file.tensor(n))
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<_> = tensors.iter().map(|t| t.as_matrix()).collect();
    let refs: Vec<_> = views.iter().collect();
    backend.weights_together(&refs)
}

enum FeedForward<W> {
    Dense(Ffn<W>),
    Moe(Moe<W>),
}

struct EncLayer<W> {
    attn_norm: W,
    attn: Attn<W>,
    ffn_norm: W,
    ffn: FeedForward<W>,
}

struct DecLayer<W> {
    self_norm: W,
    self_attn: Attn<W>,
    cross_norm: W,
    cross_attn: Attn<W>,
    ffn_norm: W,
    ffn: FeedForward<W>,
}

/// Router choices recorded during a forward pass, keyed `enc.{i}` / `dec.{i}`:
/// `[tokens, top_k]` expert indices, appended call after call.
pub type RouteLog = BTreeMap<String, Vec<u32>>;

pub struct Model<B: Backend> {
    pub backend: B,
    pub file: Arc<ModelFile>,
    cfg: Config,
    enc_embed: Vec<B::Weight>,
    enc_pos: B::Weight,
    enc_layers: Vec<EncLayer<B::Weight>>,
    enc_norm: B::Weight,
    dec_bos: B::Weight,
    dec_embed: Vec<B::Weight>,
    dec_pos: B::Weight,
    dec_layers: Vec<DecLayer<B::Weight>>,
    dec_norm: B::Weight,
    head: Vec<B::Weight>,
}

/// Per-request decoder state: self-attention KV caches and cross-attention K/V.
pub struct DecodeState<B: Backend> {
    /// Rows reserved per position in the self-attention caches.
    pub cap: usize,
    self_k: Vec<B::Buf>,
    self_v: Vec<B::Buf>,
    cross_k: Vec<B::Buf>,
    cross_v: Vec<B::Buf>,
    /// Per user: first row and length of its encoder output in `cross_k`/`cross_v`.
    user_spans: Vec<(u32, u32)>,
}

impl<B: Backend> Model<B> {
    pub fn new(backend: B, file: Arc<ModelFile>) -> Result<Self> {
        let cfg = file.config.clone();
        let f = &*file;
        let w = |name: &str| -> Result<B::Weight> { backend.weight(&f.tensor(name)?.as_matrix()) };
        let levels = |name: &str| -> Result<Vec<B::Weight>> {
            let t = f.tensor(name)?;
            (0..cfg.n_levels)
                .map(|l| backend.weight(&t.slice3(l)?))
                .collect()
        };
        let together = |names: &[&str]| weights_together(&backend, f, names);
        let attn = |p: &str, qkv: bool| Attn::load(p, w, together, qkv);
        let ffn = |p: &str, moe: bool| -> Result<FeedForward<B::Weight>> {
            if !moe {
                return Ok(FeedForward::Dense(Ffn {
                    gate: w(&format!("{p}.ffn.gate"))?,
                    up: w(&format!("{p}.ffn.up"))?,
                    down: w(&format!("{p}.ffn.down"))?,
                }));
            }
            let t = |name: &str| f.tensor(&format!("{p}.moe.{name}"));
            let (tg, tu, td) = (t("gate")?, t("up")?, t("down")?);
            // Gate and up together: a backend may fuse the two products.
            let mut stacks = backend.weight_stacks(&[&tg, &tu])?;
            stacks.push(backend.weight_stack(&td)?);
            for (ws, t) in stacks.iter().zip([&tg, &tu, &td]) {
                if ws.len() != cfg.n_experts {
                    return Err(Error::tensor(
                        t.name,
                        format!("{} experts, expected {}", ws.len(), cfg.n_experts),
                    ));
                }
            }
            let [g, u, d]: [Vec<B::Weight>; 3] = stacks
                .try_into()
                .map_err(|_| Error::internal("weight_stacks: one list per tensor"))?;
            let experts = g
                .into_iter()
                .zip(u)
                .zip(d)
                .map(|((gate, up), down)| Ffn { gate, up, down })
                .collect();
            Ok(FeedForward::Moe(Moe {
                router: w(&format!("{p}.moe.router"))?,
                experts,
                top_k: cfg.top_k,
            }))
        };
        let enc_layers = (0..cfg.n_enc_layers)
            .map(|i| {
                let p = format!("enc.layers.{i}");
                Ok(EncLayer {
                    attn_norm: w(&format!("{p}.attn_norm"))?,
                    attn: attn(&format!("{p}.attn"), false)?,
                    ffn_norm: w(&format!("{p}.ffn_norm"))?,
                    ffn: ffn(&p, cfg.enc_is_moe(i))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec_layers = (0..cfg.n_dec_layers)
            .map(|i| {
                let p = format!("dec.layers.{i}");
                Ok(DecLayer {
                    self_norm: w(&format!("{p}.self_norm"))?,
                    self_attn: attn(&format!("{p}.self_attn"), true)?,
                    cross_norm: w(&format!("{p}.cross_norm"))?,
                    cross_attn: attn(&format!("{p}.cross_attn"), false)?,
                    ffn_norm: w(&format!("{p}.ffn_norm"))?,
                    ffn: ffn(&p, cfg.dec_is_moe(i))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let bos = f.tensor("dec.bos")?;
        let bos = backend.weight(&WeightView {
            rows: 1,
            cols: cfg.d_model,
            ..bos.as_matrix()
        })?;
        Ok(Model {
            enc_embed: levels("enc.embed")?,
            enc_pos: w("enc.pos")?,
            enc_layers,
            enc_norm: w("enc.norm")?,
            dec_bos: bos,
            dec_embed: levels("dec.embed")?,
            dec_pos: w("dec.pos")?,
            dec_layers,
            dec_norm: w("dec.norm")?,
            head: levels("head")?,
            cfg,
            file,
            backend,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// A catalog snapshot for this model: its trie, made resident on this backend
    /// (uploaded here, before any request can see it).
    pub fn snapshot(
        &self,
        contents: Arc<CatalogContents>,
        version: u64,
    ) -> Result<CatalogSnapshot> {
        let (l, k) = (self.cfg.n_levels, self.cfg.codebook_size);
        let cat = &contents.catalog;
        if cat.levels() != l || cat.codebook_size() != k {
            return Err(Error::Catalog(format!(
                "the catalog's SIDs have {} levels of {} codes, the model {l} of {k}",
                cat.levels(),
                cat.codebook_size()
            )));
        }
        CatalogSnapshot::build(contents, version, |trie| {
            Ok(Box::new(self.backend.index(trie)?) as ResidentIndex)
        })
    }

    /// The catalog of the model file as snapshot version 0.
    pub fn file_snapshot(&self) -> Result<CatalogSnapshot> {
        self.snapshot(Arc::new(self.file.catalog_contents()?), 0)
    }

    fn feed_forward(
        &self,
        x: &B::Buf,
        f: &FeedForward<B::Weight>,
        key: String,
        routes: &mut Option<&mut RouteLog>,
    ) -> Result<B::Buf> {
        match f {
            FeedForward::Dense(ffn) => self.backend.ffn(x, ffn),
            FeedForward::Moe(moe) => {
                let log = routes.as_deref_mut().map(|r| r.entry(key).or_default());
                self.backend.moe(x, moe, log)
            }
        }
    }

    /// `x += feed_forward(h)`, then the norm `w` of `x`: for a MoE layer through
    /// `Backend::moe_add_rms_norm`, which may sum the experts inside the norm's pass.
    fn feed_forward_add_norm(
        &self,
        x: &mut B::Buf,
        h: &B::Buf,
        f: &FeedForward<B::Weight>,
        key: String,
        routes: &mut Option<&mut RouteLog>,
        w: &B::Weight,
    ) -> Result<B::Buf> {
        let eps = self.cfg.rms_eps;
        match f {
            FeedForward::Dense(ffn) => {
                let y = self.backend.ffn(h, ffn)?;
                self.backend.add_rms_norm(x, &y, w, eps)
            }
            FeedForward::Moe(moe) => {
                let log = routes.as_deref_mut().map(|r| r.entry(key).or_default());
                self.backend.moe_add_rms_norm(x, h, moe, log, w, eps)
            }
        }
    }

    /// Encodes one history given as catalog rows, oldest first; keeps the newest
    /// `max_history` items. Returns `enc_out` `[h, d]`.
    pub fn encode(&self, history: &[usize], routes: Option<&mut RouteLog>) -> Result<B::Buf> {
        self.encode_in(&self.file.catalog, history, routes)
    }

    /// [`Model::encode`] with `history` as rows of `cat` (a live catalog's snapshot).
    pub fn encode_in(
        &self,
        cat: &Catalog,
        history: &[usize],
        mut routes: Option<&mut RouteLog>,
    ) -> Result<B::Buf> {
        let be = &self.backend;
        let n = self.cfg.max_history;
        let hist = &history[history.len().saturating_sub(n)..];
        let h = hist.len();
        if h == 0 {
            return Err(Error::request("the history is empty"));
        }
        let codes: Vec<B::Ids> = (0..self.cfg.n_levels)
            .map(|l| be.ids(&hist.iter().map(|&it| cat.sid(it)[l]).collect::<Vec<_>>()))
            .collect::<Result<_>>()?;
        let pos = be.ids(&(0..h).map(|j| (n - h + j) as u32).collect::<Vec<_>>())?;
        let mut parts: Vec<(&B::Weight, &B::Ids)> = self.enc_embed.iter().zip(&codes).collect();
        parts.push((&self.enc_pos, &pos));
        let mut x = be.gather_sum(&parts, h)?;
        let spans = vec![(0u32, h as u32); h];
        let eps = self.cfg.rms_eps;
        // Every residual add is followed by a norm: `add_rms_norm` does both.
        let Some(first) = self.enc_layers.first() else {
            return be.rms_norm(&x, &self.enc_norm, eps);
        };
        let mut a = be.rms_norm(&x, &first.attn_norm, eps)?;
        for (i, layer) in self.enc_layers.iter().enumerate() {
            let (q, k, v) = (
                be.matmul(&a, &layer.attn.q)?,
                be.matmul(&a, &layer.attn.k)?,
                be.matmul(&a, &layer.attn.v)?,
            );
            let att = be.attention(&q, &k, &v, self.cfg.n_heads, KeyMap::Spans(&spans))?;
            let o = be.matmul(&att, &layer.attn.o)?;
            let f = be.add_rms_norm(&mut x, &o, &layer.ffn_norm, eps)?;
            let next = match self.enc_layers.get(i + 1) {
                Some(l) => &l.attn_norm,
                None => &self.enc_norm,
            };
            let key = format!("enc.{i}");
            a = self.feed_forward_add_norm(&mut x, &f, &layer.ffn, key, &mut routes, next)?;
        }
        Ok(a)
    }

    /// Prepares decoding for a batch of users (one `enc_out` each) with room for
    /// `cap` beam rows per position.
    pub fn start_decode(&self, enc_outs: &[&B::Buf], cap: usize) -> Result<DecodeState<B>> {
        let be = &self.backend;
        let d = self.cfg.d_model;
        let mut user_spans = Vec::with_capacity(enc_outs.len());
        let mut total = 0usize;
        for e in enc_outs {
            let (rows, _) = be.shape(e);
            user_spans.push((total as u32, rows as u32));
            total += rows;
        }
        let t = self.cfg.dec_len();
        let mut st = DecodeState {
            cap,
            self_k: vec![],
            self_v: vec![],
            cross_k: vec![],
            cross_v: vec![],
            user_spans,
        };
        for layer in &self.dec_layers {
            st.self_k.push(be.kv_cache(t * cap, d)?);
            st.self_v.push(be.kv_cache(t * cap, d)?);
            let (mut ck, mut cv) = (be.kv_cache(total, d)?, be.kv_cache(total, d)?);
            for (e, &(row0, _)) in enc_outs.iter().zip(&st.user_spans) {
                let ca = &layer.cross_attn;
                be.project_kv(e, &ca.k, &ca.v, &mut ck, &mut cv, row0 as usize)?;
            }
            st.cross_k.push(ck);
            st.cross_v.push(cv);
        }
        Ok(st)
    }

    /// Runs decoder position `t` for `rows` beam rows.
    ///
    /// `inputs.codes[r]` is the code fed at a slot ≥ 1 (ignored at BOS slots),
    /// `row_user[r]` the user a row belongs to, and `inputs.ancestry[r * T ..][..=t]`
    /// (`T` = `dec_len`) the cache rows holding that beam's positions `0..=t`, the last
    /// being `t * cap + r`, where row `r` writes its own K/V. Returns the
    /// log-probabilities `[rows, K]` of level `t mod (L+1)` when that slot is scored,
    /// else `None`.
    pub fn decode_step(
        &self,
        st: &mut DecodeState<B>,
        t: usize,
        inputs: &BeamInputs<'_, B::Ids>,
        row_user: &[u32],
        mut routes: Option<&mut RouteLog>,
    ) -> Result<Option<B::Buf>> {
        let be = &self.backend;
        let rows = row_user.len();
        let big_l = self.cfg.n_levels;
        let slot = t % (big_l + 1);
        let positions = self.cfg.dec_len();
        if t >= positions || rows > st.cap || inputs.codes.len() < rows {
            return Err(Error::internal(format!(
                "decode step {t}: inconsistent batch of {rows} rows"
            )));
        }
        let pos = be.ids(&vec![t as u32; rows])?;
        let mut x = if slot == 0 {
            let bos = be.ids(&vec![0u32; rows])?;
            be.gather_sum(&[(&self.dec_bos, &bos), (&self.dec_pos, &pos)], rows)?
        } else {
            be.gather_sum(
                &[
                    (&self.dec_embed[slot - 1], inputs.codes),
                    (&self.dec_pos, &pos),
                ],
                rows,
            )?
        };
        let spans: Vec<(u32, u32)> = row_user
            .iter()
            .map(|&u| st.user_spans[u as usize])
            .collect();
        let eps = self.cfg.rms_eps;
        // An unscored slot's last layer only has to leave its K/V in the cache: nothing
        // reads its output (the route log, a parity check, still wants every route).
        let skip_last = slot == big_l && routes.is_none();
        let n_layers = self.dec_layers.len();
        // Every residual add is followed by a norm: `add_rms_norm` does both.
        let mut a = match self.dec_layers.first() {
            Some(l) => be.rms_norm(&x, &l.self_norm, eps)?,
            None => be.rms_norm(&x, &self.dec_norm, eps)?,
        };
        for (i, layer) in self.dec_layers.iter().enumerate() {
            let sa = &layer.self_attn;
            let (kc, vc) = (&mut st.self_k[i], &mut st.self_v[i]);
            if skip_last && i + 1 == n_layers {
                be.project_kv(&a, &sa.k, &sa.v, kc, vc, t * st.cap)?;
                return Ok(None);
            }
            let q = be.project_qkv(&a, &sa.q, &sa.k, &sa.v, kc, vc, t * st.cap)?;
            let keys = KeyMap::Gather {
                per_row: t + 1,
                stride: positions,
                index: inputs.ancestry,
            };
            let att = be.attention(&q, &st.self_k[i], &st.self_v[i], self.cfg.n_heads, keys)?;
            let o = be.matmul(&att, &layer.self_attn.o)?;
            let c = be.add_rms_norm(&mut x, &o, &layer.cross_norm, eps)?;
            let q = be.matmul(&c, &layer.cross_attn.q)?;
            let att = be.attention(
                &q,
                &st.cross_k[i],
                &st.cross_v[i],
                self.cfg.n_heads,
                KeyMap::Spans(&spans),
            )?;
            let o = be.matmul(&att, &layer.cross_attn.o)?;
            let f = be.add_rms_norm(&mut x, &o, &layer.ffn_norm, eps)?;
            let key = format!("dec.{i}");
            let next = match self.dec_layers.get(i + 1) {
                Some(l) => &l.self_norm,
                // An unscored slot's output is never read (its routes may be).
                None if slot == big_l => {
                    self.feed_forward(&f, &layer.ffn, key, &mut routes)?;
                    return Ok(None);
                }
                None => &self.dec_norm,
            };
            a = self.feed_forward_add_norm(&mut x, &f, &layer.ffn, key, &mut routes, next)?;
        }
        if slot == big_l {
            return Ok(None);
        }
        let logits = be.matmul(&a, &self.head[slot])?;
        Ok(Some(be.log_softmax(&logits)?))
    }

    /// Teacher-forced log-probs `[m·L, K]` of the target items (catalog rows) given a
    /// history: the parity check against the reference.
    pub fn teacher_forced(
        &self,
        history: &[usize],
        targets: &[usize],
        mut routes: Option<&mut RouteLog>,
    ) -> Result<Vec<f32>> {
        let be = &self.backend;
        let big_l = self.cfg.n_levels;
        if targets.len() != self.cfg.session_len {
            return Err(Error::request(format!(
                "{} target items, expected session_len {}",
                targets.len(),
                self.cfg.session_len
            )));
        }
        let enc = self.encode(history, routes.as_deref_mut())?;
        let mut st = self.start_decode(&[&enc], 1)?;
        let mut out = Vec::new();
        // One beam in cache row 0 of every position: its ancestry is 0, 1, 2, ...
        let ancestry = be.ids(&(0..self.cfg.dec_len() as u32).collect::<Vec<_>>())?;
        for t in 0..self.cfg.dec_len() {
            let (item, slot) = (t / (big_l + 1), t % (big_l + 1));
            let code = if slot == 0 {
                0
            } else {
                self.file.catalog.sid(targets[item])[slot - 1]
            };
            let codes = be.ids(&[code])?;
            let inputs = BeamInputs {
                codes: &codes,
                ancestry: &ancestry,
            };
            if let Some(lp) = self.decode_step(&mut st, t, &inputs, &[0], routes.as_deref_mut())? {
                out.extend(be.download(&lp)?);
            }
        }
        Ok(out)
    }
}
