"""Item catalog (item id <-> SID) and the eligible-count trie over SIDs."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class Catalog:
    """`item_ids` [N] int64 and `sids` [N, L] int32, as shipped in a checkpoint."""

    def __init__(self, item_ids: np.ndarray, sids: np.ndarray, codebook_size: int | None = None):
        item_ids = np.asarray(item_ids, dtype=np.int64)
        sids = np.asarray(sids, dtype=np.int32)
        if item_ids.ndim != 1 or sids.ndim != 2 or sids.shape[0] != item_ids.shape[0]:
            raise ValueError(f"catalog shapes item_ids {item_ids.shape}, sids {sids.shape} disagree")
        if codebook_size is not None and sids.size and (sids.min() < 0 or sids.max() >= codebook_size):
            raise ValueError(f"catalog.sids has a code outside [0, {codebook_size})")
        self.item_ids = item_ids
        self.sids = sids
        self.row_of_id: dict[int, int] = {}
        for row, item in enumerate(item_ids.tolist()):
            if item in self.row_of_id:
                raise ValueError(f"catalog repeats item id {item} (rows {self.row_of_id[item]}, {row})")
            self.row_of_id[item] = row
        self.row_of_sid: dict[tuple[int, ...], int] = {}
        for row, sid in enumerate(map(tuple, sids.tolist())):
            if sid in self.row_of_sid:
                other = self.row_of_sid[sid]
                raise ValueError(f"catalog SID {list(sid)} is shared by items "
                                 f"{int(item_ids[other])} and {int(item_ids[row])}")
            self.row_of_sid[sid] = row

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def n_levels(self) -> int:
        return self.sids.shape[1]

    def sid_of(self, item: int) -> tuple[int, ...]:
        if item not in self.row_of_id:
            raise KeyError(f"item {item} is not in the catalog")
        return tuple(self.sids[self.row_of_id[item]].tolist())

    def item_of(self, sid: tuple[int, ...]) -> int:
        return int(self.item_ids[self.row_of_sid[tuple(sid)]])


class EligibleTrie:
    """Counts of eligible (not excluded) catalog items under every SID prefix.

    `count[prefix]` for prefixes of length 1..L (absent = 0); `children[prefix]` lists the
    codes c (ascending) with count[prefix + (c,)] > 0, for prefixes of length 0..L-1.
    """

    def __init__(self, catalog: Catalog, excluded: Iterable[int] = ()):
        excluded = set(excluded)
        self.count: dict[tuple[int, ...], int] = {}
        children: dict[tuple[int, ...], set[int]] = {}
        for item, sid in zip(catalog.item_ids.tolist(), map(tuple, catalog.sids.tolist())):
            if item in excluded:
                continue
            for s in range(len(sid)):
                children.setdefault(sid[:s], set()).add(sid[s])
                self.count[sid[: s + 1]] = self.count.get(sid[: s + 1], 0) + 1
        self.children = {p: sorted(c) for p, c in children.items()}

    def allowed(self, prefix: tuple[int, ...], session_sids: list[tuple[int, ...]]) -> list[int]:
        """Codes that extend `prefix` towards at least one eligible item that the beam's
        session does not hold yet (session items are eligible items themselves)."""
        out = []
        s = len(prefix)
        for c in self.children.get(prefix, ()):
            node = prefix + (c,)
            used = sum(1 for sid in session_sids if sid[: s + 1] == node)
            if self.count[node] - used > 0:
                out.append(c)
        return out
