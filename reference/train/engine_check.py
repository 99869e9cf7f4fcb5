"""Runs the Rust engine on the test points and compares its sessions with the reference beam
search's; computes the engine's session figures with the same metric code. Both run the same
decoding, so the figures must be equal. The engine is the `onerec` Python package
(`pip install ./python`), one model load for every user; without it, one `onerec recommend
--json` process per user."""

from __future__ import annotations

import json
import os
import math
import subprocess
import sys
import time
from pathlib import Path

from . import metrics
from .data import Split


def run_engine(binary: Path, model: Path, history: list[int], beam: int, results: int) -> list[dict]:
    cmd = [str(binary), "recommend", "--model", str(model), "--backend", "cpu",
           "--history", ",".join(map(str, history)), "--beam", str(beam),
           "--results", str(results), "--exclude-history", "--keep-permutations", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)["sessions"]


def engine_runner(binary: Path, model: Path):
    """`run(history, beam, results) -> sessions`: through the package when installed (the
    model loads once), else through the CLI."""
    try:
        import onerec
    except ImportError:
        print("  engine: the onerec package is not installed (pip install ./python); "
              "running one CLI process per user", file=sys.stderr)
        return lambda hist, beam, results: run_engine(binary, model, hist, beam, results)
    engine = onerec.Engine(model, backend="cpu")
    # One request per call, as the CLI ran them: a batch decodes with other matrix shapes,
    # and this check compares session lists exactly (every beam, as the reference lists
    # them: permutations kept).
    return lambda hist, beam, results: engine.recommend(
        [hist], beam=beam, results=results, exclude_history=True, keep_permutations=True)[0]


def compare(binary: Path, model: Path, split: Split, ref: dict[int, dict],
            gaps: dict[int, float], beam: int, results: int, ks: list[int],
            users: list[int] | None = None) -> dict:
    """`gaps`: the reference's smallest deciding score gap per user; a different answer is
    within the spec's tolerance only where that gap is below 1e-3."""
    # The reference multiplies decoded weights with f32 activations; the engine's q8_0
    # default on AVX-512 VNNI quantises the activations too (scores move by ~1e-3), so
    # the check runs the engine's exact path (docs/DECISIONS.md). Read when the CPU
    # backend is made, by the package and by the CLI processes alike.
    os.environ["ONEREC_CPU_INT8"] = "0"
    users = users if users is not None else split.users
    rows, same_items, worst_rel, mismatches = [], 0, 0.0, []
    t0 = time.time()
    run = engine_runner(binary, model)
    for n, u in enumerate(users):
        hist, true_next = split.point(u, "test")
        eng = run(hist, beam, results)
        # The session answer only: the engine's item-list answer comes with its own
        # request option; where the session lists are identical, so is the search.
        m = metrics.all_metrics([], [s["items"] for s in eng], true_next, ks, split.m)
        rows.append({k: v for k, v in m.items() if k.startswith("session_hits")})
        r = ref[u]["sessions"]
        if [s["items"] for s in eng] == [s["items"] for s in r]:
            same_items += 1
            for a, b in zip(eng, r):
                worst_rel = max(worst_rel, abs(a["score"] - b["score"]) / max(abs(b["score"]), 1e-6))
        else:
            first = next((k for k, (a, b) in enumerate(zip(eng, r)) if a["items"] != b["items"]),
                         min(len(eng), len(r)))
            mismatches.append({"user": u, "first_different_session": first + 1,
                               "reference_min_score_gap": gaps[u]})
        if (n + 1) % 200 == 0:
            print(f"  engine: {n + 1}/{len(users)} users ({time.time() - t0:.0f} s)", file=sys.stderr)
    return {
        "users": len(users),
        "identical_session_lists": same_items,
        "max_relative_score_diff": worst_rel if same_items else math.nan,
        "mismatches_beyond_tolerance": sum(m["reference_min_score_gap"] >= 1e-3 for m in mismatches),
        "mismatches": mismatches,
        "metrics": metrics.mean_metrics(rows),
        "seconds": round(time.time() - t0, 1),
    }
