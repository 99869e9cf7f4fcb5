"""ONNX Runtime sessions over the graphs of benches/onnx_export.py, and the KV cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


class OrtModel:
    def __init__(self, onnx_dir: str | Path, threads: int, spinning: bool = False) -> None:
        d = Path(onnx_dir)
        self.meta = json.loads((d / "meta.json").read_text())
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning threads burn the other cores between ops; on a shared machine (and a
        # phone) a deployer turns it off. Configurable so both can be measured.
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        cpu = ["CPUExecutionProvider"]
        self.enc = ort.InferenceSession(str(d / "encoder.onnx"), so, providers=cpu)
        self.dec = ort.InferenceSession(str(d / "step.onnx"), so, providers=cpu)
        self.heads = [ort.InferenceSession(str(d / f"head{l}.onnx"), so, providers=cpu)
                      for l in range(self.meta["n_levels"])]
        self.n_layers = self.meta["n_dec_layers"]

    def encode(self, sids: np.ndarray) -> list[np.ndarray]:
        """sids [h, L] oldest first -> [enc_out, cross_k_0, cross_v_0, ...]; like the
        reference, only the newest max_history items are kept."""
        kept = np.ascontiguousarray(sids[-self.meta["max_history"]:], dtype=np.int64)
        return self.enc.run(None, {"sids": kept})

    def start(self, enc: list[np.ndarray], rows: int = 1) -> dict:
        """A KV cache for one request: empty self K/V for `rows` beams, the shared cross K/V."""
        H, hd = self.meta["n_heads"], self.meta["head_dim"]
        feeds = {}
        for i in range(self.n_layers):
            for kv in "kv":
                feeds[f"past_{kv}_{i}"] = np.zeros((rows, H, 0, hd), dtype=np.float32)
            feeds[f"cross_k_{i}"], feeds[f"cross_v_{i}"] = enc[1 + 2 * i], enc[2 + 2 * i]
        return feeds

    def step(self, kv: dict, codes: np.ndarray, t0: int) -> np.ndarray:
        """Appends codes.shape[1] positions starting at t0 to every row; -> y [nb, d]."""
        kv["codes"] = np.ascontiguousarray(codes, dtype=np.int64)
        kv["t0"] = np.array(t0, dtype=np.int64)
        y, *present = self.dec.run(None, kv)
        for i in range(self.n_layers):
            kv[f"past_k_{i}"], kv[f"past_v_{i}"] = present[2 * i], present[2 * i + 1]
        return y

    def head(self, y: np.ndarray, level: int) -> np.ndarray:
        return self.heads[level].run(None, {"y": y})[0]

    def reorder(self, kv: dict, parents: np.ndarray) -> None:
        """Beam selection / duplication: row r of the new cache is row parents[r]."""
        for i in range(self.n_layers):
            for kv_ in "kv":
                name = f"past_{kv_}_{i}"
                kv[name] = kv[name][parents]
