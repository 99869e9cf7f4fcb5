//! `onerec convert`: a safetensors checkpoint with other tensor names (a PyTorch OneRec's
//! state dict) → this engine's checkpoint directory, through a name map. Every mismatch is
//! reported at once (docs/CONVERTING.md).

use anyhow::{bail, Context, Result};
use onerec_engine::schema::{weight_shapes, CATALOG_ITEM_IDS, CATALOG_SIDS};
use onerec_engine::{Config, ModelFile};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// The source weights: one .safetensors file.
    #[arg(long)]
    input: PathBuf,
    /// The model's config.json (MODEL_SPEC fields).
    #[arg(long)]
    config: PathBuf,
    /// JSON object of source-name pattern → engine-name pattern; `{i}`-style placeholders
    /// match integers. A placeholder missing from the engine name stacks the matches along
    /// a new first axis, in index order (per-expert weights → one `[E, ..]` tensor).
    #[arg(long)]
    map: PathBuf,
    /// The checkpoint directory to write (config.json + model.safetensors); must not exist.
    #[arg(long)]
    output: PathBuf,
}

/// One `source → target` rule; a pattern is literal text and `{name}` placeholders.
struct Rule {
    source: Vec<Piece>,
    target: String,
    /// Placeholders of the source that the target lacks: their values index a stack.
    stacked: Vec<String>,
    text: String,
}

enum Piece {
    Text(String),
    Hole(String),
}

fn parse_pattern(p: &str) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut rest = p;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("`{p}`: `{{` without `}}`"))?;
        if open > 0 {
            out.push(Piece::Text(rest[..open].to_string()));
        }
        let name = &rest[open + 1..open + close];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{p}`: bad placeholder `{{{name}}}`"));
        }
        out.push(Piece::Hole(name.to_string()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest.to_string()));
    }
    Ok(out)
}

/// Matches `name` against a pattern: the placeholder values, or None.
fn matches(pattern: &[Piece], name: &str) -> Option<BTreeMap<String, usize>> {
    fn go(p: &[Piece], s: &str, vals: &mut BTreeMap<String, usize>) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((Piece::Text(t), rest)) => s
                .strip_prefix(t.as_str())
                .is_some_and(|s| go(rest, s, vals)),
            Some((Piece::Hole(h), rest)) => {
                let digits = s.bytes().take_while(u8::is_ascii_digit).count();
                (1..=digits).any(|n| {
                    let Ok(v) = s[..n].parse::<usize>() else {
                        return false;
                    };
                    if vals.get(h).is_some_and(|&old| old != v) {
                        return false;
                    }
                    let fresh = vals.insert(h.clone(), v).is_none();
                    if go(rest, &s[n..], vals) {
                        return true;
                    }
                    if fresh {
                        vals.remove(h);
                    }
                    false
                })
            }
        }
    }
    let mut vals = BTreeMap::new();
    go(pattern, name, &mut vals).then_some(vals)
}

fn fill(target: &str, vals: &BTreeMap<String, usize>) -> String {
    let mut out = target.to_string();
    for (k, v) in vals {
        out = out.replace(&format!("{{{k}}}"), &v.to_string());
    }
    out
}

fn rules(map: &serde_json::Value) -> Result<Vec<Rule>> {
    let obj = map
        .as_object()
        .context("the map must be a JSON object of \"source pattern\": \"engine pattern\"")?;
    let mut out = Vec::new();
    for (source, target) in obj {
        let target = target
            .as_str()
            .with_context(|| format!("map entry `{source}`: the engine name must be a string"))?;
        let pieces = parse_pattern(source).map_err(anyhow::Error::msg)?;
        let target_holes: Vec<String> = parse_pattern(target)
            .map_err(anyhow::Error::msg)?
            .into_iter()
            .filter_map(|p| match p {
                Piece::Hole(h) => Some(h),
                Piece::Text(_) => None,
            })
            .collect();
        let source_holes: Vec<String> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Hole(h) => Some(h.clone()),
                Piece::Text(_) => None,
            })
            .collect();
        if let Some(h) = target_holes.iter().find(|h| !source_holes.contains(h)) {
            bail!("map entry `{source}` → `{target}`: `{{{h}}}` is not in the source pattern");
        }
        let stacked: Vec<String> = source_holes
            .into_iter()
            .filter(|h| !target_holes.contains(h))
            .collect();
        if stacked.len() > 1 {
            bail!("map entry `{source}` → `{target}`: stacks along {stacked:?}; at most one placeholder may be stacked");
        }
        out.push(Rule {
            source: pieces,
            target: target.to_string(),
            stacked,
            text: format!("{source} → {target}"),
        });
    }
    Ok(out)
}

/// A planned engine tensor: name, type, shape, and its source parts by stack index.
type Built = (String, Dtype, Vec<usize>, Vec<(usize, String)>);

/// What a target tensor is made of: source names, by stack index (one entry, index 0,
/// when not stacked).
#[derive(Default)]
struct Plan {
    parts: BTreeMap<usize, String>,
    stacked: bool,
}

pub fn run(a: ConvertArgs) -> Result<()> {
    let config_text = crate::ids::read_text(&a.config, 1 << 20)?;
    let config =
        Config::from_json(&config_text).with_context(|| format!("{}", a.config.display()))?;
    let map: serde_json::Value = serde_json::from_str(&crate::ids::read_text(&a.map, 16 << 20)?)
        .with_context(|| format!("{} is not JSON", a.map.display()))?;
    let rules = rules(&map)?;
    if a.output.exists() {
        bail!("{} exists; give a new directory", a.output.display());
    }
    let file = std::fs::File::open(&a.input)
        .with_context(|| format!("cannot open {}", a.input.display()))?;
    // SAFETY: read-only map of a file this process does not change.
    let bytes = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", a.input.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not a safetensors file", a.input.display()))?;

    let mut problems = Vec::new();
    let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    for name in &names {
        let hits: Vec<(&Rule, BTreeMap<String, usize>)> = rules
            .iter()
            .filter_map(|r| matches(&r.source, name).map(|v| (r, v)))
            .collect();
        match hits.as_slice() {
            [] => problems.push(format!("source tensor `{name}` matches no map entry")),
            [(rule, vals)] => {
                let target = fill(&rule.target, vals);
                let index = rule.stacked.first().map_or(0, |h| vals[h]);
                let plan = plans.entry(target.clone()).or_default();
                plan.stacked |= !rule.stacked.is_empty();
                if let Some(prev) = plan.parts.insert(index, name.clone()) {
                    problems.push(format!("`{prev}` and `{name}` both map to `{target}`"));
                }
            }
            many => problems.push(format!(
                "source tensor `{name}` matches {} map entries: {}",
                many.len(),
                many.iter()
                    .map(|(r, _)| r.text.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        }
    }

    let mut expected: HashMap<String, Option<Vec<usize>>> = weight_shapes(&config)
        .into_iter()
        .map(|(n, s)| (n, Some(s)))
        .collect();
    // Catalog shapes depend on the catalog size: checked for rank and levels below.
    expected.insert(CATALOG_ITEM_IDS.into(), None);
    expected.insert(CATALOG_SIDS.into(), None);
    let mut required: Vec<&String> = expected.keys().collect();
    required.sort();
    for name in required {
        if !plans.contains_key(name) {
            problems.push(format!(
                "engine tensor `{name}` is missing: no source tensor maps to it"
            ));
        }
    }

    // Shapes and types of every planned tensor.
    let mut built: Vec<Built> = Vec::new();
    for (target, plan) in &plans {
        let Some(want) = expected.get(target) else {
            problems.push(format!(
                "`{}` maps to `{target}`, which this config does not use",
                plan.parts.values().next().map_or("", String::as_str)
            ));
            continue;
        };
        let parts: Vec<(usize, String)> = plan.parts.iter().map(|(i, n)| (*i, n.clone())).collect();
        if plan.stacked && parts.iter().enumerate().any(|(k, (i, _))| k != *i) {
            let idx: Vec<usize> = parts.iter().map(|(i, _)| *i).collect();
            problems.push(format!(
                "`{target}`: stacked indices {idx:?} are not 0..{}",
                parts.len()
            ));
            continue;
        }
        let views: Vec<_> = parts
            .iter()
            .filter_map(|(_, n)| st.tensor(n).ok())
            .collect();
        let (dtype, part_shape) = (views[0].dtype(), views[0].shape().to_vec());
        if let Some((bad, v)) = parts
            .iter()
            .zip(&views)
            .find(|(_, v)| v.dtype() != dtype || v.shape() != part_shape.as_slice())
        {
            problems.push(format!(
                "`{target}`: `{}` is {:?} {:?} but `{}` is {dtype:?} {part_shape:?}",
                bad.1,
                v.dtype(),
                v.shape(),
                parts[0].1
            ));
            continue;
        }
        let shape: Vec<usize> = if plan.stacked {
            std::iter::once(parts.len())
                .chain(part_shape.iter().copied())
                .collect()
        } else {
            part_shape.clone()
        };
        let from = if plan.stacked {
            format!("{} stacked tensors like `{}`", parts.len(), parts[0].1)
        } else {
            format!("`{}`", parts[0].1)
        };
        let types_ok = if target == CATALOG_ITEM_IDS {
            matches!(dtype, Dtype::I64 | Dtype::U64)
        } else if target == CATALOG_SIDS {
            matches!(dtype, Dtype::I32 | Dtype::I64)
        } else {
            matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
        };
        if !types_ok {
            problems.push(format!(
                "`{target}` ({from}): type {dtype:?} is not one the engine reads for it"
            ));
        }
        match want {
            Some(w) if *w != shape => problems.push(format!(
                "`{target}` ({from}): shape {shape:?}, the config needs {w:?}"
            )),
            None if target == CATALOG_ITEM_IDS && shape.len() != 1 => problems.push(format!(
                "`{target}` ({from}): shape {shape:?}, expected [N]"
            )),
            None if target == CATALOG_SIDS && (shape.len() != 2 || shape[1] != config.n_levels) => {
                problems.push(format!(
                    "`{target}` ({from}): shape {shape:?}, expected [N, {}]",
                    config.n_levels
                ))
            }
            _ => {}
        }
        built.push((target.clone(), dtype, shape, parts));
    }

    if !problems.is_empty() {
        for p in &problems {
            println!("mismatch: {p}");
        }
        bail!(
            "{} mismatch(es) between {} and the config (listed above); nothing written",
            problems.len(),
            a.input.display()
        );
    }
    write(&a, &config_text, &st, &built)?;
    let check = ModelFile::open(&a.output).with_context(|| {
        format!(
            "the written checkpoint {} does not load",
            a.output.display()
        )
    })?;
    println!(
        "wrote {}: {} tensors, {} catalog items; it loads (onerec inspect --model {} --verify checks every value)",
        a.output.display(),
        built.len(),
        check.catalog.len(),
        a.output.display()
    );
    Ok(())
}

fn write(a: &ConvertArgs, config_text: &str, st: &SafeTensors<'_>, built: &[Built]) -> Result<()> {
    // Stacked tensors are concatenated into owned buffers; the others are written from the map.
    let mut owned: Vec<Vec<u8>> = Vec::new();
    for (_, _, _, parts) in built {
        let mut buf = Vec::new();
        if parts.len() > 1 {
            for (_, n) in parts {
                buf.extend_from_slice(st.tensor(n)?.data());
            }
        }
        owned.push(buf);
    }
    let mut views = Vec::new();
    for ((target, dtype, shape, parts), buf) in built.iter().zip(&owned) {
        let data = if parts.len() > 1 {
            buf.as_slice()
        } else {
            st.tensor(&parts[0].1)?.data()
        };
        views.push((
            target.clone(),
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)?,
        ));
    }
    let tmp = tmp_dir(&a.output)?;
    let result = (|| -> Result<()> {
        std::fs::write(tmp.join("config.json"), config_text)?;
        safetensors::serialize_to_file(views, None, &tmp.join("model.safetensors"))?;
        std::fs::rename(&tmp, &a.output)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.with_context(|| format!("writing {}", a.output.display()))
}

/// A fresh directory beside `out`, renamed into place when complete.
fn tmp_dir(out: &Path) -> Result<PathBuf> {
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .context("the output path has no name")?
        .to_string_lossy();
    let tmp = parent.join(format!(".{name}.onerec-convert.{}", std::process::id()));
    std::fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    Ok(tmp)
}
