"""One metric code for every model (OneRec, popularity, SASRec).

A model answers a test point with a ranked list of distinct items. For OneRec that list
is what the engine returns, read the way a user sees it: the sessions best first, each in
its generated order, items already listed skipped. For the baselines it is their item
ranking. The "top session" is the first m items of that list (for OneRec exactly its best
session). History items are excluded for every model (`exclude_history`).
- Recall@k: the true next item is in the first k.
- NDCG@k: 1 / log2(rank + 1) of the true next item if its rank <= k (one relevant item).
- Session hits@m: how many of the m true next items the top session holds (0..m).
"""

from __future__ import annotations

import math


def ranked_from_sessions(sessions: list[list[int]]) -> list[int]:
    seen, out = set(), []
    for items in sessions:
        for i in items:
            if i not in seen:
                seen.add(i)
                out.append(i)
    return out


def point_metrics(ranked: list[int], true_next: list[int], ks: list[int], m: int) -> dict:
    out = {}
    target = true_next[0]
    rank = ranked.index(target) + 1 if target in ranked else None
    for k in ks:
        hit = rank is not None and rank <= k
        out[f"recall@{k}"] = 1.0 if hit else 0.0
        out[f"ndcg@{k}"] = 1.0 / math.log2(rank + 1) if hit else 0.0
    out[f"session_hits@{m}"] = float(len(set(ranked[:m]) & set(true_next)))
    return out


def mean_metrics(rows: list[dict]) -> dict:
    keys = rows[0].keys() if rows else []
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}
