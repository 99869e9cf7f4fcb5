//! `onerec bench`: the engine's llama-bench. Runs a grid of backend × weight type ×
//! beam × history × batch on one model (the built-in one, a model path, or a synthetic
//! size) and prints ms per request (median/min/max), requests/s, GFLOP/s and the share
//! of a square-GEMM roofline measured on the same machine in the same run.

mod synthetic;

use anyhow::{bail, Context, Result};
use onerec_engine::model_file::ModelFile;
use onerec_engine::tensor::{Blob, DType, TensorView};
use onerec_engine::{schema, Backend, BackendKind, CpuBackend, Engine, Request};
use onerec_quantize::policy::{stored_dtype, Target};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Model file or checkpoint directory; default: the built-in model.
    #[arg(long, conflicts_with = "synthetic")]
    model: Option<PathBuf>,
    /// A random model of a named size instead: tiny, small or medium (issue 12's sizes).
    #[arg(long)]
    synthetic: Option<String>,
    /// Backends, comma-separated (cpu, wgpu, cuda, auto).
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Weight types, comma-separated: stored (as the model holds them), f32, f16, q8, q4.
    #[arg(long, default_value = "stored")]
    dtype: String,
    /// Beam widths, comma-separated.
    #[arg(long, default_value = "16,128")]
    beam: String,
    /// History lengths, comma-separated (capped at the model's max_history by the engine).
    #[arg(long, default_value = "256")]
    history: String,
    /// Requests per `recommend` call, comma-separated.
    #[arg(long, default_value = "1")]
    batch: String,
    /// Timed calls per grid cell (after one warm-up call).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Also time every backend op (CPU backend only): where a request's time goes.
    #[arg(long)]
    profile: bool,
}

struct Row {
    backend: String,
    dtype: String,
    beam: usize,
    history: usize,
    batch: usize,
    /// Seconds per request of each timed call.
    times: Vec<f64>,
    /// CPU seconds (all threads) per request of each timed call, where measurable.
    cpu: Vec<f64>,
    flops: f64,
    roofline_gflops: f64,
    /// With `--profile` on the CPU: (op, calls, seconds) per request.
    profile: Vec<(&'static str, f64, f64)>,
}

fn list<T: std::str::FromStr>(what: &str, s: &str) -> Result<Vec<T>> {
    let v: Vec<T> = s
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse()
                .map_err(|_| anyhow::anyhow!("{what}: `{t}` is not valid"))
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        bail!("{what}: empty list");
    }
    Ok(v)
}

pub fn bench(a: BenchArgs) -> Result<()> {
    let backends: Vec<String> = list("--backend", &a.backend)?;
    let kinds: Vec<BackendKind> = backends
        .iter()
        .map(|b| b.parse::<BackendKind>())
        .collect::<Result<_, _>>()?;
    let dtypes: Vec<String> = list("--dtype", &a.dtype)?;
    let beams: Vec<usize> = list("--beam", &a.beam)?;
    let histories: Vec<usize> = list("--history", &a.history)?;
    let batches: Vec<usize> = list("--batch", &a.batch)?;
    if a.repeat == 0 || a.repeat > 1000 {
        bail!("--repeat: {} is outside 1..=1000", a.repeat);
    }
    if let Some(&b) = batches.iter().find(|&&b| b == 0 || b > 4096) {
        bail!("--batch: {b} is outside 1..=4096");
    }
    let (source, name) = match (&a.model, &a.synthetic) {
        (Some(p), _) => (
            ModelFile::open(p).with_context(|| format!("loading {}", p.display()))?,
            p.display().to_string(),
        ),
        (None, Some(s)) => (synthetic::model(s)?, format!("synthetic {s}")),
        (None, None) => (
            crate::default_model::open().context("opening the built-in model")?,
            "built-in".to_string(),
        ),
    };
    let source = Arc::new(source);

    let mut peaks = Vec::new();
    for (b, kind) in backends.iter().zip(&kinds) {
        peaks.push((b.clone(), roofline(*kind)?));
    }
    let cells = dtypes.len() * kinds.len() * beams.len() * histories.len() * batches.len();
    let bar = indicatif::ProgressBar::new((cells * (a.repeat + 2)) as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for dtype in &dtypes {
        let file = convert(&source, dtype)?;
        for (bi, kind) in kinds.iter().enumerate() {
            let profiled = (a.profile && *kind == BackendKind::Cpu)
                .then(|| CpuBackend::new().with_profile(true));
            let ops = profiled.as_ref().map(CpuBackend::op_profile);
            let engine = match profiled {
                Some(cpu) => Engine::with_backend(file.clone(), cpu),
                None => Engine::from_file(file.clone(), *kind),
            }
            .with_context(|| format!("loading on {}", backends[bi]))?;
            let counting = CpuBackend::new();
            let counter = counting.flop_counter();
            let reference = Engine::with_backend(file.clone(), counting)?;
            for &beam in &beams {
                for &history in &histories {
                    for &batch in &batches {
                        bar.set_message(format!(
                            "{} {dtype} beam {beam} history {history} batch {batch}",
                            backends[bi]
                        ));
                        let reqs = requests(&file, beam, history, batch);
                        // FLOPs are the same on every backend: count them on the CPU.
                        counter.store(0, Ordering::Relaxed);
                        reference.recommend(&reqs)?;
                        let flops = counter.load(Ordering::Relaxed) as f64 / batch as f64;
                        bar.inc(1);
                        engine.recommend(&reqs)?; // warm-up
                        bar.inc(1);
                        if let Some(ops) = &ops {
                            ops.reset();
                        }
                        let (mut times, mut cpu) = (Vec::new(), Vec::new());
                        for _ in 0..a.repeat {
                            let c = cpu_seconds();
                            let t = Instant::now();
                            std::hint::black_box(engine.recommend(&reqs)?);
                            times.push(t.elapsed().as_secs_f64() / batch as f64);
                            cpu.push((cpu_seconds() - c) / batch as f64);
                            bar.inc(1);
                        }
                        times.sort_by(f64::total_cmp);
                        cpu.sort_by(f64::total_cmp);
                        let per = (a.repeat * batch) as f64;
                        let profile = ops
                            .as_ref()
                            .map(|o| o.snapshot())
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(op, calls, secs)| (op, calls as f64 / per, secs / per))
                            .collect();
                        rows.push(Row {
                            backend: engine.describe_backend(),
                            dtype: dtype.clone(),
                            beam,
                            history,
                            batch,
                            times,
                            cpu,
                            flops,
                            roofline_gflops: peaks[bi].1,
                            profile,
                        });
                    }
                }
            }
        }
    }
    bar.finish_and_clear();
    if a.json {
        println!("{}", json(&name, &peaks, &rows));
    } else {
        print!("{}", table(&name, &peaks, &rows));
    }
    Ok(())
}

/// CPU time of every thread of this process so far (Linux: the scheduler's per-thread
/// run time in ns; elsewhere NaN). On a shared machine this is steadier than wall time.
fn cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let mut ns = 0u64;
    for t in dir.flatten() {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e9
}

/// Histories of distinct items (ids strided by a prime, as benches/bench_history.py).
fn requests(file: &ModelFile, beam: usize, history: usize, batch: usize) -> Vec<Request> {
    let ids = file.catalog.item_ids();
    let n = ids.len() as u64;
    (0..batch as u64)
        .map(|b| {
            let h = (0..history as u64)
                .map(|i| ids[((b * 104_729 + i * 7919) % n) as usize])
                .collect();
            Request::new(h, beam, beam.min(10))
        })
        .collect()
}

/// The model with its weights in `dtype` (`stored`: unchanged), as the quantize tool
/// would store them (same policy: norms and routers stay f32).
fn convert(file: &Arc<ModelFile>, dtype: &str) -> Result<Arc<ModelFile>> {
    let target = match dtype {
        "stored" => return Ok(file.clone()),
        "f32" => Target::F32,
        "f16" => Target::F16,
        "q8" | "q8_0" => Target::Q8,
        "q4" | "q4_0" => Target::Q4,
        other => bail!("--dtype: `{other}` (expected stored, f32, f16, q8 or q4)"),
    };
    let mut parts = Vec::new();
    for name in &file.names {
        let t = file.tensor(name)?;
        // The catalog is data, not a weight: copied as stored, as the quantize tool does.
        if schema::CATALOG_TENSORS.contains(&name.as_str()) {
            parts.push((name.clone(), t.dtype, t.shape.to_vec(), t.bytes.to_vec()));
            continue;
        }
        let dt = stored_dtype(name, t.shape, target, false);
        let vals = t.to_f32()?;
        let bytes = onerec_engine::format::quant::encode(name, dt, t.shape, &vals)?;
        parts.push((name.clone(), dt, t.shape.to_vec(), bytes));
    }
    Ok(Arc::new(synthetic::from_parts(
        file.config.clone(),
        parts,
        format!("{} as {dtype}", file.source),
    )?))
}

/// GFLOP/s of a square f32 product (1024³) on this backend: the best of the engine's
/// own kernel and, on the CPU, the `gemm` crate's (an independent yardstick).
fn roofline(kind: BackendKind) -> Result<f64> {
    const N: usize = 1024;
    let time_best = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            f()?;
            best = best.min(t.elapsed().as_secs_f64());
        }
        Ok(2.0 * (N * N * N) as f64 / best / 1e9)
    };
    let vals: Vec<f32> = (0..N * N)
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    match kind {
        BackendKind::Cpu | BackendKind::Auto => {
            let mut y = vec![0f32; N * N];
            let crate_gflops = time_best(&mut || {
                // SAFETY: three N×N row-major matrices; y does not alias the inputs.
                unsafe {
                    gemm::gemm(
                        N,
                        N,
                        N,
                        y.as_mut_ptr(),
                        1,
                        N as isize,
                        false,
                        vals.as_ptr(),
                        1,
                        N as isize,
                        vals.as_ptr(),
                        1,
                        N as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(rayon::current_num_threads()),
                    )
                };
                Ok(())
            })?;
            let own = backend_gflops(&CpuBackend::new(), &vals, N, &time_best)?;
            log_line(&format!(
                "square f32 GEMM 1024^3 on the CPU: gemm crate {crate_gflops:.1} GFLOP/s, engine {own:.1} GFLOP/s"
            ));
            Ok(crate_gflops.max(own))
        }
        BackendKind::Wgpu => {
            let g = onerec_engine::WgpuBackend::new()?;
            backend_gflops(&g, &vals, N, &time_best)
        }
        BackendKind::Cuda => bail!("bench: the CUDA roofline is not measured here (use benches/)"),
    }
}

/// A note on stderr (the CLI's diagnostics channel), kept out of the table and JSON.
fn log_line(s: &str) {
    eprintln!("{s}");
}

/// Times a closure (best of a few runs) and returns GFLOP/s of the square product.
type Timer<'a> = dyn Fn(&mut dyn FnMut() -> Result<()>) -> Result<f64> + 'a;

fn backend_gflops<B: Backend>(b: &B, vals: &[f32], n: usize, time_best: &Timer<'_>) -> Result<f64> {
    let blob = Arc::new(Blob::Owned(bytemuck_f32(vals)));
    let shape = [n, n];
    let view = TensorView {
        name: "roofline",
        dtype: DType::F32,
        shape: &shape,
        bytes: blob.bytes(),
        blob: &blob,
    };
    let w = b.weight(&view.as_matrix())?;
    let x = b.upload(vals, n, n)?;
    time_best(&mut || {
        let y = b.matmul(&x, &w)?;
        b.download(&y)?;
        Ok(())
    })
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn stats(r: &Row) -> (f64, f64, f64, f64, f64, f64) {
    let med = median(&r.times);
    let (min, max) = (r.times[0], r.times[r.times.len() - 1]);
    let gflops = r.flops / med / 1e9;
    let roof = if r.roofline_gflops > 0.0 {
        gflops / r.roofline_gflops
    } else {
        f64::NAN
    };
    (med, min, max, 1.0 / med, gflops, roof)
}

fn median(v: &[f64]) -> f64 {
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn table(name: &str, peaks: &[(String, f64)], rows: &[Row]) -> String {
    let mut s = format!("model: {name}; threads: {}\n", rayon::current_num_threads());
    for (b, p) in peaks {
        s += &format!("roofline {b}: square f32 GEMM 1024^3 at {p:.1} GFLOP/s\n");
    }
    s += &format!(
        "{:<28} {:>6} {:>5} {:>7} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>6}\n",
        "backend",
        "dtype",
        "beam",
        "history",
        "batch",
        "ms med",
        "ms min",
        "ms max",
        "cpu ms",
        "req/s",
        "GFLOP/rq",
        "GFLOP/s",
        "roof"
    );
    for r in rows {
        let (med, min, max, rps, gf, roof) = stats(r);
        s += &format!(
            "{:<28} {:>6} {:>5} {:>7} {:>5} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>8.2} {:>8.2} {:>8.1} {:>5.0}%\n",
            r.backend,
            r.dtype,
            r.beam,
            r.history,
            r.batch,
            med * 1e3,
            min * 1e3,
            max * 1e3,
            median(&r.cpu) * 1e3,
            rps,
            r.flops / 1e9,
            gf,
            roof * 100.0
        );
    }
    for r in rows.iter().filter(|r| !r.profile.is_empty()) {
        let mean = r.times.iter().sum::<f64>() / r.times.len() as f64;
        s += &format!(
            "\nprofile {} {} beam {} history {} batch {} (per request; share of the mean {:.1} ms):\n",
            r.backend,
            r.dtype,
            r.beam,
            r.history,
            r.batch,
            mean * 1e3
        );
        for (op, calls, secs) in &r.profile {
            s += &format!(
                "  {op:<32} {calls:>8.1} calls {:>9.2} ms {:>5.1}%\n",
                secs * 1e3,
                100.0 * secs / mean
            );
        }
        let timed: f64 = r.profile.iter().map(|p| p.2).sum();
        s += &format!(
            "  {:<32} {:>14} {:>9.2} ms {:>5.1}%\n",
            "(between ops: search, glue)",
            "",
            (mean - timed) * 1e3,
            100.0 * (mean - timed) / mean
        );
    }
    s
}

fn json(name: &str, peaks: &[(String, f64)], rows: &[Row]) -> String {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let (med, min, max, rps, gf, roof) = stats(r);
            serde_json::json!({
                "backend": r.backend, "dtype": r.dtype, "beam": r.beam,
                "history": r.history, "batch": r.batch,
                "ms_median": med * 1e3, "ms_min": min * 1e3, "ms_max": max * 1e3,
                "cpu_ms_median": median(&r.cpu) * 1e3,
                "requests_per_s": rps, "gflop_per_request": r.flops / 1e9,
                "gflops": gf, "roofline_gflops": r.roofline_gflops, "roofline_share": roof,
                "profile": r.profile.iter().map(|(op, calls, secs)| serde_json::json!({
                    "op": op, "calls_per_request": calls, "ms_per_request": secs * 1e3,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let peaks: serde_json::Map<String, serde_json::Value> = peaks
        .iter()
        .map(|(b, p)| (b.clone(), (*p).into()))
        .collect();
    serde_json::json!({
        "model": name,
        "threads": rayon::current_num_threads(),
        "roofline_gflops": peaks,
        "results": rows,
    })
    .to_string()
}
