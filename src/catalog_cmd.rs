//! `onerec catalog list|add|remove|enable`: a model's catalog, changed without touching
//! the weights. The work (validation, SID assignment, file writing) is the engine's.

use anyhow::{bail, Context, Result};
use onerec_engine::catalog::{
    file, model_out, update, CatalogContents, CatalogUpdate, NewItem, SidSource,
};
use onerec_engine::ModelFile;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct CatalogArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Print every item: id, SID codes, and whether it is removed (tab-separated).
    List {
        #[command(flatten)]
        src: Source,
        /// One JSON object per line instead (`{"id":..,"sid":[..],"removed":..}`).
        #[arg(long)]
        json: bool,
    },
    /// Add new items from JSON lines: `{"id": 123, "embedding": [..]}` (SID assigned
    /// with the model's codebooks) or `{"id": 123, "sid": [c0, c1, ..]}`.
    Add {
        #[command(flatten)]
        src: Source,
        /// The JSON-lines file (`-`: standard input).
        #[arg(long)]
        items: PathBuf,
        #[command(flatten)]
        out: Output,
    },
    /// Stop recommending items (they keep their SIDs and may stay in histories).
    Remove {
        #[command(flatten)]
        src: Source,
        /// Item ids, comma-separated.
        #[arg(long)]
        ids: String,
        #[command(flatten)]
        out: Output,
    },
    /// Recommend removed items again.
    Enable {
        #[command(flatten)]
        src: Source,
        /// Item ids, comma-separated.
        #[arg(long)]
        ids: String,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(clap::Args, Debug)]
struct Source {
    /// Model file (or checkpoint directory) whose catalog, codebooks and config apply.
    #[arg(long)]
    model: PathBuf,
    /// Start from this catalog file instead of the model's own catalog.
    #[arg(long)]
    catalog: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
struct Output {
    /// Write the updated catalog as a catalog file (docs/CATALOG.md).
    #[arg(long)]
    write_catalog: Option<PathBuf>,
    /// Write a model file with the updated catalog (weights copied byte for byte).
    #[arg(long)]
    write_model: Option<PathBuf>,
}

pub fn run(a: CatalogArgs) -> Result<()> {
    match a.action {
        Action::List { src, json } => list(&src, json),
        Action::Add { src, items, out } => {
            let add = read_items(&items)?;
            change(
                &src,
                &out,
                CatalogUpdate {
                    add,
                    ..Default::default()
                },
            )
        }
        Action::Remove { src, ids, out } => {
            let remove = parse_ids(&ids)?;
            change(
                &src,
                &out,
                CatalogUpdate {
                    remove,
                    ..Default::default()
                },
            )
        }
        Action::Enable { src, ids, out } => {
            let enable = parse_ids(&ids)?;
            change(
                &src,
                &out,
                CatalogUpdate {
                    enable,
                    ..Default::default()
                },
            )
        }
    }
}

fn load(src: &Source) -> Result<(ModelFile, CatalogContents)> {
    let file =
        ModelFile::open(&src.model).with_context(|| format!("loading {}", src.model.display()))?;
    let mut contents = file.catalog_contents()?;
    if let Some(path) = &src.catalog {
        let (cat, removed) = file::read(path)?;
        if cat.levels() != file.config.n_levels || cat.codebook_size() != file.config.codebook_size
        {
            bail!(
                "{}: SIDs of {} levels x {} codes, the model has {} x {}",
                path.display(),
                cat.levels(),
                cat.codebook_size(),
                file.config.n_levels,
                file.config.codebook_size
            );
        }
        contents = CatalogContents::new(cat, removed, contents.codebooks.clone())?;
    }
    Ok((file, contents))
}

fn list(src: &Source, json: bool) -> Result<()> {
    let (_, c) = load(src)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for r in 0..c.catalog.len() {
        let (id, sid, removed) = (c.catalog.item_id(r), c.catalog.sid(r), c.is_removed(r));
        if json {
            let v = serde_json::json!({"id": id, "sid": sid, "removed": removed});
            writeln!(out, "{v}")?;
        } else {
            let codes: Vec<String> = sid.iter().map(u32::to_string).collect();
            let state = if removed { "removed" } else { "active" };
            writeln!(out, "{id}\t{}\t{state}", codes.join(","))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn change(src: &Source, out: &Output, up: CatalogUpdate) -> Result<()> {
    let (file, cur) = load(src)?;
    let next = update::apply(&cur, &up)?;
    if let Some(path) = &out.write_catalog {
        file::write(path, &next)?;
    } else if let Some(path) = &out.write_model {
        model_out::write_model(&file, &next, path)?;
    }
    // New items' SIDs, so a caller learns what the tokenizer rule gave them.
    for a in &up.add {
        let r = next.catalog.index_of(a.id).unwrap_or_default();
        let v = serde_json::json!({"id": a.id, "sid": next.catalog.sid(r)});
        println!("{v}");
    }
    eprintln!(
        "catalog: {} items, {} active",
        next.catalog.len(),
        next.active_len()
    );
    Ok(())
}

/// Parses the new items' JSON lines; errors name the line.
fn read_items(path: &Path) -> Result<Vec<NewItem>> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let f =
            std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut items = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(&line).with_context(at)?;
        let id = match &v["id"] {
            serde_json::Value::Number(x) => x.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .with_context(|| format!("{}: `id` must be an unsigned integer", at()))?;
        let sid = match (v.get("embedding"), v.get("sid")) {
            (Some(e), None) => SidSource::Embedding(
                numbers(e)
                    .with_context(|| format!("{}: `embedding` must be an array of numbers", at()))?
                    .into_iter()
                    .map(|x| x as f32)
                    .collect(),
            ),
            (None, Some(s)) => SidSource::Sid(
                numbers(s)
                    .filter(|v| {
                        v.iter()
                            .all(|x| x.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(x))
                    })
                    .with_context(|| {
                        format!(
                            "{}: `sid` must be an array of codes (unsigned integers)",
                            at()
                        )
                    })?
                    .into_iter()
                    .map(|x| x as u32)
                    .collect(),
            ),
            _ => bail!("{}: give exactly one of `embedding` and `sid`", at()),
        };
        items.push(NewItem { id, sid });
    }
    if items.is_empty() {
        bail!("{}: no items", path.display());
    }
    Ok(items)
}

fn numbers(v: &serde_json::Value) -> Option<Vec<f64>> {
    v.as_array()?.iter().map(|x| x.as_f64()).collect()
}

/// `--ids 1,2, 3`.
fn parse_ids(s: &str) -> Result<Vec<u64>> {
    let ids: Vec<u64> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse()
                .with_context(|| format!("--ids: `{t}` is not an item id (an unsigned integer)"))
        })
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("--ids: no item ids given");
    }
    Ok(ids)
}
