//! `onerec-fuzz TARGET`: long fuzz runs and replays of saved inputs (docs/FUZZING.md).

use anyhow::{bail, Context, Result};
use clap::Parser;
use onerec_fuzz::{fuzz, runner, Options, Target};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    /// Where crashing, slow and hanging inputs are written (default: target/fuzz-artifacts).
    #[arg(long)]
    artifacts: Option<PathBuf>,
    /// An input running longer than this many ms is a hang.
    #[arg(long, default_value_t = 60_000)]
    hang_ms: u64,
    /// Runs these inputs once each (to reproduce an artifact) instead of fuzzing.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
}

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

fn run(args: Args) -> Result<bool> {
    let Some(target) = Target::from_name(&args.target) else {
        bail!(
            "unknown target `{}` (model_file, checkpoint or request)",
            args.target
        );
    };
    if !args.replay.is_empty() {
        let mut ok = true;
        for p in &args.replay {
            let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let start = Instant::now();
            match std::panic::catch_unwind(|| target.run(&data)) {
                Ok(outcome) => println!("{}: {outcome} ({:?})", p.display(), start.elapsed()),
                Err(panic) => {
                    ok = false;
                    let msg = runner::panic_message(&*panic);
                    println!("{}: CRASH {msg}", p.display());
                }
            }
        }
        return Ok(ok);
    }
    let mut opts = Options::new(target, Duration::from_secs_f64(args.seconds), args.seed);
    opts.runs = args.runs;
    opts.hang = Duration::from_millis(args.hang_ms);
    opts.progress = true;
    if let Some(c) = args.corpus {
        opts.corpus = c;
    }
    if let Some(a) = args.artifacts {
        opts.artifacts = a;
    }
    let stats = fuzz(target, &opts).with_context(|| format!("fuzzing {}", target.name()))?;
    for (path, msg) in &stats.findings {
        eprintln!("FOUND: {msg}\n  saved to {}", path.display());
    }
    println!("{}", stats.line(target, args.seed));
    Ok(stats.clean())
}
