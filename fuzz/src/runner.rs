//! The run loop: seeds first, then mutants of the pool. It is guided by outcomes, not
//! code coverage: an input whose result (accepted, or which error) was never seen joins
//! the pool that later inputs are mutated from. A panic is a crash; an input slower than
//! the target's limit is "slow"; one running past `hang` is a hang (a watchdog thread
//! saves it and ends the process with status 3, since a stuck call cannot be stopped).

use crate::rng::Rng;
use crate::targets::Target;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pool inputs beyond this many bytes in total are not kept.
const POOL_BYTES: usize = 256 << 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub runs: u64,
    pub seed: u64,
    /// Seed inputs.
    pub corpus: PathBuf,
    /// Where crashing, slow and hanging inputs are written.
    pub artifacts: PathBuf,
    pub hang: Duration,
    /// Progress lines on stderr every 30 s.
    pub progress: bool,
}

impl Options {
    /// Defaults for `target`: the committed corpus, artifacts under `target/`.
    pub fn new(target: Target, duration: Duration, seed: u64) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        Options {
            duration,
            runs: u64::MAX,
            seed,
            corpus: root.join("corpus").join(target.name()),
            artifacts: root.join("../target/fuzz-artifacts"),
            hang: Duration::from_secs(60),
            progress: false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub execs: u64,
    pub seconds: f64,
    pub outcomes: usize,
    pub crashes: u64,
    pub slow: u64,
    pub slowest: Duration,
    /// Peak resident memory of the process, kB (Linux; 0 elsewhere).
    pub peak_rss_kb: u64,
    /// Where each crashing or slow input was saved, with its panic message.
    pub findings: Vec<(PathBuf, String)>,
}

impl Stats {
    pub fn clean(&self) -> bool {
        self.crashes == 0 && self.slow == 0
    }

    pub fn line(&self, target: Target, seed: u64) -> String {
        format!(
            "{}: {} execs in {:.0} s ({:.0}/s), {} distinct outcomes, {} crashes, {} slow \
             (>{:?}; slowest {:?}), 0 hangs, peak RSS {} kB, seed {seed}",
            target.name(),
            self.execs,
            self.seconds,
            self.execs as f64 / self.seconds.max(1e-9),
            self.outcomes,
            self.crashes,
            self.slow,
            target.slow_limit(),
            self.slowest,
            self.peak_rss_kb,
        )
    }
}

pub fn read_inputs(dir: &Path) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

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

pub fn save(dir: &Path, kind: &str, target: Target, data: &[u8]) -> PathBuf {
    let name = format!("{}-{kind}-{:08x}", target.name(), crc32fast::hash(data));
    let path = dir.join(name);
    let _ = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, data));
    path
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-text panic)".into())
}

fn slow_again(target: Target, input: &[u8]) -> bool {
    let start = Instant::now();
    let _ = std::panic::catch_unwind(|| target.run(input));
    start.elapsed() > target.slow_limit()
}

/// Fuzzes `target` until `opts.duration` or `opts.runs` is reached.
pub fn fuzz(target: Target, opts: &Options) -> std::io::Result<Stats> {
    let mut pool = read_inputs(&opts.corpus)?;
    if pool.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no seed inputs in {}", opts.corpus.display()),
        ));
    }
    let epoch = Instant::now();
    // The watchdog: the input being run and when it started (ms since `epoch`, 0 idle).
    let current = Arc::new(Mutex::new(Vec::<u8>::new()));
    let started = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    {
        let (current, started, done) = (current.clone(), started.clone(), done.clone());
        let (dir, hang) = (opts.artifacts.clone(), opts.hang);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let s = started.load(Ordering::Relaxed);
                let now = epoch.elapsed().as_millis() as u64;
                if s != 0 && now.saturating_sub(s) > hang.as_millis() as u64 {
                    let data = current.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let p = save(&dir, "hang", target, &data);
                    eprintln!("HANG: an input ran over {hang:?}, saved to {}", p.display());
                    std::process::exit(3);
                }
            }
        });
    }

    let mut rng = Rng::new(opts.seed);
    let mut seen = HashSet::new();
    let mut pool_bytes: usize = pool.iter().map(Vec::len).sum();
    let mut stats = Stats::default();
    let deadline = epoch + opts.duration;
    let mut next_report = epoch + Duration::from_secs(30);
    let seeds = pool.len();
    let mut i = 0usize;
    while stats.execs < opts.runs && Instant::now() < deadline {
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
        let now_ms = (epoch.elapsed().as_millis() as u64).max(1);
        started.store(now_ms, Ordering::Relaxed);
        let result = std::panic::catch_unwind(|| target.run(&input));
        started.store(0, Ordering::Relaxed);
        let took = start.elapsed();
        stats.slowest = stats.slowest.max(took);
        stats.execs += 1;
        // A stall of a loaded machine is not the input's fault: slow only if a second
        // run is slow too (each of the slow inputs of the first long run took
        // microseconds when re-run).
        if took > target.slow_limit() && slow_again(target, &input) {
            stats.slow += 1;
            let p = save(&opts.artifacts, "slow", target, &input);
            stats.findings.push((p, format!("slow: {took:?}")));
        }
        match result {
            Err(panic) => {
                stats.crashes += 1;
                let p = save(&opts.artifacts, "crash", target, &input);
                stats.findings.push((p, panic_message(&*panic)));
            }
            Ok(outcome) => {
                if seen.insert(outcome) && pool_bytes + input.len() <= POOL_BYTES {
                    pool_bytes += input.len();
                    pool.push(input);
                }
            }
        }
        if opts.progress && Instant::now() >= next_report {
            next_report += Duration::from_secs(30);
            eprintln!(
                "{}: {} execs, {:.0}/s, {} outcomes, {} crashes",
                target.name(),
                stats.execs,
                stats.execs as f64 / epoch.elapsed().as_secs_f64(),
                seen.len(),
                stats.crashes
            );
        }
    }
    done.store(true, Ordering::Relaxed);
    stats.seconds = epoch.elapsed().as_secs_f64();
    stats.outcomes = seen.len();
    stats.peak_rss_kb = peak_rss_kb();
    Ok(stats)
}
