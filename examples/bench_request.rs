//! Times one recommendation request on a model, for the side-by-side scripts in benches/.
//!
//! cargo run --release --example bench_request -- MODEL [--backend cpu] [--beam 128]
//!     [--history 256] [--repeat 3]
//! Prints one JSON line with the median seconds of the whole request.

use onerec_engine::{BackendKind, Engine, Request};
use std::time::Instant;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let model = args.get(1).ok_or_else(|| {
        anyhow::anyhow!(
            "usage: bench_request MODEL [--backend B] [--beam N] [--history N] [--repeat N]"
        )
    })?;
    let backend: BackendKind = arg(&args, "--backend", "cpu").parse()?;
    let beam: usize = arg(&args, "--beam", "128").parse()?;
    let hist_len: usize = arg(&args, "--history", "256").parse()?;
    let repeat: usize = arg(&args, "--repeat", "3").parse()?;

    let t0 = Instant::now();
    let engine = Engine::load(std::path::Path::new(model), backend)?;
    let load_s = t0.elapsed().as_secs_f64();
    let n = engine.file().catalog.len() as u64;
    // Same history as benches/bench_history.py: ids 1..N strided by a prime.
    let history: Vec<u64> = (0..hist_len as u64).map(|i| 1 + (i * 7919) % n).collect();
    let req = Request::new(history, beam, beam.min(10));
    engine.recommend(std::slice::from_ref(&req))?; // warm-up
    let mut times = Vec::new();
    for _ in 0..repeat {
        let t = Instant::now();
        let r = engine.recommend(std::slice::from_ref(&req))?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(r);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"backend\":\"{}\",\"beam\":{beam},\"history\":{hist_len},\"threads\":{},\"load_s\":{load_s:.3},\"request_s\":{:.4}}}",
        engine.describe_backend(),
        rayon::current_num_threads(),
        times[times.len() / 2]
    );
    Ok(())
}
