#!/usr/bin/env bash
# Every test of the project, from a fresh clone: installs what is missing, then runs the
# Rust tests (CPU and the Vulkan GPU backend on lavapipe) and each scripts/ci.d/*.sh step.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
scripts/setup.sh

echo "== cargo test (workspace)"
start=$SECONDS
# Every workspace binary first, with the workspace's feature set: tests run
# onerec-quantize as a process, which `cargo test` alone does not rebuild.
cargo build --workspace --release --bins 2>&1
cargo test --workspace --release 2>&1
echo "== cargo test: $((SECONDS - start)) s"

for step in scripts/ci.d/*.sh; do
    [ -e "$step" ] || continue
    echo "== $step"
    start=$SECONDS
    bash "$step"
    echo "== $step: $((SECONDS - start)) s"
done
echo "== all tests passed in $SECONDS s"
