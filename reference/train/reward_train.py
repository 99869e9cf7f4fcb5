"""Training of the session reward model (`onerec_ref.RewardModel`, docs/REWARD_MODEL.md)
on the training period only, and its held-out quality (reward_data.py says what the
points, labels and candidate sessions are).

Loss: binary cross-entropy per item and head (`watch`, `like`), mean over both; with
`pair_weight` > 0 also a pairwise (RankNet) term over the pairs of one point's model
sessions (`pair_loss`). A fixed number of steps, or with `select_every` the step with the
best pair accuracy on the calibration sessions (training period; never the held-out
points, so the reported quality is not tuned on them). Quality on the validation points
(a later period): AUC per head and expected calibration error (10 equal-width bins of the
predicted probability; ECE = sum over bins of share x |mean predicted - observed rate|),
on all candidate sessions and on the OneRec model's own sessions alone (what IPA and the
engine's rerank score), and the ordering of one point's model sessions (`session_pairs`).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from onerec_ref import Catalog, OneRec, OneRecConfig
from onerec_ref.reward import RewardConfig, RewardModel

from . import generate, reward_data
from .data import Split

DEFAULTS = {
    "reward": RewardConfig().to_dict(),  # the model file's `reward` object
    "window": 10,           # W: "watch" = among the next W interactions
    "like_min": 4.0,        # "like" = watched and rated >= like_min
    "min_hist": 3,          # training points need this many history items
    "points_per_user": 40,  # training points drawn per user (0 = all)
    "true_share": 0.2,      # share of points that also get their true next session
    "mixed_per_point": 1,
    "near_per_point": 1,    # mixed, negatives sharing the first SID code with a window item
    "pop_alpha": 0.75,      # negatives ~ training popularity ** alpha
    "model_points": 2000,   # training points that get OneRec beam sessions (0 = none)
    "model_beam": 16,
    "model_per_point": 8,   # the top session + 7 drawn from the other beams (training)
    "steps": 600, "batch": 256, "lr": 2e-3, "weight_decay": 0.01, "warmup": 100,
    "dropout": 0.1,
    "calibrate_share": 0.2,  # model points kept out of training to fit the heads' scale/bias
    # "points": a share of the model points; "users": every training-period session of a
    # share of the users (their other points' windows overlap the held-out ones, so held-out
    # points of a user who is trained on measure memory, not ranking).
    "calibrate_by": "points",
    # Pairwise ranking among one point's model sessions (what IPA chooses among), next to
    # the per-item BCE: softplus(-pair_scale * (R_i - R_j)) over the pairs of sessions of
    # the same point whose observed rewards differ (i the better one); 0 = BCE only.
    "pair_weight": 0.0,
    "pair_points": 16,      # points per pairwise minibatch (all their model sessions)
    "pair_scale": 10.0,
    # Keep the step with the best pair accuracy on the calibration sessions (training
    # period, not trained on), measured every `select_every` steps; 0 = the last step.
    "select_every": 0,
}


def config(cfg: dict | None) -> dict:
    out = {**DEFAULTS, **(cfg or {})}
    unknown = set(out) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"reward training config: unknown fields {sorted(unknown)}")
    return out


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, tied scores share their mean rank)."""
    y = y.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    ranks = np.empty(len(p))
    i = 0
    while i < len(p):
        j = i
        while j + 1 < len(p) and sp[j + 1] == sp[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err, table = 0.0, []
    for b in range(bins):
        sel = idx == b
        if not sel.any():
            continue
        mp, obs = float(p[sel].mean()), float(y[sel].mean())
        err += sel.mean() * abs(mp - obs)
        table.append({"bin": b, "n": int(sel.sum()), "mean_pred": round(mp, 4),
                      "observed": round(obs, 4)})
    return {"ece": float(err), "bins": table}


def _batch(points: reward_data.Points, sess: reward_data.Sessions, idx: np.ndarray,
           sids: torch.Tensor):
    h = torch.from_numpy(points.hist[sess.point[idx]])
    mask = h >= 0
    keep = int(mask.sum(1).max())
    h, mask = h[:, -keep:], mask[:, -keep:]
    s = torch.from_numpy(sess.rows[idx])
    return sids[h.clamp(min=0)], mask, sids[s], torch.from_numpy(sess.labels[idx])


@torch.no_grad()
def predict(rm: RewardModel, points, sess, sids: torch.Tensor, bs: int = 1024) -> np.ndarray:
    rm.eval()
    out = []
    for k in range(0, len(sess), bs):
        hs, hm, ss, _ = _batch(points, sess, np.arange(k, min(k + bs, len(sess))), sids)
        out.append(rm.item_probs(hs, hm, ss).numpy())
    return np.concatenate(out) if out else np.zeros((0, sess.rows.shape[1], 2), np.float32)


def quality(rm: RewardModel, points, sess, sids: torch.Tensor) -> dict:
    p = predict(rm, points, sess, sids)
    out: dict = {"sessions": len(sess), "points": int(len(points.users))}
    for name, sel in (("all", np.ones(len(sess), bool)), ("model", sess.kind == 2)):
        if not sel.any():
            continue
        part = {"sessions": int(sel.sum())}
        for k, sig in enumerate(reward_data.SIGNALS):
            y, q = sess.labels[sel][..., k].ravel(), p[sel][..., k].ravel()
            cal = ece(y, q)
            part[sig] = {"auc": round(auc(y, q), 4), "ece": round(cal["ece"], 4),
                         "rate": round(float(y.mean()), 4), "mean_pred": round(float(q.mean()), 4),
                         "calibration": cal["bins"]}
        out[name] = part
    out["model_session_pairs"] = session_pairs(rm, sess, p)
    return out


def session_pairs(rm: RewardModel, sess, p: np.ndarray, boot: int = 1000) -> dict:
    """How well the reward orders one point's OneRec sessions (what IPA's chosen/rejected
    choice rests on): over pairs of model sessions of the same point whose observed
    rewards (the labels averaged like R) differ, the share where R orders them the same
    way (a tie counts one half). `beam_score_accuracy`: the same for the generator's own
    beam score, the baseline a useful reward model has to beat; `minus_beam_ci95`: a 95%
    bootstrap interval (points resampled, `boot` times) of their difference."""
    w = np.asarray(rm.rc.weights, dtype=np.float64)
    preds = {"accuracy": p.mean(1) @ w, "beam_score_accuracy": sess.score}
    true = sess.labels.mean(1) @ w
    by_point: dict[int, list[int]] = {}
    for j in np.nonzero(sess.kind == 2)[0].tolist():
        by_point.setdefault(int(sess.point[j]), []).append(j)
    # per point: pairs, and agreeing pairs per predictor (the bootstrap resamples points)
    n_pairs = np.zeros(len(by_point))
    agree = {k: np.zeros(len(by_point)) for k in preds}
    for q, js in enumerate(by_point.values()):
        js = np.array(js)
        dt = true[js][:, None] - true[js][None, :]
        upper = np.triu(np.ones_like(dt, dtype=bool), 1) & (dt != 0)
        n_pairs[q] = upper.sum()
        for k, pr in preds.items():
            dp = pr[js][:, None] - pr[js][None, :]
            agree[k][q] = np.where(dp == 0, 0.5, (dp > 0) == (dt > 0))[upper].sum()
    total = int(n_pairs.sum())
    out: dict = {"pairs": total}
    out.update({k: round(float(v.sum()) / total, 4) if total else math.nan
                for k, v in agree.items()})
    if total and boot:
        # 95% interval of accuracy - beam_score_accuracy, points resampled with replacement
        rng = np.random.default_rng(0)
        pick = rng.integers(0, len(n_pairs), (boot, len(n_pairs)))
        d = agree["accuracy"] - agree["beam_score_accuracy"]
        diff = d[pick].sum(1) / np.maximum(n_pairs[pick].sum(1), 1)
        out["minus_beam_ci95"] = [round(float(np.quantile(diff, 0.025)), 4),
                                  round(float(np.quantile(diff, 0.975)), 4)]
    return out


def pair_groups(sess: reward_data.Sessions, weights) -> list[np.ndarray]:
    """Indices of each point's model sessions, for the points whose sessions' observed
    rewards (labels averaged like R) are not all equal (the others give no pair)."""
    true = sess.labels.mean(1) @ np.asarray(weights, dtype=np.float64)
    by_point: dict[int, list[int]] = {}
    for j in np.nonzero(sess.kind == 2)[0].tolist():
        by_point.setdefault(int(sess.point[j]), []).append(j)
    return [np.array(js) for js in by_point.values() if len(set(true[js].tolist())) > 1]


def pair_loss(R: torch.Tensor, true: torch.Tensor, sizes: list[int], scale: float) -> torch.Tensor:
    """RankNet loss among the sessions of one group (consecutive runs of `sizes` in R and
    true): mean over the pairs with true_i > true_j of softplus(-scale * (R_i - R_j))."""
    terms = []
    k = 0
    for n in sizes:
        r, t = R[k : k + n], true[k : k + n]
        better = t[:, None] > t[None, :]
        if better.any():
            terms.append(F.softplus(-scale * (r[:, None] - r[None, :]))[better])
        k += n
    return torch.cat(terms).mean() if terms else R.sum() * 0.0


def candidate_sessions(points, model: OneRec | None, catalog: Catalog, pop: np.ndarray,
                       c: dict, m: int, rng: np.random.Generator, n_model: int, per_point: int,
                       decode: str, binary: Path | None, threads: int) -> reward_data.Sessions:
    parts = [reward_data.synthetic_sessions(points, m, pop, c["pop_alpha"], rng,
                                            catalog.row_of_id, c["mixed_per_point"],
                                            c["true_share"], c["near_per_point"], catalog.sids)]
    if model is not None and n_model > 0:
        which = np.sort(rng.choice(len(points.users), min(n_model, len(points.users)),
                                   replace=False))
        t0 = time.time()
        got = generate.sessions(model, catalog, [points.histories[p] for p in which],
                                c["model_beam"], c["model_beam"], decode, binary, threads)
        generate.log(f"reward data: OneRec sessions for {len(which)} points in "
                     f"{time.time() - t0:.1f} s")
        parts.append(reward_data.model_sessions(points, which, got, catalog.row_of_id,
                                                per_point, rng))
    return reward_data.concat(parts)


def train_reward_model(split: Split, catalog: Catalog, ratings: dict[int, dict[int, float]],
                       mcfg: OneRecConfig, cfg: dict | None, seed: int,
                       model: OneRec | None = None, decode: str = "auto",
                       binary: Path | None = None, threads: int = 2
                       ) -> tuple[RewardModel, dict]:
    """-> (reward model in eval mode, report dict: config, data sizes, training log,
    held-out quality). `model` (the trained OneRec) supplies the `model` candidate
    sessions; without it only `true` / `mixed` ones are used."""
    c = config(cfg)
    t_start = time.time()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    rc = RewardConfig.from_dict(c["reward"])
    if tuple(rc.signals) != reward_data.SIGNALS:
        raise ValueError(f"reward signals {rc.signals}: the MovieLens labels are {reward_data.SIGNALS}")
    m, n_r, w = mcfg.session_len, rc.max_history, c["window"]
    row_of = catalog.row_of_id
    sids = torch.from_numpy(catalog.sids.astype(np.int64))
    pop = reward_data.popularity(split, row_of, len(catalog))

    train_pts = reward_data.make_points(split, ratings, row_of, "train", n_r, w, c["like_min"],
                                        c["min_hist"], c["points_per_user"], rng)
    valid_pts = reward_data.make_points(split, ratings, row_of, "valid", n_r, w, c["like_min"])
    train_s = candidate_sessions(train_pts, model, catalog, pop, c, m, rng, c["model_points"],
                                 c["model_per_point"], decode, binary, threads)
    # Held out: every beam session of every validation point, so that the ordering of one
    # point's sessions (what IPA relies on) is measured on many pairs.
    valid_s = candidate_sessions(valid_pts, model, catalog, pop, c, m, rng,
                                 len(valid_pts.users) if c["model_points"] else 0,
                                 c["model_beam"], decode, binary, threads)
    # Calibration set: the model sessions of `calibrate_share` of the model points, kept
    # out of training (training period only); the heads' scale and bias are fitted on it.
    calib_s = None
    if c["calibrate_share"] > 0 and (train_s.kind == 2).any():
        is_cal, drop = calibration_split(train_pts, train_s, c["calibrate_share"],
                                         c["calibrate_by"], rng)
        calib_s = _take(train_s, np.nonzero(is_cal)[0])
        train_s = _take(train_s, np.nonzero(~drop)[0])
    t_data = time.time() - t_start

    rm = RewardModel(rc, mcfg.n_levels, mcfg.codebook_size, m, mcfg.rms_eps, c["dropout"])
    _init(rm, seed)
    opt = torch.optim.AdamW(rm.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    steps, warm = c["steps"], c["warmup"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * min(s, steps) / steps)))
    g = torch.Generator().manual_seed(seed)
    groups = pair_groups(train_s, rc.weights) if c["pair_weight"] > 0 else []
    w_t = torch.tensor(rc.weights, dtype=torch.float32)
    select = c["select_every"] > 0 and calib_s is not None
    best = (-1.0, 0, None)  # (calibration pair accuracy, step, state)
    log, tot, tot_pair, cnt, t0 = [], 0.0, 0.0, 0, time.time()
    for step in range(1, steps + 1):
        rm.train()
        idx = torch.randint(0, len(train_s), (c["batch"],), generator=g).numpy()
        hs, hm, ss, y = _batch(train_pts, train_s, idx, sids)
        p = rm.item_probs(hs, hm, ss)
        loss = F.binary_cross_entropy(p, y)
        if groups:
            pick = torch.randint(0, len(groups), (min(c["pair_points"], len(groups)),),
                                 generator=g).tolist()
            js = [groups[k] for k in pick]
            hs, hm, ss, y = _batch(train_pts, train_s, np.concatenate(js), sids)
            R = rm.item_probs(hs, hm, ss).mean(1) @ w_t
            pl = pair_loss(R, (y.mean(1) @ w_t), [len(j) for j in js], c["pair_scale"])
            loss = loss + c["pair_weight"] * pl
            tot_pair += float(pl.detach())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), 1.0)
        opt.step()
        sched.step()
        tot, cnt = tot + loss.item(), cnt + 1
        if select and (step % c["select_every"] == 0 or step == steps):
            rm.eval()
            acc = session_pairs(rm, calib_s, predict(rm, train_pts, calib_s, sids),
                                0)["accuracy"]
            if acc > best[0]:
                best = (acc, step, copy.deepcopy(rm.state_dict()))
        if step % max(1, steps // 5) == 0 or step == steps:
            log.append({"step": step, "train_loss": round(tot / cnt, 4),
                        "pair_loss": round(tot_pair / cnt, 4),
                        "seconds": round(time.time() - t0, 1)})
            if select:
                log[-1]["calibration_pair_accuracy_best"] = [best[0], best[1]]
            generate.log(f"reward model {log[-1]}")
            tot, tot_pair, cnt = 0.0, 0.0, 0
    if select and best[2] is not None:  # None: no calibration pair (NaN accuracy)
        rm.load_state_dict(best[2])
    rm.eval()
    cal = calibrate(rm, train_pts, calib_s, sids) if calib_s is not None else None
    report = {
        "config": c,
        "data": {"train_points": int(len(train_pts.users)), "train_sessions": len(train_s),
                 "train_sessions_by_kind": {k: int((train_s.kind == i).sum())
                                            for i, k in enumerate(reward_data.KINDS)},
                 "train_label_rate": {s: round(float(train_s.labels[..., k].mean()), 4)
                                      for k, s in enumerate(reward_data.SIGNALS)}},
        "log": log,
        "selected_step": best[1] if best[2] is not None else steps,
        "calibration_fit": cal,
        "calibration_pairs": (session_pairs(rm, calib_s, predict(rm, train_pts, calib_s, sids))
                              if calib_s is not None else None),
        "heldout_valid": quality(rm, valid_pts, valid_s, sids),
        "train_fit": quality(rm, train_pts, _subset(train_s, 20000, rng), sids),
        "seconds": {"data": round(t_data, 1), "train": round(time.time() - t0, 1),
                    "total": round(time.time() - t_start, 1)},
        "params": sum(p.numel() for p in rm.parameters()),
    }
    return rm, report


def calibration_split(points, sess: reward_data.Sessions, share: float, by: str,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """-> (is_cal, drop) over `sess`: the model sessions held out for calibration and
    selection, and the sessions left out of training (the held-out ones and, with
    by "users", every other session of the held-out users)."""
    model = sess.kind == 2
    if by == "points":
        mpts = np.unique(sess.point[model])
        held = rng.choice(mpts, max(1, int(share * len(mpts))), replace=False)
        is_cal = model & np.isin(sess.point, held)
        return is_cal, is_cal
    if by == "users":
        musers = np.unique(points.users[sess.point[model]])
        held = rng.choice(musers, max(1, int(share * len(musers))), replace=False)
        of_held = np.isin(points.users[sess.point], held)
        return model & of_held, of_held
    raise ValueError(f"reward calibrate_by {by!r}: points or users")


def _take(s: reward_data.Sessions, idx: np.ndarray) -> reward_data.Sessions:
    return reward_data.Sessions(s.point[idx], s.rows[idx], s.labels[idx], s.kind[idx],
                                None if s.score is None else s.score[idx])


def _subset(s: reward_data.Sessions, n: int, rng) -> reward_data.Sessions:
    if len(s) <= n:
        return s
    return _take(s, np.sort(rng.choice(len(s), n, replace=False)))


def calibrate(rm: RewardModel, points, sess, sids: torch.Tensor) -> dict:
    """Platt scaling per head on sessions the model was not trained on: p' = sigmoid(a z +
    b) with z the head's logit; folded into the contract's tensors (head[k] *= a,
    head_bias[k] = a head_bias[k] + b), so the engine computes the calibrated reward."""
    p = torch.from_numpy(predict(rm, points, sess, sids)).double().clamp(1e-7, 1 - 1e-7)
    z = torch.log(p) - torch.log1p(-p)
    y = torch.from_numpy(sess.labels).double()
    out = {"sessions": len(sess)}
    for k, sig in enumerate(reward_data.SIGNALS[: z.shape[-1]]):
        ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([ab], max_iter=100, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(ab[0] * z[..., k] + ab[1], y[..., k])
            loss.backward()
            return loss

        opt.step(closure)
        a, b = float(ab[0].detach()), float(ab[1].detach())
        with torch.no_grad():
            rm.head[k] *= a
            rm.head_bias[k] = a * rm.head_bias[k] + b
        out[sig] = {"scale": round(a, 4), "bias": round(b, 4)}
    return out


def _init(rm: RewardModel, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 7919)
    with torch.no_grad():
        for name, p in rm.named_parameters():
            if name == "head_bias":
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)  # RMSNorm weights
            elif name in ("embed", "hist_pos", "sess_pos"):
                p.normal_(0.0, 0.1 if name == "embed" else 0.02, generator=g)
            else:
                std = 1.0 / math.sqrt(p.shape[-1])
                if name.endswith((".o", ".down")):
                    std /= math.sqrt(6)  # three residual branches start small
                p.normal_(0.0, std, generator=g)


def save_with_reward(ckpt_dir: Path, rm: RewardModel) -> None:
    """Adds the reward model to a checkpoint directory written by `save_checkpoint`:
    the `reward.*` tensors into model.safetensors and the `reward` object into
    config.json (docs/REWARD_MODEL.md)."""
    import json

    from safetensors.torch import load_file, save_file

    ckpt_dir = Path(ckpt_dir)
    tensors = load_file(str(ckpt_dir / "model.safetensors"))
    tensors = {k: v for k, v in tensors.items() if not k.startswith("reward.")}
    tensors.update({k: v.to(torch.float32) for k, v in rm.tensors().items()})
    save_file(tensors, str(ckpt_dir / "model.safetensors"))
    cj = json.loads((ckpt_dir / "config.json").read_text())
    cj["reward"] = rm.rc.to_dict()
    (ckpt_dir / "config.json").write_text(json.dumps(cj, indent=2) + "\n")


def train_reward(rcfg: dict | None, split: Split, row_of: dict[int, int], sids: np.ndarray,
                 seed: int, model: OneRec, *, binary: Path | None = None,
                 threads: int = 2, decode: str = "auto") -> tuple[RewardModel, dict]:
    """run_all.py's entry point: ratings from the cached ml-100k.inter, the catalog from
    `row_of` (item id -> catalog row) and `sids` [N, L]; `model` (the trained OneRec) gives
    the config and the `model` candidate sessions."""
    from . import data

    item_ids = np.empty(len(row_of), dtype=np.int64)
    for i, r in row_of.items():
        item_ids[r] = i
    catalog = Catalog(item_ids, sids, model.cfg.codebook_size)
    ratings = reward_data.read_ratings(data.fetch())
    return train_reward_model(split, catalog, ratings, model.cfg, rcfg, seed, model, decode,
                              binary, threads)
