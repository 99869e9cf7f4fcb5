"""OneRec evaluation with the engine's decoding semantics: the reference constrained
session beam search (`onerec_ref.beam_search`, the same search the engine runs), history
excluded, and the shared metric code."""

from __future__ import annotations

import sys
import time

from onerec_ref import Catalog, OneRec, Request, beam_search

from . import metrics
from .data import Split


def onerec_eval(model: OneRec, catalog: Catalog, split: Split, which: str, beam: int,
                results: int, ks: list[int]) -> tuple[dict, dict[int, list[dict]], dict[int, float]]:
    """-> (mean metrics, per user the returned sessions as {score, items}, per user the
    smallest score gap that decided the answer: how close it was to a tie)."""
    rows, answers, listed, gaps = [], {}, [], {}
    t0 = time.time()
    for n, u in enumerate(split.users):
        hist, true_next = split.point(u, which)
        res = beam_search(model, catalog, Request(hist, beam, results, [], True))
        sessions = [{"score": s.score, "items": s.items} for s in res.sessions]
        answers[u] = sessions
        gaps[u] = res.min_score_gap
        ranked = metrics.ranked_from_sessions([s["items"] for s in sessions])
        rows.append(metrics.point_metrics(ranked, true_next, ks, split.m))
        listed.append(len(ranked))
        if (n + 1) % 200 == 0:
            print(f"  beam search {which}: {n + 1}/{len(split.users)} users "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr)
    out = metrics.mean_metrics(rows)
    # Sessions share items, so `results` sessions may list fewer than max(ks) distinct
    # items; a missing rank counts as a miss.
    out["distinct_items_listed_mean"] = sum(listed) / len(listed)
    out[f"users_listing_fewer_than_{max(ks)}"] = sum(n < max(ks) for n in listed)
    return out, answers, gaps
