"""Times the PyTorch reference on a CUDA GPU on the benchmark request.

    python3 benches/torch_cuda_request.py --model target/bench/medium [--device cuda]
        [--dtype float32|float16|bfloat16] [--beam 128] [--history 256] [--repeat 5]

The reference is written for the CPU; `torch.set_default_device` places every tensor it
creates on the chosen device, so the same code runs on the GPU. Prints one JSON line:
median seconds of the model compute alone (encoder + every decoder step for `beam`
rows + heads + log-softmax, as in torch_request.py) and, where the reference's Python
beam search runs on the device, of the whole request. `--device cpu` checks the script
on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_history import history  # noqa: E402
from onerec_ref.beam import Request, beam_search  # noqa: E402
from onerec_ref.checkpoint import load_checkpoint  # noqa: E402
from torch_request import forward_only  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--beam", type=int, default=128)
    ap.add_argument("--history", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("torch sees no CUDA device (torch.cuda.is_available() is False)")
    # Exact f32 products, as the engine computes them (no TF32).
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_default_device(dev)
    model, catalog, _ = load_checkpoint(a.model)
    model = model.to(device=dev, dtype=getattr(torch, a.dtype)).eval()
    hist = history(len(catalog), a.history)
    out = {"device": str(dev), "dtype": a.dtype, "beam": a.beam, "history": a.history, "torch": torch.__version__}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def median_of(fn) -> float:
        fn()  # warm-up (kernel selection, allocator)
        sync()
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    with torch.no_grad():
        out["forward_only_s"] = median_of(lambda: forward_only(model, catalog, hist, a.beam))
        try:
            req = Request(history=hist, beam=a.beam, results=min(10, a.beam))
            out["request_s"] = median_of(lambda: beam_search(model, catalog, req))
        except Exception as e:  # the Python search is CPU-minded; report, do not hide
            out["request_error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
