#!/usr/bin/env python3
"""Write the golden fixtures under tests/fixtures/ (seeded, deterministic).

    python3 reference/make_fixtures.py [--out tests/fixtures] [--only NAME ...]

Each fixture directory holds a checkpoint (config.json, model.safetensors) and the
goldens the engine must reproduce (golden.safetensors, golden.json). See
reference/README.md for the formats and the choices made where the spec is silent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

from onerec_ref import (  # noqa: E402
    SPEC_VERSION, Catalog, OneRec, OneRecConfig, Request, RouterLog, SearchResult,
    beam_search, load_checkpoint, random_init, round_params_, save_checkpoint,
)
from onerec_ref.checks import (  # noqa: E402
    check_against_brute_force, check_batched, check_incremental, check_names, check_result,
    check_router_ties,
)

ROOT = Path(__file__).resolve().parent.parent
# A request's goldens are kept only if every decision was clear: the score gap at the
# beam cut-off (and between returned neighbours) and the router top-k gap (any MoE
# call during the search) exceed these, far above float32 noise between engines.
MIN_SCORE_GAP = 1e-4
MIN_ROUTER_GAP = 1e-5
MAX_TRIES = 50


@dataclass
class Fixture:
    name: str
    dtype: str
    seed: int
    n_items: int
    cfg: OneRecConfig


FIXTURES = [
    Fixture("dense_l3", "F32", 101, 200, OneRecConfig(
        d_model=32, n_heads=4, n_enc_layers=2, n_dec_layers=2, d_ff=64,
        n_experts=0, top_k=0, d_expert=0, moe_enc_layers=[], moe_dec_layers=[],
        n_levels=3, codebook_size=16, session_len=5, max_history=8, rms_eps=1e-6)),
    Fixture("moe_dec_l2", "F32", 202, 300, OneRecConfig(
        d_model=32, n_heads=2, n_enc_layers=2, n_dec_layers=2, d_ff=48,
        n_experts=4, top_k=2, d_expert=32, moe_enc_layers=[], moe_dec_layers=[0, 1],
        n_levels=2, codebook_size=32, session_len=5, max_history=8, rms_eps=1e-6)),
    Fixture("moe_enc_dec_l4", "F16", 303, 250, OneRecConfig(
        d_model=48, n_heads=4, n_enc_layers=2, n_dec_layers=3, d_ff=64,
        n_experts=5, top_k=3, d_expert=24, moe_enc_layers=[1], moe_dec_layers=[0, 1],
        n_levels=4, codebook_size=8, session_len=2, max_history=8, rms_eps=1e-6)),
    Fixture("pointwise_top1", "BF16", 404, 300, OneRecConfig(
        d_model=16, n_heads=2, n_enc_layers=2, n_dec_layers=2, d_ff=32,
        n_experts=3, top_k=1, d_expert=24, moe_enc_layers=[], moe_dec_layers=[0, 1],
        n_levels=3, codebook_size=64, session_len=1, max_history=8, rms_eps=1e-5)),
    Fixture("heads_odd", "F32", 505, 150, OneRecConfig(
        d_model=24, n_heads=3, n_enc_layers=3, n_dec_layers=1, d_ff=40,
        n_experts=6, top_k=2, d_expert=16, moe_enc_layers=[], moe_dec_layers=[0],
        n_levels=3, codebook_size=13, session_len=3, max_history=8, rms_eps=1e-6)),
]


def make_catalog(rng: np.random.Generator, cfg: OneRecConfig, n_items: int) -> Catalog:
    K, L = cfg.codebook_size, cfg.n_levels
    flat = rng.choice(K**L, size=n_items, replace=False)  # unique SIDs
    sids = np.stack([(flat // K ** (L - 1 - s)) % K for s in range(L)], axis=1)
    ids: set[int] = set()
    while len(ids) < n_items:  # distinct ids in [1000, 2^62): some beyond 2^53 on purpose
        ids.add(int(rng.integers(1000, 2**62)))
    item_ids = rng.permutation(np.array(sorted(ids), dtype=np.int64))
    return Catalog(item_ids, sids.astype(np.int32), K)


def pick(rng: np.random.Generator, pool: list[int], k: int) -> list[int]:
    return [pool[i] for i in rng.choice(len(pool), size=k, replace=False)]


def clear(res: SearchResult) -> bool:
    return res.min_score_gap > MIN_SCORE_GAP and res.min_router_gap > MIN_ROUTER_GAP


class RequestMaker:
    """Builds the request list of one fixture; each kind re-draws until `clear`."""

    def __init__(self, model: OneRec, catalog: Catalog, rng: np.random.Generator):
        self.model, self.catalog, self.rng = model, catalog, rng
        self.ids = catalog.item_ids.tolist()
        self.out: list[tuple[Request, SearchResult]] = []

    def run(self, req: Request) -> SearchResult:
        return beam_search(self.model, self.catalog, req)

    def add(self, draw, why: str) -> None:
        for _ in range(MAX_TRIES):
            req = draw()
            res = self.run(req)
            if clear(res):
                check_result(self.model, self.catalog, req, res)
                exhaustive = check_against_brute_force(self.model, self.catalog, req, res)
                self.out.append((req, res))
                print(f"    {why:<38} h={len(req.history):2} B={req.beam:3} R={req.results:3} "
                      f"excl={len(req.exclude):3} xh={int(req.exclude_history)} -> "
                      f"{len(res.sessions)} sessions, {len(res.final_scores)} beams, "
                      f"gap {res.min_score_gap:.2e}{' (= brute force)' if exhaustive else ''}")
                return
        raise RuntimeError(f"no clear request for {why!r} in {MAX_TRIES} tries")

    def only(self, keep: list[int]) -> list[int]:
        keep_set = set(keep)
        return [i for i in self.ids if i not in keep_set]

    def build(self) -> list[tuple[Request, SearchResult]]:
        cfg, rng = self.model.cfg, self.rng
        n, m = cfg.max_history, cfg.session_len
        big_b = 64 if len(self.ids) >= 64 else 16

        self.add(lambda: Request(pick(rng, self.ids, 3), 1, 1), "greedy, short history")
        self.add(lambda: Request(pick(rng, self.ids, 1), 4, 4), "single-item history")
        self.add(lambda: Request(pick(rng, self.ids, n), 4, 3, pick(rng, self.ids, 5), True),
                 "history = n, exclude + history")
        self.add(lambda: Request(pick(rng, self.ids, n + 5), 16, 10), "long history (truncated)")

        # Exclude what an unconstrained search returns, so exclusion changes the answer.
        def excl_top() -> Request:
            hist = pick(rng, self.ids, n)
            top = self.run(Request(hist, 4, 2)).sessions
            drop = sorted({i for s in top for i in s.items})
            return Request(hist, 16, 8, drop + pick(rng, self.only(drop + hist), 3), False)
        self.add(excl_top, "exclude the unconstrained favourites")

        # Put the unconstrained favourites into the part of the history that the encoder
        # drops (older than n): the model's view is unchanged, and exclude_history must
        # still remove them.
        def hist_trunc(exclude_history: bool):
            def draw() -> Request:
                recent = pick(rng, self.ids, n)
                top = self.run(Request(recent, 8, 4)).sessions
                fav = [i for i in dict.fromkeys(i for s in top for i in s.items) if i not in recent]
                old = (fav + pick(rng, self.only(fav + recent), 5))[:5]
                return Request(old + recent, 8, 4, [], exclude_history)
            return draw
        state = rng.bit_generator.state
        self.add(hist_trunc(False), "favourites in truncated history")
        rng.bit_generator.state = state  # same history, now excluded
        self.add(hist_trunc(True), "  ... with exclude_history")
        (kept_req, kept_res), (excl_req, excl_res) = self.out[-2:]
        assert kept_req.history == excl_req.history
        truncated = set(kept_req.history[:-n])
        assert any(i in truncated for s in kept_res.sessions for i in s.items), \
            "the truncated favourites should come back without exclude_history"
        assert not any(i in truncated for s in excl_res.sessions for i in s.items)

        self.add(lambda: Request(pick(rng, self.ids, n + 5), big_b, min(20, big_b),
                                 pick(rng, self.ids, 10), True), f"wide beam {big_b}")

        # A corner of the catalog: only the items under one first-level code.
        by_c0: dict[int, list[int]] = {}
        for item, sid in zip(self.ids, self.catalog.sids[:, 0].tolist()):
            by_c0.setdefault(sid, []).append(item)
        corner_items = min(by_c0.values(), key=len) if m == 1 else \
            min((v for v in by_c0.values() if len(v) >= m + 1), key=len)
        self.add(lambda: Request(pick(rng, self.ids, 5), 16, 16, self.only(corner_items), False),
                 f"one c0 subtree ({len(corner_items)} items)")

        # Fewer than R sessions: q eligible items give q!/(q-m)! sessions.
        q = {1: 3, 2: 3, 3: 3}.get(m, m)
        n_few = math.perm(q, m)
        b_few = 16 if n_few < 16 else 128
        self.add(lambda: Request(pick(rng, self.ids, 4), b_few, b_few,
                                 self.only(pick(rng, self.ids, q)), False),
                 f"{q} eligible items ({n_few} sessions)")
        # Zero sessions: fewer eligible items than session_len (none at all if m == 1).
        self.add(lambda: Request(pick(rng, self.ids, 3), 8, 4,
                                 self.only(pick(rng, self.ids, m - 1)), False),
                 f"{m - 1} eligible items (no session)")
        # Zero via exclude_history: history is everything eligible.
        def hist_is_all() -> Request:
            keep = pick(rng, self.ids, m + 1)
            return Request(keep, 4, 2, self.only(keep), True)
        self.add(hist_is_all, "exclude_history empties the catalog")
        return self.out


def request_json(req: Request, res: SearchResult) -> dict:
    return {
        "history": req.history,
        "beam": req.beam,
        "results": req.results,
        "exclude": req.exclude,
        "exclude_history": req.exclude_history,
        "sessions": [{"score": s.score, "items": s.items, "sids": s.sids} for s in res.sessions],
        "final_scores": res.final_scores,
    }


@torch.no_grad()
def teacher_forced(model: OneRec, catalog: Catalog, rng: np.random.Generator):
    """Pick a history longer than n and m distinct targets whose routing is clear."""
    cfg = model.cfg
    ids = catalog.item_ids.tolist()
    for _ in range(MAX_TRIES):
        history = pick(rng, ids, cfg.max_history + 5)
        targets = pick(rng, ids, cfg.session_len)
        enc_rec, dec_rec = RouterLog(), RouterLog()
        hist_sids = torch.tensor([catalog.sid_of(i) for i in history])
        tgt_sids = torch.tensor([catalog.sid_of(i) for i in targets])
        enc_out = model.encode(hist_sids, enc_rec)
        logp = model.decode(enc_out, tgt_sids, dec_rec)
        if min(enc_rec.min_gap, dec_rec.min_gap) > MIN_ROUTER_GAP:
            break
    else:
        raise RuntimeError("no teacher-forced example with clear routing")
    diff = check_incremental(model, enc_out, tgt_sids)
    tensors = {"enc_out": enc_out.contiguous(),
               "tf_logprobs": logp.reshape(-1, cfg.codebook_size).contiguous()}
    for side, rec, layers in (("enc", enc_rec, cfg.moe_enc_layers),
                              ("dec", dec_rec, cfg.moe_dec_layers)):
        for i in layers:
            idx, weight = rec.stacked(f"{side}.{i}")
            tensors[f"router.{side}.{i}"] = idx.to(torch.int32).contiguous()
            tensors[f"router_probs.{side}.{i}"] = weight.contiguous()
    T = cfg.dec_len
    for i in cfg.moe_dec_layers:
        assert tensors[f"router.dec.{i}"].shape == (T, cfg.top_k)
    print(f"    teacher forced: h={len(history)} (kept {enc_out.shape[0]}), "
          f"incremental diff {diff:.1e}")
    return {"history": history, "target_items": targets}, tensors


def build(fx: Fixture, out_dir: Path) -> None:
    print(f"{fx.name}: {fx.dtype}, d={fx.cfg.d_model}, L={fx.cfg.n_levels}, "
          f"K={fx.cfg.codebook_size}, m={fx.cfg.session_len}, N={fx.n_items}")
    rng = np.random.default_rng(fx.seed)
    model = OneRec(fx.cfg).eval()
    check_names(model)
    random_init(model, rng)
    round_params_(model, fx.dtype)
    catalog = make_catalog(rng, fx.cfg, fx.n_items)

    d = out_dir / fx.name
    save_checkpoint(d, model, catalog, fx.dtype)
    loaded, loaded_cat, dtype = load_checkpoint(d)
    assert dtype == fx.dtype
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), f"{k} changed in the checkpoint round trip"
    assert np.array_equal(loaded_cat.sids, catalog.sids)
    assert np.array_equal(loaded_cat.item_ids, catalog.item_ids)

    tf, tensors = teacher_forced(model, catalog, rng)
    ids = catalog.item_ids.tolist()
    hists = [pick(rng, ids, k) for k in (1, 5, fx.cfg.max_history + 4)]
    tgts = [pick(rng, ids, fx.cfg.session_len) for _ in hists]
    print(f"    batched vs unbatched forward diff {check_batched(model, catalog, hists, tgts):.1e}")

    requests = RequestMaker(model, catalog, rng).build()
    save_file(tensors, str(d / "golden.safetensors"))
    golden = {"spec_version": SPEC_VERSION, "teacher_forced": tf,
              "requests": [request_json(q, r) for q, r in requests]}
    (d / "golden.json").write_text(dump_golden(golden))


def dump_golden(golden: dict) -> str:
    """JSON with one line per session (plain json.dumps(indent=...) puts every id on
    its own line). Floats are Python reprs of float32 values: they parse back exactly."""
    j = json.dumps
    out = ["{", f' "spec_version": {j(golden["spec_version"])},',
           f' "teacher_forced": {j(golden["teacher_forced"])},', ' "requests": [']
    reqs = golden["requests"]
    for k, r in enumerate(reqs):
        head = ", ".join(f"{j(key)}: {j(r[key])}" for key in
                         ("history", "beam", "results", "exclude", "exclude_history"))
        out.append(f"  {{{head},")
        if r["sessions"]:
            out.append('   "sessions": [')
            out += [f"    {j(s)}" + ("," if i + 1 < len(r["sessions"]) else "")
                    for i, s in enumerate(r["sessions"])]
            out.append("   ],")
        else:
            out.append('   "sessions": [],')
        out.append(f'   "final_scores": {j(r["final_scores"])}}}' + ("," if k + 1 < len(reqs) else ""))
    out += [" ]", "}"]
    text = "\n".join(out) + "\n"
    assert json.loads(text) == golden
    return text


def write_manifest(out_dir: Path) -> None:
    lines = []
    for f in sorted(out_dir.glob("*/*")):
        if f.is_file():
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            lines.append(f"{digest}  {f.relative_to(out_dir).as_posix()}\n")
    (out_dir / "MANIFEST.sha256").write_text("".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures")
    ap.add_argument("--only", nargs="*", help="fixture names (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    check_router_ties()
    for fx in FIXTURES:
        if not args.only or fx.name in args.only:
            build(fx, args.out)
    write_manifest(args.out)
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"total {total / 1e6:.2f} MB under {args.out}")
    assert total <= 5_000_000, "fixtures exceed 5 MB"


if __name__ == "__main__":
    main()
