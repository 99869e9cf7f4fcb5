"""Semantic IDs by residual balanced k-means (the OneRec tokenizer, "RQ-Kmeans").

Level l clusters the residuals r_l (r_0 = the item embedding) of ALL items into K
clusters of at most ceil(N / K) items each, and r_{l+1} = r_l - centroid[code]. Balanced
assignment: all (item, centroid) pairs in order of distance, each item takes the nearest
centroid that still has room. Items whose L codes coincide are then separated: the one
nearest its last centroid keeps its SID, each other one moves its last code to the nearest
centroid whose SID is free (and, if its whole prefix is full, its level L-2 code too).
"""

from __future__ import annotations

import math

import numpy as np


def _sqdist(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]


def _balanced_assign(d: np.ndarray, cap: int) -> np.ndarray:
    n, k = d.shape
    order = np.argsort(d, axis=None, kind="stable")
    code = np.full(n, -1, dtype=np.int64)
    room = np.full(k, cap, dtype=np.int64)
    left = n
    for flat in order:
        i, c = divmod(int(flat), k)
        if code[i] < 0 and room[c] > 0:
            code[i], room[c], left = c, room[c] - 1, left - 1
            if left == 0:
                break
    return code


def balanced_kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """-> (codes [N], centroids [k, d]); k-means++ seeding, balanced assignment."""
    n = len(x)
    cap = math.ceil(n / k)
    cent = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = _sqdist(x, np.stack(cent)).min(1).clip(min=0)
        cent.append(x[rng.choice(n, p=d2 / d2.sum())])
    cent = np.stack(cent).astype(np.float64)
    code = None
    for _ in range(iters):
        new = _balanced_assign(_sqdist(x, cent), cap)
        if code is not None and np.array_equal(new, code):
            break
        code = new
        for c in range(k):
            if (code == c).any():
                cent[c] = x[code == c].mean(0)
    return code, cent


def residual_balanced_kmeans(emb: np.ndarray, levels: int, k: int, iters: int, seed: int
                             ) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """-> (codes [N, L] before collision handling, centroids per level, residual inputs
    [L, N, d] of every level)."""
    rng = np.random.default_rng(seed)
    r = emb.astype(np.float64)
    codes, cents, inputs = [], [], []
    for _ in range(levels):
        c, cent = balanced_kmeans(r, k, iters, rng)
        codes.append(c)
        cents.append(cent)
        inputs.append(r)
        r = r - cent[c]
    return np.stack(codes, 1), cents, np.stack(inputs)


def resolve_collisions(codes: np.ndarray, cents: list[np.ndarray], inputs: np.ndarray
                       ) -> tuple[np.ndarray, dict]:
    """Makes SIDs unique; returns (sids [N, L] int32, stats)."""
    n, L = codes.shape
    last = L - 1
    err = ((inputs[last] - cents[last][codes[:, last]]) ** 2).sum(1)
    groups: dict[tuple, list[int]] = {}
    for i, sid in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(sid, []).append(i)
    taken = set(groups)
    sids = codes.copy()
    moved_last, moved_prefix = 0, 0
    for sid in sorted(groups):
        members = sorted(groups[sid], key=lambda i: (err[i], i))
        for i in members[1:]:
            prefix = tuple(sid[:last])
            done = False
            for c in np.argsort(_sqdist(inputs[last][i : i + 1], cents[last])[0], kind="stable"):
                if prefix + (int(c),) not in taken:
                    sids[i, last] = c
                    taken.add(prefix + (int(c),))
                    moved_last += 1
                    done = True
                    break
            if done:
                continue
            # The prefix is full: move the level L-2 code too, nearest first.
            r_prev = inputs[last - 1][i : i + 1]
            for c2 in np.argsort(_sqdist(r_prev, cents[last - 1])[0], kind="stable"):
                r_last = r_prev - cents[last - 1][c2]
                for c in np.argsort(_sqdist(r_last, cents[last])[0], kind="stable"):
                    cand = tuple(sid[: last - 1]) + (int(c2), int(c))
                    if cand not in taken:
                        sids[i, last - 1:] = (c2, c)
                        taken.add(cand)
                        moved_prefix += 1
                        done = True
                        break
                if done:
                    break
            if not done:
                raise RuntimeError(f"cannot give item row {i} a unique SID: codebook too small")
    assert len({tuple(s) for s in sids.tolist()}) == n
    stats = {
        "items": n,
        "colliding_groups": sum(1 for g in groups.values() if len(g) > 1),
        "moved_last_code": moved_last,
        "moved_last_two_codes": moved_prefix,
        "distinct_prefixes_per_level": [len({tuple(s[: l + 1]) for s in sids.tolist()})
                                        for l in range(L)],
    }
    return sids.astype(np.int32), stats


def assign_new(emb: np.ndarray, cents: list[np.ndarray], taken: set[tuple]) -> np.ndarray:
    """SIDs for new items given the SIDs already taken: what the engine does on the device
    (engine/src/catalog/sid_assign.rs) and docs/DECISIONS.md "Catalog updates" states.

    Each item takes the nearest centroid level by level on its residual (no balancing:
    one item does not move a cluster). Items whose SIDs coincide, or hit a taken SID,
    are then separated by `resolve_collisions`' rule: within a group, the one nearest
    its last centroid (then the earlier row) keeps the SID unless `taken` holds it; each
    other one moves its last code to the nearest centroid whose SID is free, and if the
    prefix is full, its last two codes. A moved item never lands on another new item's
    own SID. Returns int32 [N, L]."""
    n, L = len(emb), len(cents)
    r = emb.astype(np.float64)
    codes, inputs = [], []
    for level in range(L):
        c = np.argmin(_sqdist(r, cents[level]), axis=1)
        codes.append(c)
        inputs.append(r)
        r = r - cents[level][c]
    codes, inputs = np.stack(codes, 1), np.stack(inputs)
    last = L - 1
    err = ((inputs[last] - cents[last][codes[:, last]]) ** 2).sum(1)
    groups: dict[tuple, list[int]] = {}
    for i, sid in enumerate(map(tuple, codes.tolist())):
        groups.setdefault(sid, []).append(i)
    occupied = set(taken) | set(groups)
    sids = codes.copy()
    for sid in sorted(groups):
        members = sorted(groups[sid], key=lambda i: (err[i], i))
        movers = members if sid in taken else members[1:]
        for i in movers:
            done = False
            for c in np.argsort(_sqdist(inputs[last][i : i + 1], cents[last])[0], kind="stable"):
                cand = tuple(sid[:last]) + (int(c),)
                if cand not in occupied:
                    sids[i, last] = c
                    occupied.add(cand)
                    done = True
                    break
            if not done and last > 0:
                r_prev = inputs[last - 1][i : i + 1]
                for c2 in np.argsort(_sqdist(r_prev, cents[last - 1])[0], kind="stable"):
                    r_last = r_prev - cents[last - 1][c2]
                    for c in np.argsort(_sqdist(r_last, cents[last])[0], kind="stable"):
                        cand = tuple(sid[: last - 1]) + (int(c2), int(c))
                        if cand not in occupied:
                            sids[i, last - 1:] = (c2, c)
                            occupied.add(cand)
                            done = True
                            break
                    if done:
                        break
            if not done:
                raise RuntimeError(f"cannot give new item row {i} a unique SID: codebook too small")
    return sids.astype(np.int32)
