//! The Triton bench's requests through the engine in-process, for the serving-overhead ratio.
//!
//! cargo run --release -p onerec-triton --example triton_inprocess -- MODEL HISTORIES.json
//!     [--beam 32] [--results 10] [--batch 1] [--seconds 10]
//!
//! HISTORIES.json is a list of id lists (what perf_analyzer sends). Requests go to one
//! `Engine` in batches of `--batch` (what Triton's dynamic batcher at best forms at that
//! concurrency), one after another. Prints one JSON line: requests per second and the p50 /
//! p99 latency of a request (the time of its batch).

use onerec_engine::{BackendKind, Engine, Request};
use std::time::{Duration, Instant};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(histories)) = (args.get(1), args.get(2)) else {
        return Err("usage: triton_inprocess MODEL HISTORIES.json [--beam N] [--results N] [--batch N] [--seconds S]".into());
    };
    let beam: usize = arg(&args, "--beam", "32").parse()?;
    let results: usize = arg(&args, "--results", "10").parse()?;
    let batch: usize = arg(&args, "--batch", "1").parse()?;
    let seconds: f64 = arg(&args, "--seconds", "10").parse()?;
    let histories: Vec<Vec<u64>> = serde_json::from_str(&std::fs::read_to_string(histories)?)?;
    if histories.is_empty() || batch == 0 {
        return Err("need at least one history and a batch of at least 1".into());
    }
    let engine = Engine::load(std::path::Path::new(model), BackendKind::Cpu)?;
    let requests: Vec<Request> = histories
        .iter()
        .map(|h| Request::new(h.clone(), beam, results))
        .collect();
    let next_batch = |i: usize| -> Vec<Request> {
        (0..batch)
            .map(|j| requests[(i * batch + j) % requests.len()].clone())
            .collect()
    };
    engine.recommend(&next_batch(0))?; // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs_f64(seconds) {
        let b = next_batch(i);
        let t = Instant::now();
        std::hint::black_box(engine.recommend(&b)?);
        times.push(t.elapsed().as_secs_f64());
        i += 1;
    }
    let total = start.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    let pct = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize] * 1e3;
    println!(
        "{{\"batch\":{batch},\"requests\":{},\"req_per_s\":{:.2},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"backend\":\"{}\"}}",
        times.len() * batch,
        (times.len() * batch) as f64 / total,
        pct(0.5),
        pct(0.99),
        engine.describe_backend()
    );
    Ok(())
}
