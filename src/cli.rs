//! Command-line arguments and the commands they run.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use onerec_engine::{BackendKind, Engine, Request};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "onerec", version, about = "OneRec generative recommendation engine")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Recommend sessions of items for one user's history.
    Recommend(RecommendArgs),
}

#[derive(clap::Args, Debug)]
struct RecommendArgs {
    /// Checkpoint directory (config.json + model.safetensors).
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
    }
}

/// Parses `"1,2, 3"`; an empty string is an empty list.
fn parse_ids(what: &str, s: &str) -> Result<Vec<u64>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<u64>().with_context(|| format!("{what}: `{t}` is not an item id (an unsigned integer)")))
        .collect()
}

fn recommend(a: RecommendArgs) -> Result<()> {
    let backend: BackendKind = a.backend.parse()?;
    let Some(model) = a.model else {
        bail!("--model is required: give a checkpoint directory");
    };
    let history = parse_ids("--history", &a.history)?;
    let exclude = parse_ids("--exclude", &a.exclude)?;
    let engine = Engine::load(&model, backend).with_context(|| format!("loading {}", model.display()))?;
    if a.verbose {
        eprintln!("backend: {}", engine.describe_backend());
    }
    let request = Request { history, beam: a.beam, results: a.results, exclude, exclude_history: a.exclude_history };
    let response = engine.recommend(std::slice::from_ref(&request))?.remove(0);
    if a.json {
        println!("{}", crate::output::json(&response));
    } else {
        print!("{}", crate::output::table(&response));
    }
    Ok(())
}
