#!/usr/bin/env bash
# Formatting, lints (warnings are errors) and doc tests of the whole workspace.
set -euo pipefail
cd "$(dirname "$0")/../.."
echo "-- cargo fmt --all --check"
cargo fmt --all --check
echo "-- cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings 2>&1 | tail -3
echo "-- cargo test --doc --workspace"
cargo test --doc --workspace --release 2>&1 | grep -E "^test result|error" | sort | uniq -c
echo "lint: fmt, clippy and doc tests passed"
