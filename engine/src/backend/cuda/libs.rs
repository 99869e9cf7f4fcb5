//! The CUDA libraries are loaded at run time (cudarc `dynamic-loading`), so a build with
//! the `cuda` feature runs anywhere. cudarc panics on first use of a missing library, so
//! every entry point checks presence here first and returns a clear error instead.

use crate::error::Result;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn cached(cell: &'static OnceLock<bool>, probe: impl FnOnce() -> bool) -> bool {
    *cell.get_or_init(probe)
}

/// `libcuda.so.1` (the driver).
pub fn driver_present() -> bool {
    static P: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the library.
    cached(&P, || unsafe { cudarc::driver::sys::is_culib_present() })
}

/// `libnvrtc.so.13` (or another name cudarc knows for NVRTC 13).
pub fn nvrtc_present() -> bool {
    static P: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the library.
    cached(&P, || unsafe { cudarc::nvrtc::sys::is_culib_present() })
}

/// `libcublas.so.13`: optional, the f32 products use it when present.
pub fn cublas_present() -> bool {
    static P: OnceLock<bool> = OnceLock::new();
    // SAFETY: only tries to open the library.
    cached(&P, || unsafe { cudarc::cublas::sys::is_culib_present() })
}

pub fn require_driver() -> Result<()> {
    if driver_present() {
        return Ok(());
    }
    Err(super::err(
        "no CUDA driver: libcuda.so.1 could not be loaded (install the NVIDIA driver, version 580 or later for CUDA 13, or choose another backend: --backend cpu or wgpu)",
    ))
}

pub fn require_nvrtc() -> Result<()> {
    if nvrtc_present() {
        return Ok(());
    }
    Err(super::err(
        "NVRTC 13 not found: libnvrtc.so.13 could not be loaded (install the CUDA 13 toolkit, or `pip install nvidia-cuda-nvrtc nvidia-cuda-runtime`, and add the folder holding libnvrtc.so.13 to LD_LIBRARY_PATH)",
    ))
}

fn has_fp16_header(dir: &Path) -> bool {
    dir.join("cuda_fp16.h").is_file()
}

/// Folder of the loaded NVRTC library, read from this process's memory map (Linux).
fn loaded_nvrtc_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("libnvrtc.so"))?;
    Path::new(path).parent().map(Path::to_path_buf)
}

/// The folder holding `cuda_fp16.h`, which the kernels include. Searched in order:
/// `$ONEREC_CUDA_INCLUDE`, `$CUDA_PATH/include`, `$CUDA_HOME/include`, the `include`
/// folder beside the loaded NVRTC (toolkit and PyPI wheel layouts), /usr/local/cuda.
pub fn include_dir() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("ONEREC_CUDA_INCLUDE") {
        candidates.push(PathBuf::from(d));
    }
    for var in ["CUDA_PATH", "CUDA_HOME"] {
        if let Some(d) = std::env::var_os(var) {
            candidates.push(PathBuf::from(d).join("include"));
        }
    }
    if let Some(lib) = loaded_nvrtc_dir() {
        if let Some(up) = lib.parent() {
            candidates.push(up.join("include"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.push(PathBuf::from("/usr/include"));
    candidates.iter().find(|d| has_fp16_header(d)).cloned().ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
        super::err(format!(
            "cuda_fp16.h not found (tried {}); set ONEREC_CUDA_INCLUDE to the CUDA include folder (e.g. from `pip install nvidia-cuda-runtime`: .../nvidia/cu13/include)",
            tried.join(", ")
        ))
    })
}
