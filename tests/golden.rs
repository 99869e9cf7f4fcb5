//! Parity with the reference's golden outputs (tests/fixtures, made by
//! reference/make_fixtures.py) within MODEL_SPEC's tolerances.

use crate::common::{fixture, FIXTURES};
use onerec_engine::model::RouteLog;
use onerec_engine::{BackendKind, CpuBackend, Engine, Model, ModelFile, Request, Response};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

pub struct Golden {
    pub json: Value,
    pub tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

pub fn load_golden(name: &str) -> Golden {
    let dir = fixture(name);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            let v: Vec<f32> = match t.dtype() {
                safetensors::Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::I32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                d => panic!("unexpected golden dtype {d:?}"),
            };
            (n, (t.shape().to_vec(), v))
        })
        .collect();
    Golden { json, tensors }
}

pub fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().expect("item id as u64"))
        .collect()
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

pub fn requests(g: &Golden) -> Vec<(Request, &Value)> {
    g.json["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let req = Request::builder(ids(&r["history"]))
                .beam(r["beam"].as_u64().unwrap() as usize)
                .results(r["results"].as_u64().unwrap() as usize)
                .exclude(ids(&r["exclude"]))
                .exclude_history(r["exclude_history"].as_bool().unwrap())
                // The goldens record the search's order (permutations included).
                .keep_permutations(true)
                .build();
            (req, r)
        })
        .collect()
}

/// ‖a − b‖ / ‖b‖
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Sessions equal to the golden ones where the score gap to a neighbour exceeds
/// `gap`, scores within `score_tol` (absolute) everywhere.
pub fn check_response(what: &str, got: &Response, want: &Value, gap: f32, score_tol: f32) {
    let want_sessions = want["sessions"].as_array().unwrap();
    let final_scores: Vec<f32> = want["final_scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(
        got.sessions.len(),
        want_sessions.len(),
        "{what}: number of sessions"
    );
    assert_eq!(
        got.final_scores.len(),
        final_scores.len(),
        "{what}: number of surviving beams"
    );
    for (i, (g, w)) in got.sessions.iter().zip(want_sessions).enumerate() {
        let ws = w["score"].as_f64().unwrap() as f32;
        assert!(
            (g.score - ws).abs() <= score_tol,
            "{what}: session {i} score {} vs golden {ws}",
            g.score
        );
        let close_prev = i > 0 && (final_scores[i - 1] - final_scores[i]).abs() <= gap;
        let close_next =
            i + 1 < final_scores.len() && (final_scores[i] - final_scores[i + 1]).abs() <= gap;
        if !close_prev && !close_next {
            assert_eq!(g.items, ids(&w["items"]), "{what}: session {i} items");
            let sids: Vec<Vec<u32>> = w["sids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    s.as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c.as_u64().unwrap() as u32)
                        .collect()
                })
                .collect();
            assert_eq!(g.sids, sids, "{what}: session {i} sids");
        }
    }
    for (i, (g, w)) in got.final_scores.iter().zip(&final_scores).enumerate() {
        assert!(
            (g - w).abs() <= score_tol,
            "{what}: final beam {i} score {g} vs golden {w}"
        );
    }
}

/// Every golden request of every fixture through `Engine::recommend` on `backend`, at
/// the contract's f32 tolerance.
pub fn check_all_requests(backend: BackendKind) {
    check_all_requests_on(|path| Engine::load(path, backend).unwrap(), 1e-3);
}

/// Every golden request of every fixture through the engines `open` makes; sessions
/// equal where the score gaps exceed `tol`, scores within `tol`.
pub fn check_all_requests_on(open: impl Fn(&std::path::Path) -> Engine, tol: f32) {
    for name in FIXTURES {
        let engine = open(&fixture(name));
        let g = load_golden(name);
        for (i, (req, want)) in requests(&g).iter().enumerate() {
            let got = engine
                .recommend(std::slice::from_ref(req))
                .unwrap()
                .remove(0);
            check_response(&format!("{name} request {i}"), &got, want, tol, tol);
        }
    }
}

/// Router choices recorded by the engine equal the golden ones, layer by layer.
pub fn check_routes(name: &str, g: &Golden, routes: &RouteLog) {
    let golden: Vec<(&String, &Vec<f32>)> = g
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with("router."))
        .map(|(k, (_, v))| (k, v))
        .collect();
    assert_eq!(
        golden.len(),
        routes.len(),
        "{name}: number of MoE layers with routes"
    );
    for (key, want) in golden {
        let got: Vec<f32> = routes[key.trim_start_matches("router.")]
            .iter()
            .map(|&e| e as f32)
            .collect();
        assert_eq!(&got, want, "{name}: router choices of {key}");
    }
}

fn cpu_model(name: &str) -> Model<CpuBackend> {
    let file = Arc::new(ModelFile::open(&fixture(name)).unwrap());
    Model::new(CpuBackend::new(), file).unwrap()
}

fn rows(model: &Model<CpuBackend>, ids_: &[u64]) -> Vec<usize> {
    model.file.catalog.resolve(ids_).unwrap()
}

#[test]
fn encoder_output_matches_reference() {
    for name in FIXTURES {
        let g = load_golden(name);
        let m = cpu_model(name);
        let hist = rows(&m, &ids(&g.json["teacher_forced"]["history"]));
        let enc = m.encode(&hist, None).unwrap();
        let (shape, want) = &g.tensors["enc_out"];
        assert_eq!(
            (enc.rows, enc.cols),
            (shape[0], shape[1]),
            "{name}: enc_out shape"
        );
        let e = rel_err(&enc.data, want);
        assert!(e < 1e-4, "{name}: enc_out relative error {e}");
    }
}

#[test]
fn teacher_forced_logprobs_and_routes_match_reference() {
    for name in FIXTURES {
        let g = load_golden(name);
        let m = cpu_model(name);
        let tf = &g.json["teacher_forced"];
        let hist = rows(&m, &ids(&tf["history"]));
        let targets = rows(&m, &ids(&tf["target_items"]));
        let mut routes = RouteLog::new();
        let lp = m
            .teacher_forced(&hist, &targets, Some(&mut routes))
            .unwrap();
        let (_, want) = &g.tensors["tf_logprobs"];
        let e = rel_err(&lp, want);
        assert!(
            e < 1e-4,
            "{name}: teacher-forced log-prob relative error {e}"
        );

        check_routes(name, &g, &routes);
    }
}

#[test]
fn beam_search_matches_reference_on_cpu() {
    check_all_requests(BackendKind::Cpu);
}

#[test]
fn batched_requests_equal_single_requests() {
    for name in FIXTURES {
        let engine = Engine::load(&fixture(name), BackendKind::Cpu).unwrap();
        let g = load_golden(name);
        let reqs: Vec<Request> = requests(&g).into_iter().map(|(r, _)| r).collect();
        let batch = engine.recommend(&reqs).unwrap();
        for (i, (r, want)) in reqs.iter().zip(requests(&g)).enumerate() {
            // A batch changes the matrix shapes, so only the last float bits may move.
            check_response(
                &format!("{name}: request {i} in a batch"),
                &batch[i],
                want.1,
                1e-3,
                1e-3,
            );
            let single = engine.recommend(std::slice::from_ref(r)).unwrap().remove(0);
            assert_eq!(batch[i].sessions.len(), single.sessions.len());
        }
    }
}

#[test]
fn sessions_respect_the_constraints() {
    for name in FIXTURES {
        let engine = Engine::load(&fixture(name), BackendKind::Cpu).unwrap();
        let cat = &engine.file().catalog;
        let g = load_golden(name);
        for (req, _) in requests(&g) {
            let resp = engine
                .recommend(std::slice::from_ref(&req))
                .unwrap()
                .remove(0);
            assert!(resp.sessions.len() <= req.results);
            for s in &resp.sessions {
                assert_eq!(s.items.len(), engine.config().session_len);
                for (k, (&item, sid)) in s.items.iter().zip(&s.sids).enumerate() {
                    let row = cat.index_of(item).expect("item outside the catalog");
                    assert_eq!(cat.sid(row), sid.as_slice());
                    assert!(
                        !req.exclude.contains(&item),
                        "{name}: excluded item {item} returned"
                    );
                    assert!(
                        !(req.exclude_history && req.history.contains(&item)),
                        "{name}: history item {item} returned"
                    );
                    assert!(
                        !s.items[..k].contains(&item),
                        "{name}: item {item} repeated in a session"
                    );
                }
            }
            for w in resp.sessions.windows(2) {
                assert!(w[0].score >= w[1].score, "{name}: sessions not best first");
            }
        }
    }
}
