//! Criterion benches of whole requests on the built-in MovieLens model, per backend.
//!
//!   cargo bench --bench engine
//!
//! Paper-sized configs are timed by the side-by-side scripts (`cpu_vs_torch.sh`,
//! `wgpu_compare.sh`), which need generated checkpoints too large to commit.

use criterion::{criterion_group, criterion_main, Criterion};
use onerec_engine::{BackendKind, Engine, Request};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

fn built_in(backend: BackendKind) -> Option<Engine> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/model.onerec");
    let file = onerec_engine::ModelFile::open(&path).ok()?;
    match Engine::from_file(Arc::new(file), backend) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("skipping {backend:?}: {e}");
            None
        }
    }
}

fn requests(c: &mut Criterion) {
    let history: Vec<u64> = vec![50, 172, 181, 174, 210, 1, 121, 117];
    let mut group = c.benchmark_group("request_movielens_q8");
    group.sample_size(10);
    for (name, kind) in [("cpu", BackendKind::Cpu), ("wgpu", BackendKind::Wgpu)] {
        let Some(engine) = built_in(kind) else {
            continue;
        };
        for beam in [16usize, 64] {
            let req = Request::builder(history.clone())
                .beam(beam)
                .results(beam.min(10))
                .exclude_history(true)
                .build();
            group.bench_function(format!("{name}/beam{beam}"), |b| {
                b.iter(|| black_box(engine.recommend(std::slice::from_ref(&req)).unwrap()))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, requests);
criterion_main!(benches);
