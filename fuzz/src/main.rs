//! `onerec-fuzz`: a mutation fuzzer for the engine's entry points that runs on stable
//! Rust with no instrumentation (docs/FUZZING.md says why and how to run it).
//!
//! It is guided by outcomes, not code coverage: an input whose result (accepted, or
//! which error, numbers removed) was never seen joins the pool that later inputs are
//! mutated from. A panic is a crash; an input running longer than `--hang-ms` is a hang
//! (a watchdog thread saves it and stops the run). Both are saved under `--artifacts`.

mod mutate;
mod rng;
mod targets;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rng::Rng;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use targets::Target;

#[derive(Parser, Debug)]
#[command(name = "onerec-fuzz", about = "Mutation fuzzer for the OneRec engine")]
struct Args {
    /// model_file, checkpoint or request.
    target: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Stop after this many executions (whichever comes first).
    #[arg(long, default_value_t = u64::MAX)]
    runs: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed inputs (default: fuzz/corpus/TARGET).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where crashing and hanging inputs are written.
    #[arg(long, default_value = "target/fuzz-artifacts")]
    artifacts: PathBuf,
    /// An input running longer than this is a hang.
    #[arg(long, default_value_t = 60_000)]
    hang_ms: u64,
    /// Runs these inputs once each (to reproduce an artifact) instead of fuzzing.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
}

/// Pool inputs beyond this many bytes in total are not kept.
const POOL_BYTES: usize = 256 << 20;

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn read_dir_inputs(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
        .collect()
}

/// Peak resident memory of this process, in kB (Linux; 0 elsewhere).
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn save(dir: &Path, kind: &str, target: Target, data: &[u8]) -> PathBuf {
    let path = dir.join(format!(
        "{}-{kind}-{:08x}",
        target.name(),
        crc32fast::hash(data)
    ));
    let _ = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, data));
    path
}

/// The last panic's message, recorded by the hook instead of printed on every crash.
static PANIC: Mutex<String> = Mutex::new(String::new());

fn run(args: Args) -> Result<bool> {
    let Some(target) = Target::from_name(&args.target) else {
        bail!(
            "unknown target `{}` (model_file, checkpoint or request)",
            args.target
        );
    };
    std::panic::set_hook(Box::new(|info| {
        *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = info.to_string();
    }));
    let run_one = |data: &[u8]| std::panic::catch_unwind(|| target.run(data));

    if !args.replay.is_empty() {
        let mut ok = true;
        for p in &args.replay {
            let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let start = Instant::now();
            match run_one(&data) {
                Ok(outcome) => println!("{}: {outcome} ({:?})", p.display(), start.elapsed()),
                Err(_) => {
                    ok = false;
                    let msg = PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    println!("{}: CRASH {msg}", p.display());
                }
            }
        }
        return Ok(ok);
    }

    let corpus = args.corpus.clone().unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("corpus")
            .join(target.name())
    });
    let mut pool = read_dir_inputs(&corpus)?;
    if pool.is_empty() {
        bail!("no seed inputs in {}", corpus.display());
    }

    // The watchdog: the input being run and when it started (ms since `epoch`, 0 idle).
    let epoch = Instant::now();
    let current = Arc::new(Mutex::new(Vec::<u8>::new()));
    let started = Arc::new(AtomicU64::new(0));
    {
        let (current, started) = (current.clone(), started.clone());
        let (dir, hang_ms) = (args.artifacts.clone(), args.hang_ms);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let s = started.load(Ordering::Relaxed);
            let now = epoch.elapsed().as_millis() as u64;
            if s != 0 && now.saturating_sub(s) > hang_ms {
                let data = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let p = save(&dir, "hang", target, &data);
                eprintln!(
                    "HANG: an input ran over {hang_ms} ms, saved to {}",
                    p.display()
                );
                std::process::exit(3);
            }
        });
    }

    let mut rng = Rng::new(args.seed);
    let mut seen = HashSet::new();
    let mut pool_bytes: usize = pool.iter().map(Vec::len).sum();
    let (mut execs, mut crashes, mut slow) = (0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    let deadline = epoch + Duration::from_secs_f64(args.seconds);
    let mut next_report = epoch + Duration::from_secs(30);
    let seeds = pool.len();
    let mut i = 0usize;
    while execs < args.runs && Instant::now() < deadline {
        // Every seed runs once as it is, then mutants of the pool.
        let input = if i < seeds {
            pool[i].clone()
        } else {
            let mut d = pool[rng.below(pool.len())].clone();
            let other = &pool[rng.below(pool.len())];
            target.mutate(&mut rng, &mut d, other);
            d
        };
        i += 1;
        current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone_from(&input);
        let start = Instant::now();
        started.store(
            (epoch.elapsed().as_millis() as u64).max(1),
            Ordering::Relaxed,
        );
        let result = run_one(&input);
        started.store(0, Ordering::Relaxed);
        let took = start.elapsed();
        slowest = slowest.max(took);
        execs += 1;
        if took > target.slow_limit() {
            slow += 1;
            let p = save(&args.artifacts, "slow", target, &input);
            eprintln!("SLOW: {took:?}, saved to {}", p.display());
        }
        match result {
            Err(_) => {
                crashes += 1;
                let msg = PANIC.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let p = save(&args.artifacts, "crash", target, &input);
                eprintln!("CRASH: {msg}\n  saved to {}", p.display());
            }
            Ok(outcome) => {
                if seen.insert(outcome) && pool_bytes + input.len() <= POOL_BYTES {
                    pool_bytes += input.len();
                    pool.push(input);
                }
            }
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(30);
            eprintln!(
                "{}: {execs} execs, {:.0}/s, {} outcomes, {crashes} crashes",
                target.name(),
                execs as f64 / epoch.elapsed().as_secs_f64(),
                seen.len()
            );
        }
    }
    let secs = epoch.elapsed().as_secs_f64();
    println!(
        "{}: {execs} execs in {secs:.0} s ({:.0}/s), {} distinct outcomes, {crashes} crashes, \
         {slow} slow (>{:?}; slowest {slowest:?}), 0 hangs, peak RSS {} kB, seed {}",
        target.name(),
        execs as f64 / secs,
        seen.len(),
        target.slow_limit(),
        peak_rss_kb(),
        args.seed
    );
    Ok(crashes == 0 && slow == 0)
}
