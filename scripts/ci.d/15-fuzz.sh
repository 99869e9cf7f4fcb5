#!/usr/bin/env bash
# A short run of each fuzz target (docs/FUZZING.md has the long run): 20 s each from the
# committed seed corpus, through the test binary (`--workspace` keeps the feature set of
# the main test build, so nothing is rebuilt). The seed is the day number
# (ONEREC_FUZZ_SEED overrides; it is printed): runs differ from day to day, and a failure
# reproduces. Any crash or slow input fails, saved under target/fuzz-artifacts; an
# address-space limit makes memory growth a failure too.
set -euo pipefail
cd "$(dirname "$0")/../.."
export ONEREC_FUZZ_SECONDS="${ONEREC_FUZZ_SECONDS:-20}"
( ulimit -v 8388608
  cargo test --workspace --release --test tests fuzz:: -- --nocapture --test-threads 1 2>&1 |
      grep -E "execs in|test result|panicked|FAILED|error" )
