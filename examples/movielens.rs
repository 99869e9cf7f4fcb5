//! A first look at the engine with its built-in model: OneRec trained on MovieLens-100K
//! (`reference/train/run_all.py`, figures in `reports/movielens.md`).
//!
//! ```sh
//! cargo run --release --example movielens              # a fan of the Star Wars trilogy
//! cargo run --release --example movielens -- 1,71,588  # your own history (MovieLens ids)
//! python3 reference/train/data.py                      # optional: fetch titles
//! ```
//!
//! Steps: load the model, describe it, ask for sessions for one user, read them.

#[path = "../src/default_model.rs"]
mod default_model;

use anyhow::{Context, Result};
use onerec_engine::{BackendKind, Engine, Request};
use std::sync::Arc;

fn main() -> Result<()> {
    // 1. The model. It is compiled into the program (no file to find), and the engine
    //    reads its quantised weights in place.
    let file = default_model::open().context("opening the built-in model")?;
    let c = file.config.clone();
    println!(
        "OneRec: d_model {}, {} encoder + {} decoder layers, decoder MoE with {} experts (top {}),\n\
         items named by {} codes out of {} (semantic IDs), sessions of {} items, {} items in the catalog\n",
        c.d_model, c.n_enc_layers, c.n_dec_layers, c.n_experts, c.top_k, c.n_levels, c.codebook_size,
        c.session_len, file.catalog.len()
    );
    let engine = Engine::from_file(Arc::new(file), BackendKind::Cpu)?;

    // 2. A user: the items they watched, oldest first (MovieLens item ids). The encoder
    //    keeps the newest `max_history` of them.
    let history: Vec<u64> = match std::env::args().nth(1) {
        Some(arg) => arg
            .split(',')
            .map(|t| {
                t.trim()
                    .parse()
                    .with_context(|| format!("`{t}` is not an item id"))
            })
            .collect::<Result<_>>()?,
        None => vec![50, 172, 181],
    };
    let titles = default_model::titles();
    let name = |id: u64| {
        titles
            .as_ref()
            .and_then(|t| t.get(&id).cloned())
            .unwrap_or_else(|| format!("item {id}"))
    };
    println!("history:");
    for &id in &history {
        println!("  {}", name(id));
    }

    // 3. The request: the decoder writes a whole session, code by code, keeping the best
    //    `beam` partial sessions; codes that lead to no catalog item are never chosen, and
    //    `exclude_history` keeps what the user has seen out of the answer.
    let request = Request::builder(history)
        .beam(32)
        .results(3)
        .exclude_history(true)
        .build();
    let response = engine.recommend(std::slice::from_ref(&request))?.remove(0);

    // 4. The answer: the best sessions, each `session_len` distinct items in the order the
    //    model would show them. The score is the session's log-probability under the model
    //    (the sum of its codes' log-probabilities), so exp(score) compares sessions.
    for (i, s) in response.sessions.iter().enumerate() {
        println!("\nsession {} (log-probability {:.3})", i + 1, s.score);
        for (id, sid) in s.items.iter().zip(&s.sids) {
            // Items whose semantic IDs share a first code sit close in the embedding
            // space the tokenizer clustered (content + what users watch together).
            println!("  {:<55} semantic id {:?}", name(*id), sid);
        }
    }
    if titles.is_none() {
        println!(
            "\n(ids only: `python3 reference/train/data.py` fetches MovieLens-100K for titles)"
        );
    }
    Ok(())
}
