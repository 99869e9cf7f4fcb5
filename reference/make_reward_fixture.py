#!/usr/bin/env python3
"""Write the reward-model fixture tests/fixtures/reward_l3 (seeded, deterministic).

    python3 reference/make_reward_fixture.py [--out tests/fixtures]

A small OneRec checkpoint WITH a reward section (docs/REWARD_MODEL.md v1): config.json
carries the `reward` object, model.safetensors the `reward.*` tensors. golden.json holds
what the engine must reproduce:
- `rewards`: (history, sessions) pairs with the reference's R and r_k per session;
- `requests`: beam searches with every surviving beam (items, model score, R, r_k), the
  item-list answer (`first_items`) and the four answers of (rerank, keep_permutations),
  computed with the reference's beam search and reward model and the answer rules of
  docs/DECISIONS.md ("Answers: ...").
Requests are re-drawn until every decision they record is clear (score and reward gaps
far above float32 noise), as reference/make_fixtures.py does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_fixtures import MAX_TRIES, clear, make_catalog, pick, write_manifest  # noqa: E402
from onerec_ref import OneRec, OneRecConfig, Request, beam_search, random_init  # noqa: E402
from onerec_ref.reward import RewardConfig, RewardModel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NAME = "reward_l3"
SEED = 606
N_ITEMS = 48
CFG = OneRecConfig(
    d_model=32, n_heads=4, n_enc_layers=1, n_dec_layers=2, d_ff=64,
    n_levels=3, codebook_size=8, session_len=3, max_history=8, rms_eps=1e-6)
# d_model 32: the q8 file quantizes the reward matrices too (rows of whole 32-blocks);
# max_history 6 < the main model's 8, so the two truncate a long history differently.
RCFG = RewardConfig(d_model=32, n_heads=4, d_ff=64, max_history=6,
                    signals=["watch", "like", "share"], weights=[0.5, 0.3, 0.2])
# A reranked answer is kept only if neighbouring rewards that decide it differ by more.
MIN_REWARD_GAP = 2e-5
MIN_ITEM_GAP = 1e-4


@torch.no_grad()
def init_reward(rm: RewardModel, rng: np.random.Generator) -> None:
    """Embeddings and positions ~ N(0, 1); norms 1 + 0.1 N(0, 1); matrices (the heads
    too) ~ N(0, 0.5 / sqrt(in)); head biases ~ N(0, 0.5): probabilities spread over
    (0, 1) rather than saturating."""
    for name, p in rm.state_dict(keep_vars=True).items():
        if name in ("embed", "hist_pos", "sess_pos"):
            v = rng.normal(0.0, 1.0, p.shape)
        elif name == "head_bias":
            v = rng.normal(0.0, 0.5, p.shape)
        elif p.ndim == 1:
            v = 1.0 + 0.1 * rng.normal(0.0, 1.0, p.shape)
        else:
            v = rng.normal(0.0, 0.5 / np.sqrt(p.shape[-1]), p.shape)
        p.copy_(torch.from_numpy(v.astype(np.float32)))


def sids_of(catalog, items: list[int]) -> torch.Tensor:
    return torch.tensor([catalog.sid_of(i) for i in items], dtype=torch.long)


def score(rm: RewardModel, catalog, history: list[int], sessions: list[list[int]]):
    hist = sids_of(catalog, history)
    sess = torch.stack([sids_of(catalog, s) for s in sessions])
    big_r, r = rm.score(hist, sess)
    return [float(x) for x in big_r], [[float(x) for x in row] for row in r]


def answer(beams: list[dict], results: int, rerank: bool, keep: bool) -> tuple[list[int], float]:
    """Indices of the answered beams (DECISIONS "Answers"), and the smallest reward gap
    between neighbours in the order that decided them (inf without rerank)."""
    order = list(range(len(beams)))
    gap = float("inf")
    if rerank:
        order.sort(key=lambda i: (-beams[i]["reward"], -beams[i]["score"], i))
    out, seen, used = [], set(), 0
    for used, i in enumerate(order, 1):
        key = frozenset(beams[i]["items"])
        if keep or key not in seen:
            seen.add(key)
            out.append(i)
        if len(out) == results:
            break
    if rerank:
        decided = order[: used + 1]
        for a, b in zip(decided, decided[1:]):
            gap = min(gap, beams[a]["reward"] - beams[b]["reward"])
    return out, gap


def build_request(model, rm, catalog, req: Request, items: int):
    """-> the golden entry, or None when a decision is too close to call."""
    full = Request(req.history, req.beam, req.beam, req.exclude, req.exclude_history)
    res = beam_search(model, catalog, full)
    if not clear(res):
        return None
    first = res.first_items
    for (_, a), (_, b) in zip(first[: items + 1], first[1: items + 1]):
        if a - b <= MIN_ITEM_GAP:
            return None
    beams = [{"score": s.score, "items": s.items} for s in res.sessions]
    if beams:
        big_r, r = score(rm, catalog, req.history, [b["items"] for b in beams])
        for b, rr, rk in zip(beams, big_r, r):
            b["reward"], b["signals"] = rr, rk
    answers = {}
    for rerank in (False, True):
        for keep in (False, True):
            idx, gap = answer(beams, req.results, rerank, keep)
            if gap <= MIN_REWARD_GAP:
                return None
            answers[f"rerank={int(rerank)},keep={int(keep)}"] = idx
    return {
        "history": req.history, "beam": req.beam, "results": req.results,
        "exclude": req.exclude, "exclude_history": req.exclude_history, "items": items,
        "beams": beams,
        "first_items": [[i, s] for i, s in first[:items]],
        "answers": answers,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(SEED)

    model = OneRec(CFG).eval()
    random_init(model, rng)
    rm = RewardModel(RCFG, CFG.n_levels, CFG.codebook_size, CFG.session_len, CFG.rms_eps).eval()
    init_reward(rm, rng)
    catalog = make_catalog(rng, CFG, N_ITEMS)
    ids = catalog.item_ids.tolist()

    d = args.out / NAME
    d.mkdir(parents=True, exist_ok=True)
    config = CFG.to_dict() | {"reward": RCFG.to_dict()}
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors |= rm.tensors()
    tensors["catalog.item_ids"] = torch.from_numpy(catalog.item_ids.copy())
    tensors["catalog.sids"] = torch.from_numpy(catalog.sids.copy())
    save_file(tensors, str(d / "model.safetensors"))

    m, n_r = CFG.session_len, RCFG.max_history
    rewards = []
    for h, n_sess in ((1, 2), (n_r, 5), (n_r + 5, 4), (3, 1)):
        history = pick(rng, ids, h)
        sessions = [pick(rng, ids, m) for _ in range(n_sess)]
        big_r, r = score(rm, catalog, history, sessions)
        rewards.append({"history": history, "sessions": sessions, "reward": big_r, "signals": r})
        print(f"  rewards: h={h:2} sessions={n_sess} R={[round(x, 4) for x in big_r]}")

    kinds = [
        (lambda: Request(pick(rng, ids, 3), 16, 5), 8),
        (lambda: Request(pick(rng, ids, CFG.max_history + 3), 32, 8, pick(rng, ids, 4), True), 16),
        (lambda: Request(pick(rng, ids, 1), 8, 8), 8),
        (lambda: Request(pick(rng, ids, 5), 64, 10), 10),
        (lambda: Request(pick(rng, ids, 2), 4, 2), 1),
    ]
    requests = []
    for draw, items in kinds:
        for _ in range(MAX_TRIES):
            entry = build_request(model, rm, catalog, draw(), items)
            if entry is not None:
                break
        else:
            raise RuntimeError("no clear request")
        a = entry["answers"]
        print(f"  request h={len(entry['history'])} B={entry['beam']} R={entry['results']} "
              f"K={items}: {len(entry['beams'])} beams; distinct {a['rerank=0,keep=0']} "
              f"reranked {a['rerank=1,keep=0']}")
        requests.append(entry)
    # The tests must be able to fail: the distinct rule and the rerank change some answer.
    assert any(r["answers"]["rerank=0,keep=0"] != r["answers"]["rerank=0,keep=1"] for r in requests)
    assert any(r["answers"]["rerank=1,keep=0"] != r["answers"]["rerank=1,keep=1"] for r in requests)
    assert any(r["answers"]["rerank=1,keep=1"] != r["answers"]["rerank=0,keep=1"] for r in requests)

    golden = {"reward_spec_version": 1, "rewards": rewards, "requests": requests}
    (d / "golden.json").write_text(json.dumps(golden, indent=1) + "\n")
    write_manifest(args.out)
    total = sum(f.stat().st_size for f in d.iterdir())
    print(f"{d}: {total / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
