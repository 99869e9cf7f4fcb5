"""Self-checks of the reference against itself (run by make_fixtures.py)."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from .beam import Request, SearchResult, Session
from .catalog import Catalog
from .model import OneRec

TOL_INCREMENTAL = 1e-5


def _sids(catalog: Catalog, items: list[int]) -> torch.Tensor:
    return torch.tensor([catalog.sid_of(i) for i in items], dtype=torch.long)


@torch.no_grad()
def check_incremental(model: OneRec, enc_out: torch.Tensor, target_sids: torch.Tensor) -> float:
    """KV-cache decoding equals the full teacher-forced decode."""
    full = model.decode(enc_out, target_sids)
    inc = model.decode_incremental(enc_out, target_sids)
    diff = float((full - inc).abs().max())
    assert diff < TOL_INCREMENTAL, f"incremental decode differs from full decode by {diff}"
    return diff


@torch.no_grad()
def session_score(model: OneRec, catalog: Catalog, history: list[int], items: list[int]) -> np.float32:
    """Teacher-forced score of a (possibly partial) session, float32 accumulation."""
    enc_out = model.encode(_sids(catalog, history))
    sids = _sids(catalog, items)
    logp = model.decode(enc_out, sids).numpy()
    score = np.float32(0.0)
    for i in range(len(items)):
        for s in range(sids.shape[1]):
            score = np.float32(score + logp[i, s, sids[i, s]])
    return score


def check_result(model: OneRec, catalog: Catalog, req: Request, res: SearchResult) -> None:
    """Every session is valid and its score is the teacher-forced score of its items."""
    m = model.cfg.session_len
    excluded = set(req.exclude) | (set(req.history) if req.exclude_history else set())
    assert len(res.sessions) <= req.results
    assert len(res.sessions) == min(req.results, len(res.final_scores))
    assert res.final_scores == sorted(res.final_scores, reverse=True)
    assert len(res.final_scores) <= req.beam
    for k, sess in enumerate(res.sessions):
        assert sess.score == res.final_scores[k]
        assert len(sess.items) == m and len(set(sess.items)) == m, sess.items
        for item, sid in zip(sess.items, sess.sids):
            assert item in catalog.row_of_id, f"{item} not in catalog"
            assert item not in excluded, f"{item} is excluded"
            assert tuple(sid) == catalog.sid_of(item)
        ref = session_score(model, catalog, req.history, sess.items)
        assert abs(float(ref) - sess.score) < 1e-4 * max(1.0, abs(sess.score)), (ref, sess.score)
        state_check = model.encode(_sids(catalog, req.history))
        check_incremental(model, state_check, _sids(catalog, sess.items))


def brute_force(model: OneRec, catalog: Catalog, req: Request, limit: int = 400) -> list[Session] | None:
    """All eligible sessions, best first, when there are at most `limit` of them."""
    m = model.cfg.session_len
    excluded = set(req.exclude) | (set(req.history) if req.exclude_history else set())
    eligible = [i for i in catalog.item_ids.tolist() if i not in excluded]
    n_sessions = 1
    for k in range(m):
        n_sessions *= max(len(eligible) - k, 0)
    if n_sessions > limit:
        return None
    out = [Session(float(session_score(model, catalog, req.history, list(p))), list(p),
                   [list(catalog.sid_of(i)) for i in p])
           for p in itertools.permutations(eligible, m)]
    out.sort(key=lambda s: -s.score)
    return out


def check_against_brute_force(model: OneRec, catalog: Catalog, req: Request,
                              res: SearchResult) -> bool:
    """When the beam is wide enough to be exhaustive, beam search = enumeration."""
    every = brute_force(model, catalog, req)
    if every is None or len(every) > req.beam:
        return False
    assert len(res.final_scores) == len(every), (len(res.final_scores), len(every))
    for got, want in zip(res.sessions, every):
        assert got.items == want.items, (got, want)
        assert abs(got.score - want.score) < 1e-4 * max(1.0, abs(want.score))
    return True


@torch.no_grad()
def check_batched(model: OneRec, catalog: Catalog, histories: list[list[int]],
                  targets: list[list[int]]) -> float:
    """forward_train on a padded batch (left- and right-padded) equals per-example
    encode + decode."""
    n, L = model.cfg.max_history, model.cfg.n_levels
    kept = [h[-n:] for h in histories]
    width = max(len(h) for h in kept)
    worst = 0.0
    for pad_left in (True, False):
        sids = torch.zeros(len(kept), width, L, dtype=torch.long)
        mask = torch.zeros(len(kept), width, dtype=torch.bool)
        for b, h in enumerate(kept):
            lo = width - len(h) if pad_left else 0
            sids[b, lo : lo + len(h)] = _sids(catalog, h)
            sids[b, :lo] = 7 % model.cfg.codebook_size  # junk under the mask
            mask[b, lo : lo + len(h)] = True
        tgt = torch.stack([_sids(catalog, t) for t in targets])
        batched = model.forward_train(sids, mask, tgt)
        for b in range(len(kept)):
            one = model.decode(model.encode(_sids(catalog, histories[b])), tgt[b])
            worst = max(worst, float((batched[b] - one).abs().max()))
    assert worst < TOL_INCREMENTAL, f"batched forward differs from unbatched by {worst}"
    return worst


def spec_tensor_names(cfg) -> set[str]:
    """Tensor names as listed in MODEL_SPEC.md "Tensors" (without the catalog)."""
    names = {"enc.embed", "enc.pos", "enc.norm", "dec.bos", "dec.embed", "dec.pos",
             "dec.norm", "head"}

    def ffn(prefix: str, moe: bool) -> set[str]:
        if moe:
            return {f"{prefix}.moe.{w}" for w in ("router", "gate", "up", "down")}
        return {f"{prefix}.ffn.{w}" for w in ("gate", "up", "down")}

    for i in range(cfg.n_enc_layers):
        p = f"enc.layers.{i}"
        names |= {f"{p}.attn_norm", f"{p}.ffn_norm"} | {f"{p}.attn.{w}" for w in "qkvo"}
        names |= ffn(p, i in cfg.moe_enc_layers)
    for i in range(cfg.n_dec_layers):
        p = f"dec.layers.{i}"
        names |= {f"{p}.{n}" for n in ("self_norm", "cross_norm", "ffn_norm")}
        names |= {f"{p}.{a}.{w}" for a in ("self_attn", "cross_attn") for w in "qkvo"}
        names |= ffn(p, i in cfg.moe_dec_layers)
    return names


def check_names(model: OneRec) -> None:
    got = set(model.state_dict())
    want = spec_tensor_names(model.cfg)
    assert got == want, f"extra {sorted(got - want)}, missing {sorted(want - got)}"


@torch.no_grad()
def check_router_ties() -> None:
    """Equal router probabilities go to the lower expert index, in that order."""
    from .model import MoE

    moe = MoE(d=2, n_experts=5, top_k=3, d_expert=2)
    moe.router.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]))
    idx, weight, gaps = moe.route(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert idx.tolist() == [[4, 1, 3], [0, 1, 2]], idx.tolist()
    assert float(gaps[1]) == 0.0
