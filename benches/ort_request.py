"""Times ONNX Runtime on the benchmark request, over the graphs of benches/onnx_export.py.

    python3 benches/ort_request.py --model target/bench/medium --threads 2 [--spinning]
    python3 benches/ort_request.py --model target/bench/tiny --check   # == reference beam search

Prints one JSON line like benches/torch_request.py: median seconds of (a) the whole
request (encoder + constrained beam search driven from Python: the step graph for every
beam row, the level's head, the eligible-trie mask and top-B selection on the host, the
KV cache reordered by parent index) and (b) the model compute alone (encoder + every
decoder position for `beam` rows + the heads, no search).

The search is the reference's (onerec_ref.beam: float32 scores, ties to the lower beam
then the lower code, per-session item exclusion) with the candidate selection in numpy
rather than a Python sort. The trie over the catalog is built once at load, as a
deployer would (the reference builds it per request). An item's last code (slot L, not
scored) goes in one step call with the next BOS (T=2): 15 calls instead of 19 for the
default session of 5 items of 3 codes, the same positions and FLOPs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_history import history  # noqa: E402
from onerec_ref.beam import Request, Session, validate  # noqa: E402
from onerec_ref.catalog import Catalog, EligibleTrie  # noqa: E402
from ort_session import OrtModel  # noqa: E402


class HostTrie:
    """EligibleTrie with each prefix's children as a numpy array (built once)."""

    def __init__(self, catalog: Catalog, excluded=()) -> None:
        self.trie = EligibleTrie(catalog, excluded)
        self.children = {p: np.asarray(c, dtype=np.int64) for p, c in self.trie.children.items()}
        self.empty = np.zeros(0, dtype=np.int64)

    def allowed(self, prefix: tuple[int, ...], session_sids: list[tuple[int, ...]]) -> np.ndarray:
        """Same set as EligibleTrie.allowed, ascending."""
        ch = self.children.get(prefix, self.empty)
        s = len(prefix)
        used: dict[int, int] = {}
        for sid in session_sids:
            if sid[:s] == prefix:
                used[sid[s]] = used.get(sid[s], 0) + 1
        full = [c for c, n in used.items() if self.trie.count[prefix + (c,)] - n <= 0]
        return ch[~np.isin(ch, full)] if full else ch


def top_candidates(scores: np.ndarray, B: int) -> np.ndarray:
    """Flat indices (beam * K + code) of the best B finite entries of `scores` [nb, K],
    ordered by score descending, then lower beam, then lower code (the reference's order)."""
    flat = scores.ravel()
    n_finite = int(np.isfinite(flat).sum())
    if n_finite <= B:
        sel = np.flatnonzero(np.isfinite(flat))
    else:
        v = flat[np.argpartition(-flat, B - 1)[B - 1]]  # the B-th best score
        above = np.flatnonzero(flat > v)
        ties = np.flatnonzero(flat == v)[: B - len(above)]  # ties: lower flat index first
        sel = np.concatenate([above, ties])
    return sel[np.lexsort((sel, -flat[sel]))]


def search(model: OrtModel, catalog: Catalog, trie: HostTrie, req: Request) -> list[Session]:
    validate(req, catalog)
    meta = model.meta
    L, m, K, B = meta["n_levels"], meta["session_len"], meta["codebook_size"], req.beam
    kv = model.start(model.encode(np.array([catalog.sid_of(i) for i in req.history])))
    # Beams as parallel lists: score (float32), items, sids, prefix.
    score = np.zeros(1, dtype=np.float32)
    items: list[list[int]] = [[]]
    sids: list[list[tuple[int, ...]]] = [[]]
    prefix: list[tuple[int, ...]] = [()]
    for i in range(m):
        for s in range(L):
            t = i * (L + 1) + s
            nb = len(prefix)
            if s == 0 and i > 0:  # previous item's last code (slot L) + this BOS
                codes = np.array([[b[-1][L - 1], 0] for b in sids], dtype=np.int64)
                y = model.step(kv, codes, t - 1)
            elif s == 0:
                y = model.step(kv, np.zeros((nb, 1), dtype=np.int64), t)
            else:
                y = model.step(kv, np.array([[p[s - 1]] for p in prefix], dtype=np.int64), t)
            logp = model.head(y, s)  # [nb, K] float32
            cand = np.full((nb, K), -np.inf, dtype=np.float32)
            for bi in range(nb):
                ok = trie.allowed(prefix[bi], sids[bi])
                cand[bi, ok] = score[bi] + logp[bi, ok]
            kept = top_candidates(cand, B)
            if len(kept) == 0:
                return []
            parents, chosen = kept // K, kept % K
            score = cand.ravel()[kept]
            new_items, new_sids, new_prefix = [], [], []
            for bi, c in zip(parents.tolist(), chosen.tolist()):
                p = prefix[bi] + (c,)
                if s == L - 1:
                    new_items.append(items[bi] + [catalog.item_of(p)])
                    new_sids.append(sids[bi] + [p])
                    new_prefix.append(())
                else:
                    new_items.append(items[bi])
                    new_sids.append(sids[bi])
                    new_prefix.append(p)
            items, sids, prefix = new_items, new_sids, new_prefix
            model.reorder(kv, parents)
    return [Session(float(score[b]), list(items[b]), [list(x) for x in sids[b]])
            for b in range(min(req.results, len(prefix)))]


def forward_only(model: OrtModel, catalog: Catalog, hist: list[int], beam: int) -> None:
    meta = model.meta
    L, dec_len = meta["n_levels"], meta["session_len"] * (meta["n_levels"] + 1)
    kv = model.start(model.encode(np.array([catalog.sid_of(i) for i in hist])), rows=beam)
    codes = np.zeros((beam, 1), dtype=np.int64)
    codes2 = np.zeros((beam, 2), dtype=np.int64)
    for t in range(dec_len - 1):
        s = t % (L + 1)
        if s == L:
            continue  # goes with the next BOS
        y = model.step(kv, codes2 if s == 0 and t > 0 else codes, t - 1 if s == 0 and t > 0 else t)
        model.head(y, s)


def check(model_dir: str, model: OrtModel, catalog: Catalog, hist: list[int], beam: int) -> None:
    import torch

    from onerec_ref.beam import beam_search
    from onerec_ref.checkpoint import load_checkpoint

    torch.set_num_threads(2)
    ref_model, _, _ = load_checkpoint(model_dir)
    for b, excl in ((beam, False), (3, True)):
        req = Request(history=hist, beam=b, results=min(10, b), exclude_history=excl)
        ref = beam_search(ref_model, catalog, req).sessions
        excluded = set(hist) if excl else set()
        got = search(model, catalog, HostTrie(catalog, excluded), req)
        if [s.items for s in got] != [s.items for s in ref]:
            raise SystemExit(f"beam {b}: ORT sessions {[s.items for s in got]} != reference "
                             f"{[s.items for s in ref]}")
        worst = max(abs(g.score - r.score) / abs(r.score) for g, r in zip(got, ref))
        if worst > 1e-4:
            raise SystemExit(f"beam {b}: session scores differ by {worst:.3g} relative")
        print(f"beam {b}: {len(got)} top sessions equal the reference's "
              f"(max score rel diff {worst:.1e})")


def load_catalog(model_dir: str, codebook_size: int) -> Catalog:
    """Only the two catalog tensors of the checkpoint (the weights are in the graphs)."""
    with safe_open(str(Path(model_dir) / "model.safetensors"), framework="numpy") as f:
        return Catalog(f.get_tensor("catalog.item_ids"), f.get_tensor("catalog.sids"),
                       codebook_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="checkpoint dir; graphs in MODEL/onnx")
    ap.add_argument("--onnx", help="graph dir (default MODEL/onnx)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spinning", action="store_true", help="let intra-op threads spin")
    ap.add_argument("--beam", type=int, default=128)
    ap.add_argument("--history", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-search", action="store_true", help="time only the model compute")
    ap.add_argument("--check", action="store_true",
                    help="compare the top sessions with the reference beam search and exit")
    a = ap.parse_args()
    model = OrtModel(a.onnx or Path(a.model) / "onnx", a.threads, a.spinning)
    catalog = load_catalog(a.model, model.meta["codebook_size"])
    hist = history(len(catalog), a.history)
    if a.check:
        check(a.model, model, catalog, hist, a.beam)
        return
    out = {"threads": a.threads, "beam": a.beam, "history": a.history, "spinning": a.spinning,
           "onnxruntime": onnxruntime.__version__}

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
        trie = HostTrie(catalog)
        req = Request(history=hist, beam=a.beam, results=min(10, a.beam))
        out["request_s"] = median_of(lambda: search(model, catalog, trie, req))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
