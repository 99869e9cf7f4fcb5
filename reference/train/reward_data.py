"""Labelled candidate sessions for the reward model (docs/REWARD_MODEL.md).

A *point* is a user at a position t of their chronological sequence: history = the items
before t, future window = the next W items. A candidate session is m = session_len catalog
items; per item and signal the label is
- `watch`: the item is among the next W interactions after t,
- `like`:  it is, and the user rated it 4 or more.
Training points lie in the training part only and their whole window too (t <= len(train
part) - W), so no label looks past the training period. The held-out points are each
user's validation point (history = the training part, window = the next W items, which
run into the test part): a later period, never used for training.

Candidate sessions mix positives and negatives so both heads see both:
- `true`:  the next m items in their order (the session the user actually watched),
- `mixed`: k ~ U{0..m} items drawn from the window, the rest drawn by popularity
           (count^alpha over training parts) from items outside history and window,
           shuffled,
- `model`: sessions of the OneRec model's constrained beam search for that history (what
           the reward model scores during IPA and in the engine's rerank).
Every candidate excludes the user's history, as served sessions do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Split

SIGNALS = ("watch", "like")


def read_ratings(d: Path) -> dict[int, dict[int, float]]:
    """ml-100k.inter -> per user {item: rating} (each pair is rated once in ML-100K; a
    repeat would keep the last)."""
    out: dict[int, dict[int, float]] = {}
    lines = (d / "ml-100k.inter").read_text().splitlines()
    for line in lines[1:]:
        u, i, r, _ts = line.split("\t")
        out.setdefault(int(u), {})[int(i)] = float(r)
    return out


@dataclass
class Points:
    """One row per point: `users`, `hist` [P, n_r] catalog rows left-padded with -1,
    `window` [P, W] catalog rows (-1 padded), `liked` [P, W] bool (rating >= like_min)."""
    users: np.ndarray
    hist: np.ndarray
    window: np.ndarray
    liked: np.ndarray
    histories: list[list[int]]  # item ids, oldest first (for the beam search)


def _point(seq: list[int], rat: dict[int, float], t: int, n_r: int, w: int, like_min: float,
           row_of: dict[int, int]):
    h = [row_of[i] for i in seq[max(0, t - n_r) : t]]
    win = seq[t : t + w]
    wr = [row_of[i] for i in win]
    return ([-1] * (n_r - len(h)) + h, wr + [-1] * (w - len(wr)),
            [rat.get(i, 0.0) >= like_min for i in win] + [False] * (w - len(win)))


def make_points(split: Split, ratings: dict[int, dict[int, float]], row_of: dict[int, int],
                which: str, n_r: int, w: int, like_min: float = 4.0, min_hist: int = 3,
                per_user: int = 0, rng: np.random.Generator | None = None) -> Points:
    """which = "train": every t in [min_hist, len(train part) - W] (at most `per_user`
    drawn per user when > 0); "valid": each user's validation point (window = next W)."""
    users, hist, window, liked, histories = [], [], [], [], []
    for u in split.users:
        s, rat = split.seqs[u], ratings[u]
        if which == "train":
            tp = split.train_part(u)
            ts = list(range(min_hist, len(tp) - w + 1))
            if per_user and len(ts) > per_user:
                ts = sorted(rng.choice(ts, per_user, replace=False).tolist())
            seq = tp
        elif which == "valid":
            ts, seq = [len(s) - 2 * split.m], s
        else:
            raise ValueError(f"points: which must be train or valid, not {which}")
        for t in ts:
            h, wr, lk = _point(seq, rat, t, n_r, w, like_min, row_of)
            users.append(u)
            hist.append(h)
            window.append(wr)
            liked.append(lk)
            histories.append(seq[:t])
    return Points(np.array(users), np.array(hist, dtype=np.int64).reshape(-1, n_r),
                  np.array(window, dtype=np.int64).reshape(-1, w),
                  np.array(liked, dtype=bool).reshape(-1, w), histories)


def popularity(split: Split, row_of: dict[int, int], n_items: int) -> np.ndarray:
    c = np.zeros(n_items)
    for u in split.users:
        for i in split.train_part(u):
            c[row_of[i]] += 1
    return c


@dataclass
class Sessions:
    """`point` [S] index into Points, `rows` [S, m] catalog rows, `labels` [S, m, 2]
    float (watch, like), `kind` [S] 0 = true, 1 = mixed, 2 = model, 3 = near."""
    point: np.ndarray
    rows: np.ndarray
    labels: np.ndarray
    kind: np.ndarray
    score: np.ndarray | None = None  # beam score of `model` sessions (NaN for the others)

    def __len__(self) -> int:
        return len(self.point)


KINDS = ("true", "mixed", "model", "near")


def item_labels(points: Points, point: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[S, m, 2] float32: (watch, like) of every item of the sessions `rows` [S, m]."""
    eq = (rows[:, :, None] == points.window[point][:, None, :]) & (rows[:, :, None] >= 0)
    like = (eq & points.liked[point][:, None, :]).any(-1)
    return np.stack([eq.any(-1), like], -1).astype(np.float32)


def synthetic_sessions(points: Points, m: int, pop: np.ndarray, alpha: float,
                       rng: np.random.Generator, row_of: dict[int, int],
                       mixed_per_point: int = 1, true_share: float = 0.5,
                       near_per_point: int = 0, sids: np.ndarray | None = None) -> Sessions:
    """Per point: a `true` session with probability `true_share` (needs m window items),
    `mixed_per_point` mixed sessions and `near_per_point` `near` ones: like mixed, but each
    negative shares its first SID code with a window item (the beam's sessions share
    prefixes, so these are the negatives a reward model must tell apart there)."""
    weights = pop ** alpha
    weights = weights / weights.sum()
    pool: list[int] = []  # popularity draws, made in bulk (one draw at a time is slow)
    siblings: dict[int, np.ndarray] = {}
    if near_per_point:
        for c0 in np.unique(sids[:, 0]):
            siblings[int(c0)] = np.nonzero(sids[:, 0] == c0)[0]
    pt, rows, kind = [], [], []
    for p in range(len(points.users)):
        win = [int(r) for r in points.window[p] if r >= 0]
        banned = set(win) | {row_of[i] for i in points.histories[p]}
        if len(win) >= m and rng.random() < true_share:
            pt.append(p)
            rows.append(win[:m])
            kind.append(0)
        for kd, count in ((1, mixed_per_point), (3, near_per_point)):
            for _ in range(count):
                k = int(rng.integers(0, min(m, len(win)) + 1))
                pos = [win[j] for j in rng.choice(len(win), k, replace=False)] if k else []
                neg: list[int] = []
                tries = 0
                while len(neg) < m - k:  # rejection sampling: banned items are few
                    tries += 1
                    if kd == 3 and tries <= 50:
                        group = siblings[int(sids[win[int(rng.integers(len(win)))], 0])]
                        c = int(group[rng.integers(len(group))])
                    else:
                        if not pool:
                            pool = rng.choice(len(pop), 65536, p=weights).tolist()
                        c = pool.pop()
                    if c not in banned and c not in neg:
                        neg.append(c)
                sess = pos + neg
                rng.shuffle(sess)
                pt.append(p)
                rows.append(sess)
                kind.append(kd)
    s = Sessions(np.array(pt, dtype=np.int64), np.array(rows, dtype=np.int64).reshape(-1, m),
                 None, np.array(kind))
    s.labels = item_labels(points, s.point, s.rows)
    return s


def model_sessions(points: Points, which: np.ndarray, sessions_of: list[list[dict]],
                   row_of: dict[int, int], per_point: int, rng: np.random.Generator) -> Sessions:
    """`sessions_of[j]`: the beam search's sessions ({score, items}, best first) for point
    `which[j]`; keeps the top one and `per_point - 1` others drawn at random (all of them
    when per_point >= the beam). `score` holds each kept session's beam score."""
    pt, rows, score = [], [], []
    for p, sess in zip(which.tolist(), sessions_of):
        if not sess:
            continue
        keep = [0] + sorted(rng.choice(np.arange(1, len(sess)), min(per_point - 1, len(sess) - 1),
                                       replace=False).tolist())
        for k in keep:
            pt.append(p)
            rows.append([row_of[i] for i in sess[k]["items"]])
            score.append(sess[k]["score"])
    m = len(rows[0]) if rows else 1
    s = Sessions(np.array(pt, dtype=np.int64), np.array(rows, dtype=np.int64).reshape(-1, m),
                 None, np.full(len(pt), 2), np.array(score, dtype=np.float64))
    s.labels = item_labels(points, s.point, s.rows)
    return s


def concat(parts: list[Sessions]) -> Sessions:
    parts = [p for p in parts if len(p)]
    for p in parts:
        if p.score is None:
            p.score = np.full(len(p), np.nan)
    return Sessions(*(np.concatenate([getattr(p, f) for p in parts])
                      for f in ("point", "rows", "labels", "kind", "score")))
