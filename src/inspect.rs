//! `onerec inspect`: what a model file (or checkpoint) holds, and whether its bytes are intact.

use anyhow::{Context, Result};
use onerec_engine::ModelFile;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Model file or checkpoint directory; without it, the built-in model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Read every tensor: compare its CRC-32 with the file's and check that every value
    /// is finite. Exits non-zero on the first problem.
    #[arg(long)]
    verify: bool,
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let (file, name) = match &a.model {
        Some(path) => (
            ModelFile::open(path).with_context(|| format!("loading {}", path.display()))?,
            path.display().to_string(),
        ),
        None => (
            crate::default_model::open().context("opening the built-in model")?,
            "the built-in model".to_string(),
        ),
    };
    print!("{}", describe(&file));
    if a.verify {
        let r = file.verify().with_context(|| format!("verifying {name}"))?;
        let sums = if r.checksummed > 0 {
            format!("{} checksums match", r.checksummed)
        } else {
            "no checksums (a checkpoint directory has none)".into()
        };
        println!(
            "verify: OK: {} tensors, {} bytes read, {sums}, every value finite",
            r.tensors, r.bytes
        );
    }
    Ok(())
}

fn describe(f: &ModelFile) -> String {
    let mut out = String::new();
    let kind = match f.integrity() {
        Some(i) => format!("OneRec model file, format version {}", i.version),
        None => "checkpoint directory".into(),
    };
    let _ = writeln!(
        out,
        "model: {} ({kind}, {} bytes)",
        f.source,
        f.file_bytes()
    );
    if let Some(i) = f.integrity().filter(|i| !i.metadata.is_empty()) {
        let _ = writeln!(
            out,
            "metadata: {}",
            serde_json::Value::Object(i.metadata.clone())
        );
    }
    let _ = writeln!(
        out,
        "config: {}",
        serde_json::to_string(&f.config).unwrap_or_default()
    );
    let c = &f.catalog;
    let _ = writeln!(
        out,
        "catalog: {} items, {} levels x {} codes",
        c.len(),
        c.levels(),
        f.config.codebook_size
    );
    let w = f.names.iter().map(|n| n.len()).max().unwrap_or(6).max(6);
    let _ = writeln!(
        out,
        "{:<w$}  {:<5}  {:<18}  {:>12}  {:>12}  {:>8}",
        "tensor", "type", "shape", "bytes", "offset", "crc32"
    );
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for name in &f.names {
        let Some(e) = f.entry(name) else { continue };
        let crc = f
            .integrity()
            .and_then(|i| i.crc32.get(name))
            .map(|c| format!("{c:08x}"))
            .unwrap_or_else(|| "-".into());
        let shape = format!("{:?}", e.shape);
        let _ = writeln!(
            out,
            "{name:<w$}  {:<5}  {shape:<18}  {:>12}  {:>12}  {crc:>8}",
            e.dtype.name(),
            e.end - e.start,
            e.start
        );
        let t = by_type.entry(e.dtype.name()).or_default();
        t.0 += 1;
        t.1 += e.end - e.start;
    }
    let types: Vec<String> = by_type
        .iter()
        .map(|(k, (n, b))| format!("{k}: {n} tensors, {b} bytes"))
        .collect();
    let _ = writeln!(out, "{} tensors; {}", f.names.len(), types.join("; "));
    out
}
