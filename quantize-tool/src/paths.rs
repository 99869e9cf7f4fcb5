//! The output must never be the input: writing a model file over its own checkpoint (or
//! over the model file it reads) would destroy the only copy.

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// Refuses an `output` that is the input (a model file, or a file the input checkpoint
/// directory holds) or lies inside the input directory. Paths are compared canonically
/// (symlinks, `..`), and on Unix also by device and inode (hard links, bind mounts).
pub fn check_output(input: &Path, output: &Path) -> Result<()> {
    // An input that cannot be resolved is reported by the reader, with its own message.
    let Ok(input) = input.canonicalize() else {
        return Ok(());
    };
    let Some(out) = canonical_output(output) else {
        return Ok(());
    };
    if out == input {
        bail!("the output {} is the input", output.display());
    }
    if out.starts_with(&input) {
        bail!(
            "the output {} lies inside the input checkpoint {}",
            output.display(),
            input.display()
        );
    }
    #[cfg(unix)]
    same_inode_checks(&input, &out, output)?;
    Ok(())
}

/// The output's canonical path: the path itself when it exists, else its canonical
/// parent joined with its file name; `None` when even the parent cannot be resolved
/// (the writer reports that).
fn canonical_output(output: &Path) -> Option<PathBuf> {
    if let Ok(p) = output.canonicalize() {
        return Some(p);
    }
    let name = output.file_name()?;
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some(parent.canonicalize().ok()?.join(name))
}

#[cfg(unix)]
fn same_inode_checks(input: &Path, out: &Path, shown: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(input_id) = id(input) else {
        return Ok(());
    };
    // The files the tool reads: the model file, or the checkpoint's two files.
    let read: Vec<(u64, u64)> = if input.is_dir() {
        ["config.json", "model.safetensors"]
            .iter()
            .filter_map(|f| id(&input.join(f)))
            .collect()
    } else {
        vec![input_id]
    };
    if let Some(out_id) = id(out) {
        if read.contains(&out_id) {
            bail!(
                "the output {} is the same file as the input {} (same device and inode)",
                shown.display(),
                input.display()
            );
        }
    }
    if input.is_dir() {
        if let Some(dir) = out.parent() {
            if dir.ancestors().any(|a| id(a) == Some(input_id)) {
                bail!(
                    "the output {} lies inside the input checkpoint {} (same device and inode)",
                    shown.display(),
                    input.display()
                );
            }
        }
    }
    Ok(())
}
