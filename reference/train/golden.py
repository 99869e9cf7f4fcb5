#!/usr/bin/env python3
"""models/default/golden.json: the reference beam search's sessions for a few MovieLens
histories on the weights of models/default/model.onerec (decoded as the engine decodes
them). Called by run_all.py; `python3 reference/train/golden.py` rewrites it alone.

Like the fixture generator, it keeps only histories whose decisions are clear (every
deciding score gap > 1e-4, every MoE top-k gap > 1e-6), so any float32 engine must return
exactly these sessions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reference"))

import numpy as np  # noqa: E402

from onerec_ref import Catalog, OneRec, Request, beam_search  # noqa: E402
from train.tokenizer import assign_new  # noqa: E402

# MovieLens-100K ids, each a recognisable taste: the Star Wars trilogy; animated family
# films; the first two Godfathers; thrillers; Raiders + Last Crusade; 1996 blockbusters;
# Fargo + The English Patient; Shawshank + The Usual Suspects.
CANDIDATES = [[50, 172, 181], [1, 71, 95, 588], [127, 187], [98, 183, 195], [174, 210],
              [121, 117, 405], [100, 286], [64, 12]]
BEAM, RESULTS, KEEP = 16, 5, 3
HOLDOUT = 20
MIN_SCORE_GAP, MIN_ROUTER_GAP = 1e-4, 1e-6


def _clear(res) -> bool:
    return res.min_score_gap > MIN_SCORE_GAP and res.min_router_gap > MIN_ROUTER_GAP


def holdout(model: OneRec, catalog: Catalog, requests: list[dict], codebooks: np.ndarray,
            embeddings: np.ndarray) -> dict:
    """Issue 14 on this model: the items the golden requests' sessions recommend (history
    items aside, the first HOLDOUT by id) leave the catalog and come back through the SID
    rule from their exported embeddings (`assign_new`, the engine's rule: float64 on the
    stored float32 centroids). Records their fit and rule SIDs and the reference sessions
    on the catalog with them added back (tests/catalog.rs checks the engine gives both)."""
    hist_items = {i for r in requests for i in r["history"]}
    held = sorted({i for r in requests for s in r["sessions"] for i in s["items"]} - hist_items)[:HOLDOUT]
    rows = [catalog.row_of_id[i] for i in held]
    keep = [r for r in range(len(catalog)) if r not in set(rows)]
    taken = {tuple(catalog.sids[r].tolist()) for r in keep}
    cents = [c.astype(np.float32).astype(np.float64) for c in codebooks]
    emb = embeddings[rows].astype(np.float32).astype(np.float64)
    rule = assign_new(emb, cents, taken)
    item_ids = np.concatenate([catalog.item_ids[keep], np.array(held, dtype=np.int64)])
    back = Catalog(item_ids, np.concatenate([catalog.sids[keep], rule]), catalog_k(catalog, codebooks))
    out = []
    for r in requests:
        res = beam_search(model, back, Request(r["history"], r["beam"], r["results"], [], True))
        full = [s["items"] for s in r["sessions"]]
        again = [s.items for s in res.sessions]
        # Where each held-out item stands in the full catalog's answer and after it came back.
        # (first occurrence: with permutations kept an item is in several sessions)
        def places(ss):
            out = {}
            for a, s in enumerate(ss):
                for b, i in enumerate(s):
                    if i in held:
                        out.setdefault(i, (a, b))
            return out

        pf, pa = places(full), places(again)
        out.append({"history": r["history"], "beam": r["beam"], "results": r["results"],
                    "sessions_readded": [{"score": s.score, "items": s.items} for s in res.sessions],
                    "clear_decisions": _clear(res),
                    "held_recommended_full": sorted(pf),
                    "held_recommended_again_same_place": sorted(i for i in pf if pa.get(i) == pf[i]),
                    "held_recommended_again": sorted(i for i in pf if i in pa)})
    fit = catalog.sids[rows]
    return {"held_out": held, "fit_sids": fit.tolist(), "rule_sids": rule.tolist(),
            "rule_equals_fit": int((rule == fit).all(1).sum()), "requests": out}


def catalog_k(catalog: Catalog, codebooks: np.ndarray) -> int:
    return int(codebooks.shape[1])


def write(path: Path, model: OneRec, catalog: Catalog, source: str,
          codebooks: np.ndarray | None = None, embeddings: np.ndarray | None = None) -> dict:
    requests = []
    for hist in CANDIDATES:
        res = beam_search(model, catalog, Request(hist, BEAM, RESULTS, [], True))
        if not _clear(res):
            continue
        requests.append({
            "history": hist, "beam": BEAM, "results": RESULTS, "exclude_history": True,
            "sessions": [{"score": s.score, "items": s.items, "sids": s.sids} for s in res.sessions],
            "min_score_gap": res.min_score_gap, "min_router_gap": res.min_router_gap,
        })
        if len(requests) == KEEP:
            break
    if len(requests) < KEEP:
        raise RuntimeError(f"only {len(requests)} candidate histories have clear decisions")
    doc = {"model": source, "made_by": "python3 reference/train/golden.py (run_all.py)",
           "requests": requests}
    if codebooks is not None and embeddings is not None:
        doc["catalog_holdout"] = holdout(model, catalog, requests, codebooks, embeddings)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return doc


if __name__ == "__main__":
    from train.model_file import load_model_file

    import torch
    torch.set_num_threads(1)
    d = ROOT / "models/default"
    side: dict = {}
    m, c, _ = load_model_file(d / "model.onerec", side)
    doc = write(d / "golden.json", m, c, "models/default/model.onerec",
                side.get("catalog.codebooks"), side.get("catalog.embeddings"))
    print([r["history"] for r in doc["requests"]])
