//! The tensors a MODEL_SPEC v1 checkpoint must hold, derived from its config.

use crate::config::{Config, RewardConfig};

/// Every weight tensor's name and shape, in a stable order (catalog tensors excluded).
pub fn weight_shapes(c: &Config) -> Vec<(String, Vec<usize>)> {
    let (d, l, k) = (c.d_model, c.n_levels, c.codebook_size);
    let mut v: Vec<(String, Vec<usize>)> = Vec::new();
    let mut push = |name: String, shape: Vec<usize>| v.push((name, shape));
    push("enc.embed".into(), vec![l, k, d]);
    push("enc.pos".into(), vec![c.max_history, d]);
    for i in 0..c.n_enc_layers {
        let p = format!("enc.layers.{i}");
        push(format!("{p}.attn_norm"), vec![d]);
        for m in ["q", "k", "v", "o"] {
            push(format!("{p}.attn.{m}"), vec![d, d]);
        }
        push(format!("{p}.ffn_norm"), vec![d]);
        ffn_shapes(c, &p, c.enc_is_moe(i), &mut push);
    }
    push("enc.norm".into(), vec![d]);
    push("dec.bos".into(), vec![d]);
    push("dec.embed".into(), vec![l, k, d]);
    push("dec.pos".into(), vec![c.dec_len(), d]);
    for i in 0..c.n_dec_layers {
        let p = format!("dec.layers.{i}");
        for n in ["self_norm", "cross_norm", "ffn_norm"] {
            push(format!("{p}.{n}"), vec![d]);
        }
        for a in ["self_attn", "cross_attn"] {
            for m in ["q", "k", "v", "o"] {
                push(format!("{p}.{a}.{m}"), vec![d, d]);
            }
        }
        ffn_shapes(c, &p, c.dec_is_moe(i), &mut push);
    }
    push("dec.norm".into(), vec![d]);
    push("head".into(), vec![l, k, d]);
    if let Some(r) = &c.reward {
        reward_shapes(c, r, &mut push);
    }
    v
}

/// The optional reward model's tensors (docs/REWARD_MODEL.md, "Tensors").
fn reward_shapes(c: &Config, r: &RewardConfig, push: &mut impl FnMut(String, Vec<usize>)) {
    let (d, l, k) = (r.d_model, c.n_levels, c.codebook_size);
    let mut p = |name: &str, shape: Vec<usize>| push(format!("{REWARD_PREFIX}{name}"), shape);
    p("embed", vec![l, k, d]);
    p("hist_pos", vec![r.max_history, d]);
    p("sess_pos", vec![c.session_len, d]);
    p("hist_norm", vec![d]);
    p("target_norm", vec![d]);
    for m in ["q", "k", "v", "o"] {
        p(&format!("target.{m}"), vec![d, d]);
    }
    p("self_norm", vec![d]);
    for m in ["q", "k", "v", "o"] {
        p(&format!("self.{m}"), vec![d, d]);
    }
    p("ffn_norm", vec![d]);
    p("ffn.gate", vec![r.d_ff, d]);
    p("ffn.up", vec![r.d_ff, d]);
    p("ffn.down", vec![d, r.d_ff]);
    p("out_norm", vec![d]);
    p("head", vec![r.signals.len(), d]);
    p("head_bias", vec![r.signals.len()]);
}

/// Every reward-model tensor name starts with this.
pub const REWARD_PREFIX: &str = "reward.";

/// Reward tensors the quantize tool keeps in f32 whatever the target type: positions
/// (like the main model's role table in docs/REWARD_MODEL.md) and the head bias.
pub fn reward_keeps_f32(name: &str) -> bool {
    matches!(
        name.strip_prefix(REWARD_PREFIX),
        Some("hist_pos" | "sess_pos" | "head_bias")
    )
}

fn ffn_shapes(c: &Config, p: &str, moe: bool, push: &mut impl FnMut(String, Vec<usize>)) {
    let d = c.d_model;
    if moe {
        let (e, de) = (c.n_experts, c.d_expert);
        push(format!("{p}.moe.router"), vec![e, d]);
        push(format!("{p}.moe.gate"), vec![e, de, d]);
        push(format!("{p}.moe.up"), vec![e, de, d]);
        push(format!("{p}.moe.down"), vec![e, d, de]);
    } else {
        push(format!("{p}.ffn.gate"), vec![c.d_ff, d]);
        push(format!("{p}.ffn.up"), vec![c.d_ff, d]);
        push(format!("{p}.ffn.down"), vec![d, c.d_ff]);
    }
}

pub const CATALOG_ITEM_IDS: &str = "catalog.item_ids";
pub const CATALOG_SIDS: &str = "catalog.sids";
/// Optional: the tokenizer's centroids `[L, K, D]` (float), to give new items SIDs.
pub const CATALOG_CODEBOOKS: &str = "catalog.codebooks";
/// Optional: the embedding `[N, D]` (float) the tokenizer clustered, per catalog row.
pub const CATALOG_EMBEDDINGS: &str = "catalog.embeddings";
/// Optional: `[N]` I32, 1 where a catalog row is removed (kept for histories, never
/// recommended); absent means every item is active.
pub const CATALOG_REMOVED: &str = "catalog.removed";
/// Every catalog tensor: data, not weights (tools copy them as stored).
pub const CATALOG_TENSORS: [&str; 5] = [
    CATALOG_ITEM_IDS,
    CATALOG_SIDS,
    CATALOG_CODEBOOKS,
    CATALOG_EMBEDDINGS,
    CATALOG_REMOVED,
];
