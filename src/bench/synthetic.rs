//! Random models of a named size, built in memory (no PyTorch): the presets of
//! benches/synthetic.py, so `onerec bench --synthetic medium` measures the issue's
//! configurations anywhere.

use anyhow::{bail, Result};
use onerec_engine::format::quant::encode;
use onerec_engine::model_file::TensorEntry;
use onerec_engine::tensor::{Blob, DType};
use onerec_engine::{schema, Config, ModelFile};
use std::collections::HashMap;
use std::sync::Arc;

pub const PRESETS: &[&str] = &["tiny", "small", "medium"];

/// The config and catalog size of a preset.
pub fn preset(name: &str) -> Result<(Config, usize)> {
    #[allow(clippy::too_many_arguments)]
    fn cfg(
        d: usize,
        heads: usize,
        layers: usize,
        d_ff: usize,
        experts: usize,
        d_expert: usize,
        codes: usize,
        hist: usize,
    ) -> Config {
        Config {
            d_model: d,
            n_heads: heads,
            n_enc_layers: layers,
            n_dec_layers: layers,
            d_ff,
            n_experts: experts,
            top_k: 2,
            d_expert,
            moe_enc_layers: vec![],
            moe_dec_layers: (0..layers).collect(),
            n_levels: 3,
            codebook_size: codes,
            session_len: 5,
            max_history: hist,
            rms_eps: 1e-6,
            reward: None,
        }
    }
    Ok(match name {
        // The paper's small model (issue 12's "medium").
        "medium" => (cfg(512, 8, 4, 2048, 24, 1024, 8192, 256), 100_000),
        "small" => (cfg(128, 4, 4, 512, 8, 256, 1024, 256), 50_000),
        "tiny" => (cfg(64, 4, 2, 128, 4, 64, 256, 64), 5_000),
        other => bail!(
            "unknown synthetic model `{other}` (expected {})",
            PRESETS.join(", ")
        ),
    })
}

/// xorshift64*: reproducible values without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [-1, 1).
    fn sym(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A random model: weights uniform with variance 1/fan-in (norms 1), item ids
/// `1..=items`, unique SIDs spread over the code space by an odd multiplier.
pub fn model(name: &str) -> Result<ModelFile> {
    let (config, items) = preset(name)?;
    let (l, k) = (config.n_levels, config.codebook_size);
    let space = (k as u64).pow(l as u32);
    if items as u64 > space {
        bail!("{name}: {items} items do not fit {k}^{l} SIDs");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parts: Vec<(String, DType, Vec<usize>, Vec<u8>)> = Vec::new();
    for (tname, shape) in schema::weight_shapes(&config) {
        let n: usize = shape.iter().product();
        let fan_in = *shape.last().unwrap_or(&1);
        let vals: Vec<f32> = if shape.len() == 1 {
            vec![1.0; n]
        } else {
            let a = (3.0 / fan_in as f32).sqrt();
            (0..n).map(|_| a * rng.sym()).collect()
        };
        let bytes = encode(&tname, DType::F32, &shape, &vals)?;
        parts.push((tname, DType::F32, shape, bytes));
    }
    // Index i ↦ (i · mult) mod space is a bijection for an odd multiplier coprime to
    // the space; the codes are the digits base k.
    let mult = (0..)
        .map(|i| 0x9e37_79b9u64 + 2 * i)
        .find(|m| gcd(*m, space) == 1)
        .unwrap_or(1);
    let mut ids = Vec::with_capacity(items * 8);
    let mut sids = Vec::with_capacity(items * l * 4);
    for i in 0..items as u64 {
        ids.extend_from_slice(&(i as i64 + 1).to_le_bytes());
        let mut v = ((i as u128 * mult as u128) % space as u128) as u64;
        let mut digits = vec![0i32; l];
        for d in digits.iter_mut().rev() {
            *d = (v % k as u64) as i32;
            v /= k as u64;
        }
        for d in digits {
            sids.extend_from_slice(&d.to_le_bytes());
        }
    }
    parts.push((
        schema::CATALOG_ITEM_IDS.into(),
        DType::I64,
        vec![items],
        ids,
    ));
    parts.push((
        schema::CATALOG_SIDS.into(),
        DType::I32,
        vec![items, l],
        sids,
    ));
    from_parts(config, parts, format!("synthetic:{name}"))
}

/// One in-memory blob holding every tensor at a 64-byte aligned offset.
pub fn from_parts(
    config: Config,
    parts: Vec<(String, DType, Vec<usize>, Vec<u8>)>,
    source: String,
) -> Result<ModelFile> {
    let total: usize = parts.iter().map(|p| p.3.len().next_multiple_of(64)).sum();
    let mut blob = Vec::with_capacity(total);
    let mut names = Vec::new();
    let mut tensors = HashMap::new();
    for (name, dtype, shape, bytes) in parts {
        let start = blob.len();
        blob.extend_from_slice(&bytes);
        let end = blob.len();
        blob.resize(end.next_multiple_of(64), 0);
        names.push(name.clone());
        tensors.insert(
            name,
            TensorEntry {
                dtype,
                shape,
                start,
                end,
            },
        );
    }
    Ok(ModelFile::from_parts(
        config,
        Arc::new(Blob::Owned(blob)),
        names,
        tensors,
        source,
    )?)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
