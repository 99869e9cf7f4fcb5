"""config.json of a OneRec checkpoint (MODEL_SPEC.md, section "config.json")."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

# Field order is the order of the spec table; config.json is written in this order.
FIELDS = (
    "d_model", "n_heads", "n_enc_layers", "n_dec_layers", "d_ff",
    "n_experts", "top_k", "d_expert", "moe_enc_layers", "moe_dec_layers",
    "n_levels", "codebook_size", "session_len", "max_history", "rms_eps",
)


@dataclass
class OneRecConfig:
    d_model: int
    n_heads: int
    n_enc_layers: int
    n_dec_layers: int
    d_ff: int
    n_experts: int = 0
    top_k: int = 0
    d_expert: int = 0
    moe_enc_layers: list[int] = field(default_factory=list)
    moe_dec_layers: list[int] = field(default_factory=list)
    n_levels: int = 3
    codebook_size: int = 8192
    session_len: int = 5
    max_history: int = 256
    rms_eps: float = 1e-6

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def dec_len(self) -> int:
        """T = m * (L + 1) decoder positions."""
        return self.session_len * (self.n_levels + 1)

    @property
    def has_moe(self) -> bool:
        return bool(self.moe_enc_layers or self.moe_dec_layers)

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"invalid config: {msg}")

        for name in ("d_model", "n_heads", "n_enc_layers", "n_dec_layers", "d_ff",
                     "n_levels", "codebook_size", "session_len", "max_history"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1")
        need(self.d_model % self.n_heads == 0, "d_model must be a multiple of n_heads")
        need(self.rms_eps > 0, "rms_eps must be > 0")
        for name, count in (("moe_enc_layers", self.n_enc_layers),
                            ("moe_dec_layers", self.n_dec_layers)):
            layers = getattr(self, name)
            need(len(set(layers)) == len(layers), f"{name} repeats a layer")
            need(all(0 <= i < count for i in layers), f"{name} index out of range")
        if self.has_moe:
            need(self.n_experts >= 1, "n_experts must be >= 1 when a layer is MoE")
            need(1 <= self.top_k <= self.n_experts, "need 1 <= top_k <= n_experts")
            need(self.d_expert >= 1, "d_expert must be >= 1 when a layer is MoE")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["moe_enc_layers"] = sorted(d["moe_enc_layers"])
        d["moe_dec_layers"] = sorted(d["moe_dec_layers"])
        return {k: d[k] for k in FIELDS}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())

    @classmethod
    def from_dict(cls, d: dict) -> "OneRecConfig":
        missing = [k for k in FIELDS if k not in d]
        unknown = [k for k in d if k not in FIELDS]
        if missing or unknown:
            raise ValueError(f"config.json: missing fields {missing}, unknown fields {unknown}")
        return cls(**{k: d[k] for k in FIELDS})

    @classmethod
    def load(cls, path: str | Path) -> "OneRecConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
