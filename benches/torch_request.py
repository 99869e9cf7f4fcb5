"""Times the PyTorch reference (eager, CPU) on a benchmark request.

    python3 benches/torch_request.py --model target/bench/medium --threads 2

Prints one JSON line: median seconds of (a) the whole reference request (encoder +
constrained beam search, Python trie included) and (b) the model compute alone
(encoder + every decoder step for `beam` rows + the heads + log-softmax, no search),
so the comparison with the engine is fair either way.
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


@torch.no_grad()
def forward_only(model, catalog, hist: list[int], beam: int) -> None:
    cfg = model.cfg
    L = cfg.n_levels
    sids = torch.tensor([catalog.sid_of(i) for i in hist], dtype=torch.long)
    state = model.start_decoding(model.encode(sids))
    codes = torch.zeros(beam, dtype=torch.long)
    for t in range(cfg.dec_len - 1):
        s = t % (L + 1)
        x = model.dec.token(t, None if s == 0 else codes)
        if s == 0:
            x = x.expand(beam, -1)
        y = state.step(x)
        if s < L:
            model.level_logprobs(y, s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--beam", type=int, default=128)
    ap.add_argument("--history", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-search", action="store_true", help="time only the model compute")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, catalog, _ = load_checkpoint(a.model)
    hist = history(len(catalog), a.history)
    out = {"threads": a.threads, "beam": a.beam, "history": a.history, "torch": torch.__version__}

    def median_of(fn) -> float:
        fn()  # warm-up
        times = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out["forward_only_s"] = median_of(lambda: forward_only(model, catalog, hist, a.beam))
    if not a.skip_search:
        req = Request(history=hist, beam=a.beam, results=min(10, a.beam))
        out["request_s"] = median_of(lambda: beam_search(model, catalog, req))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
