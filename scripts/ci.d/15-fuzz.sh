#!/usr/bin/env bash
# A short run of each fuzz target (docs/FUZZING.md has the long run): 30 s each from
# the committed seed corpus, a fixed seed per CI run date so runs differ over time but
# a failure reproduces (the seed is printed). Any crash, slow input or hang fails CI;
# its input is saved under target/fuzz-artifacts.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p onerec-fuzz 2>&1 | tail -1
seed="${ONEREC_FUZZ_SEED:-$(date -u +%Y%m%d)}"
secs="${ONEREC_FUZZ_SECONDS:-30}"
for t in model_file checkpoint request; do
    # An address-space limit: memory that grows with a hostile input fails the run.
    ( ulimit -v 4194304; target/release/onerec-fuzz "$t" --seconds "$secs" --seed "$seed" )
done
echo "fuzz: 3 targets, 0 crashes"
