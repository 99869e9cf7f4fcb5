//! The wgpu backend end to end: the goldens of every fixture, and the same sessions as
//! the CPU backend for every weight type (fixtures re-encoded in f16, q8_0 and q4_0).

use crate::common::{fixture, FIXTURES};
use crate::golden::{check_all_requests_on, ids, load_golden, rel_err, requests};
use crate::wgpu_ops::gpu;
use onerec_engine::backend::wgpu::{WgpuBackend, WgpuOptions};
use onerec_engine::format::quant::encode;
use onerec_engine::generate::recommend;
use onerec_engine::model::RouteLog;
use onerec_engine::model_file::TensorEntry;
use onerec_engine::tensor::{to_f32, Blob, DType};
use onerec_engine::{
    Backend, BackendKind, CpuBackend, Engine, Model, ModelFile, Request, Response,
};

use std::collections::HashMap;
use std::sync::Arc;

/// A wgpu device with its KV caches in f32 (`f16_kv` false) or, where the adapter has
/// SHADER_F16, in f16.
fn device(f16_kv: bool) -> WgpuBackend {
    WgpuBackend::with_options(WgpuOptions {
        poison: true,
        kv_f32: !f16_kv,
        ..Default::default()
    })
    .unwrap()
}

/// The f16 cache rounds every key and value to 11 significant bits; the scores (sums of
/// up to 15 log-probabilities) then move by more than the contract's 1e-3 (1.2e-3 seen
/// on dense_l3) from the f32 reference's goldens, so against those the f16 runs are held
/// to 1e-2. Against the CPU storing K/V the same way they are held to 1e-3
/// (`wgpu_matches_cpu_for_every_weight_type`).
const F16_KV_TOL: f32 = 1e-2;

#[test]
fn wgpu_matches_the_goldens() {
    if gpu().is_none() {
        return;
    }
    let open = |path: &std::path::Path| {
        Engine::with_backend(Arc::new(ModelFile::open(path).unwrap()), device(false)).unwrap()
    };
    check_all_requests_on(open, 1e-3);
}

#[test]
fn wgpu_with_an_f16_kv_cache_matches_the_goldens() {
    if gpu().is_none() {
        return;
    }
    check_all_requests_on(
        |path| Engine::load(path, BackendKind::Wgpu).unwrap(),
        F16_KV_TOL,
    );
}

#[test]
fn wgpu_encoder_and_teacher_forced_logprobs_match_the_goldens() {
    if gpu().is_none() {
        return;
    }
    let g = device(false);
    for name in FIXTURES {
        let gold = load_golden(name);
        let m = Model::new(
            g.clone(),
            Arc::new(ModelFile::open(&fixture(name)).unwrap()),
        )
        .unwrap();
        let tf = &gold.json["teacher_forced"];
        let hist = m.file.catalog.resolve(&ids(&tf["history"])).unwrap();
        let targets = m.file.catalog.resolve(&ids(&tf["target_items"])).unwrap();
        let enc = m.backend.download(&m.encode(&hist, None).unwrap()).unwrap();
        let e = rel_err(&enc, &gold.tensors["enc_out"].1);
        assert!(e < 1e-4, "{name}: enc_out relative error {e}");
        let mut routes = RouteLog::new();
        let lp = m
            .teacher_forced(&hist, &targets, Some(&mut routes))
            .unwrap();
        let e = rel_err(&lp, &gold.tensors["tf_logprobs"].1);
        assert!(
            e < 1e-4,
            "{name}: teacher-forced log-prob relative error {e}"
        );
        crate::golden::check_routes(name, &gold, &routes);
    }
}

/// Issue 11 item 1: at beam 4096 the wgpu search left ranks unwritten (one workgroup
/// sorting 4096 survivors on lavapipe), and the "no item" sentinel reached the catalog.
/// The built-in model and a quantized MoE fixture at the largest beam, as the CPU.
#[test]
fn the_largest_beam_matches_the_cpu() {
    if gpu().is_none() {
        return;
    }
    let builtin = Arc::new(
        ModelFile::open(&crate::common::repo_root().join("models/default/model.onerec")).unwrap(),
    );
    let cases = [
        ("built-in", builtin, vec![50u64, 172, 181]),
        (
            "moe_dec_l2 q8_0",
            reencode("moe_dec_l2", DType::Q8_0),
            vec![],
        ),
    ];
    for (what, file, mut history) in cases {
        if history.is_empty() {
            history = file.catalog.item_ids()[..3].to_vec();
        }
        let req = Request::builder(history)
            .beam(onerec_engine::MAX_BEAM)
            .results(10)
            .build();
        // The GPU multiplies f32 activations: compare with the CPU doing the same.
        let cpu = Model::new(CpuBackend::new().with_int8(false), file.clone()).unwrap();
        let gm = Model::new(device(false), file).unwrap();
        let want = run(&cpu, std::slice::from_ref(&req));
        let got = run(&gm, std::slice::from_ref(&req));
        assert!(!want[0].sessions.is_empty(), "{what}");
        same(&format!("{what} at beam 4096"), &got[0], &want[0], 1e-3);
    }
}

/// The fixture with its weights re-encoded in `dtype` (quantised types only where the
/// rows are whole blocks; vectors keep their type).
fn reencode(name: &str, dtype: DType) -> Arc<ModelFile> {
    let f = ModelFile::open(&fixture(name)).unwrap();
    let mut blob = Vec::new();
    let mut tensors = HashMap::new();
    for n in &f.names {
        let t = f.tensor(n).unwrap();
        let cols = t.shape.last().copied().unwrap_or(1);
        let target = match dtype {
            _ if !t.dtype.is_float() || t.shape.len() < 2 => t.dtype,
            DType::Q8_0 | DType::Q4_0 if cols % 32 != 0 => t.dtype,
            d => d,
        };
        let bytes = if target == t.dtype {
            t.bytes.to_vec()
        } else {
            encode(n, target, t.shape, &to_f32(n, t.dtype, t.bytes).unwrap()).unwrap()
        };
        blob.resize(blob.len().next_multiple_of(256), 0);
        let start = blob.len();
        blob.extend_from_slice(&bytes);
        tensors.insert(
            n.clone(),
            TensorEntry {
                dtype: target,
                shape: t.shape.to_vec(),
                start,
                end: blob.len(),
            },
        );
    }
    let file = ModelFile::from_parts(
        f.config.clone(),
        Arc::new(Blob::Owned(blob)),
        f.names.clone(),
        tensors,
        format!("{name} as {dtype}"),
    )
    .unwrap();
    Arc::new(file)
}

/// Same sessions where the score gaps exceed `tol`, scores within `tol`.
fn same(what: &str, got: &Response, want: &Response, tol: f32) {
    assert_eq!(
        got.final_scores.len(),
        want.final_scores.len(),
        "{what}: surviving beams"
    );
    assert_eq!(got.sessions.len(), want.sessions.len(), "{what}: sessions");
    let fs = &want.final_scores;
    for (i, (g, w)) in got.final_scores.iter().zip(fs).enumerate() {
        assert!((g - w).abs() <= tol, "{what}: beam {i} score {g} vs {w}");
    }
    for (i, (g, w)) in got.sessions.iter().zip(&want.sessions).enumerate() {
        let close =
            (i > 0 && fs[i - 1] - fs[i] <= tol) || (i + 1 < fs.len() && fs[i] - fs[i + 1] <= tol);
        if !close {
            assert_eq!(g.items, w.items, "{what}: session {i}");
        }
    }
}

fn run<B: Backend>(m: &Model<B>, reqs: &[Request]) -> Vec<Response> {
    recommend(m, &m.file_snapshot().unwrap(), reqs).unwrap()
}

#[test]
fn wgpu_matches_cpu_for_every_weight_type() {
    if gpu().is_none() {
        return;
    }
    // Issue 11 item 9: the f16 cache is held to the contract's f32 tolerance against the
    // CPU reference storing K/V the same way (rounded to f16), not to a looser bound.
    for f16_kv in [false, true] {
        let g = device(f16_kv);
        same_as_cpu_for_every_weight_type(&g, 1e-3);
    }
}

fn same_as_cpu_for_every_weight_type(g: &WgpuBackend, tol: f32) {
    for dtype in [DType::F32, DType::F16, DType::Q8_0, DType::Q4_0] {
        for name in FIXTURES {
            let file = reencode(name, dtype);
            let reqs: Vec<Request> = requests(&load_golden(name))
                .into_iter()
                .map(|(r, _)| r)
                .collect();
            let reference = CpuBackend::reference().with_kv_f16(g.kv_f16());
            let cpu = Model::new(reference, file.clone()).unwrap();
            let gm = Model::new(g.clone(), file).unwrap();
            let want = run(&cpu, &reqs);
            // All requests of the fixture in one batch (each alone: the golden test).
            let batch = run(&gm, &reqs);
            for (i, w) in want.iter().enumerate() {
                let kv = if g.kv_f16() { "f16" } else { "f32" };
                let what = format!("{name} {dtype} weights, {kv} KV, request {i} (batch)");
                same(&what, &batch[i], w, tol);
            }
        }
    }
}

/// What item 2 of the WGSL issue promises, counted: a request submits at most once per
/// decode position and reads back only its final beams (the live count and each row's
/// score, trie node and session), never anything per step.
#[test]
fn a_request_submits_once_per_step_and_reads_back_only_its_final_beams() {
    if gpu().is_none() {
        return;
    }
    let g = device(true);
    for name in FIXTURES {
        let file = Arc::new(ModelFile::open(&fixture(name)).unwrap());
        let m = Model::new(g.clone(), file).unwrap();
        let cfg = m.config().clone();
        let trie = m.file_snapshot().unwrap();
        for (req, _) in requests(&load_golden(name)).into_iter().take(2) {
            let before = g.stats();
            let got = recommend(&m, &trie, std::slice::from_ref(&req)).unwrap();
            let after = g.stats();
            assert!(
                !got[0].final_scores.is_empty(),
                "{name}: the request keeps beams"
            );
            let positions = cfg.dec_len() as u64;
            let submissions = after.submissions - before.submissions;
            // One per scored position at most, plus the two reads at the end.
            assert!(
                submissions <= positions + 2,
                "{name}: {submissions} submissions for {positions} positions"
            );
            let final_bytes = 4 + (req.beam * (2 + cfg.session_len) * 4) as u64;
            let read = after.readback_bytes - before.readback_bytes;
            assert!(
                read <= final_bytes,
                "{name}: {read} bytes read back, the final beams are {final_bytes}"
            );
        }
    }
}
