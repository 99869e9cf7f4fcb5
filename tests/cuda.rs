//! The CUDA backend (feature `cuda`): every kernel against the CPU reference, and whole
//! requests against the golden fixtures, wherever a CUDA device exists. Elsewhere each
//! device test prints that it is skipped, unless `ONEREC_REQUIRE_CUDA=1` turns a missing
//! device (or a build without the feature) into a failure.

use onerec_engine::{BackendKind, Engine};

fn require_cuda() -> bool {
    std::env::var("ONEREC_REQUIRE_CUDA").is_ok_and(|v| v == "1")
}

/// Without a usable CUDA backend, loading a model on it is a clear error, not a panic.
#[test]
fn unavailable_cuda_is_a_clear_error() {
    match Engine::load(&crate::common::fixture("dense_l3"), BackendKind::Cuda) {
        Ok(engine) => {
            if !cfg!(feature = "cuda") {
                panic!("a build without the cuda feature loaded a model on cuda");
            }
            eprintln!("cuda present: {}", engine.describe_backend());
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !require_cuda(),
                "ONEREC_REQUIRE_CUDA=1 but the CUDA backend is unavailable: {msg}"
            );
            assert!(
                msg.starts_with("backend `cuda`: "),
                "unexpected error: {msg}"
            );
            if cfg!(feature = "cuda") {
                let named = ["driver", "NVRTC", "device", "cuda_fp16.h", "CUDA"]
                    .iter()
                    .any(|w| msg.contains(w));
                assert!(named, "the error does not say what is missing: {msg}");
            } else {
                assert!(
                    msg.contains("`cuda` feature"),
                    "the error does not name the feature: {msg}"
                );
            }
            eprintln!("skipped: CUDA unavailable ({msg})");
        }
    }
}

#[cfg(feature = "cuda")]
mod device {
    use super::require_cuda;
    use crate::common::{fixture, repo_root, FIXTURES};
    use crate::golden::{check_response, ids, load_golden, rel_err, requests};
    use half::{bf16, f16};
    use onerec_engine::backend::cuda::compile::parse_ptxas_log;
    use onerec_engine::backend::cuda::{kernels, CudaBackend, CudaOptions};
    use onerec_engine::backend::{Backend, BeamIn, Ffn, KeyMap, Moe, SelectGroup};
    use onerec_engine::catalog::Catalog;
    use onerec_engine::model::RouteLog;
    use onerec_engine::tensor::{Blob, DType, WeightView};
    use onerec_engine::trie::Trie;
    use onerec_engine::{CpuBackend, Model, ModelFile, Request, Response};
    use onerec_quantize::{Args, Target};
    use std::sync::{Arc, OnceLock};

    /// The shared device backend (cuBLAS for f32 products where present), or `None`
    /// after printing why the calling test is skipped.
    fn cuda(test: &str) -> Option<&'static CudaBackend> {
        cuda_with(test, true)
    }

    fn cuda_with(test: &str, cublas: bool) -> Option<&'static CudaBackend> {
        static WITH: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
        static WITHOUT: OnceLock<Result<CudaBackend, String>> = OnceLock::new();
        let cell = if cublas { &WITH } else { &WITHOUT };
        let opts = CudaOptions {
            cublas,
            kv_f16: false,
            ..CudaOptions::default()
        };
        match cell.get_or_init(|| CudaBackend::with_options(opts).map_err(|e| e.to_string())) {
            Ok(b) => Some(b),
            Err(e) if require_cuda() => {
                panic!("{test}: ONEREC_REQUIRE_CUDA=1 but no CUDA backend: {e}")
            }
            Err(e) => {
                eprintln!("{test}: skipped (no CUDA device: {e})");
                None
            }
        }
    }

    /// xorshift64*: reproducible inputs without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn uniform(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32
        }
        /// Uniform in [-1, 1).
        fn sym(&mut self) -> f32 {
            2.0 * self.uniform() - 1.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.sym()).collect()
        }
    }

    /// Random bytes of a `[rows, cols]` matrix in `dtype` (the layout of tensor.rs).
    fn weight_bytes(rng: &mut Rng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
        let n = rows * cols;
        let mut b = Vec::new();
        match dtype {
            DType::F32 => (0..n).for_each(|_| b.extend(rng.sym().to_le_bytes())),
            DType::F16 => (0..n).for_each(|_| b.extend(f16::from_f32(rng.sym()).to_le_bytes())),
            DType::BF16 => (0..n).for_each(|_| b.extend(bf16::from_f32(rng.sym()).to_le_bytes())),
            DType::Q8_0 | DType::Q4_0 => {
                if dtype == DType::Q8_0 {
                    (0..n).for_each(|_| b.push(rng.next() as u8));
                } else {
                    (0..n / 2).for_each(|_| b.push(rng.next() as u8));
                }
                let scale = if dtype == DType::Q8_0 {
                    1.0 / 128.0
                } else {
                    1.0 / 8.0
                };
                (0..n / 32).for_each(|_| {
                    b.extend(f16::from_f32(scale * (0.5 + rng.uniform())).to_le_bytes())
                });
                b.resize(dtype.matrix_bytes(rows, cols).unwrap(), 0);
            }
            d => panic!("no weights in {d}"),
        }
        assert_eq!(b.len(), dtype.matrix_bytes(rows, cols).unwrap());
        b
    }

    /// The same weight on the CPU reference and on the device.
    fn weight_pair(
        be: &CudaBackend,
        blob: &Arc<Blob>,
        dtype: DType,
        rows: usize,
        cols: usize,
    ) -> (
        <CpuBackend as Backend>::Weight,
        <CudaBackend as Backend>::Weight,
    ) {
        let view = WeightView {
            name: "test",
            dtype,
            rows,
            cols,
            bytes: blob.bytes(),
            blob,
        };
        (
            CpuBackend::reference().weight(&view).unwrap(),
            be.weight(&view).unwrap(),
        )
    }

    fn blob(rng: &mut Rng, dtype: DType, rows: usize, cols: usize) -> Arc<Blob> {
        Arc::new(Blob::Owned(weight_bytes(rng, dtype, rows, cols)))
    }

    fn close(what: &str, got: &[f32], want: &[f32], tol: f64) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        assert!(
            got.iter().all(|v| v.is_finite()),
            "{what}: non-finite output"
        );
        let e = rel_err(got, want);
        assert!(e <= tol, "{what}: relative error {e:.3e} above {tol:.0e}");
    }

    const WEIGHT_TYPES: [DType; 5] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q8_0,
        DType::Q4_0,
    ];

    fn shapes_for(dtype: DType) -> Vec<(usize, usize, usize)> {
        // (rows of x, out features, in features): tile edges, a single row, k tails.
        let mut s = vec![
            (1, 64, 32),
            (3, 33, 64),
            (64, 64, 96),
            (130, 100, 128),
            (7, 257, 256),
            (200, 8, 32),
        ];
        if !dtype.is_quantized() {
            s.extend([(5, 17, 24), (66, 40, 40), (2, 3, 1)]);
        }
        s
    }

    #[test]
    fn kernel_files_are_embedded_and_listed() {
        // Needs no device: the build embeds every shaders/cuda file and lists its kernels.
        let dir = repo_root().join("engine/shaders/cuda");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = kernels::FILES.iter().map(|f| f.file.to_string()).collect();
        listed.sort();
        assert_eq!(
            on_disk, listed,
            "engine/shaders/cuda/*.cu and kernels::FILES differ"
        );
        for f in kernels::FILES {
            assert_eq!(
                std::fs::read_to_string(dir.join(f.file)).unwrap(),
                f.source,
                "{} is stale in the build",
                f.file
            );
            for e in f.entries {
                assert!(
                    f.source.contains(&format!("{e}(")) || f.source.contains(&format!("({e},")),
                    "{}: entry `{e}` not in the source",
                    f.file
                );
            }
        }
        for (name, src) in kernels::HEADERS {
            assert_eq!(
                std::fs::read_to_string(dir.join(name)).unwrap(),
                *src,
                "{name} is stale in the build"
            );
        }
    }

    #[test]
    fn ptxas_report_is_parsed_with_spills_and_local_memory() {
        // Needs no device: what the CI compile check relies on to refuse spills.
        let log = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'matmul_q4' for 'sm_90'\n\
ptxas info    : Function properties for matmul_q4\n\
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 96 registers, used 1 barriers, 17408 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'log_softmax' for 'sm_90'\n\
ptxas info    : Function properties for log_softmax\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 18 registers, used 1 barriers, 128 bytes smem, 372 bytes cmem[0], 16 bytes lmem\n\
ptxas info    : Compiling entry function 'add_assign' for 'sm_90'\n\
ptxas info    : Function properties for add_assign\n\
ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, used 0 barriers, 372 bytes cmem[0]\n";
        let r = parse_ptxas_log(log);
        assert_eq!(r.len(), 3);
        assert_eq!(
            (r[0].function.as_str(), r[0].arch.as_str(), r[0].entry),
            ("matmul_q4", "sm_90", true)
        );
        assert_eq!(
            (r[0].registers, r[0].shared_bytes, r[0].stack_bytes),
            (96, 17408, 8)
        );
        assert_eq!((r[0].spill_stores, r[0].spill_loads), (4, 12));
        assert!(r[0].uses_local_memory());
        assert_eq!(
            (r[1].registers, r[1].shared_bytes, r[1].local_bytes),
            (18, 128, 16)
        );
        assert!(r[1].uses_local_memory());
        assert_eq!((r[2].registers, r[2].shared_bytes), (10, 0));
        assert!(!r[2].uses_local_memory());
    }

    #[test]
    fn matmul_matches_cpu_for_every_weight_type() {
        for cublas in [true, false] {
            let Some(be) = cuda_with("matmul", cublas) else {
                return;
            };
            let cpu = CpuBackend::reference();
            let mut rng = Rng(0x5eed_0001);
            for dtype in WEIGHT_TYPES {
                for (m, n, k) in shapes_for(dtype) {
                    let b = blob(&mut rng, dtype, n, k);
                    let (wc, wg) = weight_pair(be, &b, dtype, n, k);
                    let x = rng.vec(m * k);
                    let want = cpu
                        .download(&cpu.matmul(&cpu.upload(&x, m, k).unwrap(), &wc).unwrap())
                        .unwrap();
                    let got = be
                        .download(&be.matmul(&be.upload(&x, m, k).unwrap(), &wg).unwrap())
                        .unwrap();
                    close(
                        &format!("matmul {dtype} [{m},{k}]x[{n},{k}] cublas={cublas}"),
                        &got,
                        &want,
                        1e-5,
                    );
                }
            }
        }
    }

    #[test]
    fn ffn_matches_cpu_for_every_weight_type() {
        let Some(be) = cuda("ffn") else { return };
        let cpu = CpuBackend::reference();
        let mut rng = Rng(0x5eed_0002);
        for dtype in WEIGHT_TYPES {
            for (m, hidden, d) in [(1, 64, 32), (70, 96, 64), (130, 160, 96)] {
                let (g, u, dn) = (
                    blob(&mut rng, dtype, hidden, d),
                    blob(&mut rng, dtype, hidden, d),
                    blob(&mut rng, dtype, d, hidden),
                );
                let (gc, gg) = weight_pair(be, &g, dtype, hidden, d);
                let (uc, ug) = weight_pair(be, &u, dtype, hidden, d);
                let (dc, dg) = weight_pair(be, &dn, dtype, d, hidden);
                let x = rng.vec(m * d);
                let want = cpu
                    .download(
                        &cpu.ffn(
                            &cpu.upload(&x, m, d).unwrap(),
                            &Ffn {
                                gate: gc,
                                up: uc,
                                down: dc,
                            },
                        )
                        .unwrap(),
                    )
                    .unwrap();
                let got = be
                    .download(
                        &be.ffn(
                            &be.upload(&x, m, d).unwrap(),
                            &Ffn {
                                gate: gg,
                                up: ug,
                                down: dg,
                            },
                        )
                        .unwrap(),
                    )
                    .unwrap();
                close(
                    &format!("ffn {dtype} m={m} hidden={hidden} d={d}"),
                    &got,
                    &want,
                    1e-5,
                );
            }
        }
    }

    #[test]
    fn moe_matches_cpu_routes_and_outputs() {
        let Some(be) = cuda("moe") else { return };
        let cpu = CpuBackend::reference();
        let mut rng = Rng(0x5eed_0003);
        for (dtype, rows, n_experts, top_k, d, de) in [
            (DType::F32, 1, 4, 1, 32, 32),
            (DType::F32, 37, 6, 2, 24, 16),
            (DType::F16, 130, 24, 2, 64, 96),
            (DType::Q8_0, 64, 5, 3, 32, 64),
            (DType::Q4_0, 200, 8, 2, 64, 32),
            (DType::BF16, 9, 3, 3, 32, 32),
        ] {
            let router = blob(&mut rng, DType::F32, n_experts, d);
            let (rc, rg) = weight_pair(be, &router, DType::F32, n_experts, d);
            let (mut ec, mut eg) = (Vec::new(), Vec::new());
            for _ in 0..n_experts {
                let (g, u, dn) = (
                    blob(&mut rng, dtype, de, d),
                    blob(&mut rng, dtype, de, d),
                    blob(&mut rng, dtype, d, de),
                );
                let (gc, gg) = weight_pair(be, &g, dtype, de, d);
                let (uc, ug) = weight_pair(be, &u, dtype, de, d);
                let (dc, dg) = weight_pair(be, &dn, dtype, d, de);
                ec.push(Ffn {
                    gate: gc,
                    up: uc,
                    down: dc,
                });
                eg.push(Ffn {
                    gate: gg,
                    up: ug,
                    down: dg,
                });
            }
            let (mc, mg) = (
                Moe {
                    router: rc,
                    experts: ec,
                    top_k,
                },
                Moe {
                    router: rg,
                    experts: eg,
                    top_k,
                },
            );
            let x: Vec<f32> = rng.vec(rows * d).iter().map(|v| 3.0 * v).collect();
            let (mut routes_c, mut routes_g) = (Vec::new(), Vec::new());
            let want = cpu
                .download(
                    &cpu.moe(&cpu.upload(&x, rows, d).unwrap(), &mc, Some(&mut routes_c))
                        .unwrap(),
                )
                .unwrap();
            let got = be
                .download(
                    &be.moe(&be.upload(&x, rows, d).unwrap(), &mg, Some(&mut routes_g))
                        .unwrap(),
                )
                .unwrap();
            let what = format!("moe {dtype} rows={rows} E={n_experts} k={top_k}");
            assert_eq!(routes_g, routes_c, "{what}: routes");
            close(&what, &got, &want, 1e-5);
        }
    }

    #[test]
    fn rms_norm_and_log_softmax_match_cpu() {
        let Some(be) = cuda("rms_norm/log_softmax") else {
            return;
        };
        let cpu = CpuBackend::reference();
        let mut rng = Rng(0x5eed_0004);
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (rows, cols) in [(1, 16), (5, 24), (130, 1024), (3, 1000)] {
                let w = blob(&mut rng, dtype, 1, cols);
                let (wc, wg) = weight_pair(be, &w, dtype, 1, cols);
                let x = rng.vec(rows * cols);
                let want = cpu
                    .download(
                        &cpu.rms_norm(&cpu.upload(&x, rows, cols).unwrap(), &wc, 1e-6)
                            .unwrap(),
                    )
                    .unwrap();
                let got = be
                    .download(
                        &be.rms_norm(&be.upload(&x, rows, cols).unwrap(), &wg, 1e-6)
                            .unwrap(),
                    )
                    .unwrap();
                close(
                    &format!("rms_norm {dtype} [{rows},{cols}]"),
                    &got,
                    &want,
                    1e-6,
                );
            }
        }
        for (rows, cols) in [(1, 13), (7, 256), (128, 8192), (2, 20000)] {
            let x: Vec<f32> = rng.vec(rows * cols).iter().map(|v| 20.0 * v).collect();
            let want = cpu
                .download(
                    &cpu.log_softmax(&cpu.upload(&x, rows, cols).unwrap())
                        .unwrap(),
                )
                .unwrap();
            let got = be
                .download(&be.log_softmax(&be.upload(&x, rows, cols).unwrap()).unwrap())
                .unwrap();
            close(&format!("log_softmax [{rows},{cols}]"), &got, &want, 1e-6);
        }
    }

    #[test]
    fn gather_sum_matches_cpu_for_every_table_type() {
        let Some(be) = cuda("gather_sum") else { return };
        let cpu = CpuBackend::reference();
        let mut rng = Rng(0x5eed_0005);
        for dtype in WEIGHT_TYPES {
            let (rows, cols, table_rows) = (45, 64, 17);
            let (b1, b2) = (
                blob(&mut rng, dtype, table_rows, cols),
                blob(&mut rng, DType::F32, 9, cols),
            );
            let (c1, g1) = weight_pair(be, &b1, dtype, table_rows, cols);
            let (c2, g2) = weight_pair(be, &b2, DType::F32, 9, cols);
            let i1: Vec<u32> = (0..rows).map(|_| rng.below(table_rows) as u32).collect();
            let i2: Vec<u32> = (0..rows).map(|_| rng.below(9) as u32).collect();
            let want = cpu
                .download(
                    &cpu.gather_sum(&[(&c1, &i1), (&c2, &i2), (&c1, &i2)], rows)
                        .unwrap(),
                )
                .unwrap();
            let got = be
                .download(
                    &be.gather_sum(&[(&g1, &i1), (&g2, &i2), (&g1, &i2)], rows)
                        .unwrap(),
                )
                .unwrap();
            close(&format!("gather_sum {dtype}"), &got, &want, 1e-6);
            assert!(
                be.gather_sum(&[(&g1, &vec![table_rows as u32])], 1)
                    .is_err(),
                "out-of-range row accepted"
            );
        }
    }

    #[test]
    fn attention_matches_cpu_for_spans_gathers_and_the_f16_cache() {
        let Some(be) = cuda("attention") else { return };
        let f16_be = CudaBackend::with_options(CudaOptions {
            kv_f16: true,
            ..CudaOptions::default()
        })
        .unwrap();
        let cpu = CpuBackend::reference();
        let mut rng = Rng(0x5eed_0006);
        for (d, heads, keys, rows) in [
            (32, 4, 8, 8),
            (24, 3, 5, 11),
            (1024, 8, 256, 16),
            (256, 1, 40, 3),
            (64, 16, 20, 130),
        ] {
            let q = rng.vec(rows * d);
            // Keys rounded to f16 so the f16 cache holds exactly what the CPU sees.
            let round = |v: Vec<f32>| -> Vec<f32> {
                v.into_iter()
                    .map(|x| f16::from_f32(2.0 * x).to_f32())
                    .collect()
            };
            let (k, v) = (round(rng.vec(keys * d)), round(rng.vec(keys * d)));
            let spans: Vec<(u32, u32)> = (0..rows)
                .map(|_| {
                    let s = rng.below(keys);
                    (s as u32, (1 + rng.below(keys - s)) as u32)
                })
                .collect();
            let per_row = 1 + rng.below(keys);
            let index: Vec<u32> = (0..rows * per_row)
                .map(|_| rng.below(keys) as u32)
                .collect();
            for keymap in [
                KeyMap::Spans(&spans),
                KeyMap::Gather {
                    per_row,
                    stride: per_row,
                    index: &index,
                },
            ] {
                let (qc, kc, vc) = (
                    cpu.upload(&q, rows, d).unwrap(),
                    cpu.upload(&k, keys, d).unwrap(),
                    cpu.upload(&v, keys, d).unwrap(),
                );
                let want = cpu
                    .download(&cpu.attention(&qc, &kc, &vc, heads, keymap).unwrap())
                    .unwrap();
                for (label, b) in [("f32 keys", be), ("f16 cache", &f16_be)] {
                    let (kf, vf) = (
                        b.upload(&k, keys, d).unwrap(),
                        b.upload(&v, keys, d).unwrap(),
                    );
                    let (mut kg, mut vg) = (
                        b.kv_cache(keys + 3, d).unwrap(),
                        b.kv_cache(keys + 3, d).unwrap(),
                    );
                    b.write_rows(&mut kg, 0, &kf).unwrap();
                    b.write_rows(&mut vg, 0, &vf).unwrap();
                    assert_eq!(
                        b.download(&kg).unwrap()[..keys * d],
                        k[..],
                        "{label}: cache round trip"
                    );
                    let got = b
                        .download(
                            &b.attention(&b.upload(&q, rows, d).unwrap(), &kg, &vg, heads, keymap)
                                .unwrap(),
                        )
                        .unwrap();
                    close(
                        &format!("attention {label} d={d} heads={heads} keys={keys} {keymap:?}"),
                        &got,
                        &want,
                        1e-5,
                    );
                }
            }
        }
        // Bad key maps are errors, never device faults.
        let (q, k) = (
            be.upload(&[0.0; 8], 1, 8).unwrap(),
            be.upload(&[0.0; 16], 2, 8).unwrap(),
        );
        assert!(be
            .attention(&q, &k, &k, 2, KeyMap::Spans(&[(1, 2)]))
            .is_err());
        assert!(be
            .attention(
                &q,
                &k,
                &k,
                2,
                KeyMap::Gather {
                    per_row: 1,
                    stride: 1,
                    index: &vec![2]
                }
            )
            .is_err());
        assert!(be
            .attention(&q, &k, &k, 3, KeyMap::Spans(&[(0, 1)]))
            .is_err());
    }

    /// A random catalog of `n` items with `levels` codes in `[0, k)`.
    fn random_catalog(rng: &mut Rng, n: usize, levels: usize, k: usize) -> Catalog {
        let mut seen = std::collections::HashSet::new();
        let mut sids = Vec::new();
        while seen.len() < n {
            let sid: Vec<i64> = (0..levels).map(|_| rng.below(k) as i64).collect();
            if seen.insert(sid.clone()) {
                sids.extend(sid);
            }
        }
        Catalog::new((0..n as u64).map(|i| 1000 + i).collect(), sids, levels, k).unwrap()
    }

    #[test]
    fn constrained_top_b_matches_cpu_with_ties() {
        let Some(be) = cuda("select") else { return };
        let cpu = CpuBackend::reference();
        let mut rng = Rng(0x5eed_0007);
        for (n_items, levels, k, widths) in [
            (60, 3, 8, vec![4usize, 1, 16]),
            (3000, 3, 64, vec![128, 7]),
            (500, 2, 300, vec![64, 300, 2]),
        ] {
            let cat = random_catalog(&mut rng, n_items, levels, k);
            let trie = Trie::new(&cat);
            let (ic, ig) = (cpu.index(&trie).unwrap(), be.index(&trie).unwrap());
            // Per request, a few excluded items.
            let per_user: Vec<Vec<u32>> = widths
                .iter()
                .map(|_| {
                    trie.eligible_counts(
                        &(0..n_items / 10)
                            .map(|_| rng.below(n_items))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            let (cc, cg) = (
                cpu.counts(&per_user).unwrap(),
                be.counts(&per_user).unwrap(),
            );
            for level in 0..levels {
                // Beams at random nodes of this depth, some sharing scores (ties).
                let nodes_at_level: Vec<u32> = (0..n_items)
                    .map(|it| {
                        if level == 0 {
                            0
                        } else {
                            trie.path_node(it, level - 1)
                        }
                    })
                    .collect();
                let sessions: Vec<Vec<u32>> = (0..64)
                    .map(|_| {
                        (0..rng.below(4))
                            .map(|_| rng.below(n_items) as u32)
                            .collect()
                    })
                    .collect();
                let mut beams_per_group = Vec::new();
                for &w in &widths {
                    let nb = 1 + rng.below(w.min(40));
                    let beams: Vec<(f32, u32, usize)> = (0..nb)
                        .map(|_| {
                            let score = -(rng.below(4) as f32) * 0.5;
                            (
                                score,
                                nodes_at_level[rng.below(n_items)],
                                rng.below(sessions.len()),
                            )
                        })
                        .collect();
                    beams_per_group.push(beams);
                }
                let ins: Vec<Vec<BeamIn<'_>>> = beams_per_group
                    .iter()
                    .map(|bs| {
                        bs.iter()
                            .map(|&(score, node, s)| BeamIn {
                                score,
                                node,
                                session: &sessions[s],
                            })
                            .collect()
                    })
                    .collect();
                let mut row0 = 0;
                let groups: Vec<SelectGroup<'_>> = ins
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(u, (beams, &width))| {
                        let g = SelectGroup {
                            user: u,
                            row0,
                            width,
                            beams,
                        };
                        row0 += beams.len();
                        g
                    })
                    .collect();
                // Log-probs from a handful of values: many exact ties.
                let logp: Vec<f32> = (0..row0 * k).map(|_| -0.25 * rng.below(6) as f32).collect();
                let want = cpu
                    .select(
                        &cpu.upload(&logp, row0, k).unwrap(),
                        &ic,
                        &cc,
                        level,
                        &groups,
                    )
                    .unwrap();
                let got = be
                    .select(
                        &be.upload(&logp, row0, k).unwrap(),
                        &ig,
                        &cg,
                        level,
                        &groups,
                    )
                    .unwrap();
                assert_eq!(
                    got, want,
                    "select: {n_items} items, K={k}, level {level}, widths {widths:?}"
                );
            }
        }
    }

    fn cuda_model(name: &str, kv_f16: bool) -> Option<Model<CudaBackend>> {
        cuda("model")?;
        let be = CudaBackend::with_options(CudaOptions {
            kv_f16,
            ..CudaOptions::default()
        })
        .unwrap();
        Some(Model::new(be, Arc::new(ModelFile::open(&fixture(name)).unwrap())).unwrap())
    }

    /// Teacher-forced log-probs and router choices against the reference: MODEL_SPEC's
    /// 1e-4 with an f32 cache; 2e-3 with the f16 cache (f16 keeps 11 significant bits,
    /// a relative rounding of 4.9e-4 on every cached key and value).
    #[test]
    fn teacher_forced_matches_reference() {
        for (kv_f16, tol) in [(false, 1e-4), (true, 2e-3)] {
            for name in FIXTURES {
                let Some(m) = cuda_model(name, kv_f16) else {
                    return;
                };
                let g = load_golden(name);
                let tf = &g.json["teacher_forced"];
                let hist = m.file.catalog.resolve(&ids(&tf["history"])).unwrap();
                let targets = m.file.catalog.resolve(&ids(&tf["target_items"])).unwrap();
                let mut routes = RouteLog::new();
                let lp = m
                    .teacher_forced(&hist, &targets, Some(&mut routes))
                    .unwrap();
                let e = rel_err(&lp, &g.tensors["tf_logprobs"].1);
                assert!(
                    e < tol,
                    "{name} (f16 cache {kv_f16}): teacher-forced relative error {e:.3e}"
                );
                crate::golden::check_routes(name, &g, &routes);
            }
        }
    }

    /// Whole requests, one by one and batched, against the golden sessions.
    #[test]
    fn requests_match_reference() {
        // f16 cache: sessions compared where neighbours are 1e-2 apart, scores within 1e-2.
        for (kv_f16, gap, tol) in [(false, 1e-3, 1e-3), (true, 1e-2, 1e-2)] {
            for name in FIXTURES {
                let Some(m) = cuda_model(name, kv_f16) else {
                    return;
                };
                let trie = m.file_snapshot().unwrap();
                let g = load_golden(name);
                let reqs: Vec<(Request, &serde_json::Value)> = requests(&g);
                for (i, (req, want)) in reqs.iter().enumerate() {
                    let got =
                        onerec_engine::generate::recommend(&m, &trie, std::slice::from_ref(req))
                            .unwrap()
                            .remove(0);
                    check_response(
                        &format!("{name} request {i} (f16 cache {kv_f16})"),
                        &got,
                        want,
                        gap,
                        tol,
                    );
                }
                let batch: Vec<Request> = reqs.iter().map(|(r, _)| r.clone()).collect();
                let got = onerec_engine::generate::recommend(&m, &trie, &batch).unwrap();
                for (i, ((_, want), got)) in reqs.iter().zip(&got).enumerate() {
                    check_response(
                        &format!("{name} batched request {i} (f16 cache {kv_f16})"),
                        got,
                        want,
                        gap,
                        tol,
                    );
                }
            }
        }
    }

    /// `got` equals `want` (both engine responses) where the score gap to a neighbour
    /// exceeds `gap`; scores within `tol` everywhere.
    fn same_response(what: &str, got: &Response, want: &Response, gap: f32, tol: f32) {
        assert_eq!(
            got.final_scores.len(),
            want.final_scores.len(),
            "{what}: surviving beams"
        );
        assert_eq!(got.sessions.len(), want.sessions.len(), "{what}: sessions");
        let f = &want.final_scores;
        for (i, (g, w)) in got.sessions.iter().zip(&want.sessions).enumerate() {
            assert!(
                (g.score - w.score).abs() <= tol,
                "{what}: session {i} score {} vs {}",
                g.score,
                w.score
            );
            let close =
                (i > 0 && f[i - 1] - f[i] <= gap) || (i + 1 < f.len() && f[i] - f[i + 1] <= gap);
            if !close {
                assert_eq!(g.items, w.items, "{what}: session {i} items");
            }
        }
    }

    /// Stored f16, q8_0 and q4_0 weights (files from the quantize tool) through whole
    /// models: the device decodes them as the CPU reference does.
    #[test]
    fn quantized_models_match_cpu() {
        if cuda("quantized models").is_none() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        for name in FIXTURES {
            for target in [Target::F16, Target::Q8, Target::Q4] {
                let path = tmp.path().join(format!("{name}.{}", target.name()));
                let args = Args {
                    input: fixture(name),
                    output: Some(path.clone()),
                    dtype: target,
                    keep_f16: vec![],
                    dry_run: false,
                    quiet: true,
                };
                onerec_quantize::quantize(&args).unwrap();
                let file = Arc::new(ModelFile::open(&path).unwrap());
                let cpu = Model::new(CpuBackend::reference(), file.clone()).unwrap();
                let be = CudaBackend::with_options(CudaOptions {
                    kv_f16: false,
                    ..CudaOptions::default()
                })
                .unwrap();
                let gpu = Model::new(be, file.clone()).unwrap();
                let what = format!("{name} as {}", target.name());
                let g = load_golden(name);
                let tf = &g.json["teacher_forced"];
                let hist = file.catalog.resolve(&ids(&tf["history"])).unwrap();
                let targets = file.catalog.resolve(&ids(&tf["target_items"])).unwrap();
                let want = cpu.teacher_forced(&hist, &targets, None).unwrap();
                let got = gpu.teacher_forced(&hist, &targets, None).unwrap();
                let e = rel_err(&got, &want);
                assert!(
                    e < 1e-4,
                    "{what}: teacher-forced log-probs {e:.3e} from the CPU's"
                );
                let (cpu_cat, gpu_cat) =
                    (cpu.file_snapshot().unwrap(), gpu.file_snapshot().unwrap());
                for (i, (req, _)) in requests(&g).iter().enumerate() {
                    let want = onerec_engine::generate::recommend(
                        &cpu,
                        &cpu_cat,
                        std::slice::from_ref(req),
                    )
                    .unwrap()
                    .remove(0);
                    let got = onerec_engine::generate::recommend(
                        &gpu,
                        &gpu_cat,
                        std::slice::from_ref(req),
                    )
                    .unwrap()
                    .remove(0);
                    same_response(&format!("{what} request {i}"), &got, &want, 1e-3, 1e-3);
                }
            }
        }
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_tests_need_the_feature() {
    assert!(!require_cuda(), "ONEREC_REQUIRE_CUDA=1 but the tests were built without the `cuda` feature (cargo test --features cuda)");
    eprintln!("skipped: the CUDA tests are built with `cargo test --features cuda`");
}
