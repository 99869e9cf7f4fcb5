"""Checkpoint directory: `config.json` + `model.safetensors` (weights + catalog)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .catalog import Catalog
from .config import OneRecConfig
from .model import OneRec

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
# Optional float32 catalog tensors (docs/CATALOG.md): the tokenizer's centroids
# [L, K, D] and the embedding [N, D] it clustered per catalog row.
CATALOG_EXTRAS = ("catalog.codebooks", "catalog.embeddings")


@torch.no_grad()
def round_params_(model: OneRec, dtype: str) -> None:
    """Round every weight through `dtype` and back to float32, in place, so that the
    float32 model computes exactly what a loader of the `dtype` checkpoint computes."""
    for p in model.parameters():
        p.copy_(p.to(DTYPES[dtype]).to(torch.float32))


def save_checkpoint(path: str | Path, model: OneRec, catalog: Catalog, dtype: str = "F32",
                    extras: dict | None = None) -> None:
    """`extras`: optional CATALOG_EXTRAS name -> numpy array, stored float32."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.cfg.save(path / "config.json")
    tensors = {k: v.detach().to(DTYPES[dtype]).contiguous() for k, v in model.state_dict().items()}
    tensors["catalog.item_ids"] = torch.from_numpy(catalog.item_ids.copy())
    tensors["catalog.sids"] = torch.from_numpy(catalog.sids.copy())
    for name, v in (extras or {}).items():
        if name not in CATALOG_EXTRAS:
            raise ValueError(f"unknown catalog tensor {name}")
        tensors[name] = torch.from_numpy(v.astype("float32")).contiguous()
    save_file(tensors, str(path / "model.safetensors"))


def load_checkpoint(path: str | Path) -> tuple[OneRec, Catalog, str]:
    """-> (float32 model, catalog, stored weight dtype name, "mixed" if several)."""
    path = Path(path)
    cfg = OneRecConfig.load(path / "config.json")
    tensors = load_file(str(path / "model.safetensors"))
    item_ids = tensors.pop("catalog.item_ids")
    sids = tensors.pop("catalog.sids")
    for name in CATALOG_EXTRAS:
        tensors.pop(name, None)
    if item_ids.dtype != torch.int64 or sids.dtype != torch.int32:
        raise ValueError(f"catalog dtypes {item_ids.dtype}, {sids.dtype}; want int64, int32")
    if sids.ndim != 2 or sids.shape[1] != cfg.n_levels:
        raise ValueError(f"catalog.sids shape {tuple(sids.shape)}, want [N, {cfg.n_levels}]")
    catalog = Catalog(item_ids.numpy(), sids.numpy(), cfg.codebook_size)
    bad = sorted(n for n, t in tensors.items() if t.dtype not in DTYPES.values())
    if bad:
        raise ValueError(f"weights must be F32, F16 or BF16: {bad}")
    names = sorted({n for n, d in DTYPES.items() for t in tensors.values() if t.dtype == d})
    model = OneRec(cfg)
    expected = model.state_dict()
    for name, t in tensors.items():
        if name not in expected:
            raise ValueError(f"unexpected tensor {name}")
        if tuple(t.shape) != tuple(expected[name].shape):
            raise ValueError(f"tensor {name} has shape {tuple(t.shape)}, "
                             f"want {tuple(expected[name].shape)}")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"missing tensors {missing}")
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    return model.eval(), catalog, names[0] if len(names) == 1 else "mixed"
