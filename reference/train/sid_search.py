#!/usr/bin/env python3
"""Semantic-ID capacity by measurement: for each (levels, codebook size) candidate, the
tokenizer's SIDs (collision figures) and a OneRec trained the same number of steps with
the pipeline's training code, scored on validation NDCG@10 (exact first-item ranking).
run_all.py takes the SID shape from reference/configs/movielens.json; this measurement is
how it was chosen:

    python3 reference/train/sid_search.py [--steps 300] [--threads 1]

Writes target/movielens/sid_search.json (and prints it). Needs the item embeddings that
run_all.py caches in target/movielens/ (run it once, or pass --emb PATH).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from onerec_ref import OneRecConfig  # noqa: E402
from train import data, evaluate, tokenizer, train_onerec  # noqa: E402

CANDIDATES = [(3, 16), (3, 32), (2, 64)]


def measure(emb, split, row_of, item_ids, cfg: dict, L: int, K: int, steps: int, seed: int) -> dict:
    t0 = time.time()
    codes, cents, inputs = tokenizer.residual_balanced_kmeans(emb, L, K, cfg["tokenizer"]["iters"], seed)
    sids, stats = tokenizer.resolve_collisions(codes, cents, inputs)
    mc = dict(cfg["model"], n_levels=L, codebook_size=K)
    tc = dict(cfg["train"], steps=steps, eval_every=max(1, steps // 3), patience=10 ** 9)
    table = evaluate.PrefixTable(sids)

    def valid(model):
        m, _ = evaluate.exact_eval(model, table, split, "valid", row_of, item_ids, cfg["eval"]["k"])
        return m["ndcg@10"]

    model, log = train_onerec.train(OneRecConfig.from_dict(mc), tc, split, row_of, sids, seed, valid)
    mets, _ = evaluate.exact_eval(model, table, split, "valid", row_of, item_ids, cfg["eval"]["k"])
    return {"levels": L, "codebook_size": K, "sids": stats, "steps": steps,
            "curve": [{k: e[k] for k in ("step", "valid_nll", "valid_ndcg@10")} for e in log["evals"]],
            "valid": mets, "params": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.time() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", type=Path, default=ROOT / "reference/configs/movielens.json")
    ap.add_argument("--emb", type=Path, default=None, help="item embeddings .npy (default: the newest "
                    "target/movielens/emb-*.npy)")
    ap.add_argument("--out", type=Path, default=ROOT / "target/movielens/sid_search.json")
    ap.add_argument("--candidates", default=",".join(f"{L}x{K}" for L, K in CANDIDATES),
                    help="levels x codes, comma-separated")
    ap.add_argument("--merge", nargs="*", type=Path, default=[],
                    help="only merge these earlier outputs (parallel runs) into --out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.merge:
        docs = [json.loads(p.read_text()) for p in args.merge]
        doc = dict(docs[0], command=[d["command"] for d in docs],
                   candidates=[c for d in docs for c in d["candidates"]])
        args.out.write_text(json.dumps(doc, indent=1))
        return
    cfg = json.loads(args.config.read_text())
    ddir = data.fetch()
    items, seqs = data.read_items(ddir), data.read_sequences(ddir)
    split = data.make_split(seqs, cfg["model"]["session_len"])
    item_ids = data.item_table(items)
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    path = args.emb or max((ROOT / "target/movielens").glob("emb-*.npy"), key=lambda p: p.stat().st_mtime)
    emb = np.load(path)
    rows = []
    for L, K in (map(int, c.split("x")) for c in args.candidates.split(",")):
        rows.append(measure(emb, split, row_of, item_ids, cfg, L, K, args.steps, cfg["seed"]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    doc = {"command": " ".join(["python3", "reference/train/sid_search.py"] + sys.argv[1:]),
           "embeddings": str(path.name), "threads": args.threads, "candidates": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
