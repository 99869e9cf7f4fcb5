#!/usr/bin/env python3
"""Write the medium-config checkpoint of the quantize issue with random weights.

    python3 benches/make_medium_checkpoint.py --out target/medium/ckpt

d_model 512, 8 heads, 4+4 layers, 24 experts top-2 in every decoder layer, d_expert 1024,
d_ff 2048, 3 levels x 8192 codes, 100,000 items, max_history 256, session 5: about 860 MB
of float32. Weights are drawn as reference/onerec_ref/init.py does (seeded), the catalog
has distinct random SIDs. Also writes history.txt: 64 catalog item ids, comma-separated,
for `onerec recommend --history`. Generated at run time, never committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "reference"))

from onerec_ref import Catalog, OneRec, OneRecConfig, random_init, save_checkpoint  # noqa: E402

MEDIUM = OneRecConfig(
    d_model=512, n_heads=8, n_enc_layers=4, n_dec_layers=4, d_ff=2048,
    n_experts=24, top_k=2, d_expert=1024, moe_enc_layers=[], moe_dec_layers=[0, 1, 2, 3],
    n_levels=3, codebook_size=8192, session_len=5, max_history=256, rms_eps=1e-6)
ITEMS = 100_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=2026)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    torch.set_grad_enabled(False)
    model = OneRec(MEDIUM)
    random_init(model, rng)
    k, levels = MEDIUM.codebook_size, MEDIUM.n_levels
    flat = rng.choice(k**levels, size=ITEMS, replace=False)
    sids = np.stack([(flat // k ** (levels - 1 - s)) % k for s in range(levels)], axis=1).astype(np.int32)
    item_ids = rng.permutation(np.arange(1, ITEMS + 1, dtype=np.int64) * 7919)
    save_checkpoint(a.out, model, Catalog(item_ids, sids, k), "F32")
    history = rng.choice(item_ids, size=64, replace=False)
    (a.out / "history.txt").write_text(",".join(str(int(i)) for i in history) + "\n")
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {a.out}: {n} weights, {ITEMS} items")


if __name__ == "__main__":
    main()
