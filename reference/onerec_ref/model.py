"""OneRec encoder-decoder (MODEL_SPEC.md, "Tensors" and "Forward pass").

Parameters are registered so that `state_dict()` keys are exactly the spec's tensor
names (`enc.embed`, `enc.layers.0.attn.q`, ..., `head`); a checkpoint is the state dict
plus the two catalog tensors. Everything computes in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import OneRecConfig


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, dtype=torch.float32))


def rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    """RMSNorm(x) = x / sqrt(mean(x^2) + eps) * w."""
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * w


class RouterLog:
    """Collects MoE router decisions when passed down a forward call.

    `choices[name]` is a list (one entry per call) of (indices [tokens, top_k] int64,
    weights [tokens, top_k] float32), descending probability, ties to the lower index.
    `min_gap` is the smallest p_(k) - p_(k+1) seen (how close a routing was to flipping).
    """

    def __init__(self) -> None:
        self.choices: dict[str, list[tuple[Tensor, Tensor]]] = {}
        self.min_gap = math.inf

    def add(self, name: str, idx: Tensor, weight: Tensor, gap: float) -> None:
        self.choices.setdefault(name, []).append((idx.detach().clone(), weight.detach().clone()))
        self.min_gap = min(self.min_gap, gap)

    def stacked(self, name: str) -> tuple[Tensor, Tensor]:
        calls = self.choices[name]
        return torch.cat([c[0] for c in calls]), torch.cat([c[1] for c in calls])


class Attention(nn.Module):
    """Multi-head attention without biases; weights `q,k,v,o` are [d, d] ([out, in])."""

    def __init__(self, d: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q, self.k, self.v, self.o = _param(d, d), _param(d, d), _param(d, d), _param(d, d)

    def kv(self, x_kv: Tensor) -> tuple[Tensor, Tensor]:
        return x_kv @ self.k.T, x_kv @ self.v.T

    def _heads(self, x: Tensor) -> Tensor:  # [..., T, d] -> [..., H, T, hd]
        return x.unflatten(-1, (self.n_heads, -1)).transpose(-3, -2)

    def forward(self, x_q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """x_q [..., Tq, d]; k, v [..., Tk, d] (already projected); mask bool
        broadcastable to [..., Tq, Tk], True = may attend."""
        q = self._heads(x_q @ self.q.T)
        kh, vh = self._heads(k), self._heads(v)
        scores = q @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-3), float("-inf"))
        out = torch.softmax(scores, dim=-1) @ vh  # [..., H, Tq, hd]
        return out.transpose(-3, -2).flatten(-2) @ self.o.T


class FFN(nn.Module):
    """Dense SwiGLU: (silu(x Wgate^T) * (x Wup^T)) Wdown^T."""

    def __init__(self, d: int, d_ff: int) -> None:
        super().__init__()
        self.gate, self.up, self.down = _param(d_ff, d), _param(d_ff, d), _param(d, d_ff)

    def forward(self, x: Tensor, rec: RouterLog | None = None, name: str = "") -> Tensor:
        return (F.silu(x @ self.gate.T) * (x @ self.up.T)) @ self.down.T


class MoE(nn.Module):
    """sum_{e in TopK(p)} p_e * SwiGLU_e(x), p = softmax(x Wrouter^T), not renormalised."""

    def __init__(self, d: int, n_experts: int, top_k: int, d_expert: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.router = _param(n_experts, d)
        self.gate = _param(n_experts, d_expert, d)
        self.up = _param(n_experts, d_expert, d)
        self.down = _param(n_experts, d, d_expert)

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [N, d] -> (indices [N, k], weights [N, k], gaps [N]). Indices are in
        descending probability, ties to the lower expert index (stable sort of -p)."""
        p = torch.softmax(x @ self.router.T, dim=-1)
        order = torch.argsort(-p, dim=-1, stable=True)
        idx = order[:, : self.top_k]
        weight = p.gather(1, idx)
        if self.top_k < p.shape[-1]:
            sorted_p = p.gather(1, order)
            gaps = sorted_p[:, self.top_k - 1] - sorted_p[:, self.top_k]
        else:
            gaps = torch.full((x.shape[0],), math.inf)
        return idx, weight, gaps

    def forward(self, x: Tensor, rec: RouterLog | None = None, name: str = "") -> Tensor:
        flat = x.reshape(-1, x.shape[-1])
        idx, weight, gaps = self.route(flat)
        if rec is not None:
            rec.add(name, idx, weight, float(gaps.min()) if gaps.numel() else math.inf)
        y = torch.zeros_like(flat)
        for e in range(self.router.shape[0]):
            rows, slot = (idx == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            xe = flat[rows]
            h = F.silu(xe @ self.gate[e].T) * (xe @ self.up[e].T)
            y.index_add_(0, rows, (h @ self.down[e].T) * weight[rows, slot].unsqueeze(-1))
        return y.reshape(x.shape)


def _make_ffn(cfg: OneRecConfig, is_moe: bool) -> tuple[str, nn.Module]:
    if is_moe:
        return "moe", MoE(cfg.d_model, cfg.n_experts, cfg.top_k, cfg.d_expert)
    return "ffn", FFN(cfg.d_model, cfg.d_ff)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: OneRecConfig, is_moe: bool) -> None:
        super().__init__()
        d = cfg.d_model
        self.eps = cfg.rms_eps
        self.attn_norm = _param(d)
        self.attn = Attention(d, cfg.n_heads)
        self.ffn_norm = _param(d)
        self.ffn_kind, ffn = _make_ffn(cfg, is_moe)
        setattr(self, self.ffn_kind, ffn)

    def forward(self, x: Tensor, mask: Tensor | None, rec: RouterLog | None, name: str) -> Tensor:
        h = rms_norm(x, self.attn_norm, self.eps)
        x = x + self.attn(h, *self.attn.kv(h), mask)
        h = rms_norm(x, self.ffn_norm, self.eps)
        return x + getattr(self, self.ffn_kind)(h, rec, name)


class DecoderLayer(nn.Module):
    def __init__(self, cfg: OneRecConfig, is_moe: bool) -> None:
        super().__init__()
        d = cfg.d_model
        self.eps = cfg.rms_eps
        self.self_norm = _param(d)
        self.self_attn = Attention(d, cfg.n_heads)
        self.cross_norm = _param(d)
        self.cross_attn = Attention(d, cfg.n_heads)
        self.ffn_norm = _param(d)
        self.ffn_kind, ffn = _make_ffn(cfg, is_moe)
        setattr(self, self.ffn_kind, ffn)

    def forward(self, x: Tensor, past: tuple[Tensor, Tensor] | None, self_mask: Tensor | None,
                cross_kv: tuple[Tensor, Tensor], cross_mask: Tensor | None,
                rec: RouterLog | None, name: str) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """x [..., Tq, d] are new positions after the cached `past` K/V [..., Tp, d].
        Returns (output, K/V of past + new positions)."""
        h = rms_norm(x, self.self_norm, self.eps)
        k, v = self.self_attn.kv(h)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=-2), torch.cat([past[1], v], dim=-2)
        x = x + self.self_attn(h, k, v, self_mask)
        h = rms_norm(x, self.cross_norm, self.eps)
        x = x + self.cross_attn(h, *cross_kv, cross_mask)
        h = rms_norm(x, self.ffn_norm, self.eps)
        return x + getattr(self, self.ffn_kind)(h, rec, name), (k, v)


class Encoder(nn.Module):
    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        L, K, d = cfg.n_levels, cfg.codebook_size, cfg.d_model
        self.eps = cfg.rms_eps
        self.embed = _param(L, K, d)
        self.pos = _param(cfg.max_history, d)
        moe = set(cfg.moe_enc_layers)
        self.layers = nn.ModuleList(EncoderLayer(cfg, i in moe) for i in range(cfg.n_enc_layers))
        self.norm = _param(d)

    def embed_items(self, sids: Tensor, positions: Tensor) -> Tensor:
        """sids [..., h, L] int, positions [..., h] int -> sum_l embed[l][c_l] + pos[p]."""
        x = self.embed[0][sids[..., 0]]
        for lvl in range(1, sids.shape[-1]):
            x = x + self.embed[lvl][sids[..., lvl]]
        return x + self.pos[positions]

    def forward(self, x: Tensor, key_mask: Tensor | None = None,
                rec: RouterLog | None = None) -> Tensor:
        """x [..., h, d]; key_mask [..., h] bool (True = real item) or None."""
        mask = None if key_mask is None else key_mask.unsqueeze(-2)  # [..., 1, h]
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, rec, f"enc.{i}")
        return rms_norm(x, self.norm, self.eps)


class Decoder(nn.Module):
    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        L, K, d = cfg.n_levels, cfg.codebook_size, cfg.d_model
        self.eps = cfg.rms_eps
        self.n_levels = L
        self.bos = _param(d)
        self.embed = _param(L, K, d)
        self.pos = _param(cfg.dec_len, d)
        moe = set(cfg.moe_dec_layers)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i in moe) for i in range(cfg.n_dec_layers))
        self.norm = _param(d)

    def token(self, t: int, codes: Tensor | None) -> Tensor:
        """Input at position t. Slot 0: bos + pos[t] (codes ignored, result [d]).
        Slot s >= 1: embed[s-1][codes] + pos[t], codes [...] int -> [..., d]."""
        s = t % (self.n_levels + 1)
        if s == 0:
            return self.bos + self.pos[t]
        return self.embed[s - 1][codes] + self.pos[t]

    def inputs(self, target_sids: Tensor) -> Tensor:
        """Teacher forcing: target_sids [..., m', L] -> inputs [..., m'(L+1), d]."""
        *batch, m, L = target_sids.shape
        items = []
        for i in range(m):
            t0 = i * (L + 1)
            items.append((self.bos + self.pos[t0]).expand(*batch, 1, -1))
            for s in range(1, L + 1):
                items.append(self.token(t0 + s, target_sids[..., i, s - 1]).unsqueeze(-2))
        return torch.cat(items, dim=-2)

    def forward(self, x: Tensor, enc_out: Tensor, enc_mask: Tensor | None = None,
                rec: RouterLog | None = None) -> Tensor:
        """Full causal pass: x [..., T, d], enc_out [..., h, d], enc_mask [..., h]."""
        T = x.shape[-2]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        cross_mask = None if enc_mask is None else enc_mask.unsqueeze(-2)
        for i, layer in enumerate(self.layers):
            x, _ = layer(x, None, causal, layer.cross_attn.kv(enc_out), cross_mask, rec, f"dec.{i}")
        return rms_norm(x, self.norm, self.eps)


class DecodeState:
    """Incremental decoding of `nb` beams over one encoder output, with a KV cache.

    `step(x [nb, d]) -> y [nb, d]` appends one position to every beam and returns its
    normalised decoder output; `reorder(parents)` selects / duplicates beams.
    """

    def __init__(self, dec: Decoder, enc_out: Tensor, rec: RouterLog | None = None) -> None:
        self.dec = dec
        self.rec = rec
        # Cross K/V shared by all beams: [1, h, d].
        self.cross = [layer.cross_attn.kv(enc_out.unsqueeze(0)) for layer in dec.layers]
        d = enc_out.shape[-1]
        self.cache = [(torch.zeros(1, 0, d), torch.zeros(1, 0, d)) for _ in dec.layers]
        self.t = 0

    @property
    def n_beams(self) -> int:
        return self.cache[0][0].shape[0] if self.cache else 1

    def step(self, x: Tensor) -> Tensor:
        x = x.reshape(-1, 1, x.shape[-1])
        nb = max(x.shape[0], self.n_beams)
        if x.shape[0] != nb:
            x = x.expand(nb, -1, -1)
        for i, layer in enumerate(self.dec.layers):
            past = tuple(c.expand(nb, -1, -1) for c in self.cache[i])
            x, self.cache[i] = layer(x, past, None, self.cross[i], None, self.rec, f"dec.{i}")
        self.t += 1
        return rms_norm(x, self.dec.norm, self.dec.eps)[:, 0]

    def reorder(self, parents: Tensor) -> None:
        self.cache = [(k[parents], v[parents]) for k, v in self.cache]


class OneRec(nn.Module):
    def __init__(self, cfg: OneRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc = Encoder(cfg)
        self.dec = Decoder(cfg)
        self.head = _param(cfg.n_levels, cfg.codebook_size, cfg.d_model)

    # ---- single request -------------------------------------------------------------
    def encode(self, history_sids: Tensor, rec: RouterLog | None = None) -> Tensor:
        """history_sids [h, L] oldest first -> enc_out [min(h, n), d] (newest n kept,
        positions right-aligned: item j of the kept h' sits at pos[n - h' + j])."""
        n = self.cfg.max_history
        if history_sids.shape[0] < 1:
            raise ValueError("history must hold at least one item")
        kept = history_sids[-n:].long()
        h = kept.shape[0]
        x = self.enc.embed_items(kept, torch.arange(n - h, n))
        return self.enc(x, None, rec)

    def level_logprobs(self, y: Tensor, level: int) -> Tensor:
        """log_softmax(head[level] . y) over all K codes; y [..., d] -> [..., K]."""
        return torch.log_softmax(y @ self.head[level].T, dim=-1)

    def scored(self, y: Tensor) -> Tensor:
        """y [..., m'(L+1), d] -> log-probs [..., m', L, K] of the scored slots 0..L-1."""
        L = self.cfg.n_levels
        y = y.unflatten(-2, (-1, L + 1))[..., :L, :]  # [..., m', L, d]
        logits = torch.einsum("...sd,skd->...sk", y, self.head)
        return torch.log_softmax(logits, dim=-1)

    def decode(self, enc_out: Tensor, target_sids: Tensor, rec: RouterLog | None = None) -> Tensor:
        """Teacher forcing. enc_out [h, d], target_sids [m', L] (m' <= m) ->
        log-probs [m', L, K]; entry [i, s] is scored at t = i(L+1) + s."""
        x = self.dec.inputs(target_sids.long())
        return self.scored(self.dec(x, enc_out, None, rec))

    def start_decoding(self, enc_out: Tensor, rec: RouterLog | None = None) -> DecodeState:
        return DecodeState(self.dec, enc_out, rec)

    def decode_incremental(self, enc_out: Tensor, target_sids: Tensor,
                           rec: RouterLog | None = None) -> Tensor:
        """Same as `decode`, one position at a time through the KV cache."""
        L = self.cfg.n_levels
        target_sids = target_sids.long()
        state = self.start_decoding(enc_out, rec)
        out = []
        for i in range(target_sids.shape[0]):
            for s in range(L + 1):
                t = i * (L + 1) + s
                codes = None if s == 0 else target_sids[i, s - 1]
                y = state.step(self.dec.token(t, codes))
                if s < L:
                    out.append(self.level_logprobs(y[0], s))
        return torch.stack(out).unflatten(0, (-1, L))

    # ---- batched training ---------------------------------------------------------
    def forward_train(self, history_sids: Tensor, history_mask: Tensor,
                      target_sids: Tensor) -> Tensor:
        """history_sids [B, h, L] (h <= n, padding anywhere; real items oldest first),
        history_mask [B, h] bool (True = real item, at least one per row),
        target_sids [B, m', L] -> log-probs [B, m', L, K].

        Positions are right-aligned per row from the mask: the r-th real item of a row
        with h_b real items sits at pos[n - h_b + r].
        """
        n = self.cfg.max_history
        mask = history_mask.bool()
        if history_sids.shape[1] > n:
            raise ValueError(f"history length {history_sids.shape[1]} > max_history {n}")
        counts = mask.sum(dim=1, keepdim=True)
        if bool((counts < 1).any()):
            raise ValueError("every history must hold at least one item")
        rank = mask.long().cumsum(dim=1) - 1
        positions = (n - counts + rank).clamp(0, n - 1)
        sids = history_sids.long().masked_fill(~mask.unsqueeze(-1), 0)
        x = self.enc.embed_items(sids, positions)
        enc_out = self.enc(x, mask)
        y = self.dec(self.dec.inputs(target_sids.long()), enc_out, mask)
        return self.scored(y)
