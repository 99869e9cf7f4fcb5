#!/usr/bin/env bash
# For a machine with an NVIDIA GPU: one checkpoint and one request, four ways, in one
# run: the engine on `cuda`, on `wgpu` (Vulkan on the same GPU), on `cpu`, and the
# PyTorch reference on CUDA. Prints each median time and its ratio to the CUDA backend.
#   benches/cuda_compare.sh [medium|small|tiny] [beam] [history]
# Needs: the NVIDIA driver (with its Vulkan ICD for wgpu), NVRTC 13 on LD_LIBRARY_PATH
# and cuda_fp16.h (see docs/CUDA.md; `pip install nvidia-cuda-nvrtc nvidia-cuda-runtime`
# works), PyTorch with CUDA for the reference. A leg that cannot run is reported, the
# others still run. REPEAT (default 5) sets the timed repetitions after one warm-up.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-medium}
beam=${2:-128}
hist=${3:-256}
repeat=${REPEAT:-5}
model=target/bench/$preset
[ -f "$model/model.safetensors" ] || python3 benches/synthetic.py --preset "$preset" --out "$model"

# The pip wheels, where they are the NVRTC in use (scripts/ci.d/40-cuda-compile.sh puts them here).
wheels=${ONEREC_CUDA_WHEELS:-$HOME/.cache/onerec/cuda-wheels}
if [ -e "$wheels/nvidia/cu13/lib/libnvrtc.so.13" ]; then
    export LD_LIBRARY_PATH="$wheels/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export ONEREC_CUDA_INCLUDE=${ONEREC_CUDA_INCLUDE:-$wheels/nvidia/cu13/include}
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi not found"

cargo build --release --features cuda --example bench_request -q
bin=target/release/examples/bench_request
leg() { # name, then the command; prints its JSON line or {"error": ...}
    local name=$1 out
    shift
    if out=$("$@" 2>/tmp/onerec-bench-$name.err); then
        echo "$out" | tail -n 1
    else
        python3 -c 'import json,sys; lines=[l for l in open(sys.argv[1]).read().splitlines() if l.strip()]; print(json.dumps({"error": lines[0][:400] if lines else "no output"}))' /tmp/onerec-bench-$name.err
    fi
}
cuda=$(leg cuda "$bin" "$model" --backend cuda --beam "$beam" --history "$hist" --repeat "$repeat")
wgpu=$(WGPU_BACKEND=vulkan leg wgpu "$bin" "$model" --backend wgpu --beam "$beam" --history "$hist" --repeat "$repeat")
cpu=$(leg cpu "$bin" "$model" --backend cpu --beam "$beam" --history "$hist" --repeat "$repeat")
torch=$(leg torch python3 benches/torch_cuda_request.py --model "$model" --beam "$beam" --history "$hist" --repeat "$repeat")

python3 - "$preset" "$beam" "$hist" "$cuda" "$wgpu" "$cpu" "$torch" <<'PY'
import json, sys
preset, beam, hist = sys.argv[1:4]
legs = dict(zip(["engine cuda", "engine wgpu", "engine cpu", "torch cuda"], map(json.loads, sys.argv[4:8])))
print(f"model {preset}, beam {beam}, history {hist}: median seconds of one whole request")
base = legs["engine cuda"].get("request_s")
for name, r in legs.items():
    if "error" in r:
        print(f"  {name:<12} did not run: {r['error']}")
        continue
    t = r.get("request_s")
    what = r.get("backend") or f"{r.get('gpu', r.get('device'))}, {r.get('dtype')}"
    line = f"  {name:<12} {t:9.4f}s" if t is not None else f"  {name:<12} {'n/a':>9} "
    if t is not None and base:
        line += f"  x{t / base:6.2f} of cuda"
    if "forward_only_s" in r:
        fo = r["forward_only_s"]
        line += f"  (model compute only {fo:.4f}s" + (f", x{fo / base:.2f} of cuda)" if base else ")")
    if name == "engine wgpu" and ("Cpu" in what or "llvmpipe" in what):
        line += "  [NOTE: wgpu ran on a CPU adapter, not the GPU]"
    if "request_error" in r:
        line += f"  [search: {r['request_error']}]"
    print(f"{line}  [{what}]")
PY
