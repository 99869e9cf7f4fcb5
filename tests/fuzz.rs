//! The short fuzz run: every target of `onerec-fuzz` (fuzz/, docs/FUZZING.md) from the
//! committed seed corpus, `ONEREC_FUZZ_SECONDS` per target (default 3; CI's
//! `scripts/ci.d/15-fuzz.sh` runs 30), seeded by `ONEREC_FUZZ_SEED` or the date.

use onerec_fuzz::{fuzz, Options, Target};
use std::time::Duration;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn short_run(target: Target) {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    let seed = env_or("ONEREC_FUZZ_SEED", days);
    let secs = env_or("ONEREC_FUZZ_SECONDS", 3);
    let opts = Options::new(target, Duration::from_secs(secs), seed);
    let stats = fuzz(target, &opts).unwrap();
    println!("{}", stats.line(target, seed));
    assert!(stats.execs > 0);
    assert!(stats.clean(), "{:?}", stats.findings);
}

#[test]
fn model_file_reader() {
    short_run(Target::ModelFile);
}

#[test]
fn checkpoint_reader() {
    short_run(Target::Checkpoint);
}

#[test]
fn request_validation() {
    short_run(Target::Request);
}
