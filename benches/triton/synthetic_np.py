"""Writes a random MODEL_SPEC checkpoint with numpy only (no PyTorch), for the Triton bench.

    python3 benches/triton/synthetic_np.py --preset small --out target/bench/triton/small

The presets are those of benches/synthetic.py (which needs PyTorch); weights are random
normal (std 0.02, norms 1), SIDs unique and random, item ids 1..N. The checkpoint is
config.json + model.safetensors (F32), written by hand: the format is an 8-byte header
length, a JSON header, then the raw little-endian tensors.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np

PRESETS = {
    # Issue 12's medium size (the paper's small model), as benches/synthetic.py makes it.
    "medium": (dict(d_model=512, n_heads=8, n_enc_layers=4, n_dec_layers=4, d_ff=2048,
                    n_experts=24, top_k=2, d_expert=1024, moe_enc_layers=[],
                    moe_dec_layers=[0, 1, 2, 3], n_levels=3, codebook_size=8192,
                    session_len=5, max_history=256, rms_eps=1e-6), 100_000),
    "small": (dict(d_model=128, n_heads=4, n_enc_layers=4, n_dec_layers=4, d_ff=512,
                   n_experts=8, top_k=2, d_expert=256, moe_enc_layers=[],
                   moe_dec_layers=[0, 1, 2, 3], n_levels=3, codebook_size=1024,
                   session_len=5, max_history=256, rms_eps=1e-6), 50_000),
    "tiny": (dict(d_model=64, n_heads=4, n_enc_layers=2, n_dec_layers=2, d_ff=128,
                  n_experts=4, top_k=2, d_expert=64, moe_enc_layers=[],
                  moe_dec_layers=[0, 1], n_levels=3, codebook_size=256,
                  session_len=5, max_history=64, rms_eps=1e-6), 5_000),
}


def shapes(c: dict) -> list[tuple[str, list[int]]]:
    """The tensor names and shapes of engine/src/schema.rs."""
    d, l, k = c["d_model"], c["n_levels"], c["codebook_size"]
    dec_len = c["session_len"] * (l + 1)
    out = [("enc.embed", [l, k, d]), ("enc.pos", [c["max_history"], d])]

    def ffn(p: str, moe: bool) -> None:
        if moe:
            e, de = c["n_experts"], c["d_expert"]
            out.extend([(f"{p}.moe.router", [e, d]), (f"{p}.moe.gate", [e, de, d]),
                        (f"{p}.moe.up", [e, de, d]), (f"{p}.moe.down", [e, d, de])])
        else:
            out.extend([(f"{p}.ffn.gate", [c["d_ff"], d]), (f"{p}.ffn.up", [c["d_ff"], d]),
                        (f"{p}.ffn.down", [d, c["d_ff"]])])

    for i in range(c["n_enc_layers"]):
        p = f"enc.layers.{i}"
        out.append((f"{p}.attn_norm", [d]))
        out.extend((f"{p}.attn.{m}", [d, d]) for m in "qkvo")
        out.append((f"{p}.ffn_norm", [d]))
        ffn(p, i in c["moe_enc_layers"])
    out.extend([("enc.norm", [d]), ("dec.bos", [d]), ("dec.embed", [l, k, d]),
                ("dec.pos", [dec_len, d])])
    for i in range(c["n_dec_layers"]):
        p = f"dec.layers.{i}"
        out.extend((f"{p}.{n}", [d]) for n in ("self_norm", "cross_norm", "ffn_norm"))
        for a in ("self_attn", "cross_attn"):
            out.extend((f"{p}.{a}.{m}", [d, d]) for m in "qkvo")
        ffn(p, i in c["moe_dec_layers"])
    out.extend([("dec.norm", [d]), ("head", [l, k, d])])
    return out


def save_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, offset, blobs = {}, 0, []
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        dtype = {np.float32: "F32", np.int64: "I64", np.int32: "I32"}[a.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    cfg, n_items = PRESETS[a.preset]
    rng = np.random.default_rng(a.seed)
    tensors = {}
    for name, shape in shapes(cfg):
        if name.endswith("norm"):
            tensors[name] = np.ones(shape, np.float32)
        else:
            tensors[name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    k, l = cfg["codebook_size"], cfg["n_levels"]
    flat = rng.choice(k ** l, size=n_items, replace=False)
    sids = np.stack([(flat // k ** (l - 1 - i)) % k for i in range(l)], axis=1)
    tensors["catalog.item_ids"] = np.arange(1, n_items + 1, dtype=np.int64)
    tensors["catalog.sids"] = sids.astype(np.int32)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    save_safetensors(out / "model.safetensors", tensors)
    n = sum(t.size for t in tensors.values())
    print(f"wrote {out}: {a.preset}, {n_items} items, {n / 1e6:.1f}M values")


if __name__ == "__main__":
    main()
