"""Sessions of a OneRec model with the engine's decoding semantics (constrained session
beam search, history excluded), for many histories at once.

Three ways, same semantics (run_all.py's engine check shows the engine equals the
reference session by session):
- `package`: the `onerec` Python package (`pip install ./python`), one model load, batched;
- `cli`:     `onerec batch --model DIR` (JSON lines in and out), one process;
- `reference`: `onerec_ref.beam_search`, exact but slow in Python (~0.1-1 s per history).
`auto` takes the first that is available. The model is written to a temporary checkpoint
directory for the first two (the engine reads checkpoint directories directly).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from onerec_ref import Catalog, OneRec, Request, beam_search, save_checkpoint

MODES = ("auto", "package", "cli", "reference")


def _package():
    try:
        import onerec  # noqa: F401
    except ImportError:
        return None
    return onerec


def resolve_mode(mode: str, binary: Path | None) -> str:
    if mode not in MODES:
        raise ValueError(f"decode mode {mode!r}: one of {MODES}")
    if mode != "auto":
        return mode
    if _package() is not None:
        return "package"
    if binary is not None and Path(binary).exists():
        return "cli"
    return "reference"


def sessions(model: OneRec, catalog: Catalog, histories: list[list[int]], beam: int,
             results: int, mode: str = "auto", binary: Path | None = None,
             threads: int = 2, chunk: int = 256) -> list[list[dict]]:
    """-> per history up to `results` sessions {score, items}, best first."""
    mode = resolve_mode(mode, binary)
    if not histories:
        return []
    if mode == "reference":
        out = []
        for h in histories:
            res = beam_search(model, catalog, Request(list(h), beam, results, [], True))
            out.append([{"score": s.score, "items": s.items} for s in res.sessions])
        return out
    with tempfile.TemporaryDirectory(prefix="onerec-gen-") as tmp:
        save_checkpoint(tmp, model, catalog, "F32")
        if mode == "package":
            # rayon reads this once, when the engine's thread pool starts.
            os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
            engine = _package().Engine(tmp, backend="cpu")
            out = []
            for k in range(0, len(histories), chunk):
                part = [list(h) for h in histories[k : k + chunk]]
                got = engine.recommend(part, beam=beam, results=results, exclude_history=True)
                out += [[{"score": s["score"], "items": list(s["items"])} for s in u] for u in got]
            return out
        if binary is None:
            raise ValueError("decode mode cli needs the onerec binary")
        lines = "".join(json.dumps({"history": list(h), "id": k}) + "\n"
                        for k, h in enumerate(histories))
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        proc = subprocess.run([str(binary), "batch", "--model", tmp, "--backend", "cpu",
                               "--beam", str(beam), "--results", str(results),
                               "--exclude-history"], input=lines, capture_output=True,
                              text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"onerec batch failed: {proc.stderr.strip()[-500:]}")
        out: list[list[dict]] = [[] for _ in histories]
        for line in proc.stdout.splitlines():
            r = json.loads(line)
            if "sessions" not in r:
                raise RuntimeError(f"onerec batch: {line[:300]}")
            out[int(r["id"])] = [{"score": s["score"], "items": s["items"]} for s in r["sessions"]]
        return out


def log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)
