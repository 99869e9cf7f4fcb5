"""Reads a OneRec model file (the `onerec-quantize` output, engine/src/format/) into the
float32 reference model, decoding every weight exactly as the engine does (f16 -> f32,
q8_0: q * d, q4_0: (q - 8) * d, with the planar layout: all quants of a matrix, then one
f16 scale per block of 32). Written from the format description, no engine code shared.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from onerec_ref import Catalog, OneRec, OneRecConfig

MAGIC = b"ONERECMF"
BLOCK = 32


def _decode_matrix(dtype: str, raw: bytes, rows: int, cols: int) -> np.ndarray:
    n = rows * cols
    if dtype == "f32":
        return np.frombuffer(raw, "<f4", n).reshape(rows, cols)
    if dtype == "f16":
        return np.frombuffer(raw, "<f2", n).astype(np.float32).reshape(rows, cols)
    if dtype == "bf16":
        u = np.frombuffer(raw, "<u2", n).astype(np.uint32) << 16
        return u.view(np.float32).reshape(rows, cols)
    nq = n if dtype == "q8_0" else n // 2
    scales = np.frombuffer(raw[nq : nq + 2 * (n // BLOCK)], "<f2").astype(np.float32)
    if dtype == "q8_0":
        q = np.frombuffer(raw[:nq], np.int8).astype(np.float32)
    elif dtype == "q4_0":
        words = np.frombuffer(raw[:nq], "<u4")
        q = ((words[:, None] >> (4 * np.arange(8, dtype=np.uint32))) & 15).astype(np.float32) - 8
    else:
        raise ValueError(f"unsupported weight dtype {dtype}")
    return (q.reshape(-1, BLOCK) * scales[:, None]).reshape(rows, cols)


def _decode(dtype: str, raw: bytes, shape: list[int]) -> np.ndarray:
    if dtype in ("i32", "i64"):
        return np.frombuffer(raw, "<i4" if dtype == "i32" else "<i8").reshape(shape)
    cols = shape[-1]
    if len(shape) == 3:
        per = len(raw) // shape[0]
        return np.stack([_decode_matrix(dtype, raw[i * per : (i + 1) * per], shape[1], cols)
                         for i in range(shape[0])])
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return _decode_matrix(dtype, raw, rows, cols).reshape(shape)


def load_model_file(path: str | Path, extras: dict | None = None) -> tuple[OneRec, Catalog, dict]:
    """-> (float32 model with the decoded weights, catalog, {tensor name: stored dtype}).
    `extras`, if given, receives the optional catalog tensors (`catalog.codebooks`,
    `catalog.embeddings`, `catalog.removed`) and the reward model's (`reward.*`, with its
    config under "reward_config"), decoded; the OneRec model does not use them."""
    b = Path(path).read_bytes()
    if b[:8] != MAGIC:
        raise ValueError(f"{path}: not a OneRec model file")
    version, header_len = struct.unpack_from("<II", b, 8)
    data_offset, data_len = struct.unpack_from("<QQ", b, 16)
    (crc,) = struct.unpack_from("<I", b, 32)
    if version != 1 or data_offset + data_len != len(b):
        raise ValueError(f"{path}: version {version} or sizes do not match")
    header_json = b[64 : 64 + header_len]
    if zlib.crc32(b[:32] + header_json) != crc:
        raise ValueError(f"{path}: header checksum mismatch")
    header = json.loads(header_json)
    config = dict(header["config"])
    reward_config = config.pop("reward", None)  # docs/REWARD_MODEL.md: an optional section
    cfg = OneRecConfig.from_dict(config)
    arrays, dtypes = {}, {}
    for t in header["tensors"]:
        raw = b[data_offset + t["offset"] : data_offset + t["offset"] + t["bytes"]]
        if f"{zlib.crc32(raw):08x}" != t["crc32"]:
            raise ValueError(f"{path}: tensor {t['name']} checksum mismatch")
        arrays[t["name"]] = _decode(t["dtype"], raw, t["shape"])
        dtypes[t["name"]] = t["dtype"]
    catalog = Catalog(arrays.pop("catalog.item_ids").astype(np.int64),
                      arrays.pop("catalog.sids").astype(np.int32), cfg.codebook_size)
    side = {n: arrays.pop(n) for n in list(arrays)
            if n in ("catalog.codebooks", "catalog.embeddings", "catalog.removed") or n.startswith("reward.")}
    if extras is not None:
        extras.update(side)
        if reward_config is not None:
            extras["reward_config"] = reward_config
    model = OneRec(cfg)
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32))
                           for k, v in arrays.items()})
    return model.eval(), catalog, dtypes
