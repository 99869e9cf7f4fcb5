#!/usr/bin/env bash
# Side by side on one machine in one run: the engine's CPU backend vs the PyTorch
# reference (eager, CPU), same checkpoint, same request, same thread count.
#   benches/cpu_vs_torch.sh [medium|small|tiny] [threads]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-medium}
threads=${2:-2}
model=target/bench/$preset
[ -f "$model/model.safetensors" ] || python3 benches/synthetic.py --preset "$preset" --out "$model"
cargo build --release --example bench_request -q
engine=$(RAYON_NUM_THREADS=$threads target/release/examples/bench_request "$model" --backend cpu --repeat 3)
torch=$(python3 benches/torch_request.py --model "$model" --threads "$threads" --repeat 3)
echo "engine: $engine"
echo "torch:  $torch"
python3 - "$engine" "$torch" <<'PY'
import json, sys
e, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"engine request {e['request_s']:.3f}s | torch request {t.get('request_s', float('nan')):.3f}s "
      f"(x{t.get('request_s', float('nan')) / e['request_s']:.2f}) | torch model compute only "
      f"{t['forward_only_s']:.3f}s (x{t['forward_only_s'] / e['request_s']:.2f})")
PY
