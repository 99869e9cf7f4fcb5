#!/usr/bin/env python3
"""Independent check of tests/fixtures: a float64 numpy forward pass and a naive beam
search (every beam re-decoded from scratch, no KV cache, no trie), written straight
from MODEL_SPEC.md with no code shared with onerec_ref, recompute enc_out,
tf_logprobs, the router choices and every request's sessions and final scores.

    python3 reference/verify_fixtures.py [tests/fixtures]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

DTYPES = {"F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4"}


def load_file(path: str) -> dict[str, np.ndarray]:
    """Minimal safetensors reader (u64 header length, JSON header, raw little-endian
    data); BF16 is widened to float32 by hand since numpy has no bfloat16."""
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        lo, hi = info["data_offsets"]
        buf = raw[8 + n + lo : 8 + n + hi]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(buf, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, DTYPES[info["dtype"]])
        out[name] = arr.reshape(info["shape"])
    return out


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


class Ref:
    def __init__(self, d: Path):
        self.c = json.loads((d / "config.json").read_text())
        raw = load_file(str(d / "model.safetensors"))
        self.ids = raw.pop("catalog.item_ids")
        self.sids = raw.pop("catalog.sids")
        self.w = {k: v.astype(np.float64) for k, v in raw.items()}
        self.sid = {int(i): tuple(int(c) for c in s) for i, s in zip(self.ids, self.sids)}
        self.routes: dict[str, list] = {}

    def attn(self, p, xq, xkv, causal=False):
        H = self.c["n_heads"]
        q, k, v = (x @ self.w[f"{p}.{n}"].T for x, n in ((xq, "q"), (xkv, "k"), (xkv, "v")))
        hd = q.shape[-1] // H
        out = []
        for h in range(H):
            sl = slice(h * hd, (h + 1) * hd)
            s = q[:, sl] @ k[:, sl].T / np.sqrt(hd)
            if causal:
                s = s + np.triu(np.full(s.shape, -np.inf), 1)
            out.append(softmax(s) @ v[:, sl])
        return np.concatenate(out, -1) @ self.w[f"{p}.o"].T

    def ffn(self, p, x, name):
        w = self.w
        if f"{p}.ffn.gate" in w:
            g = x @ w[f"{p}.ffn.gate"].T
            return (g / (1 + np.exp(-g)) * (x @ w[f"{p}.ffn.up"].T)) @ w[f"{p}.ffn.down"].T
        prob = softmax(x @ w[f"{p}.moe.router"].T)
        k = self.c["top_k"]
        y = np.zeros_like(x)
        choice = []
        for t in range(x.shape[0]):
            order = sorted(range(prob.shape[1]), key=lambda e: (-prob[t, e], e))[:k]
            choice.append(order)
            for e in order:
                g = x[t] @ w[f"{p}.moe.gate"][e].T
                h = g / (1 + np.exp(-g)) * (x[t] @ w[f"{p}.moe.up"][e].T)
                y[t] += prob[t, e] * (h @ w[f"{p}.moe.down"][e].T)
        self.routes[name] = choice
        return y

    def encode(self, history):
        c, w, n = self.c, self.w, self.c["max_history"]
        kept = history[-n:]
        h = len(kept)
        x = np.stack([sum(w["enc.embed"][l][self.sid[i][l]] for l in range(c["n_levels"]))
                      + w["enc.pos"][n - h + j] for j, i in enumerate(kept)])
        for i in range(c["n_enc_layers"]):
            p, eps = f"enc.layers.{i}", c["rms_eps"]
            a = rms(x, w[f"{p}.attn_norm"], eps)
            x = x + self.attn(f"{p}.attn", a, a)
            x = x + self.ffn(p, rms(x, w[f"{p}.ffn_norm"], eps), f"enc.{i}")
        return rms(x, w["enc.norm"], c["rms_eps"])

    def decoder_out(self, enc, codes):
        """codes: the decoder sequence as SID codes, [BOS, c0, .., c_{L-1}] per item
        (BOS entries are ignored) -> y [len(codes), d]."""
        c, w, L, eps = self.c, self.w, self.c["n_levels"], self.c["rms_eps"]
        rows = []
        for t, code in enumerate(codes):
            s = t % (L + 1)
            e = w["dec.bos"] if s == 0 else w["dec.embed"][s - 1][code]
            rows.append(e + w["dec.pos"][t])
        x = np.stack(rows)
        for i in range(c["n_dec_layers"]):
            p = f"dec.layers.{i}"
            a = rms(x, w[f"{p}.self_norm"], eps)
            x = x + self.attn(f"{p}.self_attn", a, a, causal=True)
            x = x + self.attn(f"{p}.cross_attn", rms(x, w[f"{p}.cross_norm"], eps), enc)
            x = x + self.ffn(p, rms(x, w[f"{p}.ffn_norm"], eps), f"dec.{i}")
        return rms(x, w["dec.norm"], eps)

    def decode(self, enc, items):
        L, w = self.c["n_levels"], self.w
        y = self.decoder_out(enc, [c for it in items for c in (None,) + self.sid[it]])
        return np.stack([log_softmax(w["head"][s] @ y[i * (L + 1) + s])
                         for i in range(len(items)) for s in range(L)])  # [m'L, K]

    def score(self, history, items):
        lp = self.decode(self.encode(history), items)
        L = self.c["n_levels"]
        return sum(lp[i * L + s, self.sid[it][s]] for i, it in enumerate(items) for s in range(L))


def beam_search(ref: Ref, r: dict) -> tuple[list[list[int]], list[float]]:
    """The spec's constrained beam search, re-decoding every beam from scratch."""
    c, L, m, B = ref.c, ref.c["n_levels"], ref.c["session_len"], r["beam"]
    excl = set(r["exclude"]) | (set(r["history"]) if r["exclude_history"] else set())
    eligible = [(sid, it) for it, sid in ref.sid.items() if it not in excl]
    enc = ref.encode(r["history"])
    beams = [(0.0, [], ())]  # score, items, current prefix
    for i in range(m):
        for s in range(L):
            cands = []
            for bi, (score, items, prefix) in enumerate(beams):
                seq = [x for it in items for x in (None,) + ref.sid[it]] + [None, *prefix]
                lp = log_softmax(ref.w["head"][s] @ ref.decoder_out(enc, seq)[-1])
                allowed = sorted({sid[s] for sid, it in eligible
                                  if sid[:s] == prefix and it not in items})
                cands += [(score + lp[code], bi, code) for code in allowed]
            cands.sort(key=lambda x: (-x[0], x[1], x[2]))
            survivors = []
            for score, bi, code in cands[:B]:
                _, items, prefix = beams[bi]
                prefix = prefix + (code,)
                if s == L - 1:
                    item = next(it for sid, it in eligible if sid == prefix)
                    survivors.append((score, items + [item], ()))
                else:
                    survivors.append((score, items, prefix))
            beams = survivors
            if not beams:
                return [], []
    return [b[1] for b in beams[: r["results"]]], [b[0] for b in beams]


def rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def verify(d: Path) -> None:
    ref, gold = Ref(d), json.loads((d / "golden.json").read_text())
    g = load_file(str(d / "golden.safetensors"))
    c = ref.c
    tf = gold["teacher_forced"]
    enc = ref.encode(tf["history"])
    lp = ref.decode(enc, tf["target_items"])
    assert rel(g["enc_out"], enc) < 1e-5, rel(g["enc_out"], enc)
    assert rel(g["tf_logprobs"], lp) < 1e-5, rel(g["tf_logprobs"], lp)
    assert g["tf_logprobs"].shape == (c["session_len"] * c["n_levels"], c["codebook_size"])
    for side in ("enc", "dec"):
        for i in c[f"moe_{side}_layers"]:
            assert g[f"router.{side}.{i}"].tolist() == ref.routes[f"{side}.{i}"], (side, i)
    assert not any(k.startswith("router.") and k not in
                   {f"router.{s}.{i}" for s in ("enc", "dec") for i in c[f"moe_{s}_layers"]}
                   for k in g)
    worst = 0.0
    for r in gold["requests"]:
        excl = set(r["exclude"]) | (set(r["history"]) if r["exclude_history"] else set())
        assert len(r["sessions"]) == min(r["results"], len(r["final_scores"]))
        assert len(r["final_scores"]) <= r["beam"]
        assert r["final_scores"] == sorted(r["final_scores"], reverse=True)
        for s, fs in zip(r["sessions"], r["final_scores"]):
            assert s["score"] == fs
            assert len(s["items"]) == c["session_len"] == len(set(s["items"]))
            assert not excl & set(s["items"])
            assert [list(ref.sid[i]) for i in s["items"]] == s["sids"]
            worst = max(worst, abs(ref.score(r["history"], s["items"]) - s["score"]))
        items, finals = beam_search(ref, r)
        assert items == [s["items"] for s in r["sessions"]], (r["history"], items)
        assert len(finals) == len(r["final_scores"])
        worst = max([worst] + [abs(a - b) for a, b in zip(finals, r["final_scores"])])
    assert worst < 1e-3, worst
    print(f"{d.name}: ok ({len(gold['requests'])} requests, worst session score diff {worst:.1e})")


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests/fixtures"
    for line in (root / "MANIFEST.sha256").read_text().splitlines():
        digest, name = line.split("  ")
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        verify(d)


if __name__ == "__main__":
    main()
