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

from onerec_ref import Catalog, OneRec, Request, beam_search  # noqa: E402

# MovieLens-100K ids, each a recognisable taste: the Star Wars trilogy; animated family
# films; the first two Godfathers; thrillers; Raiders + Last Crusade; 1996 blockbusters;
# Fargo + The English Patient; Shawshank + The Usual Suspects.
CANDIDATES = [[50, 172, 181], [1, 71, 95, 588], [127, 187], [98, 183, 195], [174, 210],
              [121, 117, 405], [100, 286], [64, 12]]
BEAM, RESULTS, KEEP = 16, 5, 3
MIN_SCORE_GAP, MIN_ROUTER_GAP = 1e-4, 1e-6


def write(path: Path, model: OneRec, catalog: Catalog, source: str) -> dict:
    requests = []
    for hist in CANDIDATES:
        res = beam_search(model, catalog, Request(hist, BEAM, RESULTS, [], True))
        if res.min_score_gap <= MIN_SCORE_GAP or res.min_router_gap <= MIN_ROUTER_GAP:
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
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
    return doc


if __name__ == "__main__":
    from train.model_file import load_model_file

    import torch
    torch.set_num_threads(1)
    d = ROOT / "models/default"
    m, c, _ = load_model_file(d / "model.onerec")
    doc = write(d / "golden.json", m, c, "models/default/model.onerec")
    print([r["history"] for r in doc["requests"]])
