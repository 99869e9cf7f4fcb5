#!/usr/bin/env bash
# The CUDA backend on a machine without a GPU or a CUDA toolkit (docs/CUDA.md):
# 1. every engine/shaders/cuda/*.cu kernel compiles through NVRTC (PyPI wheels) to a CUBIN for
#    sm_80 and sm_90 with no warning, no register spill and no local memory; the
#    registers and shared memory of each kernel are printed;
# 2. the `cuda` feature builds and `onerec recommend --backend cuda` exits non-zero with a
#    clear message. (The CUDA tests, tests/cuda.rs, are compiled and linted by 05-lint.sh
#    with the feature on; building them in release here cost two minutes of CI for a
#    "skipped" line.)
# Kernels are executed only where a CUDA GPU runs `cargo test --features cuda`.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS

version=13.5.37
wheels=${ONEREC_CUDA_WHEELS:-$HOME/.cache/onerec/cuda-wheels}
find_nvrtc() { find "$wheels" -name 'libnvrtc.so.13' -print -quit 2>/dev/null; }
if [ "$(cat "$wheels/.version" 2>/dev/null)" != "$version" ] || [ -z "$(find_nvrtc)" ]; then
    echo "installing NVRTC $version (PyPI wheels) into $wheels"
    python3 -m pip --version >/dev/null 2>&1 || { echo "python3 -m pip is missing: install python3-pip" >&2; exit 1; }
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet --disable-pip-version-check --upgrade \
        --target "$wheels" "nvidia-cuda-nvrtc==$version" "nvidia-cuda-runtime==$version"
    echo "$version" > "$wheels/.version"
fi
lib=$(dirname "$(find_nvrtc)")
include=$(dirname "$(find "$wheels" -name cuda_fp16.h -print -quit)")
ls "$lib"/libnvrtc-builtins.so* >/dev/null   # NVRTC loads its builtins from its own folder
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export ONEREC_CUDA_INCLUDE="$include"

echo "-- compiling every CUDA kernel for sm_80 and sm_90 (NVRTC, ptxas -v)"
cargo run --release --quiet -p onerec-engine --features cuda --example cuda_check -- 80 90

echo "-- the cuda feature without a device: CLI error"
cargo build --release --quiet --features cuda --bin onerec
set +e
out=$(target/release/onerec recommend --model tests/fixtures/dense_l3 --history 1 --backend cuda 2>&1)
code=$?
set -e
echo "onerec recommend --backend cuda -> exit $code: $out"
if [ "$code" -eq 0 ]; then
    echo "a CUDA device is present: run ONEREC_REQUIRE_CUDA=1 cargo test --release --features cuda"
elif ! grep -q "backend \`cuda\`: " <<<"$out" || grep -qiE "panicked|does not include" <<<"$out"; then
    echo "FAIL: expected a clear 'backend \`cuda\`' error from a build with the cuda feature" >&2
    exit 1
fi
echo "cuda step done in $((SECONDS - start))s"
