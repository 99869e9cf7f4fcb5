#!/usr/bin/env bash
# Formatting, lints (warnings are errors) and doc tests of the whole workspace.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "-- cargo fmt --all --check"
cargo fmt --all --check
# With the cuda feature, so the CUDA backend and its tests (which need a device to run)
# are compiled and linted too; only two small `not(feature = "cuda")` items are left out.
echo "-- cargo clippy --workspace --all-targets --features cuda -- -D warnings"
cargo clippy --workspace --all-targets --features cuda -- -D warnings 2>&1 | tail -3
echo "-- cargo test --doc --workspace"
cargo test --doc --workspace --release 2>&1 | grep -E "^test result|error" | sort | uniq -c
echo "lint: fmt, clippy and doc tests passed"
