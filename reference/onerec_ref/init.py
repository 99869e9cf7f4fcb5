"""Seeded random initialisation (numpy PCG64, so values do not depend on torch's RNG)."""

from __future__ import annotations

import numpy as np
import torch

from .model import OneRec

EMBEDDINGS = ("enc.embed", "enc.pos", "dec.bos", "dec.embed", "dec.pos", "head")


@torch.no_grad()
def random_init(model: OneRec, rng: np.random.Generator, linear_scale: float = 0.5,
                embed_std: float = 1.0, norm_noise: float = 0.1) -> None:
    """Embeddings/positions/head ~ N(0, embed_std); norm weights 1 + norm_noise * N(0, 1);
    linear weights [.., out, in] ~ N(0, linear_scale / sqrt(in)). Parameters are visited
    in state-dict order, so a seed fixes every value."""
    for name, p in model.state_dict(keep_vars=True).items():
        if name in EMBEDDINGS:
            v = rng.normal(0.0, embed_std, p.shape)
        elif p.ndim == 1:
            v = 1.0 + norm_noise * rng.normal(0.0, 1.0, p.shape)
        else:
            v = rng.normal(0.0, linear_scale / np.sqrt(p.shape[-1]), p.shape)
        p.copy_(torch.from_numpy(v.astype(np.float32)))
