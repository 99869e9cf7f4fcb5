//! The built-in model (`models/default/model.onerec`, trained on MovieLens-100K by
//! `reference/train/run_all.py`): it loads, its catalog is the one its config and the
//! training config describe, and known histories give exactly the sessions the reference
//! beam search gave on the same weights (`models/default/golden.json`).

use crate::common::repo_root;
use onerec_engine::{BackendKind, Config, Engine, EngineOptions, Request};
use std::path::PathBuf;
use std::process::Command;

// The CLI's module itself, tested here; the test module shares its name on purpose.
#[path = "../src/default_model.rs"]
#[allow(dead_code, clippy::module_inception)]
mod default_model;

/// MovieLens-100K has items 1..=1682 and the model's catalog is all of them.
const MOVIELENS_ITEMS: u64 = 1682;

fn model_path() -> PathBuf {
    repo_root().join("models/default/model.onerec")
}

fn golden() -> serde_json::Value {
    let text = std::fs::read_to_string(repo_root().join("models/default/golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn u64s(v: &serde_json::Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

fn engine() -> Engine {
    // The reference's arithmetic: int8 activations can reorder near-ties.
    Engine::open(
        &model_path(),
        &EngineOptions::new()
            .backend(BackendKind::Cpu)
            .cpu_int8(false),
    )
    .unwrap()
}

#[test]
fn committed_model_loads_with_the_training_config_and_full_catalog() {
    let e = engine();
    let text =
        std::fs::read_to_string(repo_root().join("reference/configs/movielens.json")).unwrap();
    let training: serde_json::Value = serde_json::from_str(&text).unwrap();
    let want: Config = serde_json::from_value(training["model"].clone()).unwrap();
    // The reward section (docs/REWARD_MODEL.md) comes from the reward model's own
    // training config; the model section must be the training config's.
    assert!(
        e.config().reward.is_some(),
        "the built-in model ships its reward model (issue 13)"
    );
    let mut got = e.config().clone();
    got.reward = None;
    assert_eq!(
        got, want,
        "the committed model was not made with reference/configs/movielens.json"
    );
    let cat = &e.file().catalog;
    assert_eq!(cat.len(), MOVIELENS_ITEMS as usize);
    let mut ids: Vec<u64> = (0..cat.len()).map(|r| cat.item_id(r)).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=MOVIELENS_ITEMS).collect::<Vec<_>>(),
        "item ids are MovieLens item ids"
    );
    // The file is the quantised one and stays small enough to embed.
    assert!(
        e.file().file_bytes() < 4 << 20,
        "{} bytes",
        e.file().file_bytes()
    );
}

#[test]
fn embedded_model_is_the_committed_file() {
    assert_eq!(
        default_model::bytes(),
        std::fs::read(model_path()).unwrap().as_slice()
    );
    let file = default_model::open().unwrap();
    assert_eq!(file.catalog.len(), MOVIELENS_ITEMS as usize);
    assert_eq!(
        default_model::bytes().as_ptr() as usize % 256,
        0,
        "embedded copy is 256-byte aligned"
    );
}

#[test]
fn known_histories_give_the_reference_sessions() {
    let g = golden();
    let e = engine();
    let requests = g["requests"].as_array().unwrap();
    assert!(requests.len() >= 3);
    for r in requests {
        // The generator keeps a decision margin so float32 engines agree on the sessions.
        assert!(
            r["min_score_gap"].as_f64().unwrap() > 1e-4,
            "golden too close to a tie: {r}"
        );
        let req = Request::builder(u64s(&r["history"]))
            .beam(r["beam"].as_u64().unwrap() as usize)
            .results(r["results"].as_u64().unwrap() as usize)
            .exclude_history(r["exclude_history"].as_bool().unwrap())
            // The golden records the search's order (permutations included).
            .keep_permutations(true)
            .build();
        let got = e.recommend(std::slice::from_ref(&req)).unwrap().remove(0);
        let want = r["sessions"].as_array().unwrap();
        assert_eq!(got.sessions.len(), want.len(), "history {:?}", req.history);
        for (s, w) in got.sessions.iter().zip(want) {
            assert_eq!(s.items, u64s(&w["items"]), "history {:?}", req.history);
            let sids: Vec<Vec<u32>> = serde_json::from_value(w["sids"].clone()).unwrap();
            assert_eq!(s.sids, sids);
            let ws = w["score"].as_f64().unwrap();
            assert!(
                (s.score as f64 - ws).abs() <= 1e-4 * ws.abs().max(1.0),
                "score {} vs {ws}",
                s.score
            );
        }
    }
}

fn onerec(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_onerec"))
        .args(args)
        .env("ONEREC_CACHE_DIR", cache)
        .output()
        .expect("run onerec")
}

#[test]
fn cli_without_model_recommends_from_the_built_in_model() {
    let g = golden();
    let r = &g["requests"][0];
    let history = u64s(&r["history"])
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let (beam, results) = (r["beam"].to_string(), r["results"].to_string());
    let empty = tempfile::tempdir().unwrap();
    let args = [
        "recommend",
        "--history",
        &history,
        "--beam",
        &beam,
        "--results",
        &results,
        "--exclude-history",
        "--keep-permutations",
        "--backend",
        "cpu",
        // The reference's arithmetic: int8 activations (the default) can reorder near-ties.
        "--cpu-exact",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = onerec(&json_args, empty.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got_items: Vec<Vec<u64>> = got["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u64s(&s["items"]))
        .collect();
    let want_items: Vec<Vec<u64>> = r["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u64s(&s["items"]))
        .collect();
    assert_eq!(got_items, want_items);

    // Without the dataset: ids, and a hint on stderr.
    let out = onerec(&args, empty.path());
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains(&want_items[0][0].to_string()), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reference/train/data.py"));

    // With it: titles, history first.
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("ml-100k");
    std::fs::create_dir_all(&dir).unwrap();
    let mut item_file =
        String::from("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n");
    for id in 1..=MOVIELENS_ITEMS {
        item_file += &format!("{id}\tFilm number {id}\t1990\tDrama\n");
    }
    std::fs::write(dir.join("ml-100k.item"), item_file).unwrap();
    let out = onerec(&args, data.path());
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("history:"), "{stdout}");
    assert!(
        stdout.contains(&format!("Film number {} (1990)", want_items[0][0])),
        "{stdout}"
    );
}

#[test]
fn titles_reader_skips_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    assert!(default_model::titles_in(dir.path()).is_none());
    std::fs::write(
        dir.path().join("ml-100k.item"),
        "header\n1\tToy Story\t1995\tComedy\nbad line\nx\ty\n7\tNo Year\t\t\n",
    )
    .unwrap();
    let t = default_model::titles_in(dir.path()).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[&1], "Toy Story (1995)");
    assert_eq!(t[&7], "No Year");
}
