//! The Rust API (issue 16 item 2) and the runtime limits of issue 11: options, loading
//! from memory, per-request results, cancellation, the memory budget, verification on
//! load, non-finite scores, and how `auto` picks a backend.

use crate::common::{fixture, repo_root};
use onerec_engine::backend::wgpu::list_adapters;
use onerec_engine::{
    BackendKind, Engine, EngineOptions, Error, KvPrecision, ModelFile, Request, RequestShape,
    RunOptions, Verify, MAX_BATCH_ROWS,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

fn cpu() -> EngineOptions {
    EngineOptions::new().backend(BackendKind::Cpu)
}

fn default_model() -> PathBuf {
    repo_root().join("models/default/model.onerec")
}

fn item(e: &Engine, i: usize) -> u64 {
    e.file().catalog.item_id(i)
}

fn req(e: &Engine, rows: &[usize], beam: usize) -> Request {
    Request::builder(rows.iter().map(|&i| item(e, i)).collect())
        .beam(beam)
        .results(beam.min(3))
        .build()
}

#[test]
fn the_request_builder_sets_every_field() {
    let r = Request::builder(vec![1, 2])
        .beam(7)
        .results(2)
        .exclude(vec![3])
        .exclude_history(true)
        .build();
    assert_eq!(
        (r.history, r.beam, r.results, r.exclude, r.exclude_history),
        (vec![1, 2], 7, 2, vec![3], true)
    );
    let d = Request::default();
    assert!(d.results <= d.beam && d.history.is_empty());
}

#[test]
fn an_owned_thread_pool_gives_the_same_answer() {
    let path = fixture("moe_dec_l2");
    let base = Engine::open(&path, &cpu()).unwrap();
    let one = Engine::open(&path, &cpu().threads(1)).unwrap();
    let r = [req(&base, &[0, 1, 2], 8)];
    assert_eq!(base.recommend(&r).unwrap(), one.recommend(&r).unwrap());
    assert!(
        one.describe_backend().contains("1 threads"),
        "{}",
        one.describe_backend()
    );
    assert!(matches!(
        Engine::open(&path, &cpu().threads(0)),
        Err(Error::Request(_))
    ));
}

#[test]
fn bytes_in_memory_serve_like_the_file() {
    let path = default_model();
    let bytes = std::fs::read(&path).unwrap();
    let from_file = Engine::open(&path, &cpu()).unwrap();
    let from_bytes = Engine::from_bytes(bytes.clone(), &cpu()).unwrap();
    let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let from_static = Engine::from_static(leaked, &cpu()).unwrap();
    let r = [req(&from_file, &[0, 5, 9], 8)];
    let want = from_file.recommend(&r).unwrap();
    assert!(!want[0].sessions.is_empty());
    assert_eq!(from_bytes.recommend(&r).unwrap(), want);
    assert_eq!(from_static.recommend(&r).unwrap(), want);
    // Not a model file: a clear error, no panic.
    assert!(Engine::from_bytes(b"not a model".to_vec(), &cpu()).is_err());
}

#[test]
fn a_batch_gives_each_request_its_own_result() {
    let e = Engine::open(&fixture("dense_l3"), &cpu()).unwrap();
    let (a, b) = (req(&e, &[0, 1], 4), req(&e, &[2], 4));
    let unknown = Request::builder(vec![item(&e, 0), u64::MAX - 1, u64::MAX])
        .beam(4)
        .results(2)
        .build();
    let empty = Request::builder(vec![]).beam(4).results(2).build();
    let out = e
        .recommend_each(&[a.clone(), unknown, b.clone(), empty])
        .unwrap();
    assert_eq!(out.len(), 4);
    // The valid ones are decoded together, as a batch of just them would be.
    let want = e.recommend(&[a, b]).unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &want[0]);
    assert_eq!(out[2].as_ref().unwrap(), &want[1]);
    match &out[1] {
        Err(Error::UnknownItems { ids }) => assert_eq!(ids, &[u64::MAX - 1, u64::MAX]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(&out[3], Err(Error::Request(m)) if m.contains("empty")));
    assert!(out[1].as_ref().unwrap_err().is_caller_error());
}

#[test]
fn an_abort_check_cancels_between_steps_and_the_engine_serves_on() {
    let e = Engine::open(&fixture("moe_dec_l2"), &cpu()).unwrap();
    let r = [req(&e, &[0, 1, 2], 16)];
    let calls = AtomicUsize::new(0);
    let abort = || calls.fetch_add(1, Ordering::Relaxed) >= 3;
    let got = e.recommend_each_with(&r, &RunOptions::default().abort(&abort));
    assert!(matches!(got, Err(Error::Cancelled)), "{got:?}");
    // It stopped at the first check that said so.
    assert_eq!(calls.load(Ordering::Relaxed), 4);
    // Never aborting: checked at every step, same answer as without a check.
    let never = AtomicUsize::new(0);
    let count = || {
        never.fetch_add(1, Ordering::Relaxed);
        false
    };
    let with = e
        .recommend_each_with(&r, &RunOptions::default().abort(&count))
        .unwrap();
    assert!(never.load(Ordering::Relaxed) >= e.config().dec_len() - 1);
    assert_eq!(with[0].as_ref().unwrap(), &e.recommend(&r).unwrap()[0]);
}

#[test]
fn the_memory_budget_refuses_a_call_before_it_allocates() {
    let path = fixture("dense_l3");
    let e = Engine::open(&path, &cpu()).unwrap();
    let r = req(&e, &[0, 1], 64);
    let est = e.memory_estimate(&[RequestShape {
        beam: 64,
        history: 2,
    }]);
    assert!(est.model > 0 && est.kv_cache > 0 && est.activations > 0 && est.search > 0);
    let budget = est.request() - 1;
    let small = Engine::open(&path, &cpu().memory_budget(budget)).unwrap();
    match small.recommend(std::slice::from_ref(&r)) {
        Err(Error::Budget { need, budget: b }) => {
            assert_eq!((need, b), (est.request(), budget));
        }
        other => panic!("{other:?}"),
    }
    // At the estimate exactly it runs.
    let fits = Engine::open(&path, &cpu().memory_budget(est.request())).unwrap();
    assert!(fits.recommend(&[r]).is_ok());
    // Bigger shapes cost more.
    let two = e.memory_estimate(
        &[RequestShape {
            beam: 64,
            history: 2,
        }; 2],
    );
    assert!(two.request() > est.request());
}

#[test]
fn absurd_batches_are_refused_with_a_named_error() {
    let e = Engine::open(&default_model(), &cpu()).unwrap();
    let h = vec![item(&e, 0)];
    // 100,000 users at beam 1 (issue 11 item 2): refused, nothing decoded.
    let many = vec![Request::builder(h.clone()).beam(1).results(1).build(); 100_000];
    let t = std::time::Instant::now();
    let err = e.recommend_each(&many).unwrap_err();
    assert!(err.to_string().contains("100000 requests"), "{err}");
    // 128 users at beam 4096: over the row cap.
    let wide = vec![Request::builder(h).beam(4096).results(1).build(); 128];
    let err = e.recommend_each(&wide).unwrap_err();
    assert!(
        err.to_string().contains(&MAX_BATCH_ROWS.to_string()),
        "{err}"
    );
    assert!(
        t.elapsed().as_secs() < 10,
        "refusing took {:?}",
        t.elapsed()
    );
}

/// The default model with byte `at` of tensor `name` replaced.
fn corrupted(name: &str, at: usize, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let src = default_model();
    let file = ModelFile::open(&src).unwrap();
    let start = file.entry(name).unwrap().start + at;
    let mut data = std::fs::read(&src).unwrap();
    data[start..start + bytes.len()].copy_from_slice(bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.onerec");
    std::fs::write(&path, data).unwrap();
    (dir, path)
}

#[test]
fn loading_verifies_small_files_by_default() {
    let file = ModelFile::open(&default_model()).unwrap();
    let name = file
        .names
        .iter()
        .find(|n| n.starts_with("dec.layers.0"))
        .unwrap()
        .clone();
    let (_dir, path) = corrupted(&name, 0, &[0x5a, 0xa5]);
    for v in [Verify::Auto, Verify::Always] {
        match Engine::open(&path, &cpu().verify(v)) {
            Err(Error::Tensor { name: n, msg }) => {
                assert_eq!(n, name);
                assert!(msg.contains("checksum"), "{msg}");
            }
            Err(e) => panic!("{v:?}: {e}"),
            Ok(_) => panic!("{v:?}: a corrupted file loaded"),
        }
    }
    assert!(Engine::open(&path, &cpu().verify(Verify::Never)).is_ok());
}

#[test]
fn a_nan_score_fails_its_request_with_a_named_error() {
    // NaN as the f16 scale of the first q8 block of level 0's output head (scales follow
    // the matrix's quants, docs/FORMAT.md): every log-prob of that level becomes NaN.
    // Loaded without verification, as a careless app would.
    let file = ModelFile::open(&default_model()).unwrap();
    let head = file.entry("head").unwrap();
    assert_eq!(
        head.dtype.name(),
        "q8_0",
        "the test writes a q8_0 block scale"
    );
    let quants = head.shape[1] * head.shape[2];
    let nan_f16 = half::f16::NAN.to_le_bytes();
    let (_dir, path) = corrupted("head", quants, &nan_f16);
    let e = Engine::open(&path, &cpu().verify(Verify::Never)).unwrap();
    let good = req(&e, &[0, 1], 8);
    let out = e.recommend_each(&[good]).unwrap();
    match &out[0] {
        Err(Error::NonFinite { what, value }) => {
            assert!(what.contains("score") && !value.is_finite());
        }
        Ok(r) => assert!(
            r.sessions.iter().all(|s| s.score.is_finite()),
            "a non-finite score was returned: {r:?}"
        ),
        Err(e) => panic!("{e}"),
    }
}

/// Issue 11 item 9: `KvPrecision::F16` on the CPU stores K/V rounded to f16, the model
/// of a GPU's f16 cache: scores move (so the rounding happens) but stay close to f32's.
#[test]
fn an_f16_kv_cache_on_the_cpu_rounds_keys_and_values() {
    let f32_kv = Engine::open(&fixture("dense_l3"), &cpu().kv_precision(KvPrecision::F32)).unwrap();
    let f16_kv = Engine::open(&fixture("dense_l3"), &cpu().kv_precision(KvPrecision::F16)).unwrap();
    assert!(
        f16_kv.describe_backend().contains("f16 KV"),
        "{}",
        f16_kv.describe_backend()
    );
    let ids = f32_kv.file().catalog.item_ids()[..4].to_vec();
    let req = Request::builder(ids).beam(8).results(8).build();
    let a = f32_kv
        .recommend(std::slice::from_ref(&req))
        .unwrap()
        .remove(0);
    let b = f16_kv.recommend(&[req]).unwrap().remove(0);
    let moved = a
        .final_scores
        .iter()
        .zip(&b.final_scores)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        moved > 0.0,
        "an f16 cache changed no score: nothing was rounded"
    );
    assert!(moved < 5e-2, "f16 K/V moved a score by {moved}");
}

/// Issue 12 item 1: by default q8_0 products quantise their activations where the CPU has
/// AVX-512 VNNI (the built-in model is q8_0) and stay within ~1e-3 of the exact path
/// (`cpu_int8(false)`); elsewhere the default is the exact path.
#[test]
fn integer_q8_products_stay_close_to_the_exact_path() {
    let exact = Engine::open(&default_model(), &cpu().cpu_int8(false)).unwrap();
    let int8 = Engine::open(&default_model(), &cpu()).unwrap();
    assert!(
        !exact.describe_backend().contains("int8"),
        "{}",
        exact.describe_backend()
    );
    let mut moved = 0f32;
    for rows in [[0usize, 5, 9], [40, 41, 300]] {
        let r = [req(&exact, &rows, 16)];
        let (a, b) = (exact.recommend(&r).unwrap(), int8.recommend(&r).unwrap());
        for (x, y) in a[0].final_scores.iter().zip(&b[0].final_scores) {
            let rel = (x - y).abs() / x.abs().max(1.0);
            assert!(rel < 1e-2, "int8 moved a score from {x} to {y}");
            moved = moved.max(rel);
        }
    }
    // Activations are quantised per row, and the kernel never depends on the row count:
    // a request's answer does not depend on what it is batched with.
    let (one, two) = (req(&exact, &[0, 5, 9], 16), req(&exact, &[40, 41, 300], 16));
    let batched = int8.recommend(&[one.clone(), two.clone()]).unwrap();
    assert_eq!(batched[0], int8.recommend(&[one]).unwrap().remove(0));
    assert_eq!(batched[1], int8.recommend(&[two]).unwrap().remove(0));
    // The default quantises where the CPU has AVX-512 VNNI, and says so.
    if int8.describe_backend().contains("int8") {
        assert!(moved > 0.0, "int8 changed no score: nothing was quantised");
    } else {
        assert_eq!(moved, 0.0, "no int8 kernel here, yet scores moved");
    }
}

/// Issue 12 item 2: `auto` never takes a software adapter (lavapipe here) while the CPU
/// backend exists.
#[test]
fn auto_never_picks_a_software_adapter() {
    let adapters = list_adapters();
    if std::env::var("ONEREC_REQUIRE_GPU").as_deref() == Ok("1") {
        assert!(!adapters.is_empty(), "no adapter listed");
    }
    for a in &adapters {
        assert!(!a.name.is_empty() && !a.backend.is_empty() && !a.device_type.is_empty());
        assert_eq!(a.is_software, a.device_type == "Cpu", "{a:?}");
    }
    let e = Engine::open(&fixture("dense_l3"), &EngineOptions::new()).unwrap();
    let chose = e.describe_backend();
    if adapters.iter().all(|a| a.is_software) {
        assert!(
            chose.starts_with("cpu"),
            "auto chose {chose} with {adapters:?}"
        );
    } else {
        assert!(
            chose.starts_with("wgpu"),
            "auto chose {chose} with {adapters:?}"
        );
    }
    // Asking for the software adapter by index still gets it.
    if let Some(sw) = adapters.iter().find(|a| a.is_software) {
        let e = Engine::open(
            &fixture("dense_l3"),
            &EngineOptions::new()
                .backend(BackendKind::Wgpu)
                .device(sw.index),
        )
        .unwrap();
        assert!(e.describe_backend().starts_with("wgpu"));
    }
    let none = EngineOptions::new()
        .backend(BackendKind::Wgpu)
        .device(adapters.len());
    assert!(matches!(
        Engine::open(&fixture("dense_l3"), &none),
        Err(Error::Backend { .. })
    ));
}
