"""Exports the PyTorch reference model of a checkpoint to ONNX, for ONNX Runtime.

    python3 benches/onnx_export.py --model target/bench/small            # -> target/bench/small/onnx/
    python3 benches/onnx_export.py --model target/bench/tiny --check     # export + parity check
    python3 benches/onnx_export.py --model target/bench/medium --check-only  # parity of MODEL/onnx

Graphs (all float32, weights as initializers, opset 17, TorchScript exporter):
  encoder.onnx  sids [h, L] int64 (oldest first, h <= max_history)
                -> enc_out [h, d], cross_k_i / cross_v_i [H, h, hd] for every decoder layer
                (the cross K/V are computed once per request and shared by all beams).
  step.onnx     codes [nb, T] int64 (the code fed at each new position; ignored at slot 0),
                t0 [] int64 (position of the first new one), past_k_i / past_v_i [nb, H, P, hd]
                -> y [nb, d] (normalised decoder output at the last new position),
                present_k_i / present_v_i [nb, H, P+T, hd].
                T is 1, or 2 when an item's last code (slot L, not scored) goes in one call
                with the next BOS; causal inside the call, so identical to two single steps.
  head{l}.onnx  y [nb, d] -> log_softmax(y head[l]^T) [nb, K], one graph per level so each
                head weight is a constant the runtime can prepack (a level index input
                would gather and repack K x d floats every step).

The MoE runs in the graph, grouped: router softmax, TopK, then per expert NonZero of the
rows routed to it, Gather, the SwiGLU on those rows only, and ScatterND-add of the
weighted result. That is what a deployer does (and what ORT's own MoE contrib op does):
a dense "all experts with a top-k mask" graph costs n_experts / top_k times the expert
FLOPs (12x on the medium preset), and gathering expert weights per token moves
tokens x top_k expert matrices per call.

`--check` compares every graph with the reference through onnxruntime: enc_out, and the
log-probs of every scored position of a decode of a few beams (with a beam reorder
between steps, and the T=2 batching), max |diff| <= 1e-4 * max |ref| per step.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reference"))
from onerec_ref.checkpoint import load_checkpoint  # noqa: E402
from onerec_ref.model import OneRec, rms_norm  # noqa: E402

OPSET = 17


def _heads(x: Tensor, n_heads: int) -> Tensor:  # [..., T, d] -> [..., H, T, hd]
    return x.unflatten(-1, (n_heads, -1)).transpose(-3, -2)


def _merge(x: Tensor) -> Tensor:  # [..., H, T, hd] -> [..., T, d]
    return x.transpose(-3, -2).flatten(-2)


def _moe_grouped(moe: nn.Module, x: Tensor) -> Tensor:
    """Same sum as onerec_ref.model.MoE (experts added in index order), traceable:
    no Python branch on data, empty expert groups are zero-row products."""
    p = torch.softmax(x @ moe.router.T, dim=-1)
    weight, idx = torch.topk(p, moe.top_k, dim=-1)
    y = torch.zeros_like(x)
    for e in range(moe.router.shape[0]):
        hit = (idx == e).to(x.dtype)  # [N, k]; an expert appears at most once per row
        rows = torch.nonzero(hit.sum(-1) > 0).squeeze(1)
        we = (weight * hit).sum(-1).index_select(0, rows).unsqueeze(-1)
        xe = x.index_select(0, rows)
        h = F.silu(xe @ moe.gate[e].T) * (xe @ moe.up[e].T)
        y = y.index_put((rows,), y.index_select(0, rows) + (h @ moe.down[e].T) * we)
    return y


def _ffn(layer: nn.Module, h: Tensor) -> Tensor:
    flat = h.reshape(-1, h.shape[-1])
    if layer.ffn_kind == "moe":
        out = _moe_grouped(layer.moe, flat)
    else:
        f = layer.ffn
        out = (F.silu(flat @ f.gate.T) * (flat @ f.up.T)) @ f.down.T
    return out.reshape(h.shape)


class EncoderGraph(nn.Module):
    def __init__(self, model: OneRec) -> None:
        super().__init__()
        self.m = model

    def forward(self, sids: Tensor) -> tuple[Tensor, ...]:
        cfg, enc = self.m.cfg, self.m.enc
        n, H = cfg.max_history, cfg.n_heads
        h = sids.shape[0]
        x = enc.embed_items(sids, torch.arange(n - h, n))
        for layer in enc.layers:
            a = rms_norm(x, layer.attn_norm, layer.eps)
            x = x + layer.attn(a, *layer.attn.kv(a))
            x = x + _ffn(layer, rms_norm(x, layer.ffn_norm, layer.eps))
        enc_out = rms_norm(x, enc.norm, enc.eps)
        outs = [enc_out]
        for layer in self.m.dec.layers:
            k, v = layer.cross_attn.kv(enc_out)
            outs += [_heads(k, H), _heads(v, H)]
        return tuple(outs)


class StepGraph(nn.Module):
    def __init__(self, model: OneRec) -> None:
        super().__init__()
        self.m = model
        cfg, dec = model.cfg, model.dec
        L, K, d = cfg.n_levels, cfg.codebook_size, cfg.d_model
        # Row L*K is the BOS vector: one Gather serves every slot.
        self.register_buffer("table", torch.cat([dec.embed.detach().reshape(L * K, d),
                                                 dec.bos.detach()[None]]))

    def forward(self, codes: Tensor, t0: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        cfg, dec = self.m.cfg, self.m.dec
        L, K, H = cfg.n_levels, cfg.codebook_size, cfg.n_heads
        T = codes.shape[1]
        t = t0 + torch.arange(T)  # [T]
        slot = t % (L + 1)
        row = torch.where(slot == 0, torch.full_like(codes, L * K), (slot - 1) * K + codes)
        x = self.table[row] + dec.pos[t]  # [nb, T, d]
        scale = 1.0 / math.sqrt(cfg.head_dim)
        presents = []
        for i, layer in enumerate(dec.layers):
            sa, ca = layer.self_attn, layer.cross_attn
            past_k, past_v, cross_k, cross_v = past[4 * i: 4 * i + 4]
            h = rms_norm(x, layer.self_norm, layer.eps)
            k = torch.cat([past_k, _heads(h @ sa.k.T, H)], dim=2)
            v = torch.cat([past_v, _heads(h @ sa.v.T, H)], dim=2)
            presents += [k, v]
            scores = (_heads(h @ sa.q.T, H) @ k.transpose(-1, -2)) * scale  # [nb, H, T, P+T]
            P = past_k.shape[2]
            causal = torch.arange(k.shape[2])[None, :] <= (torch.arange(T)[:, None] + P)
            scores = scores.masked_fill(~causal, float("-inf"))
            x = x + _merge(torch.softmax(scores, dim=-1) @ v) @ sa.o.T
            h = rms_norm(x, layer.cross_norm, layer.eps)
            # cross K/V [H, h, hd] broadcast over the beams: one product per head.
            scores = (_heads(h @ ca.q.T, H) @ cross_k.transpose(-1, -2)) * scale
            x = x + _merge(torch.softmax(scores, dim=-1) @ cross_v) @ ca.o.T
            x = x + _ffn(layer, rms_norm(x, layer.ffn_norm, layer.eps))
        y = rms_norm(x[:, -1], dec.norm, dec.eps)
        return (y, *presents)


class HeadGraph(nn.Module):
    def __init__(self, model: OneRec, level: int) -> None:
        super().__init__()
        self.register_buffer("w", model.head.detach()[level].clone())

    def forward(self, y: Tensor) -> Tensor:
        return torch.log_softmax(y @ self.w.T, dim=-1)


def names(n_dec_layers: int) -> dict[str, list[str]]:
    cross = [f"cross_{kv}_{i}" for i in range(n_dec_layers) for kv in "kv"]
    past = [f"past_{kv}_{i}" for i in range(n_dec_layers) for kv in "kv"]
    present = [f"present_{kv}_{i}" for i in range(n_dec_layers) for kv in "kv"]
    step_in = ["codes", "t0"]
    for i in range(n_dec_layers):
        step_in += [f"past_k_{i}", f"past_v_{i}", f"cross_k_{i}", f"cross_v_{i}"]
    return {"cross": cross, "past": past, "present": present, "step_in": step_in}


@torch.no_grad()
def export(model: OneRec, out: Path) -> None:
    cfg = model.cfg
    n_dec, H, hd, L = cfg.n_dec_layers, cfg.n_heads, cfg.head_dim, cfg.n_levels
    nm = names(n_dec)
    out.mkdir(parents=True, exist_ok=True)
    kw = dict(opset_version=OPSET, dynamo=False, do_constant_folding=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        h = min(5, cfg.max_history)
        sids = torch.zeros(h, L, dtype=torch.long)
        dyn = {"sids": {0: "h"}, "enc_out": {0: "h"}, **{c: {1: "h"} for c in nm["cross"]}}
        torch.onnx.export(EncoderGraph(model), (sids,), str(out / "encoder.onnx"),
                          input_names=["sids"], output_names=["enc_out", *nm["cross"]],
                          dynamic_axes=dyn, **kw)
        # Trace with nb, T, P all > 1 and distinct so no size is baked in as a constant.
        nb, T, P = 3, 2, 3
        args = [torch.zeros(nb, T, dtype=torch.long), torch.tensor(P, dtype=torch.long)]
        dyn = {"codes": {0: "nb", 1: "T"}, "y": {0: "nb"}}
        for i in range(n_dec):
            args += [torch.zeros(nb, H, P, hd), torch.zeros(nb, H, P, hd),
                     torch.zeros(H, h, hd), torch.zeros(H, h, hd)]
            for kv in "kv":
                dyn[f"past_{kv}_{i}"] = {0: "nb", 2: "P"}
                dyn[f"cross_{kv}_{i}"] = {1: "h"}
                dyn[f"present_{kv}_{i}"] = {0: "nb", 2: "PT"}
        torch.onnx.export(StepGraph(model), tuple(args), str(out / "step.onnx"),
                          input_names=nm["step_in"], output_names=["y", *nm["present"]],
                          dynamic_axes=dyn, **kw)
        for lvl in range(L):
            torch.onnx.export(HeadGraph(model, lvl), (torch.zeros(nb, cfg.d_model),),
                              str(out / f"head{lvl}.onnx"), input_names=["y"],
                              output_names=["logp"],
                              dynamic_axes={"y": {0: "nb"}, "logp": {0: "nb"}}, **kw)
    meta = {"n_levels": L, "codebook_size": cfg.codebook_size, "n_dec_layers": n_dec,
            "n_heads": H, "head_dim": hd, "session_len": cfg.session_len,
            "max_history": cfg.max_history, "opset": OPSET, "torch": torch.__version__}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


@torch.no_grad()
def check(model: OneRec, onnx_dir: Path, n_beams: int = 4, seed: int = 3) -> float:
    """Largest relative difference seen; raises if any exceeds 1e-4."""
    from ort_session import OrtModel  # local import: export must not need onnxruntime

    cfg = model.cfg
    L, K = cfg.n_levels, cfg.codebook_size
    ort = OrtModel(onnx_dir, threads=1)
    rng = np.random.default_rng(seed)
    worst = 0.0

    def compare(what: str, got: np.ndarray, ref: Tensor) -> None:
        nonlocal worst
        ref = ref.numpy()
        rel = float(np.abs(got - ref).max() / max(np.abs(ref).max(), 1e-30))
        worst = max(worst, rel)
        if not rel <= 1e-4:
            raise SystemExit(f"parity FAILED at {what}: max rel diff {rel:.3g}")

    hist = torch.from_numpy(rng.integers(0, K, size=(cfg.max_history + 3, L)))
    for h in (1, 7, cfg.max_history + 3):  # +3: the reference keeps the newest max_history
        enc_ref = model.encode(hist[-h:])
        enc = ort.encode(hist[-h:].numpy())
        compare(f"encoder h={h}", enc[0], enc_ref)
    state = model.start_decoding(enc_ref)
    kv = ort.start(enc)
    codes = rng.integers(0, K, size=(n_beams, cfg.dec_len))
    pending = None  # previous item's last code, batched with the next BOS (T=2)
    for t in range(cfg.dec_len - 1):
        s = t % (L + 1)
        if s == L:
            state.step(model.dec.token(t, torch.from_numpy(codes[:, t])))
            pending = codes[:, t]
            continue
        y_ref = state.step(model.dec.token(t, None if s == 0 else torch.from_numpy(codes[:, t])))
        if s == 0 and pending is not None:
            step_codes, t0 = np.stack([pending, np.zeros_like(pending)], 1), t - 1
        elif s == 0:
            step_codes, t0 = np.zeros((1, 1), dtype=np.int64), t
        else:
            step_codes, t0 = codes[:, t: t + 1], t
        y = ort.step(kv, step_codes, t0)
        compare(f"log-probs t={t}", ort.head(y, s), model.level_logprobs(y_ref, s))
        parents = rng.integers(0, n_beams if t > 0 else 1, size=n_beams)
        state.reorder(torch.from_numpy(parents))
        ort.reorder(kv, parents)
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="checkpoint dir (config.json + model.safetensors)")
    ap.add_argument("--out", help="output dir (default MODEL/onnx)")
    ap.add_argument("--check", action="store_true", help="also check the graphs against the reference")
    ap.add_argument("--check-only", action="store_true", help="check the graphs already in --out")
    a = ap.parse_args()
    torch.set_num_threads(2)
    model, _, _ = load_checkpoint(a.model)
    out = Path(a.out or Path(a.model) / "onnx")
    if not a.check_only:
        export(model, out)
        size = sum(f.stat().st_size for f in out.glob("*.onnx")) / 1e6
        print(f"wrote {out}: encoder, step, {model.cfg.n_levels} heads ({size:.0f} MB)")
    if a.check or a.check_only:
        worst = check(model, out)
        print(f"parity OK: max relative difference {worst:.2e} (limit 1e-4)")


if __name__ == "__main__":
    main()
