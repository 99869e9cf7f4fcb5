//! The tensors a MODEL_SPEC v1 checkpoint must hold, derived from its config.

use crate::config::Config;

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
    v
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
