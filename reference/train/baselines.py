"""Baselines on the same split and metric code: popularity and SASRec (Kang & McAuley
2018: causal self-attention over the item sequence, next-item prediction at every
position; trained here with a full softmax over the catalog)."""

from __future__ import annotations

import copy
import sys
import time
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import metrics
from .data import Split


def popularity_ranking(split: Split) -> list[int]:
    """Items by interaction count in the training parts, ties to the lower item id."""
    counts = Counter(i for u in split.users for i in split.train_part(u))
    return sorted(counts, key=lambda i: (-counts[i], i))


def popularity_eval(split: Split, which: str, ks: list[int]) -> tuple[dict, dict[int, dict]]:
    """-> (mean metrics, per-user metric rows)."""
    pop = popularity_ranking(split)
    rows = {}
    for u in split.users:
        hist, true_next = split.point(u, which)
        seen = set(hist)
        ranked = [i for i in pop if i not in seen][: max(ks + [split.m])]
        rows[u] = metrics.point_metrics(ranked, true_next, ks, split.m)
    return metrics.mean_metrics(list(rows.values())), rows


class SASRec(nn.Module):
    def __init__(self, n_items: int, max_len: int, d: int, blocks: int, heads: int,
                 dropout: float) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)  # row 0 = padding
        self.pos = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d, heads, d, dropout, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        # Small item vectors: they are both the input table and the output layer, and
        # N(0, 1) rows would make the first logits huge.
        nn.init.normal_(self.item.weight, 0.0, d ** -0.5)
        nn.init.normal_(self.pos.weight, 0.0, d ** -0.5)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """seq [B, T] item rows + 1, left-padded with 0 -> hidden [B, T, d]."""
        T = seq.shape[1]
        x = self.item(seq) + self.pos(torch.arange(T))
        x = self.drop(x) * (seq > 0).unsqueeze(-1)
        causal = torch.ones(T, T, dtype=torch.bool).triu(1)
        # Padding is on the left and attention is causal, so every real position sees only
        # real items; padded positions (all-masked rows would give NaN) see themselves.
        pad = (seq == 0)
        mask = causal.unsqueeze(0) | pad.unsqueeze(1)
        mask = mask & ~torch.eye(T, dtype=torch.bool).unsqueeze(0)
        mask = mask.repeat_interleave(self.blocks.layers[0].self_attn.num_heads, 0)
        return self.norm(self.blocks(x, mask=mask))

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item.weight[1:].T  # [.., N]


def _left_pad(rows: list[int], n: int) -> list[int]:
    rows = rows[-n:]
    return [0] * (n - len(rows)) + rows


@torch.no_grad()
def sasrec_rank(model: SASRec, split: Split, which: str, row_of: dict[int, int],
                item_ids: np.ndarray, max_len: int, k: int) -> list[tuple[list[int], list[int]]]:
    """-> per user (ranked item ids [k], true next items)."""
    model.eval()
    out = []
    users = split.users
    for b in range(0, len(users), 256):
        batch = users[b : b + 256]
        pts = [split.point(u, which) for u in batch]
        seq = torch.tensor([_left_pad([row_of[i] + 1 for i in h], max_len) for h, _ in pts])
        s = model.scores(model(seq)[:, -1])
        for r, (h, _) in enumerate(pts):
            s[r, [row_of[i] for i in h]] = -torch.inf
        top = torch.topk(s, k, dim=-1).indices.numpy()
        out.extend(([int(item_ids[j]) for j in top[r]], pts[r][1]) for r in range(len(batch)))
    return out


def sasrec_eval(model, split, which, row_of, item_ids, max_len, ks) -> tuple[dict, dict[int, dict]]:
    """-> (mean metrics, per-user metric rows)."""
    ranked = sasrec_rank(model, split, which, row_of, item_ids, max_len, max(ks + [split.m]))
    rows = {u: metrics.point_metrics(r, t, ks, split.m) for u, (r, t) in zip(split.users, ranked)}
    return metrics.mean_metrics(list(rows.values())), rows


def train_sasrec(cfg: dict, split: Split, row_of: dict[int, int], item_ids: np.ndarray,
                 max_len: int, ks: list[int], seed: int) -> tuple[SASRec, dict]:
    """Early stopping on validation NDCG@10 (same metric code as the test)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SASRec(len(item_ids), max_len, cfg["d"], cfg["blocks"], cfg["heads"], cfg["dropout"])
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    # Training sequences: windows of max_len + 1 over each training part (inputs, next).
    seqs = []
    for u in split.users:
        rows = [row_of[i] + 1 for i in split.train_part(u)]
        for end in range(len(rows), 1, -max_len):
            seqs.append(_left_pad(rows[max(0, end - max_len - 1) : end], max_len + 1))
    data = torch.tensor(seqs)
    log = {"sequences": len(seqs), "epochs": []}
    best, best_state, bad = -1.0, None, 0
    t0 = time.time()
    for epoch in range(cfg["epochs"]):
        model.train()
        perm = torch.randperm(len(data), generator=g)
        tot = 0.0
        for k in range(0, len(data), cfg["batch"]):
            batch = data[perm[k : k + cfg["batch"]]]
            inp, nxt = batch[:, :-1], batch[:, 1:]
            logits = model.scores(model(inp))
            loss = F.cross_entropy(logits[nxt > 0], nxt[nxt > 0] - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item()
        if (epoch + 1) % 5 == 0:
            valid, _ = sasrec_eval(model, split, "valid", row_of, item_ids, max_len, ks)
            log["epochs"].append({"epoch": epoch + 1, "loss": round(tot, 3),
                                  "valid_ndcg@10": round(valid["ndcg@10"], 4)})
            print(f"  sasrec epoch {epoch + 1}: valid ndcg@10 {valid['ndcg@10']:.4f} "
                  f"({time.time() - t0:.0f} s)", file=sys.stderr)
            if valid["ndcg@10"] > best:
                best, best_state, bad = valid["ndcg@10"], copy.deepcopy(model.state_dict()), 0
            else:
                bad += 5
                if bad >= cfg["patience"]:
                    break
    model.load_state_dict(best_state)
    log["best_valid_ndcg@10"] = round(best, 4)
    log["seconds"] = round(time.time() - t0, 1)
    return model.eval(), log
