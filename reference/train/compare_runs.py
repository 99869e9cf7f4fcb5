#!/usr/bin/env python3
"""OneRec seeds against SASRec seeds, without the engine, the quantiser or cargo: the test
table and the paired bootstrap of run_all.py, from the models that `run_all.py --train-only`
left in two output folders (a training variant's OneRec seeds against one SASRec set):

    python3 reference/train/compare_runs.py --onerec DIR_A --sasrec DIR_B [--seeds 3]

OneRec figures are the ones `--train-only` cached beside each checkpoint (test_eval.json:
the beam item list, as in the report, and the exact ranking); SASRec is evaluated here with
the same metric code. Same split, same per-user seed means, same bootstrap as run_all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reference"))
sys.path.insert(0, str(ROOT / "reference/train"))

import torch  # noqa: E402

from train import baselines, data, metrics  # noqa: E402
from run_all import BOOTSTRAP_KEYS, CONFIG, mean_std, seed_mean_rows  # noqa: E402

KEYS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "session_hits@5", "any@10")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onerec", type=Path, required=True, help="folder with onerec-seedS/")
    ap.add_argument("--sasrec", type=Path, required=True, help="folder with sasrec-seedS.pt")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--config", type=Path, default=CONFIG, help="for SASRec's shape and the split")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = json.loads(args.config.read_text())
    m, max_len, ks = cfg["model"]["session_len"], cfg["model"]["max_history"], cfg["eval"]["k"]
    ddir = data.fetch()
    items, seqs = data.read_items(ddir), data.read_sequences(ddir)
    split = data.make_split(seqs, m)
    item_ids = data.item_table(items)
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    seeds = list(range(args.seeds))

    one_runs, one_rows, exact_runs, logs = [], [], [], {}
    for s in seeds:
        d = args.onerec / f"onerec-seed{s}"
        c = json.loads((d / "test_eval.json").read_text())
        if c["key"]["users"] != split.users:
            raise SystemExit(f"{d}: evaluated on other users")
        one_runs.append(c["metrics"])
        one_rows.append({int(u): r for u, r in c["rows"].items()})
        exact_runs.append(c["exact"])
        tl = json.loads((d / "train_log.json").read_text())
        logs[s] = {k: tl.get(k) for k in ("first_item_weight", "steps_run", "best_step",
                                          "best_valid_ndcg@10", "seconds")}
    sc = cfg["sasrec"]
    sas_runs, sas_rows, sas_logs = [], [], {}
    for s in seeds:
        blob = torch.load(args.sasrec / f"sasrec-seed{s}.pt")
        sas = baselines.SASRec(len(item_ids), max_len, sc["d"], sc["blocks"], sc["heads"], sc["dropout"])
        sas.load_state_dict(blob["state"])
        mm, rows = baselines.sasrec_eval(sas.eval(), split, "test", row_of, item_ids, max_len, ks)
        sas_runs.append(mm)
        sas_rows.append(rows)
        sas_logs[s] = {k: blob["log"].get(k) for k in ("best_valid_ndcg@10", "seconds")}

    out = {"onerec": mean_std(one_runs), "onerec_runs": one_runs,
           "onerec_exact": mean_std(exact_runs), "onerec_exact_runs": exact_runs,
           "sasrec": mean_std(sas_runs), "sasrec_runs": sas_runs,
           "onerec_logs": logs, "sasrec_logs": sas_logs,
           "bootstrap_onerec_minus_sasrec": {
               k: metrics.paired_bootstrap(seed_mean_rows(one_rows), seed_mean_rows(sas_rows), k)
               for k in BOOTSTRAP_KEYS},
           "bootstrap_seed0": {k: metrics.paired_bootstrap(one_rows[0], sas_rows[0], k)
                               for k in BOOTSTRAP_KEYS}}

    def fmt(ms: dict) -> str:
        return " | ".join(f"{ms[k]['mean']:.4f} ± {ms[k]['std']:.4f}" for k in KEYS)

    print("| model | " + " | ".join(KEYS) + " |")
    print("| SASRec | " + fmt(out["sasrec"]) + " |")
    print("| OneRec (beam item list) | " + fmt(out["onerec"]) + " |")
    print("| OneRec, exact ranking | " + fmt(out["onerec_exact"]) + " |")
    for s in seeds:
        print(f"seed {s}: OneRec recall@10 {one_runs[s]['recall@10']:.4f} ndcg@10 "
              f"{one_runs[s]['ndcg@10']:.4f} {logs[s]}; SASRec recall@10 "
              f"{sas_runs[s]['recall@10']:.4f} ndcg@10 {sas_runs[s]['ndcg@10']:.4f} {sas_logs[s]}")
    for name in ("bootstrap_onerec_minus_sasrec", "bootstrap_seed0"):
        for k, b in out[name].items():
            print(f"{name} {k}: {b['mean_diff']:+.4f} [{b['ci95'][0]:+.4f}, {b['ci95'][1]:+.4f}] "
                  f"above 0: {b['share_of_resamples_above_0']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
