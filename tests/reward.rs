//! The reward model and the answer pipeline against the reference (tests/fixtures/reward_l3,
//! made by reference/make_reward_fixture.py): R and r_k within 1e-4 relative on the CPU
//! and wgpu, the reranked and distinct answers, the item list, the q8 file, and errors.

use crate::common::fixture;
use crate::golden::{f32s, ids};
use crate::wgpu_ops::gpu;
use onerec_engine::pipeline::Pipeline;
use onerec_engine::reward::RewardInput;
use onerec_engine::{
    Backend, BackendKind, CpuBackend, Engine, EngineOptions, Error, ModelFile, Request,
};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

const FIXTURE: &str = "reward_l3";
/// MODEL_SPEC's score tolerance for f32 weights (sums of log-probabilities).
const SCORE_TOL: f32 = 1e-3;
/// The reward contract: 1e-4 relative in f32.
const REWARD_TOL: f32 = 1e-4;

fn golden() -> Value {
    let text = std::fs::read_to_string(fixture(FIXTURE).join("golden.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn file() -> Arc<ModelFile> {
    Arc::new(ModelFile::open(&fixture(FIXTURE)).unwrap())
}

fn close(got: f32, want: f32, tol: f32) -> bool {
    (got - want).abs() <= tol * want.abs().max(1e-3)
}

/// The golden (history, sessions) pairs scored by the reward model alone.
fn check_rewards<B: Backend>(what: &str, p: &Pipeline<B>) {
    let g = golden();
    let rm = p.reward.as_ref().expect("the fixture has a reward model");
    let cat = &p.model.file.catalog;
    let rows = |ids: &[u64]| cat.resolve(ids).unwrap();
    let cases = g["rewards"].as_array().unwrap();
    assert!(cases.len() >= 3);
    let histories: Vec<Vec<usize>> = cases.iter().map(|c| rows(&ids(&c["history"]))).collect();
    let sessions: Vec<Vec<Vec<u32>>> = cases
        .iter()
        .map(|c| {
            c["sessions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| rows(&ids(s)).into_iter().map(|r| r as u32).collect())
                .collect()
        })
        .collect();
    // All users in one call: each user's sessions must share only its own history.
    let inputs: Vec<RewardInput<'_>> = histories
        .iter()
        .zip(&sessions)
        .map(|(h, s)| RewardInput {
            history: h,
            sessions: s,
        })
        .collect();
    let got = rm.score(&p.model.backend, cat, &inputs).unwrap();
    let mut worst = 0f32;
    for (k, (c, g)) in cases.iter().zip(&got).enumerate() {
        let want_r = f32s(&c["reward"]);
        let want_sig: Vec<Vec<f32>> = c["signals"].as_array().unwrap().iter().map(f32s).collect();
        assert_eq!(g.len(), want_r.len(), "{what}: case {k}");
        for (j, s) in g.iter().enumerate() {
            assert!(
                close(s.reward, want_r[j], REWARD_TOL),
                "{what}: case {k} session {j}: R {} vs reference {}",
                s.reward,
                want_r[j]
            );
            assert_eq!(s.signals.len(), want_sig[j].len());
            for (a, b) in s.signals.iter().zip(&want_sig[j]) {
                assert!(
                    close(*a, *b, REWARD_TOL),
                    "{what}: case {k}: r_k {a} vs {b}"
                );
                worst = worst.max((a - b).abs() / b.abs());
            }
        }
    }
    eprintln!("{what}: largest relative r_k error {worst:.1e}");
}

#[test]
fn rewards_match_the_reference_on_the_cpu() {
    check_rewards("cpu", &Pipeline::new(CpuBackend::new(), file()).unwrap());
    check_rewards(
        "cpu scalar",
        &Pipeline::new(CpuBackend::reference(), file()).unwrap(),
    );
}

#[test]
fn rewards_match_the_reference_on_wgpu() {
    let Some(gpu) = gpu() else {
        return;
    };
    check_rewards("wgpu", &Pipeline::new(gpu, file()).unwrap());
}

/// The request of a golden entry with the given answer options.
fn request(r: &Value, rerank: bool, keep: bool, results: usize, items: usize) -> Request {
    Request::builder(ids(&r["history"]))
        .beam(r["beam"].as_u64().unwrap() as usize)
        .results(results)
        .exclude(ids(&r["exclude"]))
        .exclude_history(r["exclude_history"].as_bool().unwrap())
        .rerank(rerank)
        .keep_permutations(keep)
        .items(items)
        .build()
}

/// Every golden request: all surviving beams (items, scores, rewards), the four answers
/// of (rerank, keep_permutations) and the item list, as the reference made them.
fn check_answers(what: &str, engine: &Engine, reward_tol: f32) {
    let g = golden();
    for (k, r) in g["requests"].as_array().unwrap().iter().enumerate() {
        let what = format!("{what}: request {k}");
        let beams = r["beams"].as_array().unwrap();
        let beam = r["beam"].as_u64().unwrap() as usize;
        let results = r["results"].as_u64().unwrap() as usize;
        let n_items = r["items"].as_u64().unwrap() as usize;

        // Every surviving beam, in the search's order, with its reward.
        let all = engine
            .recommend(&[request(r, true, true, beam, 0)])
            .unwrap()
            .remove(0);
        assert_eq!(all.final_scores.len(), beams.len(), "{what}: survivors");
        for (j, b) in beams.iter().enumerate() {
            let items = ids(&b["items"]);
            assert!(close(
                all.final_scores[j],
                b["score"].as_f64().unwrap() as f32,
                SCORE_TOL
            ));
            let s = all
                .sessions
                .iter()
                .find(|s| s.items == items)
                .unwrap_or_else(|| panic!("{what}: beam {j} {items:?} missing"));
            let want = b["reward"].as_f64().unwrap() as f32;
            let got = s.reward.expect("a reranked session has a reward");
            assert!(
                close(got, want, reward_tol),
                "{what}: beam {j} R {got} vs {want}"
            );
            for (a, w) in s.signals.iter().zip(f32s(&b["signals"])) {
                assert!(close(*a, w, reward_tol), "{what}: beam {j} r_k {a} vs {w}");
            }
        }

        for rerank in [false, true] {
            for keep in [false, true] {
                let key = format!("rerank={},keep={}", u8::from(rerank), u8::from(keep));
                let want: Vec<Vec<u64>> = r["answers"][&key]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| ids(&beams[i.as_u64().unwrap() as usize]["items"]))
                    .collect();
                let got = engine
                    .recommend(&[request(r, rerank, keep, results, n_items)])
                    .unwrap()
                    .remove(0);
                let items: Vec<Vec<u64>> = got.sessions.iter().map(|s| s.items.clone()).collect();
                assert_eq!(items, want, "{what}: {key}");
                for s in &got.sessions {
                    assert_eq!(s.reward.is_some(), rerank, "{what}: {key}");
                    assert_eq!(s.signals.len(), if rerank { 3 } else { 0 });
                }
                // The item list does not depend on the answer options.
                let want_items = r["first_items"].as_array().unwrap();
                assert_eq!(got.items.len(), want_items.len(), "{what}: item list");
                for (it, w) in got.items.iter().zip(want_items) {
                    assert_eq!(it.item, w[0].as_u64().unwrap(), "{what}: item list");
                    let ws = w[1].as_f64().unwrap() as f32;
                    assert!(close(it.score, ws, SCORE_TOL), "{what}: item score");
                    let row = engine.file().catalog.index_of(it.item).unwrap();
                    assert_eq!(it.sid, engine.file().catalog.sid(row));
                }
            }
        }
    }
}

fn cpu_engine(path: &Path) -> Engine {
    Engine::open(path, &EngineOptions::new().backend(BackendKind::Cpu)).unwrap()
}

#[test]
fn answers_match_the_reference_on_the_cpu() {
    check_answers("cpu", &cpu_engine(&fixture(FIXTURE)), REWARD_TOL);
}

#[test]
fn answers_match_the_reference_on_wgpu() {
    let Some(gpu) = gpu() else {
        return;
    };
    let engine = Engine::with_backend(file(), gpu).unwrap();
    check_answers("wgpu", &engine, REWARD_TOL);
}

/// Reranked sessions come best reward first, ties to the higher model score; every
/// reranked answer has rewards, and no two sessions hold the same items by default.
#[test]
fn reranked_sessions_are_ordered_by_reward_and_distinct() {
    let e = cpu_engine(&fixture(FIXTURE));
    let ids = e.file().catalog.item_ids().to_vec();
    for (i, h) in [vec![ids[0]], ids[3..9].to_vec(), ids[10..12].to_vec()]
        .into_iter()
        .enumerate()
    {
        let req = Request::builder(h)
            .beam(32)
            .results(32)
            .rerank(true)
            .build();
        let r = e.recommend(&[req]).unwrap().remove(0);
        assert!(r.sessions.len() > 1, "history {i}");
        for w in r.sessions.windows(2) {
            let (a, b) = (w[0].reward.unwrap(), w[1].reward.unwrap());
            assert!(
                a > b || (a == b && w[0].score >= w[1].score),
                "history {i}: order"
            );
        }
        let mut sets: Vec<Vec<u64>> = r
            .sessions
            .iter()
            .map(|s| {
                let mut v = s.items.clone();
                v.sort_unstable();
                v
            })
            .collect();
        let n = sets.len();
        sets.sort();
        sets.dedup();
        assert_eq!(sets.len(), n, "history {i}: a permutation came back");
    }
}

/// Through the quantize tool (q8): the reward matrices are quantized, the positions and
/// the head bias stay f32, and the file loads and reranks close to the f32 rewards.
#[test]
fn the_q8_file_of_the_fixture_loads_and_reranks() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reward.onerec");
    let args = onerec_quantize::Args {
        input: fixture(FIXTURE),
        output: Some(out.clone()),
        dtype: onerec_quantize::Target::Q8,
        keep_f16: vec![],
        dry_run: false,
        quiet: true,
    };
    onerec_quantize::quantize(&args).unwrap();
    let q8 = ModelFile::open(&out).unwrap();
    use onerec_engine::tensor::DType;
    assert_eq!(q8.tensor("reward.target.q").unwrap().dtype, DType::Q8_0);
    assert_eq!(q8.tensor("reward.embed").unwrap().dtype, DType::Q8_0);
    for name in [
        "reward.hist_pos",
        "reward.sess_pos",
        "reward.head_bias",
        "reward.out_norm",
    ] {
        assert_eq!(q8.tensor(name).unwrap().dtype, DType::F32, "{name}");
    }
    assert_eq!(q8.config.reward, file().config.reward);
    let e = cpu_engine(&out);
    assert!(e.has_reward_model());
    let g = golden();
    let r = &g["requests"][0];
    let beam = r["beam"].as_u64().unwrap() as usize;
    let got = e
        .recommend(&[request(r, true, true, beam, 0)])
        .unwrap()
        .remove(0);
    assert!(!got.sessions.is_empty());
    // q8 moves the search too; compare the rewards of the sessions both found.
    let mut compared = 0;
    for b in r["beams"].as_array().unwrap() {
        if let Some(s) = got.sessions.iter().find(|s| s.items == ids(&b["items"])) {
            let want = b["reward"].as_f64().unwrap() as f32;
            assert!(
                (s.reward.unwrap() - want).abs() < 2e-2,
                "{} vs {want}",
                s.reward.unwrap()
            );
            compared += 1;
        }
    }
    assert!(compared > 0);
}

#[test]
fn rerank_without_a_reward_model_is_a_named_error() {
    let e = cpu_engine(&fixture("dense_l3"));
    assert!(!e.has_reward_model());
    let h = vec![e.file().catalog.item_id(0)];
    let good = Request::builder(h.clone()).beam(4).results(2).build();
    let bad = Request::builder(h).beam(4).results(2).rerank(true).build();
    let out = e.recommend_each(&[good, bad]).unwrap();
    assert!(out[0].is_ok(), "the other request is served");
    let err = out[1].as_ref().unwrap_err();
    assert!(matches!(err, Error::NoRewardModel), "{err}");
    assert!(err.is_caller_error());
    assert!(err.to_string().contains("no reward model"), "{err}");
}

#[test]
fn items_above_the_beam_are_refused() {
    let e = cpu_engine(&fixture(FIXTURE));
    let h = vec![e.file().catalog.item_id(0)];
    let err = e
        .recommend(&[Request::builder(h).beam(4).results(2).items(5).build()])
        .unwrap_err();
    assert!(
        err.to_string().contains("items must be in 0..=beam"),
        "{err}"
    );
}

/// A model file without a reward section keeps its exact config bytes (no `reward`
/// key), and the reward section survives the model file's round trip.
#[test]
fn the_config_carries_the_reward_section_only_when_present() {
    let plain = ModelFile::open(&fixture("dense_l3")).unwrap();
    assert!(plain.config.reward.is_none());
    assert!(!plain.config.to_json().contains("reward"));
    let f = file();
    let rc = f.config.reward.as_ref().unwrap();
    assert_eq!(rc.signals, ["watch", "like", "share"]);
    let back = onerec_engine::Config::from_json(&f.config.to_json()).unwrap();
    assert_eq!(back.reward.as_ref(), Some(rc));
}

#[test]
fn a_bad_reward_section_is_refused() {
    let text = std::fs::read_to_string(fixture(FIXTURE).join("config.json")).unwrap();
    let mut cfg: Value = serde_json::from_str(&text).unwrap();
    for (field, value, needle) in [
        (
            "weights",
            serde_json::json!([0.5]),
            "1 weights for 3 signals",
        ),
        ("n_heads", serde_json::json!(5), "multiple of `n_heads`"),
        ("d_model", serde_json::json!(0), "`d_model` = 0"),
        ("signals", serde_json::json!([]), "0 signals"),
        ("typo", serde_json::json!(1), "unknown field"),
    ] {
        let mut c = cfg.clone();
        c["reward"][field] = value;
        let err = onerec_engine::Config::from_json(&c.to_string()).unwrap_err();
        assert!(err.to_string().contains(needle), "{field}: {err}");
    }
    cfg["reward"]["max_history"] = serde_json::json!(1u64 << 40);
    assert!(onerec_engine::Config::from_json(&cfg.to_string()).is_err());
}

/// The C API: rerank, keep_permutations and the item list through the context setters,
/// rewards and items read back as C sees them; a model without a reward model refuses.
#[test]
fn the_c_api_reranks_and_lists_items() {
    use onerec_ffi::*;
    use std::ffi::{CStr, CString};
    use std::ptr;
    #[track_caller]
    fn ok(status: onerec_status) {
        let msg = unsafe { CStr::from_ptr(onerec_last_error()) };
        assert_eq!(status, onerec_status::Ok, "{msg:?}");
    }
    let load = |dir: &Path| {
        let path = CString::new(dir.to_str().unwrap()).unwrap();
        let mut params = onerec_model_default_params();
        params.backend = ONEREC_BACKEND_CPU;
        let mut model = ptr::null_mut();
        ok(unsafe { onerec_model_load(path.as_ptr(), params, &mut model) });
        let mut ctx = ptr::null_mut();
        ok(unsafe { onerec_context_new(model, &mut ctx) });
        (model, ctx)
    };
    let g = golden();
    let (model, ctx) = load(&fixture(FIXTURE));
    let mut n_signals = 0;
    ok(unsafe { onerec_model_n_reward_signals(model, &mut n_signals) });
    assert_eq!(n_signals, 3);
    for (k, r) in g["requests"].as_array().unwrap().iter().enumerate() {
        let history = ids(&r["history"]);
        let exclude = ids(&r["exclude"]);
        let mut req = onerec_request_default_params();
        req.history = history.as_ptr();
        req.n_history = history.len();
        req.exclude = if exclude.is_empty() {
            ptr::null()
        } else {
            exclude.as_ptr()
        };
        req.n_exclude = exclude.len();
        req.beam = r["beam"].as_u64().unwrap() as usize;
        req.results = r["results"].as_u64().unwrap() as usize;
        req.exclude_history = r["exclude_history"].as_bool().unwrap();
        let beams = r["beams"].as_array().unwrap();
        for (rerank, keep) in [(true, false), (false, false), (true, true)] {
            ok(unsafe { onerec_context_set_rerank(ctx, rerank) });
            ok(unsafe { onerec_context_set_keep_permutations(ctx, keep) });
            ok(unsafe { onerec_context_set_items(ctx, r["items"].as_u64().unwrap() as usize) });
            ok(unsafe { onerec_recommend(ctx, &req, 1) });
            let key = format!("rerank={},keep={}", u8::from(rerank), u8::from(keep));
            let want = r["answers"][&key].as_array().unwrap();
            let mut n = 0;
            ok(unsafe { onerec_results_n_sessions(ctx, 0, &mut n) });
            assert_eq!(n, want.len(), "request {k} {key}");
            for (j, w) in want.iter().enumerate() {
                let b = &beams[w.as_u64().unwrap() as usize];
                let mut s = std::mem::MaybeUninit::<onerec_session>::uninit();
                ok(unsafe { onerec_results_session(ctx, 0, j, s.as_mut_ptr()) });
                let s = unsafe { s.assume_init() };
                let items = unsafe { std::slice::from_raw_parts(s.items, s.n_items) };
                assert_eq!(items, ids(&b["items"]), "request {k} {key} session {j}");
                let (mut reward, mut signals, mut ns) = (0f32, [0f32; 3], 0usize);
                let st = unsafe {
                    onerec_results_session_reward(
                        ctx,
                        0,
                        j,
                        &mut reward,
                        signals.as_mut_ptr(),
                        3,
                        &mut ns,
                    )
                };
                if rerank {
                    ok(st);
                    assert_eq!(ns, 3);
                    let want = b["reward"].as_f64().unwrap() as f32;
                    assert!(close(reward, want, REWARD_TOL), "{reward} vs {want}");
                    for (a, w) in signals.iter().zip(f32s(&b["signals"])) {
                        assert!(close(*a, w, REWARD_TOL));
                    }
                } else {
                    assert_eq!(st, onerec_status::OutOfRange);
                }
            }
            let want_items = r["first_items"].as_array().unwrap();
            ok(unsafe { onerec_results_n_items(ctx, 0, &mut n) });
            assert_eq!(n, want_items.len());
            for (i, w) in want_items.iter().enumerate() {
                let (mut item, mut score) = (0u64, 0f32);
                ok(unsafe { onerec_results_item(ctx, 0, i, &mut item, &mut score) });
                assert_eq!(item, w[0].as_u64().unwrap());
                assert!(close(score, w[1].as_f64().unwrap() as f32, SCORE_TOL));
            }
            let (mut item, mut score) = (0u64, 0f32);
            assert_eq!(
                unsafe { onerec_results_item(ctx, 0, n, &mut item, &mut score) },
                onerec_status::OutOfRange
            );
        }
    }
    unsafe {
        onerec_context_free(ctx);
        onerec_model_free(model);
    }

    // No reward model: the request fails with INVALID_ARGUMENT and says why.
    let (model, ctx) = load(&fixture("dense_l3"));
    let mut n_signals = 7;
    ok(unsafe { onerec_model_n_reward_signals(model, &mut n_signals) });
    assert_eq!(n_signals, 0);
    let history = [ModelFile::open(&fixture("dense_l3"))
        .unwrap()
        .catalog
        .item_id(0)];
    let mut req = onerec_request_default_params();
    req.history = history.as_ptr();
    req.n_history = 1;
    ok(unsafe { onerec_context_set_rerank(ctx, true) });
    assert_eq!(
        unsafe { onerec_recommend(ctx, &req, 1) },
        onerec_status::InvalidArgument
    );
    let msg = unsafe { CStr::from_ptr(onerec_last_error()) }.to_string_lossy();
    assert!(msg.contains("no reward model"), "{msg}");
    unsafe {
        onerec_context_free(ctx);
        onerec_model_free(model);
    }
}

/// Work past one call's row bound is split (pieces of one user's sessions, batches of
/// users); every session's reward is the one it gets when scored alone.
#[test]
fn rewards_do_not_depend_on_the_batching() {
    let p = Pipeline::new(CpuBackend::new(), file()).unwrap();
    let rm = p.reward.as_ref().unwrap();
    let cat = &p.model.file.catalog;
    let m = p.model.config().session_len;
    let n = onerec_engine::reward::MAX_REWARD_ROWS / m * 2 + 7; // three pieces
    let sessions: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            (0..m)
                .map(|j| ((i * 7 + j * 13) % cat.len()) as u32)
                .collect()
        })
        .collect();
    let (h1, h2): (Vec<usize>, Vec<usize>) = ((0..9).collect(), vec![5, 6]);
    let small = &sessions[..40];
    let users = [
        RewardInput {
            history: &h2,
            sessions: small,
        },
        RewardInput {
            history: &h1,
            sessions: &sessions,
        },
        RewardInput {
            history: &h2,
            sessions: small,
        },
    ];
    let all = rm.score(&p.model.backend, cat, &users).unwrap();
    assert_eq!(all.iter().map(Vec::len).collect::<Vec<_>>(), [40, n, 40]);
    let per = onerec_engine::reward::MAX_REWARD_ROWS / m;
    for i in [0, per - 1, per, 2 * per, n - 1] {
        let alone = rm
            .score(
                &p.model.backend,
                cat,
                &[RewardInput {
                    history: &h1,
                    sessions: &sessions[i..=i],
                }],
            )
            .unwrap();
        assert!(
            close(all[1][i].reward, alone[0][0].reward, 1e-5),
            "session {i}"
        );
    }
    for j in [0, 39] {
        assert!(close(all[0][j].reward, all[2][j].reward, 1e-6));
    }
}
