"""Summarises a benches/triton/run.sh run as a markdown table (stdout).

    python3 benches/triton/report.py target/bench/triton small
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def batch_counts(before: dict, after: dict) -> dict[int, int]:
    """Executions per batch size during one perf_analyzer run (statistics extension)."""
    def counts(s):
        stats = s["model_stats"][0].get("batch_stats", [])
        return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats}
    a, b = counts(before), counts(after)
    return {k: v - a.get(k, 0) for k, v in sorted(b.items()) if v - a.get(k, 0) > 0}


def server_times(before: dict, after: dict) -> tuple[float, float, float]:
    """Mean ms per request of Triton's queue, its input+output handling, and compute_infer."""
    a = before["model_stats"][0]["inference_stats"]
    b = after["model_stats"][0]["inference_stats"]
    def mean(k):
        n = b[k]["count"] - a[k]["count"]
        return (b[k]["ns"] - a[k]["ns"]) / max(n, 1) / 1e6
    return mean("queue"), mean("compute_input") + mean("compute_output"), mean("compute_infer")


def main() -> None:
    out, preset = Path(sys.argv[1]), sys.argv[2]
    print("| model | concurrency | Triton req/s | p50 ms | p99 ms | executed batch sizes (count) "
          "| server queue / in+out / compute ms | in-process req/s (batch = c; before / after) "
          "| p50 ms | p99 ms | Triton / mean in-process req/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model in ("onerec_default", f"synth_{preset}"):
        if not (out / f"{model}.c1.csv").exists():  # ONEREC_BENCH_MODELS=synth
            continue
        for c in (1, 4, 16):
            rows = list(csv.DictReader(open(out / f"{model}.c{c}.csv")))
            row = rows[0]
            rps = float(row["Inferences/Second"])
            p50 = float(row["p50 latency"]) / 1e3
            p99 = float(row["p99 latency"]) / 1e3
            s0 = json.load(open(out / f"{model}.c{c}.stats0.json"))
            s1 = json.load(open(out / f"{model}.c{c}.stats1.json"))
            b = batch_counts(s0, s1)
            queue, io, compute = server_times(s0, s1)
            sizes = ", ".join(f"{k}: {v}" for k, v in b.items())
            ips = [json.loads((out / f"{model}.c{c}.inproc{k}.json").read_text()) for k in (0, 1)]
            ip_rps = sum(i["req_per_s"] for i in ips) / 2
            both = lambda key: " / ".join(f"{i[key]:.1f}" for i in ips)
            print(f"| {model} | {c} | {rps:.1f} | {p50:.1f} | {p99:.1f} | {sizes} | "
                  f"{queue:.1f} / {io:.2f} / {compute:.1f} | {both('req_per_s')} | {both('p50_ms')} | {both('p99_ms')} | "
                  f"{rps / ip_rps:.2f} |")


if __name__ == "__main__":
    main()
