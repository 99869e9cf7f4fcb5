"""Constrained session beam search (MODEL_SPEC.md, "Constrained session decoding").

Scores accumulate in float32: score = float32(score + logp). Candidates are ordered by
score descending, then lower beam index (in the current ordered beam list), then lower
code; the best B survive in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .catalog import Catalog, EligibleTrie
from .model import OneRec, RouterLog


@dataclass
class Request:
    history: list[int]
    beam: int
    results: int
    exclude: list[int] = field(default_factory=list)
    exclude_history: bool = False


@dataclass
class Session:
    score: float
    items: list[int]
    sids: list[list[int]]


@dataclass
class SearchResult:
    sessions: list[Session]
    final_scores: list[float]
    # Diagnostics (not part of the contract): the smallest score gap that decided the
    # answer (B-th vs (B+1)-th candidate at every step, and neighbours among the first
    # R+1 final beams), and the smallest MoE router top-k gap seen during the search.
    min_score_gap: float = math.inf
    min_router_gap: float = math.inf
    # The item-list answer (docs/DECISIONS.md, "Item-list answer"): the beams right after
    # the first item was completed, best first, as (item id, score of its L codes).
    first_items: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class _Beam:
    score: np.float32
    items: list[int]
    sids: list[tuple[int, ...]]
    prefix: tuple[int, ...]


def validate(req: Request, catalog: Catalog) -> None:
    if not req.history:
        raise ValueError("history must hold at least one item")
    unknown = [i for i in req.history if i not in catalog.row_of_id]
    if unknown:
        raise ValueError(f"history items not in the catalog: {unknown}")
    if req.beam < 1:
        raise ValueError("beam must be >= 1")
    if not 1 <= req.results <= req.beam:
        raise ValueError("results must be in [1, beam]")


@torch.no_grad()
def beam_search(model: OneRec, catalog: Catalog, req: Request) -> SearchResult:
    validate(req, catalog)
    cfg = model.cfg
    L, m, B = cfg.n_levels, cfg.session_len, req.beam
    excluded = set(req.exclude) | (set(req.history) if req.exclude_history else set())
    trie = EligibleTrie(catalog, excluded)
    rec = RouterLog()

    hist = torch.tensor([catalog.sid_of(i) for i in req.history], dtype=torch.long)
    state = model.start_decoding(model.encode(hist, rec), rec)
    beams = [_Beam(np.float32(0.0), [], [], ())]
    min_gap = math.inf

    for i in range(m):
        for s in range(L):
            t = i * (L + 1) + s
            if s == 0:
                if i > 0:  # feed the previous item's last code (slot L, not scored)
                    last = torch.tensor([b.sids[-1][L - 1] for b in beams])
                    state.step(model.dec.token(t - 1, last))
                x = model.dec.token(t, None)
            else:
                x = model.dec.token(t, torch.tensor([b.prefix[s - 1] for b in beams]))
            logp = model.level_logprobs(state.step(x), s).numpy()  # [nb, K] float32

            cands = []
            for bi, beam in enumerate(beams):
                for c in trie.allowed(beam.prefix, beam.sids):
                    cands.append((np.float32(beam.score + logp[bi, c]), bi, c))
            cands.sort(key=lambda x: (-x[0], x[1], x[2]))
            if len(cands) > B:
                min_gap = min(min_gap, float(cands[B - 1][0]) - float(cands[B][0]))
            kept = cands[:B]
            if not kept:
                return SearchResult([], [], min_gap, rec.min_gap,
                                    first if i > 0 else [])

            new_beams = []
            for score, bi, c in kept:
                old = beams[bi]
                prefix = old.prefix + (c,)
                if s == L - 1:
                    new_beams.append(_Beam(score, old.items + [catalog.item_of(prefix)],
                                           old.sids + [prefix], ()))
                else:
                    new_beams.append(_Beam(score, old.items, old.sids, prefix))
            beams = new_beams
            if i == 0 and s == L - 1:
                first = [(b.items[0], float(b.score)) for b in beams]
            state.reorder(torch.tensor([bi for _, bi, _ in kept]))

    final = [float(b.score) for b in beams]
    for a, b in zip(final[: req.results], final[1 : req.results + 1]):
        min_gap = min(min_gap, a - b)
    sessions = [Session(float(b.score), list(b.items), [list(x) for x in b.sids])
                for b in beams[: req.results]]
    return SearchResult(sessions, final, min_gap, rec.min_gap, first)
