"""Iterative Preference Alignment (OneRec paper, section "Iterative Preference Alignment").

Per round r = 1..R:
1. reference policy = the model at the start of the round, frozen;
2. for a share of the training users (one or more points each: a user at a position t of
   their training part, history = the items before t), N sessions from the current model
   with the engine's decoding semantics (constrained beam search of width N, history
   excluded; generate.py), each scored by the reward model (`RewardModel.score`, the
   function the engine's `--rerank` implements);
3. chosen = the session with the highest reward, rejected = the lowest (pairs whose
   rewards differ by no more than `min_gap` are dropped);
4. `steps` optimizer steps of  NTP + dpo_weight * DPO:  NTP is the usual next-token loss
   on ordinary training batches (train_onerec.py's examples, history dropout and MoE
   load-balance term included); DPO = -log sigmoid(beta * ((log pi(y_c|x) - log
   pi_ref(y_c|x)) - (log pi(y_r|x) - log pi_ref(y_r|x)))) on a minibatch of the round's
   pairs, log pi(y|x) = the sum of the log-probabilities of the session's m * L codes (the
   beam's session score).
After every round (and before the first), on the test users: the reward of the served top
session (the beam's best session), its session hits, and next-item metrics.

Which round is served is decided on the validation points, never on the test split
(`select` "valid"): the round with the highest mean reward of the served top session
among those whose validation session metrics (top-session hits, any of the true next
items in the top 10) are not below round 0's; round 0 (no IPA) when none qualifies.
`select` "last" serves the last round whatever it did.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from onerec_ref import Catalog, OneRec
from onerec_ref.reward import RewardModel

from . import generate, metrics, train_onerec
from .data import Split

DEFAULTS = {
    "rounds": 3,
    "share": 0.05,            # share of training users that give DPO pairs per round
    "points_per_user": 2,     # positions drawn per chosen user
    "min_hist": 3,
    "n_sessions": 16,         # N: beam width and sessions generated per point
    "min_gap": 0.0,           # drop pairs whose reward gap is <= this
    "beta": 0.1,
    "dpo_weight": 0.2,        # DPO next to NTP (1.0 lowered the session hits in dev runs)
    "steps": 60,              # optimizer steps per round
    "batch": 128,             # NTP batch (training examples)
    "dpo_batch": 16,          # pairs per step
    "lr": 5e-5, "weight_decay": 0.05, "history_dropout": 0.2, "aux_loss": 0.01,
    "eval_beam": 64, "eval_results": 64, "eval_users": 0,  # 0 = every test user
    "ks": [5, 10],
    "select": "valid",        # which round is served: "valid" (gate above) or "last"
    "valid_users": 0,         # validation points for the gate (0 = every user)
    # "observed": a diagnostic instead of IPA (make_pairs): pairs ranked by the next
    # `window` training items instead of the reward model
    "preference": "reward_model", "window": 10, "like_min": 4.0,
}


def config(cfg: dict | None) -> dict:
    out = {**DEFAULTS, **(cfg or {})}
    unknown = set(out) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"ipa config: unknown fields {sorted(unknown)}")
    return out


def _rows(items: list[int], row_of: dict[int, int]) -> list[int]:
    return [row_of[i] for i in items]


def rewards_of(rm: RewardModel, catalog: Catalog, history: list[int],
               sessions: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(R [N], r [N, S]) of one user's sessions, through `RewardModel.score`."""
    hist = torch.tensor([catalog.sid_of(i) for i in history], dtype=torch.long)
    sess = torch.tensor([[catalog.sid_of(i) for i in s] for s in sessions], dtype=torch.long)
    R, r = rm.score(hist, sess)
    return R.numpy(), r.numpy()


def session_logp(model: OneRec, hs, hm, ts) -> torch.Tensor:
    """Sum of the log-probabilities of every code of each session: [B]."""
    logp = model.forward_train(hs, hm, ts)  # [B, m, L, K]
    return logp.gather(-1, ts.long().unsqueeze(-1)).squeeze(-1).sum(dim=(-1, -2))


class _Balance(train_onerec.LoadBalance):
    """The training's MoE load-balance term, with removable hooks."""

    def __init__(self, model: OneRec) -> None:
        self.terms = []
        # A model from train_onerec.train still carries that run's LoadBalance hooks; they
        # would keep every training forward's router graph alive, so they go.
        for mod in model.modules():
            hooks = mod._forward_pre_hooks
            for key in [k for k, h in hooks.items()
                        if isinstance(getattr(h, "__self__", None), train_onerec.LoadBalance)]:
                del hooks[key]
        self.handles = [mod.register_forward_pre_hook(self._hook) for mod in model.modules()
                        if type(mod).__name__ == "MoE"]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def make_pairs(model: OneRec, rm: RewardModel, catalog: Catalog, split: Split, c: dict,
               rng: np.random.Generator, decode: str, binary: Path | None, threads: int):
    """-> (histories, chosen, rejected, stats) for this round's sampled points.

    preference "reward_model" (IPA): sessions ranked by `RewardModel.score`. "observed" is
    a diagnostic, not IPA: sessions ranked by what the user did next (the reward model's
    labels over the next `window` training items, averaged with its weights), which says
    what DPO on these pairs does when the preference is right."""
    observed = c["preference"] == "observed"
    if c["preference"] not in ("reward_model", "observed"):
        raise ValueError(f"ipa preference {c['preference']!r}: reward_model or observed")
    last = (lambda tp: len(tp) - c["window"]) if observed else len
    users = [u for u in split.users if last(split.train_part(u)) > c["min_hist"]]
    n_users = int(round(c["share"] * len(users)))
    chosen_users = rng.choice(users, n_users, replace=False) if n_users else []
    histories, futures = [], []
    for u in chosen_users:
        tp = split.train_part(int(u))
        for t in rng.integers(c["min_hist"], last(tp) + 1, c["points_per_user"]):
            histories.append(tp[: int(t)])
            futures.append((int(u), tp[int(t) : int(t) + c["window"]]))
    if observed:
        ratings = _ratings()
        w = np.asarray(rm.rc.weights, dtype=np.float64)
    t0 = time.time()
    got = generate.sessions(model, catalog, histories, c["n_sessions"], c["n_sessions"],
                            decode, binary, threads)
    t_gen = time.time() - t0
    hs, ch, rj, gaps, best, worst, top = [], [], [], [], [], [], []
    for h, (u, fut), sess in zip(histories, futures, got):
        if len(sess) < 2:
            continue
        if observed:
            R = np.array([np.mean([[i in fut, i in fut and ratings[u].get(i, 0) >= c["like_min"]]
                                   for i in s["items"]], 0) @ w for s in sess])
        else:
            R, _ = rewards_of(rm, catalog, h, [s["items"] for s in sess])
        hi, lo = int(np.argmax(R)), int(np.argmin(R))
        top.append(float(R[0]))
        if R[hi] - R[lo] <= c["min_gap"]:
            continue
        hs.append(h)
        ch.append(sess[hi]["items"])
        rj.append(sess[lo]["items"])
        gaps.append(float(R[hi] - R[lo]))
        best.append(float(R[hi]))
        worst.append(float(R[lo]))
    stats = {"points": len(histories), "pairs": len(hs), "users": n_users,
             "generate_seconds": round(t_gen, 1),
             "mean_reward_beam_top": _mean(top), "mean_reward_chosen": _mean(best),
             "mean_reward_rejected": _mean(worst), "mean_reward_gap": _mean(gaps)}
    return hs, ch, rj, stats


_RATINGS: dict = {}


def _ratings() -> dict[int, dict[int, float]]:
    if not _RATINGS:
        from . import data, reward_data

        _RATINGS.update(reward_data.read_ratings(data.fetch()))
    return _RATINGS


def _mean(x) -> float:
    return round(float(np.mean(x)), 5) if len(x) else math.nan


def _pair_tensors(histories, sessions, row_of, sids_t, n):
    hist = np.array([[-1] * (n - len(h[-n:])) + _rows(h[-n:], row_of) for h in histories])
    tgt = np.array([_rows(s, row_of) for s in sessions])
    hs, hm, ts, _ = train_onerec.batch_tensors(hist, tgt, sids_t)
    return hs, hm, ts


def evaluate(model: OneRec, rm: RewardModel, catalog: Catalog, split: Split, c: dict,
             evaluate_test: Callable[[OneRec], dict] | None, decode: str,
             binary: Path | None, threads: int, part: str = "test") -> dict:
    """Test users: reward of the served top session, its session hits@m, and next-item
    metrics. `evaluate_test(model)` (the report's metric code) when given; if its dict
    holds "top_sessions" {user: [items]} (the served top session per test user) those
    are scored and nothing is decoded here; otherwise the beam search (eval_beam, history
    excluded) runs here and, without evaluate_test, metrics.py reads its sessions."""
    n_users = c["eval_users"] if part == "test" else c["valid_users"]
    users = split.users[:n_users] if n_users else split.users
    points = [split.point(u, part) for u in users]
    out: dict = {"users": len(users)}
    given = None
    if evaluate_test is not None:
        t0 = time.time()
        tm = dict(evaluate_test(model))
        given = tm.pop("top_sessions", None)
        out["test_metrics"] = tm
        out["test_metrics_seconds"] = round(time.time() - t0, 1)
    t0 = time.time()
    if given is None:
        got = generate.sessions(model, catalog, [h for h, _ in points], c["eval_beam"],
                                c["eval_results"], decode, binary, threads)
    else:
        got = [[{"items": list(given[u])}] if given.get(u) else [] for u in users]
    rows, rew, sig, true_rew = [], [], [], []
    for (h, nxt), sess in zip(points, got):
        row = {"top_session_hits": float(len(set(sess[0]["items"]) & set(nxt))) if sess else 0.0}
        if given is None:
            ranked = metrics.ranked_from_sessions([s["items"] for s in sess])
            row.update(metrics.point_metrics(ranked, nxt, c["ks"], split.m))
        if sess:
            R, r = rewards_of(rm, catalog, h, [sess[0]["items"], nxt])
            rew.append(float(R[0]))
            sig.append(r[0])
            true_rew.append(float(R[1]))
        row["reward_top_session"] = rew[-1] if sess else math.nan
        rows.append(row)
    keys = [k for k in rows[0] if k in PAIRED] if rows else []
    out["_per_user"] = {k: np.array([r[k] for r in rows]) for k in keys}
    for r in rows:
        r.pop("reward_top_session")
    out.update({"mean_reward_top_session": _mean(rew),
                "mean_signals_top_session": [round(float(v), 5) for v in np.mean(sig, 0)],
                "mean_reward_true_session": _mean(true_rew),
                "beam_metrics": {k: round(v, 5) for k, v in metrics.mean_metrics(rows).items()},
                "decode_seconds": round(time.time() - t0, 1)})
    return out


PAIRED = ("reward_top_session", "top_session_hits", "recall@10", "ndcg@10")


def paired_change(now: dict, base: dict, seed: int, reps: int = 1000) -> dict:
    """Mean per-user change against round 0 with a 95% paired bootstrap interval (users
    resampled), per metric in PAIRED."""
    rng = np.random.default_rng(seed)
    out = {}
    for k in PAIRED:
        if k not in now or k not in base:
            continue
        d = now[k] - base[k]
        d = d[~np.isnan(d)]
        if not len(d):
            continue
        boot = d[rng.integers(0, len(d), (reps, len(d)))].mean(1)
        out[k] = {"change": round(float(d.mean()), 5),
                  "ci95": [round(float(np.quantile(boot, 0.025)), 5),
                           round(float(np.quantile(boot, 0.975)), 5)]}
    return out


def run_ipa(model: OneRec, reward: RewardModel, icfg: dict | None, split: Split,
            row_of: dict[int, int], catalog: Catalog, seed: int,
            evaluate_test: Callable[[OneRec], dict] | None = None, *,
            binary: Path | None = None, threads: int = 2, decode: str = "auto",
            round0: dict | None = None, keep_per_user: bool = False,
            evaluate_valid: Callable[[OneRec], dict] | None = None) -> tuple[OneRec, dict]:
    """-> (served model in eval mode, log with one entry per round; round 0 = the input
    model). The input model is not modified. `round0`: a precomputed round-0 evaluation
    of the same model (the ablation shares it). `evaluate_valid(model)`: next-item
    metrics on the validation points (run_all: the exact ranking), for the gate."""
    c = config(icfg)
    if c["select"] not in ("valid", "last"):
        raise ValueError(f"ipa select {c['select']!r}: valid or last")
    t_start = time.time()
    rng = np.random.default_rng(seed + 1)
    g = torch.Generator().manual_seed(seed + 1)
    # DPO minibatches draw from their own generator, so the NTP batches are the same for
    # every share (the ablation's share 0 is then the exact control).
    g_dpo = torch.Generator().manual_seed(seed + 2)
    torch.manual_seed(seed + 1)
    reward.eval()
    policy = copy.deepcopy(model).eval()
    n, m = policy.cfg.max_history, policy.cfg.session_len
    sids_t = torch.from_numpy(catalog.sids.astype(np.int64))
    train_seqs = [_rows(split.train_part(u), row_of) for u in split.users]
    hist, tgt = train_onerec.make_examples(train_seqs, n, m)
    mode = generate.resolve_mode(decode, binary)
    log = {"config": c, "decode": mode, "rounds": []}
    ev = dict(round0 or evaluate(policy, reward, catalog, split, c, evaluate_test, mode, binary,
                                 threads))
    base = ev.pop("_per_user")
    per_user = [base]
    log["rounds"].append({"round": 0, "eval": ev})
    generate.log(f"ipa round 0: {_brief(ev)}")
    gate = c["select"] == "valid"
    states = [copy.deepcopy(policy.state_dict())] if gate else []
    if gate:
        log["rounds"][0]["valid"] = _valid_eval(policy, reward, catalog, split, c, evaluate_valid,
                                                mode, binary, threads)
    balance = _Balance(policy)
    try:
        for rnd in range(1, c["rounds"] + 1):
            t0 = time.time()
            ref = copy.deepcopy(policy).eval()
            for p in ref.parameters():
                p.requires_grad_(False)
            hs_l, ch, rj, stats = make_pairs(policy, reward, catalog, split, c, rng, mode,
                                             binary, threads)
            entry: dict = {"round": rnd, "pairs": stats}
            if ch:
                ph, pm, pc = _pair_tensors(hs_l, ch, row_of, sids_t, n)
                _, _, pr = _pair_tensors(hs_l, rj, row_of, sids_t, n)
                with torch.no_grad():
                    ref_c = session_logp(ref, ph, pm, pc)
                    ref_r = session_logp(ref, ph, pm, pr)
                balance.terms = []
            opt = torch.optim.AdamW(policy.parameters(), lr=c["lr"],
                                    weight_decay=c["weight_decay"])
            tot_ntp, tot_dpo, acc, cnt = 0.0, 0.0, 0.0, 0
            dpo_first = None
            for step in range(c["steps"]):
                policy.train()
                idx = np.sort(torch.randint(0, len(hist), (c["batch"],), generator=g).numpy())
                bh, bm, bt, btm = train_onerec.batch_tensors(hist[idx], tgt[idx], sids_t,
                                                             c["history_dropout"], g)
                s, cn = train_onerec.nll(policy, bh, bm, bt, btm)
                loss = s / cn + c["aux_loss"] * balance.pop()
                tot_ntp += float(s.detach()) / cn
                if ch and c["dpo_weight"] > 0:
                    policy.eval()  # DPO log-probs without train-time dropout, as the reference's
                    k = torch.randint(0, len(ch), (min(c["dpo_batch"], len(ch)),), generator=g_dpo)
                    lc = session_logp(policy, ph[k], pm[k], pc[k])
                    lr_ = session_logp(policy, ph[k], pm[k], pr[k])
                    balance.terms = []
                    margin = c["beta"] * ((lc - ref_c[k]) - (lr_ - ref_r[k]))
                    dpo = -F.logsigmoid(margin).mean()
                    loss = loss + c["dpo_weight"] * dpo
                    tot_dpo += float(dpo.detach())
                    acc += float((margin > 0).float().mean())
                    if dpo_first is None:
                        dpo_first = float(dpo.detach())
                cnt += 1
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
            policy.eval()
            entry["train"] = {"steps": c["steps"], "ntp": round(tot_ntp / max(cnt, 1), 4),
                              "dpo_mean": round(tot_dpo / max(cnt, 1), 4) if ch else None,
                              "dpo_first": None if dpo_first is None else round(dpo_first, 4),
                              "dpo_margin_positive": round(acc / max(cnt, 1), 4) if ch else None,
                              "seconds": round(time.time() - t0, 1)}
            entry["eval"] = evaluate(policy, reward, catalog, split, c, evaluate_test, mode,
                                     binary, threads)
            per_user.append(entry["eval"].pop("_per_user"))
            entry["vs_round0"] = paired_change(per_user[-1], base, seed + rnd)
            if gate:
                entry["valid"] = _valid_eval(policy, reward, catalog, split, c, evaluate_valid,
                                             mode, binary, threads)
                states.append(copy.deepcopy(policy.state_dict()))
            log["rounds"].append(entry)
            generate.log(f"ipa round {rnd}: pairs {stats['pairs']}, {_brief(entry['eval'])}, "
                         f"train {entry['train']}, vs round 0 {entry['vs_round0']}")
    finally:
        balance.remove()
    if gate:
        log["served_round"] = select_round([r["valid"] for r in log["rounds"]])
        policy.load_state_dict(states[log["served_round"]])
        generate.log(f"ipa: round {log['served_round']} served (validation gate)")
    else:
        log["served_round"] = c["rounds"]
    log["seconds"] = round(time.time() - t_start, 1)
    if keep_per_user:
        log["_per_user"] = per_user
    return policy.eval(), log


GATE_KEYS = ("top_session_hits", "any@10")


def _valid_eval(model, reward, catalog, split, c, evaluate_valid, mode, binary, threads) -> dict:
    """The gate's figures on the validation points: reward and hits of the served top
    session (beam search here) and, when given, the next-item metrics."""
    ev = evaluate(model, reward, catalog, split, c, None, mode, binary, threads, part="valid")
    out = {"users": ev["users"], "mean_reward_top_session": ev["mean_reward_top_session"],
           "top_session_hits": ev["beam_metrics"]["top_session_hits"]}
    if evaluate_valid is not None:
        vm = evaluate_valid(model)
        out.update({k: vm[k] for k in ("recall@10", "ndcg@10", "any@10") if k in vm})
    return out


def select_round(valid: list[dict]) -> int:
    """The round to serve: the highest validation reward of the served top session among
    rounds >= 1 that raise it over round 0 and keep every session metric of GATE_KEYS at
    least at round 0's; round 0 when none does."""
    base = valid[0]
    best, best_r = base["mean_reward_top_session"], 0
    for r, v in enumerate(valid[1:], 1):
        keeps = all(v[k] >= base[k] for k in GATE_KEYS if k in base and k in v)
        if keeps and v["mean_reward_top_session"] > best:
            best, best_r = v["mean_reward_top_session"], r
    return best_r


def _brief(ev: dict) -> str:
    bm = ev["beam_metrics"]
    keys = [k for k in bm if k.startswith(("recall@", "ndcg@"))]
    return (f"reward(top) {ev['mean_reward_top_session']}, top hits "
            f"{bm['top_session_hits']:.4f}, " + ", ".join(f"{k} {bm[k]:.4f}" for k in keys))


def ablation(model: OneRec, reward: RewardModel, icfg: dict | None, split: Split,
             row_of: dict[int, int], catalog: Catalog, seed: int,
             evaluate_test: Callable[[OneRec], dict] | None = None, *,
             shares: tuple[float, ...] = (0.0, 0.05, 0.2), binary: Path | None = None,
             threads: int = 2, decode: str = "auto") -> dict:
    """The same IPA from the same model with different DPO shares (share 0 = the same
    number of next-token steps without DPO: what continued training alone does)."""
    c = config(icfg)
    mode = generate.resolve_mode(decode, binary)
    r0 = evaluate(model, reward, catalog, split, c, evaluate_test, mode, binary, threads)
    out = {}
    for s in shares:
        _, lg = run_ipa(model, reward, {**c, "share": s}, split, row_of, catalog, seed,
                        evaluate_test, binary=binary, threads=threads, decode=mode, round0=r0,
                        keep_per_user=True)
        out[str(s)] = lg
    # DPO's own effect: each round against the same round of share 0 (same NTP steps and
    # batches, no DPO), paired over the test users.
    zero = out.get(str(0.0))
    for s, lg in out.items():
        if zero is not None and lg is not zero:
            for r, (now, ctl) in enumerate(zip(lg["_per_user"], zero["_per_user"])):
                if r:
                    lg["rounds"][r]["vs_share0"] = paired_change(now, ctl, seed + 100 + r)
    for lg in out.values():
        lg.pop("_per_user")
    return out
