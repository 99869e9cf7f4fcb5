//! The per-tensor table printed after a run, and the progress bar shown during one.

use crate::Report;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Checkpoints below this convert in a blink: no bar.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

/// A byte-counting bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64, quiet: bool) -> ProgressBar {
    if quiet || total < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {elapsed_precise} {wide_msg}")
    {
        bar.set_style(style);
    }
    bar
}

fn shape(s: &[usize]) -> String {
    format!(
        "[{}]",
        s.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

pub fn table(r: &Report) -> String {
    let w = r
        .tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w$}  {:<18}  {:<6}  {:<6}  {:>12}  {:>9}",
        "tensor", "shape", "from", "type", "bytes", "rel.err"
    );
    for t in &r.tensors {
        let err = if t.is_weight() {
            format!("{:.3e}", t.rel_err())
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<w$}  {:<18}  {:<6}  {:<6}  {:>12}  {:>9}",
            t.name,
            shape(&t.shape),
            t.source.name(),
            t.dtype.name(),
            t.bytes,
            err
        );
    }
    let mut by_type: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for t in &r.tensors {
        let e = by_type.entry(t.dtype.name()).or_default();
        e.0 += 1;
        e.1 += t.bytes;
    }
    let types: Vec<String> = by_type
        .iter()
        .map(|(k, (n, b))| format!("{k}: {n} tensors, {b} bytes"))
        .collect();
    let _ = writeln!(out, "by type: {}", types.join("; "));
    let _ = writeln!(
        out,
        "total: {} tensors, file {} bytes = {:.2}% of the f32 file ({} bytes), weights rel.err {:.3e}",
        r.tensors.len(),
        r.file_bytes,
        100.0 * r.ratio_to_f32(),
        r.f32_file_bytes,
        r.rel_err()
    );
    match &r.written {
        Some(p) => {
            let _ = writeln!(out, "wrote {}", p.display());
        }
        None => {
            let _ = writeln!(out, "dry run: nothing written");
        }
    }
    out
}
