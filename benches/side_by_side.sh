#!/usr/bin/env bash
# The engine's CPU backend, PyTorch eager (the reference) and ONNX Runtime (our export of
# the reference, benches/onnx_export.py) on one checkpoint, same request, same threads,
# in one run; prints the medians and the ratios.
#   benches/side_by_side.sh [medium|small|tiny] [threads] [repeat]
# ORT_SPINNING=1 lets ORT's intra-op threads spin (default off). SKIP_TORCH=1 leaves
# PyTorch out (minutes per request on the medium preset on a loaded machine);
# TORCH_ARGS adds arguments to torch_request.py (e.g. "--skip-search --repeat 1").
# Needs python3 with torch, onnx, onnxruntime, safetensors
# (reference/requirements.txt + `pip install onnx onnxruntime`).
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-medium}
threads=${2:-2}
repeat=${3:-3}
model=target/bench/$preset
spin=()
[ "${ORT_SPINNING:-0}" = 1 ] && spin=(--spinning)
[ -f "$model/model.safetensors" ] || python3 benches/synthetic.py --preset "$preset" --out "$model"
# Re-export when the checkpoint is newer than the graphs.
if [ ! -f "$model/onnx/meta.json" ] || [ "$model/model.safetensors" -nt "$model/onnx/meta.json" ]; then
    python3 benches/onnx_export.py --model "$model"
fi
cargo build --release --example bench_request -q
echo "before: $(uptime)"
engine=$(RAYON_NUM_THREADS=$threads target/release/examples/bench_request "$model" --backend cpu --repeat "$repeat")
if [ "${SKIP_TORCH:-0}" = 1 ]; then
    torch='{"torch": "skipped", "forward_only_s": NaN}'
else
    torch=$(python3 benches/torch_request.py --model "$model" --threads "$threads" --repeat "$repeat" ${TORCH_ARGS:-})
fi
ort=$(python3 benches/ort_request.py --model "$model" --threads "$threads" --repeat "$repeat" ${spin[@]+"${spin[@]}"})
echo "after:  $(uptime)"
echo "engine: $engine"
echo "torch:  $torch"
echo "ort:    $ort"
python3 - "$preset" "$engine" "$torch" "$ort" <<'PY'
import json, sys
preset, (e, t, o) = sys.argv[1], (json.loads(x) for x in sys.argv[2:])
nan = float("nan")
print(f"\n{preset}, {e['threads']} threads, beam {e['beam']}, history {e['history']}; medians in s")
print(f"| {'':34} | request | model compute only | engine / this (request) |")
print(f"| {'-' * 34} | ------- | ------------------ | ----------------------- |")
rows = [("engine (--backend cpu)", e["request_s"], None),
        (f"PyTorch eager ({t['torch']})", t.get("request_s", nan), t["forward_only_s"]),
        (f"ONNX Runtime {o['onnxruntime']} (spin {'on' if o['spinning'] else 'off'})",
         o.get("request_s", nan), o["forward_only_s"])]
for name, req, fwd in rows:
    ratio = e["request_s"] / req
    print(f"| {name:34} | {req:7.3f} | {'' if fwd is None else f'{fwd:.3f}':>18} | {ratio:23.2f} |")
print(f"engine/ORT {e['request_s'] / o.get('request_s', nan):.2f}x, "
      f"engine/torch {e['request_s'] / t.get('request_s', nan):.2f}x (whole request); "
      f"vs model compute only: engine/ORT {e['request_s'] / o['forward_only_s']:.2f}x, "
      f"engine/torch {e['request_s'] / t['forward_only_s']:.2f}x")
PY
