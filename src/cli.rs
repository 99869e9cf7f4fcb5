//! Command-line arguments and the commands they run.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use onerec_engine::{BackendKind, Engine, Request};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "onerec",
    version,
    about = "OneRec generative recommendation engine"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Recommend sessions of items for one user's history.
    Recommend(RecommendArgs),
    /// Print a model's config, catalog size and tensors; `--verify` checks every byte.
    Inspect(crate::inspect::InspectArgs),
    /// List a model's catalog, or add, remove or re-enable items without touching the weights.
    Catalog(crate::catalog_cmd::CatalogArgs),
    /// Time a grid of backend × weight type × beam × history × batch (a llama-bench).
    Bench(crate::bench::BenchArgs),
}

#[derive(clap::Args, Debug)]
struct RecommendArgs {
    /// Checkpoint directory (config.json + model.safetensors) or model file (onerec-quantize);
    /// without it, the built-in model trained on MovieLens-100K (item ids = MovieLens ids).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Item ids of the user's history, oldest first, comma-separated.
    #[arg(long)]
    history: String,
    /// Beam width.
    #[arg(long, default_value_t = 16)]
    beam: usize,
    /// Sessions to return (at most the beam width).
    #[arg(long, default_value_t = 5)]
    results: usize,
    /// Item ids that must not be recommended, comma-separated.
    #[arg(long, default_value = "")]
    exclude: String,
    /// Do not recommend items of the history.
    #[arg(long)]
    exclude_history: bool,
    /// auto, cpu, wgpu or cuda.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Print the backend in use on stderr.
    #[arg(long)]
    verbose: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Recommend(a) => recommend(a),
        Command::Inspect(a) => crate::inspect::inspect(a),
        Command::Catalog(a) => crate::catalog_cmd::run(a),
        Command::Bench(a) => crate::bench::bench(a),
    }
}

/// Parses `"1,2, 3"`; an empty string is an empty list.
fn parse_ids(what: &str, s: &str) -> Result<Vec<u64>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u64>()
                .with_context(|| format!("{what}: `{t}` is not an item id (an unsigned integer)"))
        })
        .collect()
}

fn recommend(a: RecommendArgs) -> Result<()> {
    let backend: BackendKind = a.backend.parse()?;
    let history = parse_ids("--history", &a.history)?;
    let exclude = parse_ids("--exclude", &a.exclude)?;
    let engine = match &a.model {
        Some(model) => {
            Engine::load(model, backend).with_context(|| format!("loading {}", model.display()))?
        }
        // No --model: the built-in MovieLens-100K model (src/default_model.rs).
        None => {
            let file = crate::default_model::open().context("opening the built-in model")?;
            Engine::from_file(std::sync::Arc::new(file), backend)
                .context("loading the built-in model")?
        }
    };
    if a.verbose {
        eprintln!("backend: {}", engine.describe_backend());
    }
    let request = Request {
        history,
        beam: a.beam,
        results: a.results,
        exclude,
        exclude_history: a.exclude_history,
    };
    let response = engine.recommend(std::slice::from_ref(&request))?.remove(0);
    let titles = if a.json || a.model.is_some() {
        None
    } else {
        crate::default_model::titles()
    };
    if a.json {
        println!("{}", crate::output::json(&response));
    } else if let Some(titles) = &titles {
        print!(
            "{}",
            crate::output::titled(&request.history, &response, titles)
        );
    } else {
        print!("{}", crate::output::table(&response));
        if a.model.is_none() {
            eprintln!("(item ids are MovieLens-100K ids; for titles, fetch the dataset: python3 reference/train/data.py)");
        }
    }
    Ok(())
}
