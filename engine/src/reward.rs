//! The session reward model (docs/REWARD_MODEL.md v1), written once over the `Backend`
//! ops like the OneRec forward pass: the user's history and candidate sessions in, the
//! per-signal engagement `r_k` and the reward `R` of each session out.
//!
//! A batch holds pieces (one user's history and some of its sessions): the history rows
//! of every piece come first in one buffer, the session-item rows in another, and
//! attention reaches each piece's keys through spans, so the sessions of one piece share
//! its history K/V. The head's `[rows, S]` logits are read back once; the sigmoid, the
//! mean over the session and the weighted sum run on the host.

use crate::backend::{Backend, Ffn, KeyMap};
use crate::catalog::Catalog;
use crate::config::{Config, RewardConfig};
use crate::error::{Error, Result};
use crate::model::Attn;
use crate::model_file::ModelFile;
use crate::schema::REWARD_PREFIX;

/// Session-item rows one forward call holds at most: bounds the activations (a few KB a
/// row) whatever the beam, the batch and the session length. Larger work is split.
pub const MAX_REWARD_ROWS: usize = 4096;

/// The reward of one candidate session.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionReward {
    /// `R = Σ_k weights[k] · r_k`.
    pub reward: f32,
    /// `r_k`, one per signal in config order.
    pub signals: Vec<f32>,
}

/// One user's history and candidate sessions, as catalog rows.
#[derive(Debug, Clone, Copy)]
pub struct RewardInput<'a> {
    /// Oldest first; the newest `max_history` are read.
    pub history: &'a [usize],
    /// Each `session_len` catalog rows.
    pub sessions: &'a [Vec<u32>],
}

/// The reward model's weights, resident in one backend (the one the main model runs on).
pub struct RewardModel<B: Backend> {
    cfg: RewardConfig,
    levels: usize,
    session_len: usize,
    eps: f32,
    embed: Vec<B::Weight>,
    hist_pos: B::Weight,
    sess_pos: B::Weight,
    hist_norm: B::Weight,
    target_norm: B::Weight,
    target: Attn<B::Weight>,
    self_norm: B::Weight,
    self_attn: Attn<B::Weight>,
    ffn_norm: B::Weight,
    ffn: Ffn<B::Weight>,
    out_norm: B::Weight,
    head: B::Weight,
    head_bias: Vec<f32>,
}

/// A run of one user's sessions scored in one forward call.
struct Piece {
    user: usize,
    sessions: std::ops::Range<usize>,
}

impl<B: Backend> RewardModel<B> {
    /// The reward model of `file` made resident on `be`; `None` when the model has no
    /// reward section.
    pub fn load(be: &B, file: &ModelFile) -> Result<Option<Self>> {
        let Some(cfg) = file.config.reward.clone() else {
            return Ok(None);
        };
        let main: &Config = &file.config;
        let name = |n: &str| format!("{REWARD_PREFIX}{n}");
        let w = |n: &str| -> Result<B::Weight> { be.weight(&file.tensor(&name(n))?.as_matrix()) };
        // The reward model projects keys and values with plain products (no cache).
        let attn = |p: &str| {
            Attn::load(
                p,
                w,
                |names: &[&str]| names.iter().map(|n| w(n)).collect(),
                false,
            )
        };
        let embed_t = file.tensor(&name("embed"))?;
        let embed = (0..main.n_levels)
            .map(|l| be.weight(&embed_t.slice3(l)?))
            .collect::<Result<Vec<_>>>()?;
        let head_bias = file.tensor(&name("head_bias"))?.as_matrix().to_f32()?;
        if head_bias.len() != cfg.signals.len() {
            return Err(Error::tensor(
                &name("head_bias"),
                format!(
                    "{} values for {} signals",
                    head_bias.len(),
                    cfg.signals.len()
                ),
            ));
        }
        Ok(Some(RewardModel {
            levels: main.n_levels,
            session_len: main.session_len,
            eps: main.rms_eps,
            embed,
            hist_pos: w("hist_pos")?,
            sess_pos: w("sess_pos")?,
            hist_norm: w("hist_norm")?,
            target_norm: w("target_norm")?,
            target: attn("target")?,
            self_norm: w("self_norm")?,
            self_attn: attn("self")?,
            ffn_norm: w("ffn_norm")?,
            ffn: Ffn {
                gate: w("ffn.gate")?,
                up: w("ffn.up")?,
                down: w("ffn.down")?,
            },
            out_norm: w("out_norm")?,
            head: w("head")?,
            head_bias,
            cfg,
        }))
    }

    pub fn config(&self) -> &RewardConfig {
        &self.cfg
    }

    /// Bytes one forward call may need at most (activations of [`MAX_REWARD_ROWS`]
    /// session rows and as many history rows, or one history of `max_history`; f32),
    /// for the memory budget.
    pub fn working_bytes(cfg: &RewardConfig, session_len: usize) -> u64 {
        let rows = MAX_REWARD_ROWS.max(cfg.max_history) as u64;
        let (d, f, h) = (cfg.d_model as u64, cfg.d_ff as u64, cfg.n_heads as u64);
        let keys = cfg.max_history.max(session_len) as u64;
        // Two row sets (history, sessions) of ~10 d-wide buffers, SwiGLU intermediates,
        // attention scores per head.
        rows * 4 * (2 * 10 * d + 3 * f + h * keys + cfg.signals.len() as u64)
    }

    /// The rewards of every session of every user, in input order.
    pub fn score(
        &self,
        be: &B,
        cat: &Catalog,
        users: &[RewardInput<'_>],
    ) -> Result<Vec<Vec<SessionReward>>> {
        let m = self.session_len;
        for (g, u) in users.iter().enumerate() {
            if u.history.is_empty() {
                return Err(Error::request("the history is empty"));
            }
            if let Some(s) = u.sessions.iter().find(|s| s.len() != m) {
                return Err(Error::internal(format!(
                    "reward: a session of {} items for request {g} (session_len {m})",
                    s.len()
                )));
            }
            if let Some(&r) = u
                .sessions
                .iter()
                .flatten()
                .find(|&&r| r as usize >= cat.len())
            {
                return Err(Error::internal(format!(
                    "reward: catalog row {r} of {} (request {g})",
                    cat.len()
                )));
            }
        }
        // Pieces of at most MAX_REWARD_ROWS / m sessions, batched up to MAX_REWARD_ROWS
        // session rows and as many history rows (a single piece's history is at most
        // max_history rows, as the encoder's is).
        let per_piece = (MAX_REWARD_ROWS / m).max(1);
        let n_r = self.cfg.max_history;
        let mut batches: Vec<Vec<Piece>> = vec![Vec::new()];
        let (mut rows, mut hist) = (0, 0);
        for (g, u) in users.iter().enumerate() {
            let h = u.history.len().min(n_r);
            let mut a = 0;
            while a < u.sessions.len() {
                let b = (a + per_piece).min(u.sessions.len());
                let full = rows + (b - a) * m > MAX_REWARD_ROWS || hist + h > MAX_REWARD_ROWS;
                if full && batches.last().is_some_and(|b| !b.is_empty()) {
                    batches.push(Vec::new());
                    (rows, hist) = (0, 0);
                }
                rows += (b - a) * m;
                hist += h;
                if let Some(last) = batches.last_mut() {
                    last.push(Piece {
                        user: g,
                        sessions: a..b,
                    });
                }
                a = b;
            }
        }
        let mut out: Vec<Vec<SessionReward>> = users
            .iter()
            .map(|u| Vec::with_capacity(u.sessions.len()))
            .collect();
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            let logits = self.forward(be, cat, users, batch)?;
            let s = self.cfg.signals.len();
            let mut at = 0;
            for p in batch {
                for _ in p.sessions.clone() {
                    let rows = logits.get(at..at + m * s).ok_or_else(|| {
                        Error::internal("reward: the head returned fewer rows than asked")
                    })?;
                    out[p.user].push(self.session_reward(rows));
                    at += m * s;
                }
            }
        }
        Ok(out)
    }

    /// Steps 6-7 of the forward pass from one session's `[m, S]` head logits (a
    /// non-finite value is the answer stage's to refuse, for its request alone).
    fn session_reward(&self, logits: &[f32]) -> SessionReward {
        let s = self.cfg.signals.len();
        let m = self.session_len;
        let mut signals = vec![0f32; s];
        for row in logits.chunks_exact(s) {
            for ((acc, &z), &b) in signals.iter_mut().zip(row).zip(&self.head_bias) {
                *acc += 1.0 / (1.0 + (-(z + b)).exp());
            }
        }
        for v in &mut signals {
            *v /= m as f32;
        }
        let reward = signals
            .iter()
            .zip(&self.cfg.weights)
            .fold(0f32, |a, (r, w)| a + r * w);
        SessionReward { reward, signals }
    }

    /// Steps 1-5 and the head for one batch of pieces: `[session rows, S]` logits.
    fn forward(
        &self,
        be: &B,
        cat: &Catalog,
        users: &[RewardInput<'_>],
        batch: &[Piece],
    ) -> Result<Vec<f32>> {
        let (n_r, m, eps) = (self.cfg.max_history, self.session_len, self.eps);
        let heads = self.cfg.n_heads;
        // History rows (newest n_r of each piece's user, right-aligned positions).
        let mut hist_rows: Vec<usize> = Vec::new();
        let mut hist_pos: Vec<u32> = Vec::new();
        let mut hist_span: Vec<(u32, u32)> = Vec::with_capacity(batch.len());
        // Session-item rows, their positions, and the spans their queries read.
        let mut sess_rows: Vec<usize> = Vec::new();
        let mut sess_pos: Vec<u32> = Vec::new();
        let mut target_spans: Vec<(u32, u32)> = Vec::new();
        let mut self_spans: Vec<(u32, u32)> = Vec::new();
        for p in batch {
            let u = &users[p.user];
            let hist = &u.history[u.history.len().saturating_sub(n_r)..];
            let span = (hist_rows.len() as u32, hist.len() as u32);
            hist_span.push(span);
            hist_pos.extend((0..hist.len()).map(|j| (n_r - hist.len() + j) as u32));
            hist_rows.extend_from_slice(hist);
            for s in &u.sessions[p.sessions.clone()] {
                let row0 = sess_rows.len() as u32;
                for (i, &item) in s.iter().enumerate() {
                    sess_rows.push(item as usize);
                    sess_pos.push(i as u32);
                    target_spans.push(span);
                    self_spans.push((row0, m as u32));
                }
            }
        }
        let u = self.embed_rows(be, cat, &hist_rows, &self.hist_pos, &hist_pos)?;
        let u = be.rms_norm(&u, &self.hist_norm, eps)?;
        let mut x = self.embed_rows(be, cat, &sess_rows, &self.sess_pos, &sess_pos)?;
        // Target-aware attention: each session item queries its user's history.
        let q = be.rms_norm(&x, &self.target_norm, eps)?;
        let a = self.attend(be, &self.target, &q, &u, &target_spans, heads)?;
        be.add_assign(&mut x, &a)?;
        // Bidirectional self-attention among the items of each session.
        let h = be.rms_norm(&x, &self.self_norm, eps)?;
        let a = self.attend(be, &self.self_attn, &h, &h, &self_spans, heads)?;
        be.add_assign(&mut x, &a)?;
        let h = be.rms_norm(&x, &self.ffn_norm, eps)?;
        be.add_assign(&mut x, &be.ffn(&h, &self.ffn)?)?;
        let y = be.rms_norm(&x, &self.out_norm, eps)?;
        be.download(&be.matmul(&y, &self.head)?)
    }

    /// `Σ_l embed[l][c_l] + pos[p]` for catalog rows.
    fn embed_rows(
        &self,
        be: &B,
        cat: &Catalog,
        items: &[usize],
        pos_table: &B::Weight,
        pos: &[u32],
    ) -> Result<B::Buf> {
        let codes: Vec<B::Ids> = (0..self.levels)
            .map(|l| be.ids(&items.iter().map(|&i| cat.sid(i)[l]).collect::<Vec<_>>()))
            .collect::<Result<_>>()?;
        let pos = be.ids(pos)?;
        let mut parts: Vec<(&B::Weight, &B::Ids)> = self.embed.iter().zip(&codes).collect();
        parts.push((pos_table, &pos));
        be.gather_sum(&parts, items.len())
    }

    /// `Attn(x_q, x_kv)` of MODEL_SPEC with per-row key spans into `x_kv`.
    fn attend(
        &self,
        be: &B,
        w: &Attn<B::Weight>,
        x_q: &B::Buf,
        x_kv: &B::Buf,
        spans: &[(u32, u32)],
        heads: usize,
    ) -> Result<B::Buf> {
        let q = be.matmul(x_q, &w.q)?;
        let k = be.matmul(x_kv, &w.k)?;
        let v = be.matmul(x_kv, &w.v)?;
        let att = be.attention(&q, &k, &v, heads, KeyMap::Spans(spans))?;
        be.matmul(&att, &w.o)
    }
}
