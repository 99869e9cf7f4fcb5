"""Writes a random MODEL_SPEC checkpoint of a named size, for benchmarks.

    python3 benches/synthetic.py --preset medium --out target/bench/medium

Presets follow the issues: `medium` is the paper's small model (d 512, 8 heads, 4+4
layers, 24 experts top-2, d_expert 1024, 3 x 8192 codes, 100k items, history 256);
`small` is the WGSL issue's (d 128, 4+4 layers, 8 experts top-2, 3 x 1024, 50k items).
Random weights, unique random SIDs, item ids 1..N. Nothing here is committed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from onerec_ref.catalog import Catalog  # noqa: E402
from onerec_ref.checkpoint import save_checkpoint  # noqa: E402
from onerec_ref.config import OneRecConfig  # noqa: E402
from onerec_ref.init import random_init  # noqa: E402
from onerec_ref.model import OneRec  # noqa: E402

PRESETS = {
    "medium": (dict(d_model=512, n_heads=8, n_enc_layers=4, n_dec_layers=4, d_ff=2048,
                    n_experts=24, top_k=2, d_expert=1024, moe_enc_layers=[],
                    moe_dec_layers=[0, 1, 2, 3], n_levels=3, codebook_size=8192,
                    session_len=5, max_history=256, rms_eps=1e-6), 100_000),
    "small": (dict(d_model=128, n_heads=4, n_enc_layers=4, n_dec_layers=4, d_ff=512,
                   n_experts=8, top_k=2, d_expert=256, moe_enc_layers=[],
                   moe_dec_layers=[0, 1, 2, 3], n_levels=3, codebook_size=1024,
                   session_len=5, max_history=256, rms_eps=1e-6), 50_000),
    "tiny": (dict(d_model=64, n_heads=4, n_enc_layers=2, n_dec_layers=2, d_ff=128,
                  n_experts=4, top_k=2, d_expert=64, moe_enc_layers=[],
                  moe_dec_layers=[0, 1], n_levels=3, codebook_size=256,
                  session_len=5, max_history=64, rms_eps=1e-6), 5_000),
}


def unique_sids(rng: np.random.Generator, n: int, levels: int, k: int) -> np.ndarray:
    flat = rng.choice(k ** levels, size=n, replace=False) if k ** levels < 2 ** 62 else None
    codes = np.stack([(flat // k ** (levels - 1 - l)) % k for l in range(levels)], axis=1)
    return codes.astype(np.int32)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="F32", choices=["F32", "F16", "BF16"])
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    cfg_dict, n_items = PRESETS[a.preset]
    cfg = OneRecConfig(**cfg_dict)
    rng = np.random.default_rng(a.seed)
    torch.set_num_threads(2)
    model = OneRec(cfg)
    random_init(model, rng)
    sids = unique_sids(rng, n_items, cfg.n_levels, cfg.codebook_size)
    catalog = Catalog(np.arange(1, n_items + 1, dtype=np.int64), sids, cfg.codebook_size)
    save_checkpoint(a.out, model, catalog, a.dtype)
    print(f"wrote {a.out}: {a.preset}, {n_items} items, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params")


if __name__ == "__main__":
    main()
