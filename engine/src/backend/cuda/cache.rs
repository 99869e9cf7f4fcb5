//! On-disk cache of compiled kernel images, so NVRTC runs once per kernel source,
//! architecture, option set and NVRTC version on a machine.
//!
//! Folder: `$ONEREC_CUDA_CACHE` (empty or `off` disables it), else
//! `$XDG_CACHE_HOME/onerec/cuda`, else `~/.cache/onerec/cuda`. A cache that cannot be
//! read or written only costs a recompilation.

use super::compile::{self, Compiled, Target};
use super::kernels::{KernelFile, HEADERS};
use crate::error::Result;
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("ONEREC_CUDA_CACHE") {
        Some(v) if v.is_empty() || v == "off" => return None,
        Some(v) => return Some(PathBuf::from(v)),
        None => {}
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("onerec").join("cuda"))
}

/// FNV-1a: stable across builds and platforms, which `DefaultHasher` is not.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in p.iter().chain(&[0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn entry_path(
    dir: &Path,
    file: &KernelFile,
    target: Target,
    include: &Path,
    nvrtc: (i32, i32),
) -> PathBuf {
    let opts = compile::options(target, include, false).join(" ");
    let version = format!("{}.{}", nvrtc.0, nvrtc.1);
    let mut parts: Vec<&[u8]> = vec![file.source.as_bytes(), opts.as_bytes(), version.as_bytes()];
    for (name, src) in HEADERS {
        parts.push(name.as_bytes());
        parts.push(src.as_bytes());
    }
    let ext = match target {
        Target::Cubin(_) => "cubin",
        Target::Ptx(_) => "ptx",
    };
    let stem = file.file.trim_end_matches(".cu");
    dir.join(format!(
        "{stem}-{}-{:016x}.{ext}",
        target.arch(),
        fnv1a(&parts)
    ))
}

/// A cached image, if one exists.
pub fn load(
    file: &KernelFile,
    target: Target,
    include: &Path,
    nvrtc: (i32, i32),
) -> Option<Vec<u8>> {
    let path = entry_path(&cache_dir()?, file, target, include, nvrtc);
    std::fs::read(path).ok().filter(|b| !b.is_empty())
}

/// Compiles and stores the image (temp file + rename, so readers never see half of one).
pub fn compile_and_store(
    file: &KernelFile,
    target: Target,
    include: &Path,
    nvrtc: (i32, i32),
) -> Result<Compiled> {
    let compiled = compile::compile(file, target, include, false)?;
    if let Some(dir) = cache_dir() {
        let path = entry_path(&dir, file, target, include, nvrtc);
        if let Err(e) = store(&dir, &path, &compiled.image) {
            log::warn!("cuda: cannot cache {} in {}: {e}", file.file, dir.display());
        }
    }
    Ok(compiled)
}

fn store(dir: &Path, path: &Path, image: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(image)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
