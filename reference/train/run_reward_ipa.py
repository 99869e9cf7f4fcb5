#!/usr/bin/env python3
"""Reward model + IPA on an already trained OneRec checkpoint (e.g. run_all.py's
target/movielens/checkpoint), on its own: what run_all.py does after training, plus the
DPO-share ablation. Writes one JSON file.

    python3 reference/train/run_reward_ipa.py --checkpoint target/movielens/checkpoint \\
        [--reward '{"steps": 600}'] [--ipa '{"rounds": 3}'] [--ablation 0,0.05,0.2] \\
        [--threads 2] [--out target/movielens/reward_ipa.json] [--reward-only]

The next-item figures per round (and the IPA gate's any-of-5-in-top-10 on the validation
points) are those of the exact first-item ranking, as in run_all.py; the ablation's are
metrics.py's on the beam's sessions (beam 64, history excluded).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reference"))

import torch  # noqa: E402

from onerec_ref import load_checkpoint  # noqa: E402
from train import data, evaluate, ipa, reward_train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=ROOT / "target/movielens/checkpoint")
    ap.add_argument("--reward", default="{}", help="JSON: reward_train.DEFAULTS overrides")
    ap.add_argument("--ipa", default="{}", help="JSON: ipa.DEFAULTS overrides")
    ap.add_argument("--ablation", default="", help="comma-separated DPO shares (instead of one run)")
    ap.add_argument("--reward-only", action="store_true",
                    help="train and measure the reward model only (no IPA)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", default="auto", choices=list(ipa.generate.MODES))
    ap.add_argument("--binary", type=Path, default=ROOT / "target/release/onerec")
    ap.add_argument("--out", type=Path, default=ROOT / "target/movielens/reward_ipa.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, catalog, _ = load_checkpoint(args.checkpoint)
    split = data.make_split(data.read_sequences(data.fetch()), model.cfg.session_len)
    row_of = catalog.row_of_id
    binary = args.binary if args.binary.exists() else None
    common = {"binary": binary, "threads": args.threads, "decode": args.decode}
    rm, rm_log = reward_train.train_reward(json.loads(args.reward), split, row_of, catalog.sids,
                                           args.seed, model, **common)
    out = {"command": " ".join(["python3", "reference/train/run_reward_ipa.py"] + sys.argv[1:]),
           "checkpoint": str(args.checkpoint), "reward_model": rm_log}
    ks = [5, 10]
    table = evaluate.PrefixTable(catalog.sids)

    def exact(part):
        # run_all.py's figures: next-item metrics of the exact first-item ranking (the test
        # split for the report, the validation points for the IPA gate)
        return lambda m: evaluate.exact_eval(m, table, split, part, row_of, catalog.item_ids,
                                             ks)[0]

    if args.reward_only:
        pass  # the reward model's report alone
    elif args.ablation:
        shares = tuple(float(s) for s in args.ablation.split(","))
        out["ablation"] = ipa.ablation(model, rm, json.loads(args.ipa), split, row_of, catalog,
                                       args.seed, None, shares=shares, **common)
    else:
        _, out["ipa"] = ipa.run_ipa(model, rm, json.loads(args.ipa), split, row_of, catalog,
                                    args.seed, exact("test"), evaluate_valid=exact("valid"),
                                    **common)
    out["seconds"] = round(time.time() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"done in {out['seconds']} s: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
