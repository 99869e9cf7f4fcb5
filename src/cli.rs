//! Command-line arguments and the commands they run. A new subcommand is one variant of
//! [`Command`], one line in [`run`] and its own module.

use crate::ids;
use crate::model_args::ModelArgs;
use crate::output::{self, JsonStyle};
use anyhow::Result;
use clap::{Parser, Subcommand};
use onerec_engine::Request;
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
    /// Recommend for many users: JSON lines in (one request per line), JSON lines out.
    Batch(crate::batch::BatchArgs),
    /// Print a model's config, catalog size and tensors; `--verify` checks every byte.
    Inspect(crate::inspect::InspectArgs),
    /// List a model's catalog, or add, remove or re-enable items without touching the weights.
    Catalog(crate::catalog_cmd::CatalogArgs),
    /// Time a grid of backend × weight type × beam × history × batch (a llama-bench).
    Bench(crate::bench::BenchArgs),
    /// List the GPU adapters (index, type, backend, name, driver) the wgpu backend can use.
    Devices(crate::devices::DevicesArgs),
    /// Turn a safetensors checkpoint with other tensor names into this engine's checkpoint.
    Convert(crate::convert::ConvertArgs),
}

#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("histories").required(true).args(["history", "history_file"]))]
struct RecommendArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Item ids of the user's history, oldest first, comma-separated.
    #[arg(long)]
    history: Option<String>,
    /// File of history ids (comma or whitespace separated, oldest first); `-` reads
    /// standard input. For histories too long for one argument.
    #[arg(long, value_name = "PATH")]
    history_file: Option<PathBuf>,
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
    /// Order the surviving sessions by the model's reward model (docs/REWARD_MODEL.md).
    #[arg(long)]
    rerank: bool,
    /// Keep sessions that hold the same items as a better one (by default dropped).
    #[arg(long)]
    keep_permutations: bool,
    /// Also list the best K single items (at most the beam width): the beams right
    /// after the first item.
    #[arg(long, value_name = "K", default_value_t = 0)]
    items: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// With --json: item ids as strings (JavaScript loses digits of ids above 2^53).
    #[arg(long, requires = "json")]
    ids_as_strings: bool,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Recommend(a) => recommend(a),
        Command::Batch(a) => crate::batch::run(a),
        Command::Inspect(a) => crate::inspect::inspect(a),
        Command::Catalog(a) => crate::catalog_cmd::run(a),
        Command::Bench(a) => crate::bench::bench(a),
        Command::Convert(a) => crate::convert::run(a),
        Command::Devices(a) => crate::devices::run(a),
    }
}

fn recommend(a: RecommendArgs) -> Result<()> {
    let history = match (&a.history, &a.history_file) {
        (Some(h), _) => ids::parse_list("--history", h)?,
        (None, Some(path)) => ids::read_list("--history-file", path)?,
        (None, None) => anyhow::bail!("give --history or --history-file"),
    };
    let exclude = ids::parse_list("--exclude", &a.exclude)?;
    let engine = a.model.load()?;
    let request = Request::builder(history)
        .beam(a.beam)
        .results(a.results)
        .exclude(exclude)
        .exclude_history(a.exclude_history)
        .rerank(a.rerank)
        .keep_permutations(a.keep_permutations)
        .items(a.items)
        .build();
    let response = engine.recommend(std::slice::from_ref(&request))?.remove(0);
    let builtin = a.model.model.is_none();
    if a.json {
        let style = JsonStyle {
            ids_as_strings: a.ids_as_strings,
        };
        println!("{}", output::json(&response, style));
    } else if let Some(titles) = builtin.then(crate::default_model::titles).flatten() {
        print!("{}", output::titled(&request.history, &response, &titles));
    } else {
        print!("{}", output::table(&response));
        if builtin {
            eprintln!("(item ids are MovieLens-100K ids; for titles, fetch the dataset: python3 reference/train/data.py)");
        }
    }
    Ok(())
}
