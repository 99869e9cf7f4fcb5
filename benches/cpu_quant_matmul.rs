//! CPU products with weights in each stored type, at the medium config's shapes: GFLOP/s
//! and the ratio to f32 (not a timed test; speed targets live here).
//!
//! cargo bench --bench cpu_quant_matmul [-- --reps 5]   (RAYON_NUM_THREADS=1 for one core)

use onerec_engine::format::quant::encode;
use onerec_engine::tensor::{Blob, DType, WeightView};
use onerec_engine::{Backend, CpuBackend};
use std::sync::Arc;
use std::time::Instant;

/// Best of the runs: on a shared machine the minimum is the least disturbed figure.
fn best(v: Vec<f64>) -> f64 {
    v.into_iter().fold(f64::INFINITY, f64::min)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let reps: usize = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let be = CpuBackend::new();
    println!("{}; best of {reps}", be.describe());
    println!(
        "{:>5} {:>5} {:>5} | {:>9} {:>9} {:>9} {:>9} | GFLOP/s (ratio to f32)",
        "m", "n", "k", "f32", "f16", "q8_0", "q4_0"
    );
    // (n, k): attention / expert gate-up / expert down / one level of head.
    for &(n, k) in &[(512, 512), (1024, 512), (512, 1024), (8192, 512)] {
        for &m in &[1, 16, 128, 256] {
            let vals: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.05)
                .collect();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104_729 % 997) as f32 / 498.0) - 1.0)
                .collect();
            let xb = be.upload(&x, m, k).expect("upload");
            let mut cells = Vec::new();
            let mut base = 0.0;
            for dtype in [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0] {
                let blob = Arc::new(Blob::Owned(
                    encode("w", dtype, &[n, k], &vals).expect("encode"),
                ));
                // Owned bytes are 1-aligned in general: f32 needs a 4-aligned copy to be zero-copy.
                let view = WeightView {
                    name: "w",
                    dtype,
                    rows: n,
                    cols: k,
                    bytes: blob.bytes(),
                    blob: &blob,
                };
                let w = be.weight(&view).expect("weight");
                let _ = be.matmul(&xb, &w).expect("warm-up");
                let inner = (2e8 / (2.0 * (m * n * k) as f64)).ceil().max(1.0) as usize;
                let times: Vec<f64> = (0..reps)
                    .map(|_| {
                        let t = Instant::now();
                        for _ in 0..inner {
                            std::hint::black_box(be.matmul(&xb, &w).expect("matmul"));
                        }
                        t.elapsed().as_secs_f64() / inner as f64
                    })
                    .collect();
                let gflops = 2.0 * (m * n * k) as f64 / best(times) / 1e9;
                if dtype == DType::F32 {
                    base = gflops;
                    cells.push(format!("{gflops:>9.1}"));
                } else {
                    cells.push(format!("{:>5.1}({:.2})", gflops, gflops / base));
                }
            }
            println!("{m:>5} {n:>5} {k:>5} | {}", cells.join(" "));
        }
    }
}
