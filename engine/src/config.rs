//! `config.json` of a MODEL_SPEC v1 checkpoint, parsed and validated.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Unknown fields are an error: MODEL_SPEC lists every field, and a misspelt optional
/// one (`top-k`) would otherwise silently fall back to its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub d_model: usize,
    pub n_heads: usize,
    pub n_enc_layers: usize,
    pub n_dec_layers: usize,
    #[serde(default)]
    pub d_ff: usize,
    #[serde(default)]
    pub n_experts: usize,
    #[serde(default)]
    pub top_k: usize,
    #[serde(default)]
    pub d_expert: usize,
    #[serde(default)]
    pub moe_enc_layers: Vec<usize>,
    #[serde(default)]
    pub moe_dec_layers: Vec<usize>,
    pub n_levels: usize,
    pub codebook_size: usize,
    pub session_len: usize,
    pub max_history: usize,
    pub rms_eps: f32,
    /// The optional reward model (docs/REWARD_MODEL.md v1); absent in most models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<RewardConfig>,
}

/// Signals a reward model may have (docs/REWARD_MODEL.md: 1..=16 names).
pub const MAX_REWARD_SIGNALS: usize = 16;

/// The `reward` object of config.json (docs/REWARD_MODEL.md, "config.json").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    pub d_model: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    pub max_history: usize,
    /// One name per engagement head.
    pub signals: Vec<String>,
    /// One weight per signal: `R = Σ_k weights[k] · r_k`.
    pub weights: Vec<f32>,
}

impl RewardConfig {
    /// Same limits as the main model's sizes (checked before anything is sized by them).
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::config(format!("`reward`: {m}")));
        for (name, v, limit) in [
            ("d_model", self.d_model, 1usize << 16),
            ("n_heads", self.n_heads, 1 << 10),
            ("d_ff", self.d_ff, 1 << 18),
            ("max_history", self.max_history, 1 << 16),
        ] {
            if v == 0 || v > limit {
                return err(format!("`{name}` = {v} must be in 1..={limit}"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return err(format!(
                "`d_model` ({}) must be a multiple of `n_heads` ({})",
                self.d_model, self.n_heads
            ));
        }
        let s = self.signals.len();
        if s == 0 || s > MAX_REWARD_SIGNALS {
            return err(format!(
                "{s} signals; a reward model has 1..={MAX_REWARD_SIGNALS}"
            ));
        }
        if self.weights.len() != s {
            return err(format!(
                "{} weights for {s} signals (one per signal)",
                self.weights.len()
            ));
        }
        if let Some(w) = self.weights.iter().find(|w| !w.is_finite()) {
            return err(format!("weight {w} is not finite"));
        }
        if let Some(n) = self.signals.iter().find(|n| n.is_empty() || n.len() > 64) {
            return err(format!("signal name `{n}` must have 1..=64 bytes"));
        }
        Ok(())
    }
}

impl Config {
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Config = serde_json::from_str(text).map_err(|e| Error::config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Decoder positions: `session_len` items of `[BOS, c_0 .. c_{L-1}]`.
    pub fn dec_len(&self) -> usize {
        self.session_len * (self.n_levels + 1)
    }

    pub fn enc_is_moe(&self, layer: usize) -> bool {
        self.moe_enc_layers.contains(&layer)
    }

    pub fn dec_is_moe(&self, layer: usize) -> bool {
        self.moe_dec_layers.contains(&layer)
    }

    /// Every size field with the largest value this engine accepts and why. The limits
    /// are far above any real OneRec model (MODEL_SPEC's paper scale: d_model 1024, 8
    /// heads, 8+8 layers, 24 experts top-2, 3 × 8192 codes, sessions of 5, 256 history
    /// items) and are checked before anything is sized from the config, so a few bytes
    /// of JSON cannot make the loader build huge tables.
    fn limits(&self) -> [(&'static str, usize, usize, &'static str); 12] {
        [
            (
                "d_model",
                self.d_model,
                1 << 16,
                "the widest transformers use 16K-32K",
            ),
            (
                "n_heads",
                self.n_heads,
                1 << 10,
                "models use at most a few hundred heads",
            ),
            (
                "n_enc_layers",
                self.n_enc_layers,
                256,
                "the deepest transformers have ~128 layers",
            ),
            (
                "n_dec_layers",
                self.n_dec_layers,
                256,
                "the deepest transformers have ~128 layers",
            ),
            (
                "d_ff",
                self.d_ff,
                1 << 18,
                "dense FFNs are a few times d_model",
            ),
            (
                "n_experts",
                self.n_experts,
                1 << 12,
                "the largest MoE models use a few hundred experts",
            ),
            ("top_k", self.top_k, 1 << 12, "at most n_experts"),
            (
                "d_expert",
                self.d_expert,
                1 << 18,
                "an expert is no wider than a dense FFN",
            ),
            (
                "n_levels",
                self.n_levels,
                16,
                "OneRec's semantic IDs have 3 levels",
            ),
            (
                "codebook_size",
                self.codebook_size,
                1 << 20,
                "OneRec uses 8192 codes per level",
            ),
            (
                "session_len",
                self.session_len,
                256,
                "OneRec generates sessions of 5-10 items",
            ),
            (
                "max_history",
                self.max_history,
                1 << 16,
                "lifelong encoders keep a few thousand items",
            ),
        ]
    }

    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("d_model", self.d_model),
            ("n_heads", self.n_heads),
            ("n_enc_layers", self.n_enc_layers),
            ("n_dec_layers", self.n_dec_layers),
            ("n_levels", self.n_levels),
            ("codebook_size", self.codebook_size),
            ("session_len", self.session_len),
            ("max_history", self.max_history),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(Error::config(format!("`{name}` must be > 0")));
            }
        }
        for (name, v, limit, why) in self.limits() {
            if v > limit {
                return Err(Error::config(format!(
                    "`{name}` = {v} is larger than {limit}, the limit of this engine ({why})"
                )));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::config(format!(
                "`d_model` ({}) must be a multiple of `n_heads` ({})",
                self.d_model, self.n_heads
            )));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return Err(Error::config(format!(
                "`rms_eps` must be a positive finite number, got {}",
                self.rms_eps
            )));
        }
        for (name, layers, n) in [
            ("moe_enc_layers", &self.moe_enc_layers, self.n_enc_layers),
            ("moe_dec_layers", &self.moe_dec_layers, self.n_dec_layers),
        ] {
            // Linear: a list longer than the layer count must repeat a layer or name one
            // that does not exist, so its length is checked before anything else.
            if layers.len() > n {
                return Err(Error::config(format!(
                    "`{name}` lists {} layers, but there are only {n}",
                    layers.len()
                )));
            }
            let mut seen = vec![false; n];
            for &l in layers.iter() {
                if l >= n {
                    return Err(Error::config(format!(
                        "`{name}` names layer {l}, but there are only {n} layers"
                    )));
                }
                if std::mem::replace(&mut seen[l], true) {
                    return Err(Error::config(format!("`{name}` lists layer {l} twice")));
                }
            }
        }
        let has_moe = !self.moe_enc_layers.is_empty() || !self.moe_dec_layers.is_empty();
        if has_moe {
            if self.n_experts == 0 || self.d_expert == 0 {
                return Err(Error::config(
                    "MoE layers need `n_experts` > 0 and `d_expert` > 0",
                ));
            }
            if self.top_k == 0 || self.top_k > self.n_experts {
                return Err(Error::config(format!(
                    "`top_k` ({}) must be in 1..=n_experts ({})",
                    self.top_k, self.n_experts
                )));
            }
        }
        let has_dense = self.moe_enc_layers.len() < self.n_enc_layers
            || self.moe_dec_layers.len() < self.n_dec_layers;
        if has_dense && self.d_ff == 0 {
            return Err(Error::config("dense FFN layers need `d_ff` > 0"));
        }
        if let Some(r) = &self.reward {
            r.validate()?;
        }
        Ok(())
    }
}
