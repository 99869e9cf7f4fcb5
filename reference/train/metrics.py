"""One metric code for every model (OneRec, popularity, SASRec).

A model answers a test point with a ranked list of distinct items and a top session of m
items. For the baselines the list is their item ranking and the top session its first m
items. For OneRec the list is the first-item beams of the engine's search (one
constrained item-level beam, best first: docs/DECISIONS.md "Item list") and the top
session is the best session of the same search. History items are excluded everywhere.
- Recall@k: the true next item (the first of the m true next items) is in the first k.
- NDCG@k: 1 / log2(rank + 1) of the true next item if its rank <= k (one relevant item).
- Session hits@m: how many of the m true next items the top session holds (0..m).
- Any@k: 1 if any of the m true next items is in the first k of the list.
"""

from __future__ import annotations

import math

import numpy as np


def ranked_from_sessions(sessions: list[list[int]]) -> list[int]:
    seen, out = set(), []
    for items in sessions:
        for i in items:
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out


def all_metrics(ranked: list[int], sessions: list[list[int]] | None, true_next: list[int],
                ks: list[int], m: int) -> dict:
    """`sessions`: the model's sessions best first (None: the top session is ranked[:m])."""
    out = {}
    target = true_next[0]
    rank = ranked.index(target) + 1 if target in ranked else None
    for k in ks:
        hit = rank is not None and rank <= k
        out[f"recall@{k}"] = 1.0 if hit else 0.0
        out[f"ndcg@{k}"] = 1.0 / math.log2(rank + 1) if hit else 0.0
    top = sessions[0] if sessions else ([] if sessions is not None else ranked[:m])
    out[f"session_hits@{m}"] = float(len(set(top) & set(true_next)))
    kmax = max(ks)
    out[f"any@{kmax}"] = float(bool(set(ranked[:kmax]) & set(true_next)))
    return out


def point_metrics(ranked: list[int], true_next: list[int], ks: list[int], m: int) -> dict:
    return all_metrics(ranked, None, true_next, ks, m)


def mean_metrics(rows: list[dict]) -> dict:
    keys = rows[0].keys() if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def paired_bootstrap(a: dict[int, dict], b: dict[int, dict], key: str, n: int = 1000,
                     seed: int = 0) -> dict:
    """Mean of a - b over users on metric `key`, with the 95% percentile interval of 1000
    resamples of users (with replacement; both models see the same resampled users)."""
    users = sorted(set(a) & set(b))
    d = np.array([a[u][key] - b[u][key] for u in users])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n, len(d)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"metric": key, "mean_diff": float(d.mean()), "ci95": [float(lo), float(hi)],
            "resamples": n, "users": len(users),
            "share_of_resamples_above_0": float((means > 0).mean())}
