#!/usr/bin/env bash
# Side by side in one run on one adapter: the wgpu backend (lavapipe in CI, or a GPU)
# against the CPU backend on the synthetic small and medium configs, with the
# register-tiled matmul microbenchmark as the yardstick, dispatches / submissions /
# readback bytes per decode step, and per-kernel GFLOP/s.
#   [REPEAT=5] benches/wgpu_compare.sh [small|medium ...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
presets=("$@")
[ ${#presets[@]} -gt 0 ] || presets=(small medium)
cargo bench --bench wgpu_request --no-run -q
for p in "${presets[@]}"; do
    model=target/bench/$p
    [ -f "$model/model.safetensors" ] || python3 benches/synthetic.py --preset "$p" --out "$model"
    echo "== $p"
    cargo bench --bench wgpu_request -q -- "$model" --repeat "${REPEAT:-5}"
done
