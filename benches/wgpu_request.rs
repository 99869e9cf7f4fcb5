//! The wgpu runtime measured in one run on one adapter (not a timed test):
//! - the register-tiled f32 matmul microbenchmark (matmul.wgsl on 1024³), the yardstick;
//! - per-kernel GFLOP/s of the model's products in every weight type;
//! - a whole request (history 256, beam 128) on wgpu and on the CPU backend: wall time,
//!   matmul GFLOP/s and its ratio to the microbenchmark, dispatches, submissions and
//!   readback bytes per decode step; each request is also paired with a microbenchmark
//!   run just before it, and the median of those ratios is printed (robust to drift),
//!   once for the matmul kernels' FLOPs and once for all of the request's FLOPs
//!   (attention too, counted on the CPU backend as `onerec bench` counts them).
//!
//! cargo bench --bench wgpu_request -- MODEL_DIR [--repeat 2] [--beam 128]
//! (ONEREC_WGPU_TIMESTAMPS=1: also the last request's GPU time per kernel.)
//! (benches/wgpu_compare.sh makes the synthetic models and runs this.)

use onerec_engine::backend::wgpu::{StatsSnapshot, WgpuBackend};
use onerec_engine::backend::{Ffn, KeyMap, Moe};
use onerec_engine::format::quant::encode;
use onerec_engine::generate::recommend;
use onerec_engine::tensor::{Blob, DType, TensorView};
use onerec_engine::{Backend, CpuBackend, Model, ModelFile, Request};
use std::sync::Arc;
use std::time::Instant;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn diff(a: StatsSnapshot, b: StatsSnapshot) -> StatsSnapshot {
    StatsSnapshot {
        dispatches: b.dispatches - a.dispatches,
        submissions: b.submissions - a.submissions,
        readback_bytes: b.readback_bytes - a.readback_bytes,
        upload_bytes: b.upload_bytes - a.upload_bytes,
        matmul_flops: b.matmul_flops - a.matmul_flops,
    }
}

/// GFLOP/s of `x [m, k] · W [n, k]ᵀ` with W in `dtype` (median of `reps` timed runs).
fn matmul_gflops(g: &WgpuBackend, dtype: DType, m: usize, n: usize, k: usize, reps: usize) -> f64 {
    let vals: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let blob = Arc::new(Blob::Owned(
        encode("w", dtype, &[n, k], &vals).expect("encode"),
    ));
    let shape = [n, k];
    let view = TensorView {
        name: "w",
        dtype,
        shape: &shape,
        bytes: blob.bytes(),
        blob: &blob,
    };
    let w = g.weight(&view.as_matrix()).expect("weight");
    let x = g.upload(&vec![0.5f32; m * k], m, k).expect("upload");
    let _ = g.matmul(&x, &w).expect("warm-up");
    g.sync().expect("sync");
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..4 {
            std::hint::black_box(g.matmul(&x, &w).expect("matmul"));
        }
        g.sync().expect("sync");
        times.push(t.elapsed().as_secs_f64() / 4.0);
    }
    times.sort_by(f64::total_cmp);
    2.0 * (m * n * k) as f64 / times[times.len() / 2] / 1e9
}

/// GFLOP/s (2 · rows · keys · d per call: scores plus weighted sum) of the decoder's
/// cross-attention: `rows` beams of one user over its `keys` encoder rows, K/V in the
/// device's cache type.
fn cross_attention_gflops(
    g: &WgpuBackend,
    rows: usize,
    keys: usize,
    d: usize,
    heads: usize,
) -> f64 {
    let x: Vec<f32> = (0..keys.max(rows) * d)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let q = g.upload(&x[..rows * d], rows, d).expect("upload");
    let kv = g.upload(&x[..keys * d], keys, d).expect("upload");
    let (mut k, mut v) = (
        g.kv_cache(keys, d).expect("cache"),
        g.kv_cache(keys, d).expect("cache"),
    );
    g.write_rows(&mut k, 0, &kv).expect("write");
    g.write_rows(&mut v, 0, &kv).expect("write");
    let spans = vec![(0u32, keys as u32); rows];
    let run = || {
        g.attention(&q, &k, &v, heads, KeyMap::Spans(&spans))
            .expect("attention")
    };
    let _ = run();
    g.sync().expect("sync");
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..4 {
            std::hint::black_box(run());
        }
        g.sync().expect("sync");
        times.push(t.elapsed().as_secs_f64() / 4.0);
    }
    times.sort_by(f64::total_cmp);
    4.0 * (rows * keys * d) as f64 / times[1] / 1e9
}

/// GFLOP/s (the three expert products of the routed slots only) of one MoE layer over
/// `rows` random rows, f32 experts stacked as the model file stores them.
fn moe_gflops(
    g: &WgpuBackend,
    rows: usize,
    d: usize,
    hidden: usize,
    experts: usize,
    top_k: usize,
) -> f64 {
    let val = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.1)
            .collect()
    };
    let blob = |r: usize, c: usize, seed: usize| {
        let vals = val(experts * r * c, seed);
        Arc::new(Blob::Owned(
            encode("expert", DType::F32, &[experts, r, c], &vals).expect("encode"),
        ))
    };
    let (gs, ds) = ([experts, hidden, d], [experts, d, hidden]);
    let (gb, ub, db) = (blob(hidden, d, 1), blob(hidden, d, 2), blob(d, hidden, 3));
    fn view<'a>(name: &'a str, shape: &'a [usize], b: &'a Arc<Blob>) -> TensorView<'a> {
        TensorView {
            name,
            dtype: DType::F32,
            shape,
            bytes: b.bytes(),
            blob: b,
        }
    }
    let (gv, uv, dv) = (
        view("gate", &gs, &gb),
        view("up", &gs, &ub),
        view("down", &ds, &db),
    );
    // Gate and up stacked together, as the model loads them (one fused launch).
    let mut gu = g.weight_stacks(&[&gv, &uv]).expect("stacks").into_iter();
    let (gate, up) = (gu.next().expect("gate"), gu.next().expect("up"));
    let down = g.weight_stack(&dv).expect("stack");
    let rshape = [experts, d];
    let rblob = Arc::new(Blob::Owned(
        encode("router", DType::F32, &rshape, &val(experts * d, 4)).expect("encode"),
    ));
    let rview = TensorView {
        name: "router",
        dtype: DType::F32,
        shape: &rshape,
        bytes: rblob.bytes(),
        blob: &rblob,
    };
    let m = Moe {
        router: g.weight(&rview.as_matrix()).expect("router"),
        experts: gate
            .into_iter()
            .zip(up)
            .zip(down)
            .map(|((gate, up), down)| Ffn { gate, up, down })
            .collect(),
        top_k,
    };
    let x = g.upload(&val(rows * d, 5), rows, d).expect("upload");
    let _ = g.moe(&x, &m, None).expect("warm-up");
    g.sync().expect("sync");
    let mut times = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..4 {
            std::hint::black_box(g.moe(&x, &m, None).expect("moe"));
        }
        g.sync().expect("sync");
        times.push(t.elapsed().as_secs_f64() / 4.0);
    }
    times.sort_by(f64::total_cmp);
    6.0 * (rows * top_k * hidden * d) as f64 / times[1] / 1e9
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; the model is the first argument that is a directory.
    let Some(model) = args
        .iter()
        .skip(1)
        .find(|a| std::path::Path::new(a).is_dir())
        .cloned()
    else {
        eprintln!("usage: cargo bench --bench wgpu_request -- MODEL_DIR [--repeat N] [--beam N]");
        std::process::exit(2);
    };
    let repeat: usize = arg(&args, "--repeat", "2").parse().unwrap_or(2);
    let beam: usize = arg(&args, "--beam", "128").parse().unwrap_or(128);
    let g = match WgpuBackend::new() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("no wgpu adapter: {e}");
            std::process::exit(1);
        }
    };
    println!("adapter: {}", g.describe());
    let micro = matmul_gflops(&g, DType::F32, 1024, 1024, 1024, 3);
    println!("microbenchmark: register-tiled f32 matmul 1024x1024x1024: {micro:.2} GFLOP/s");

    let file = Arc::new(ModelFile::open(std::path::Path::new(&model)).expect("model"));
    let cfg = file.config.clone();
    println!(
        "model: {model}: d {} heads {} layers {}+{} experts {} top-{} K {} items {}",
        cfg.d_model,
        cfg.n_heads,
        cfg.n_enc_layers,
        cfg.n_dec_layers,
        cfg.n_experts,
        cfg.top_k,
        cfg.codebook_size,
        file.catalog.len()
    );
    let d = cfg.d_model;
    let hidden = if cfg.d_expert > 0 {
        cfg.d_expert
    } else {
        cfg.d_ff
    };
    for dtype in [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0] {
        let shapes = [
            ("attn [B,d]x[d,d]", beam, d, d),
            ("expert up [B,d]x[h,d]", beam, hidden, d),
            ("head [B,d]x[K,d]", beam, cfg.codebook_size, d),
        ];
        let line: Vec<String> = shapes
            .iter()
            .map(|&(n, m, r, c)| format!("{n} {:.2}", matmul_gflops(&g, dtype, m, r, c, 3)))
            .collect();
        println!("kernel GFLOP/s {dtype}: {}", line.join(" | "));
    }
    println!(
        "kernel GFLOP/s cross-attention [B={beam} over {} keys, d {d}]: {:.2}",
        cfg.max_history,
        cross_attention_gflops(&g, beam, cfg.max_history, d, cfg.n_heads)
    );

    if cfg.n_experts > 0 {
        println!(
            "kernel GFLOP/s moe [B={beam}, {} experts top-{}, d {d}, hidden {hidden}, f32]: {:.2}",
            cfg.n_experts,
            cfg.top_k,
            moe_gflops(&g, beam, d, hidden, cfg.n_experts, cfg.top_k)
        );
    }

    let n = file.catalog.len() as u64;
    let history: Vec<u64> = (0..cfg.max_history as u64)
        .map(|i| file.catalog.item_id(((1 + (i * 7919) % n) - 1) as usize))
        .collect();
    let req = Request::new(history.clone(), beam, beam.min(10));
    // All of the request's FLOPs (products, experts, attention), counted on the CPU as
    // `onerec bench` counts them; the wgpu stats count only the matmul kernels' FLOPs.
    let all_flops = {
        let counting = CpuBackend::new();
        let counter = counting.flop_counter();
        let cm = Model::new(counting, file.clone()).expect("counting model");
        let trie = cm.file_snapshot().expect("catalog");
        counter.store(0, std::sync::atomic::Ordering::Relaxed);
        recommend(&cm, &trie, std::slice::from_ref(&req)).expect("counted request");
        counter.load(std::sync::atomic::Ordering::Relaxed) as f64
    };
    let gm = Model::new(g.clone(), file.clone()).expect("wgpu model");
    let trie = gm.file_snapshot().expect("catalog");
    recommend(&gm, &trie, std::slice::from_ref(&req)).expect("warm-up");
    let s0 = g.stats();
    let hist_rows = file.catalog.resolve(&history).expect("history");
    let enc = gm.encode(&hist_rows, None).expect("encode");
    let _ = gm.backend.download(&enc).expect("download");
    let enc_stats = diff(s0, g.stats());
    let mut times = Vec::new();
    // Each request is paired with a microbenchmark run just before it: on a shared
    // machine the speed drifts within seconds, and a ratio of neighbours drifts less.
    let mut ratios = Vec::new();
    let mut ratios_all = Vec::new();
    let mut per_req = StatsSnapshot::default();
    for _ in 0..repeat {
        let near = matmul_gflops(&g, DType::F32, 1024, 1024, 1024, 1);
        g.reset_kernel_times();
        let a = g.stats();
        let t = Instant::now();
        std::hint::black_box(recommend(&gm, &trie, std::slice::from_ref(&req)).expect("request"));
        let secs = t.elapsed().as_secs_f64();
        times.push(secs);
        per_req = diff(a, g.stats());
        ratios.push(per_req.matmul_flops as f64 / secs / 1e9 / near);
        ratios_all.push(all_flops / secs / 1e9 / near);
    }
    times.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    ratios_all.sort_by(f64::total_cmp);
    let wgpu_s = times[times.len() / 2];
    let steps = (cfg.dec_len() - 1) as u64;
    let dec = StatsSnapshot {
        dispatches: per_req.dispatches.saturating_sub(enc_stats.dispatches),
        submissions: per_req.submissions.saturating_sub(enc_stats.submissions),
        // The encoder's output stays on the device: every byte read back is a survivor list.
        readback_bytes: per_req.readback_bytes,
        upload_bytes: per_req.upload_bytes.saturating_sub(enc_stats.upload_bytes),
        matmul_flops: 0,
    };
    let gflops = per_req.matmul_flops as f64 / wgpu_s / 1e9;
    println!(
        "wgpu request: {wgpu_s:.3} s, {:.1} GFLOP of matmul, {gflops:.2} GFLOP/s = {:.0}% of the microbenchmark",
        per_req.matmul_flops as f64 / 1e9,
        100.0 * gflops / micro
    );
    println!(
        "wgpu request vs the microbenchmark run just before it, {} pairs: median {:.0}% (min {:.0}%, max {:.0}%)",
        ratios.len(),
        100.0 * ratios[ratios.len() / 2],
        100.0 * ratios[0],
        100.0 * ratios[ratios.len() - 1]
    );
    println!(
        "all of the request's FLOPs ({:.1} GFLOP: products, experts and attention, as `onerec bench` counts them) vs the microbenchmark run just before, {} pairs: median {:.0}% (min {:.0}%, max {:.0}%)",
        all_flops / 1e9,
        ratios_all.len(),
        100.0 * ratios_all[ratios_all.len() / 2],
        100.0 * ratios_all[0],
        100.0 * ratios_all[ratios_all.len() - 1]
    );
    println!(
        "per decode step ({steps} steps, encoder's launches excluded): {:.1} dispatches, {:.2} submissions, {:.0} readback bytes, {:.0} upload bytes; whole request: {} dispatches, {} submissions, {} readback bytes",
        dec.dispatches as f64 / steps as f64,
        dec.submissions as f64 / steps as f64,
        dec.readback_bytes as f64 / steps as f64,
        dec.upload_bytes as f64 / steps as f64,
        per_req.dispatches,
        per_req.submissions,
        per_req.readback_bytes
    );
    // ONEREC_WGPU_TIMESTAMPS=1: the last request's GPU time per kernel.
    let kt = g.kernel_times();
    if !kt.is_empty() {
        let busy: f64 = kt.iter().map(|k| k.2).sum();
        println!("kernel time of the last request (timestamps): {busy:.3} s in all");
        for (k, n, secs) in &kt {
            println!(
                "  {k}: {n} launches, {secs:.4} s ({:.0} us each)",
                1e6 * secs / *n as f64
            );
        }
    }
    for (k, n, secs) in g.profile().iter().take(20) {
        println!("profile: {k}: {n} launches, {secs:.3} s");
    }
    drop(gm);

    let cm = Model::new(CpuBackend::new(), file.clone()).expect("cpu model");
    // A catalog snapshot belongs to the backend that made it.
    let cpu_trie = cm.file_snapshot().expect("catalog");
    recommend(&cm, &cpu_trie, std::slice::from_ref(&req)).expect("warm-up");
    let t = Instant::now();
    std::hint::black_box(recommend(&cm, &cpu_trie, std::slice::from_ref(&req)).expect("request"));
    let cpu_s = t.elapsed().as_secs_f64();
    println!(
        "cpu request: {cpu_s:.3} s ({} threads); wgpu/cpu time ratio {:.2}",
        rayon::current_num_threads(),
        wgpu_s / cpu_s
    );
}
