"""Session reward model (docs/REWARD_MODEL.md, extension v1).

Parameter names are the spec's tensor names without the `reward.` prefix, so a
checkpoint holds `{"reward." + k: v for k, v in rm.state_dict().items()}`. Everything
computes in float32; dropout (training only) is not part of the contract.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import Attention, FFN, _param, rms_norm

REWARD_FIELDS = ("d_model", "n_heads", "d_ff", "max_history", "signals", "weights")


@dataclass
class RewardConfig:
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 128
    max_history: int = 32
    signals: list[str] = field(default_factory=lambda: ["watch", "like"])
    weights: list[float] = field(default_factory=lambda: [0.5, 0.5])

    def __post_init__(self) -> None:
        if min(self.d_model, self.n_heads, self.d_ff, self.max_history) < 1:
            raise ValueError("reward config: sizes must be >= 1")
        if self.d_model % self.n_heads:
            raise ValueError("reward config: d_model must be a multiple of n_heads")
        if not 1 <= len(self.signals) <= 16 or len(self.weights) != len(self.signals):
            raise ValueError("reward config: 1..=16 signals, one weight per signal")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: d[k] for k in REWARD_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "RewardConfig":
        unknown = [k for k in d if k not in REWARD_FIELDS]
        if unknown:
            raise ValueError(f"reward config: unknown fields {unknown}")
        return cls(**d)


class RewardModel(nn.Module):
    def __init__(self, rc: RewardConfig, n_levels: int, codebook_size: int,
                 session_len: int, rms_eps: float, dropout: float = 0.0) -> None:
        super().__init__()
        d = rc.d_model
        self.rc, self.eps, self.m = rc, rms_eps, session_len
        self.embed = _param(n_levels, codebook_size, d)
        self.hist_pos = _param(rc.max_history, d)
        self.sess_pos = _param(session_len, d)
        self.hist_norm, self.target_norm = _param(d), _param(d)
        self.target = Attention(d, rc.n_heads)
        self.self_norm = _param(d)
        setattr(self, "self", Attention(d, rc.n_heads))
        self.ffn_norm = _param(d)
        self.ffn = FFN(d, rc.d_ff)
        self.out_norm = _param(d)
        self.head = _param(len(rc.signals), d)
        self.head_bias = _param(len(rc.signals))
        self.drop = nn.Dropout(dropout)

    def _items(self, sids: Tensor) -> Tensor:
        x = self.embed[0][sids[..., 0]]
        for lvl in range(1, sids.shape[-1]):
            x = x + self.embed[lvl][sids[..., lvl]]
        return x

    def item_probs(self, history_sids: Tensor, history_mask: Tensor,
                   session_sids: Tensor) -> Tensor:
        """history_sids [B, h, L] (h <= n_r, real items oldest first, padding anywhere),
        history_mask [B, h] bool (>= 1 real item per row), session_sids [B, m, L]
        -> p [B, m, S] (spec step 6)."""
        n = self.rc.max_history
        if history_sids.shape[1] > n:
            raise ValueError(f"history length {history_sids.shape[1]} > reward max_history {n}")
        mask = history_mask.bool()
        counts = mask.sum(dim=1, keepdim=True)
        rank = mask.long().cumsum(dim=1) - 1
        pos = (n - counts + rank).clamp(0, n - 1)
        sids = history_sids.long().masked_fill(~mask.unsqueeze(-1), 0)
        u = rms_norm(self._items(sids) + self.hist_pos[pos], self.hist_norm, self.eps)
        s = self._items(session_sids.long()) + self.sess_pos[: session_sids.shape[1]]
        q = rms_norm(s, self.target_norm, self.eps)
        x = s + self.drop(self.target(q, *self.target.kv(u), mask.unsqueeze(-2)))
        att = getattr(self, "self")
        h = rms_norm(x, self.self_norm, self.eps)
        x = x + self.drop(att(h, *att.kv(h)))
        x = x + self.drop(self.ffn(rms_norm(x, self.ffn_norm, self.eps)))
        y = rms_norm(x, self.out_norm, self.eps)
        return torch.sigmoid(y @ self.head.T + self.head_bias)

    def rewards(self, history_sids: Tensor, history_mask: Tensor,
                session_sids: Tensor) -> tuple[Tensor, Tensor]:
        """-> (R [B], r [B, S]) (spec step 7)."""
        r = self.item_probs(history_sids, history_mask, session_sids).mean(dim=1)
        w = torch.tensor(self.rc.weights, dtype=r.dtype)
        return r @ w, r

    @torch.no_grad()
    def score(self, history_sids: Tensor, sessions_sids: Tensor) -> tuple[Tensor, Tensor]:
        """One user: history_sids [h, L] oldest first (newest n_r kept), sessions_sids
        [N, m, L] -> (R [N], r [N, S])."""
        hist = history_sids[-self.rc.max_history:].long()
        n_s = sessions_sids.shape[0]
        hb = hist.unsqueeze(0).expand(n_s, -1, -1)
        mask = torch.ones(hb.shape[:2], dtype=torch.bool)
        return self.rewards(hb, mask, sessions_sids)

    def tensors(self) -> dict[str, Tensor]:
        """The checkpoint's `reward.*` tensors."""
        return {f"reward.{k}": v.detach().contiguous() for k, v in self.state_dict().items()}
