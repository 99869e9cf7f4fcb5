//! Compiles every CUDA kernel file (engine/shaders/cuda/*.cu) through NVRTC to a CUBIN for each
//! architecture given (default sm_80 and sm_90), prints registers, shared memory and
//! local memory per kernel from the `ptxas -v` log, and fails on a compile error, a
//! compiler warning, a missing entry point, a register spill or any local memory.
//! Needs NVRTC and cuda_fp16.h only, no GPU: `scripts/ci.d/40-cuda-compile.sh` runs it.
//!
//! Usage: cargo run --release -p onerec-engine --features cuda --example cuda_check [ARCH...]

use onerec_engine::backend::cuda::compile::{self, parse_ptxas_log, Target};
use onerec_engine::backend::cuda::{kernels, libs};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<bool, String> {
    let mut archs: Vec<u32> = Vec::new();
    for a in std::env::args().skip(1) {
        let n = a
            .trim_start_matches("sm_")
            .parse()
            .map_err(|_| format!("`{a}` is not an architecture (e.g. 80 or sm_90)"))?;
        archs.push(n);
    }
    if archs.is_empty() {
        archs = vec![80, 90];
    }
    let (major, minor) = compile::nvrtc_version().map_err(|e| e.to_string())?;
    let include = libs::include_dir().map_err(|e| e.to_string())?;
    let supported = compile::supported_archs().map_err(|e| e.to_string())?;
    println!(
        "NVRTC {major}.{minor} (emits archs {supported:?}), headers from {}",
        include.display()
    );
    println!(
        "{:<16} {:<18} {:<6} {:>5} {:>7} {:>6} {:>6} {:>6} {:>5}",
        "file", "kernel", "arch", "regs", "smem", "stack", "spillS", "spillL", "lmem"
    );
    let mut ok = true;
    let mut kernels_checked = 0;
    for file in kernels::FILES {
        for &arch in &archs {
            let compiled = match compile::compile(file, Target::Cubin(arch), &include, true) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("FAIL {e}");
                    ok = false;
                    continue;
                }
            };
            let warnings: Vec<&str> = compiled
                .log
                .lines()
                .filter(|l| l.contains("warning"))
                .collect();
            for w in &warnings {
                eprintln!("FAIL {} sm_{arch}: {w}", file.file);
            }
            ok &= warnings.is_empty();
            let report = parse_ptxas_log(&compiled.log);
            for entry in file.entries {
                if !report.iter().any(|r| r.entry && r.function == *entry) {
                    eprintln!(
                        "FAIL {} sm_{arch}: entry point `{entry}` missing from the ptxas report",
                        file.file
                    );
                    ok = false;
                }
            }
            for r in &report {
                println!(
                    "{:<16} {:<18} {:<6} {:>5} {:>7} {:>6} {:>6} {:>6} {:>5}{}",
                    file.file,
                    r.function,
                    r.arch,
                    r.registers,
                    r.shared_bytes,
                    r.stack_bytes,
                    r.spill_stores,
                    r.spill_loads,
                    r.local_bytes,
                    if r.uses_local_memory() {
                        "  <- spills / local memory"
                    } else {
                        ""
                    }
                );
                if r.uses_local_memory() {
                    ok = false;
                }
                kernels_checked += r.entry as usize;
            }
        }
    }
    let files = kernels::FILES.len();
    if ok {
        println!("ok: {kernels_checked} kernels in {files} files compiled for {archs:?} with no spills and no local memory");
    } else {
        eprintln!("cuda kernel check FAILED");
    }
    Ok(ok)
}
