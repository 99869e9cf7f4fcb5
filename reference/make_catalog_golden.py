"""Golden cases for SIDs given to new items (numpy only; no torch).

Runs the reference tokenizer (`reference/train/tokenizer.py`: residual balanced k-means
and its collision rule) on seeded random item embeddings, holds items out, and records
the SIDs `tokenizer.assign_new` gives them when they are added back to the rest. The
engine must give the same SIDs (tests/catalog.rs). Writes
tests/fixtures/catalog/sid_golden.json.

    pip install numpy && python3 reference/make_catalog_golden.py
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("tokenizer", ROOT / "reference/train/tokenizer.py")
tok = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tok)


def fixture_ids(name: str) -> list[int]:
    b = (ROOT / "tests/fixtures" / name / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", b[:8])[0]
    t = json.loads(b[8 : 8 + n])["catalog.item_ids"]
    s, e = t["data_offsets"]
    raw = np.frombuffer(b[8 + n + s : 8 + n + e], dtype="<i8")
    return [int(v) & (2**64 - 1) for v in raw]


def clustered(rng, n, d, k):
    centers = rng.normal(size=(k, d)) * 2.0
    return (centers[rng.integers(k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


def as_f32(cents):
    # The model file stores f32: the reference assigns from the same rounded values.
    return [c.astype(np.float32).astype(np.float64) for c in cents]


def case(name, ids, sids, cents, emb, held, note):
    """`held`: rows of `ids` given back as new items; the rest is the catalog."""
    held = list(held)
    rest = [i for i in range(len(ids)) if i not in set(held)]
    taken = {tuple(int(c) for c in sids[i]) for i in rest}
    want = tok.assign_new(emb[held].astype(np.float64), cents, taken)
    return {
        "name": name,
        "note": note,
        "levels": len(cents),
        "codebook_size": int(cents[0].shape[0]),
        "dim": int(cents[0].shape[1]),
        "codebooks": [c.astype(np.float32).ravel().tolist() for c in cents],
        "catalog_ids": [str(ids[i]) for i in rest],
        "catalog_sids": [[int(c) for c in sids[i]] for i in rest],
        "new_ids": [str(ids[i]) for i in held],
        "new_embeddings": [emb[i].tolist() for i in held],
        "fit_sids": [[int(c) for c in sids[i]] for i in held],
        "expected_sids": want.tolist(),
    }


def main():
    rng = np.random.default_rng(20261207)
    out = []

    # 1. The fixture moe_dec_l2's 300 item ids (L = 2, K = 32), SIDs from the tokenizer.
    ids = fixture_ids("moe_dec_l2")
    emb = clustered(rng, len(ids), 16, 12)
    codes, cents, inputs = tok.residual_balanced_kmeans(emb, 2, 32, iters=20, seed=7)
    sids, stats = tok.resolve_collisions(codes, cents, inputs)
    cents = as_f32(cents)
    moved = [i for i in range(len(ids)) if tuple(sids[i]) != tuple(codes[i])]
    pool = sorted(set(rng.choice(len(ids), 40, replace=False).tolist()) | set(moved[:10]))
    # Held-out items that get their fit SID back (so full-catalog answers must return):
    # shrink the set until assign_new reproduces every fit SID.
    held = pool
    for _ in range(10):
        c = case("", ids, sids, cents, emb, held, "")
        same = [h for h, e, f in zip(held, c["expected_sids"], c["fit_sids"]) if e == f]
        if same == held:
            break
        held = same
    full = case("fixture_holdout", ids, sids, cents, emb, held,
                "moe_dec_l2 ids with tokenizer SIDs; held-out items get their fit SIDs back")
    full["fixture"] = "moe_dec_l2"
    full["all_ids"] = [str(i) for i in ids]
    full["all_sids"] = sids.tolist()
    full["tokenizer_stats"] = stats
    full["moved_by_tokenizer_held_out"] = len(set(held) & set(moved))
    out.append(full)
    out.append(case("random_holdout", ids, sids, cents, emb, pool,
                    "40 random + 10 collision-moved items, whatever assign_new gives"))

    # 2. A crowded prefix: every last code under the nearest prefix is taken, so new items
    # move their last two codes; and new items that collide with each other.
    k, d = 4, 6
    cents2 = as_f32([rng.normal(size=(k, d)) * 3.0, rng.normal(size=(k, d)) * 0.5])
    base = [(0, c) for c in range(k)] + [(1, 0), (2, 1), (3, 3)]
    ids2 = list(range(1000, 1000 + len(base)))
    new = [cents2[0][0] + cents2[1][c] + rng.normal(size=d) * 0.05 for c in (0, 2, 2, 1)]
    new += [cents2[0][1] + cents2[1][0] + rng.normal(size=d) * 0.05 for _ in range(3)]
    emb2 = np.concatenate([np.zeros((len(base), d)), np.stack(new)]).astype(np.float32)
    all_sids = np.array(base + [(0, 0)] * len(new))  # new items' own SIDs are not used
    ids2 += list(range(2000, 2000 + len(new)))
    c = case("crowded_prefix", ids2, all_sids, cents2, emb2, range(len(base), len(ids2)),
             "prefix 0 full: items near it move both codes; three new items share (1, 0) with the catalog")
    out.append(c)

    path = ROOT / "tests/fixtures/catalog/sid_golden.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"generator": "reference/make_catalog_golden.py", "cases": out}))
    for c in out:
        changed = sum(e != f for e, f in zip(c["expected_sids"], c["fit_sids"]))
        print(f"{c['name']}: {len(c['new_ids'])} new items, {changed} SIDs differ from the fit")
    print(f"tokenizer on the fixture: {stats}")


if __name__ == "__main__":
    main()
