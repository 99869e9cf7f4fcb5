//! The op suite: every kernel case written once for any `Backend`, compared with the
//! CPU reference (`CpuBackend::reference()`: scalar code, quantised weights used as
//! their decoded f32 values) on random shapes, and instantiated per backend below: the
//! CPU at every SIMD level this machine runs, wgpu (lavapipe in CI; outputs poisoned,
//! weights also split across small bindings) and CUDA (feature `cuda`, where a device
//! exists). A new kernel is one case here; a new backend is one instantiation.
//! Backend-specific checks (wgpu's f16 KV cache and beam state, CUDA's cuBLAS and
//! compilation) stay in `wgpu_ops.rs` / `cuda.rs`.

use crate::golden::rel_err;
use onerec_engine::backend::cpu::SimdLevel;
use onerec_engine::backend::{Backend, Ffn, KeyMap, Moe};
use onerec_engine::format::quant::encode;
use onerec_engine::tensor::{Blob, DType, TensorView, WeightView};
use onerec_engine::CpuBackend;
use std::sync::Arc;

/// Relative error allowed for products with weights of a type: the decoded weights are
/// the same f32 values everywhere and kernels accumulate in f32, so 1e-5 covers the
/// summation order; a backend that quantises activations (the CPU's integer q8 path)
/// says so with a looser bound for quantised weights.
pub type Tol = fn(DType) -> f64;

pub fn exact(_: DType) -> f64 {
    1e-5
}

/// The CPU's integer path rounds activations to q8 per block: about 0.5% relative.
pub fn int8_activations(dt: DType) -> f64 {
    if dt.is_quantized() {
        2e-2
    } else {
        1e-5
    }
}

pub const TYPES: [DType; 5] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
];

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// A tensor encoded in `dtype`, with the blob it lives in.
pub struct Tensor {
    blob: Arc<Blob>,
    dtype: DType,
    shape: Vec<usize>,
}

impl Tensor {
    pub fn new(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Self {
        let vals = rng.vec(shape.iter().product());
        let bytes = encode("test", dtype, shape, &vals).unwrap();
        Tensor {
            blob: Arc::new(Blob::Owned(bytes)),
            dtype,
            shape: shape.to_vec(),
        }
    }
    pub fn view(&self) -> TensorView<'_> {
        TensorView {
            name: "test",
            dtype: self.dtype,
            shape: &self.shape,
            bytes: self.blob.bytes(),
            blob: &self.blob,
        }
    }
    pub fn matrix(&self) -> WeightView<'_> {
        self.view().as_matrix()
    }
}

pub fn cmp(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(
        got.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let e = rel_err(got, want);
    assert!(e < tol, "{what}: relative error {e} (tolerance {tol})");
}

fn ffn_of<B: Backend>(b: &B, t: &[Tensor; 3], i: usize) -> Ffn<B::Weight> {
    let w = |t: &Tensor| b.weight(&t.view().slice3(i).unwrap()).unwrap();
    Ffn {
        gate: w(&t[0]),
        up: w(&t[1]),
        down: w(&t[2]),
    }
}

/// The cases; `name` labels failures with the backend instance.
pub mod cases {
    use super::*;

    pub fn matmul<B: Backend>(g: &B, name: &str, tol: Tol) {
        let cpu = CpuBackend::reference();
        let mut rng = Rng::new(1);
        for dt in TYPES {
            let shapes: &[(usize, usize, usize)] = if dt.is_quantized() {
                &[
                    (1, 32, 32),
                    (5, 96, 64),
                    (8, 33, 96),
                    (9, 40, 64),
                    (33, 40, 160),
                    (70, 200, 96),
                ]
            } else {
                &[
                    (1, 32, 32),
                    (3, 7, 13),
                    (33, 40, 161),
                    (70, 200, 96),
                    (2, 3, 1),
                ]
            };
            for &(m, n, k) in shapes {
                let w = Tensor::new(&mut rng, dt, &[n, k]);
                let x = rng.vec(m * k);
                let want = cpu
                    .matmul(
                        &cpu.upload(&x, m, k).unwrap(),
                        &cpu.weight(&w.matrix()).unwrap(),
                    )
                    .unwrap();
                let gw = g.weight(&w.matrix()).unwrap();
                let got = g
                    .download(&g.matmul(&g.upload(&x, m, k).unwrap(), &gw).unwrap())
                    .unwrap();
                cmp(
                    &format!("{name}: matmul {dt} [{m},{k}]x[{n},{k}]"),
                    &got,
                    &want.data,
                    tol(dt),
                );
            }
        }
        // Large enough to run threaded.
        let (m, n, k) = (130, 520, 512);
        let w = Tensor::new(&mut rng, DType::F32, &[n, k]);
        let x = rng.vec(m * k);
        let want = cpu
            .matmul(
                &cpu.upload(&x, m, k).unwrap(),
                &cpu.weight(&w.matrix()).unwrap(),
            )
            .unwrap();
        let got = g
            .download(
                &g.matmul(
                    &g.upload(&x, m, k).unwrap(),
                    &g.weight(&w.matrix()).unwrap(),
                )
                .unwrap(),
            )
            .unwrap();
        cmp(
            &format!("{name}: matmul f32 [{m},{k}]x[{n},{k}]"),
            &got,
            &want.data,
            tol(DType::F32),
        );
    }

    pub fn rms_norm<B: Backend>(g: &B, name: &str) {
        let cpu = CpuBackend::reference();
        let mut rng = Rng::new(2);
        for dt in [DType::F32, DType::F16, DType::BF16] {
            for &(m, d) in &[(1usize, 24usize), (17, 130), (3, 512)] {
                let w = Tensor::new(&mut rng, dt, &[d]);
                let x = rng.vec(m * d);
                let want = cpu
                    .rms_norm(
                        &cpu.upload(&x, m, d).unwrap(),
                        &cpu.weight(&w.matrix()).unwrap(),
                        1e-6,
                    )
                    .unwrap();
                let got = g
                    .download(
                        &g.rms_norm(
                            &g.upload(&x, m, d).unwrap(),
                            &g.weight(&w.matrix()).unwrap(),
                            1e-6,
                        )
                        .unwrap(),
                    )
                    .unwrap();
                cmp(
                    &format!("{name}: rms_norm {dt} [{m},{d}]"),
                    &got,
                    &want.data,
                    exact(dt),
                );
                // The fused residual add: the sum stays in x, the norm of it comes out.
                let r = rng.vec(m * d);
                let mut cx = cpu.upload(&x, m, d).unwrap();
                let cw = cpu.weight(&w.matrix()).unwrap();
                cpu.add_assign(&mut cx, &cpu.upload(&r, m, d).unwrap())
                    .unwrap();
                let want = cpu.rms_norm(&cx, &cw, 1e-6).unwrap();
                let mut gx = g.upload(&x, m, d).unwrap();
                let gy = g
                    .add_rms_norm(
                        &mut gx,
                        &g.upload(&r, m, d).unwrap(),
                        &g.weight(&w.matrix()).unwrap(),
                        1e-6,
                    )
                    .unwrap();
                let what = format!("{name}: add_rms_norm {dt} [{m},{d}]");
                cmp(&what, &g.download(&gy).unwrap(), &want.data, exact(dt));
                assert_eq!(g.download(&gx).unwrap(), cx.data, "{what}: the sum");
                let short = g.upload(&r[..d], 1, d).unwrap();
                assert!(
                    m == 1
                        || g.add_rms_norm(&mut gx, &short, &g.weight(&w.matrix()).unwrap(), 1e-6)
                            .is_err(),
                    "{what}: shapes that differ are an error"
                );
            }
        }
    }

    pub fn gather_sum<B: Backend>(g: &B, name: &str) {
        let cpu = CpuBackend::reference();
        let mut rng = Rng::new(3);
        for dt in TYPES {
            let d = 64;
            let table = Tensor::new(&mut rng, dt, &[100, d]);
            let pos = Tensor::new(&mut rng, DType::F32, &[9, d]);
            for rows in [1usize, 7, 50] {
                let i1: Vec<u32> = (0..rows).map(|_| rng.below(100) as u32).collect();
                let i2: Vec<u32> = (0..rows).map(|_| rng.below(9) as u32).collect();
                let (ct, cp) = (
                    cpu.weight(&table.matrix()).unwrap(),
                    cpu.weight(&pos.matrix()).unwrap(),
                );
                let want = cpu.gather_sum(&[(&ct, &i1), (&cp, &i2)], rows).unwrap();
                let (gt, gp) = (
                    g.weight(&table.matrix()).unwrap(),
                    g.weight(&pos.matrix()).unwrap(),
                );
                let (g1, g2) = (g.ids(&i1).unwrap(), g.ids(&i2).unwrap());
                let got = g
                    .download(&g.gather_sum(&[(&gt, &g1), (&gp, &g2)], rows).unwrap())
                    .unwrap();
                cmp(
                    &format!("{name}: gather_sum {dt} rows {rows}"),
                    &got,
                    &want.data,
                    exact(dt),
                );
                let one = g
                    .download(&g.gather_sum(&[(&gt, &g1)], rows).unwrap())
                    .unwrap();
                // Indices past the table are an error named before any launch.
                let bad = g.ids(&[100]).unwrap();
                assert!(
                    g.gather_sum(&[(&gt, &bad)], 1).is_err(),
                    "{name}: bad index"
                );
                let want1 = cpu.gather_sum(&[(&ct, &i1)], rows).unwrap();
                cmp(
                    &format!("{name}: gather_sum {dt} one table"),
                    &one,
                    &want1.data,
                    exact(dt),
                );
            }
        }
    }

    pub fn small_ops<B: Backend>(g: &B, name: &str) {
        let mut rng = Rng::new(4);
        let (m, d) = (13, 37);
        let (a, b) = (rng.vec(m * d), rng.vec(m * d));
        let mut ga = g.upload(&a, m, d).unwrap();
        assert_eq!(
            g.download(&ga).unwrap(),
            a,
            "{name}: upload/download round trip"
        );
        g.add_assign(&mut ga, &g.upload(&b, m, d).unwrap()).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert_eq!(g.download(&ga).unwrap(), want, "{name}: add_assign");
        let mut z = g.zeros(40, d).unwrap();
        assert!(
            g.download(&z).unwrap().iter().all(|&v| v == 0.0),
            "{name}: zeros"
        );
        g.write_rows(&mut z, 5, &g.upload(&a, m, d).unwrap())
            .unwrap();
        let got = g.download(&z).unwrap();
        assert_eq!(&got[5 * d..(5 + m) * d], &a[..], "{name}: write_rows");
        assert!(got[..5 * d]
            .iter()
            .chain(&got[(5 + m) * d..])
            .all(|&v| v == 0.0));
        assert!(
            g.write_rows(&mut z, 30, &g.upload(&a, m, d).unwrap())
                .is_err(),
            "{name}: write past the end is an error"
        );
        let cpu = CpuBackend::reference();
        for &(rows, k) in &[(1usize, 13usize), (7, 300), (3, 8192)] {
            let x: Vec<f32> = rng.vec(rows * k).iter().map(|v| v * 20.0).collect();
            let want = cpu.log_softmax(&cpu.upload(&x, rows, k).unwrap()).unwrap();
            let got = g
                .download(&g.log_softmax(&g.upload(&x, rows, k).unwrap()).unwrap())
                .unwrap();
            cmp(
                &format!("{name}: log_softmax [{rows},{k}]"),
                &got,
                &want.data,
                1e-5,
            );
        }
    }

    /// `project_kv` and `project_qkv` against the reference's products: the weights
    /// loaded together (K and V, or Q, K and V: one launch where the backend can) and
    /// apart, caches as the backend makes them (f16 on wgpu where the device has it), rows
    /// written from an offset and the others left as they were; widths that are not whole
    /// 4-value groups take the separate-product path.
    pub fn project_kv<B: Backend>(g: &B, name: &str, tol: Tol) {
        let cpu = CpuBackend::reference();
        let mut rng = Rng::new(9);
        for dt in TYPES {
            // (rows, n, k); quantised rows hold whole blocks of 32. [16, 32] triples fit
            // together in the split device's 4 KiB bindings.
            let shapes: &[(usize, usize, usize)] =
                if matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
                    &[(37, 64, 32), (70, 36, 64), (9, 16, 32), (5, 30, 12)]
                } else {
                    &[(37, 64, 32), (70, 36, 64), (9, 16, 32)]
                };
            for &(rows, n, k) in shapes {
                let [tq, tk, tv] = [0; 3].map(|_| Tensor::new(&mut rng, dt, &[n, k]));
                let x = rng.vec(rows * k);
                let cx = cpu.upload(&x, rows, k).unwrap();
                let [want_q, want_k, want_v] = [&tq, &tk, &tv].map(|t| {
                    let y = cpu.matmul(&cx, &cpu.weight(&t.matrix()).unwrap());
                    cpu.download(&y.unwrap()).unwrap()
                });
                let (row0, cap) = (7, rows + 10);
                let mut kv = g.weights_together(&[&tk.matrix(), &tv.matrix()]).unwrap();
                kv.insert(0, g.weight(&tq.matrix()).unwrap());
                let qkv = g
                    .weights_together(&[&tq.matrix(), &tk.matrix(), &tv.matrix()])
                    .unwrap();
                let apart: Vec<_> = [&tq, &tk, &tv]
                    .iter()
                    .map(|t| g.weight(&t.matrix()).unwrap())
                    .collect();
                for (how, w) in [
                    ("k, v together", &kv),
                    ("q, k, v together", &qkv),
                    ("apart", &apart),
                ] {
                    for with_q in [false, true] {
                        let op = if with_q { "project_qkv" } else { "project_kv" };
                        let what = format!("{name}: {op} {dt} [{rows}, {k}] x [{n}, {k}] {how}");
                        let (init_k, init_v) = (rng.vec(cap * n), rng.vec(cap * n));
                        let mut kc = g.kv_cache(cap, n).unwrap();
                        let mut vc = g.kv_cache(cap, n).unwrap();
                        g.write_rows(&mut kc, 0, &g.upload(&init_k, cap, n).unwrap())
                            .unwrap();
                        g.write_rows(&mut vc, 0, &g.upload(&init_v, cap, n).unwrap())
                            .unwrap();
                        let (before_k, before_v) =
                            (g.download(&kc).unwrap(), g.download(&vc).unwrap());
                        // A cache in reduced precision rounds what it holds (f16: 2^-11).
                        let t = if before_k != init_k {
                            tol(dt).max(1e-3)
                        } else {
                            tol(dt)
                        };
                        let gx = g.upload(&x, rows, k).unwrap();
                        let run = |kc: &mut B::Buf, vc: &mut B::Buf, row0: usize| {
                            if with_q {
                                g.project_qkv(&gx, &w[0], &w[1], &w[2], kc, vc, row0)
                                    .map(Some)
                            } else {
                                g.project_kv(&gx, &w[1], &w[2], kc, vc, row0).map(|_| None)
                            }
                        };
                        if let Some(q) = run(&mut kc, &mut vc, row0).unwrap() {
                            assert_eq!(g.shape(&q), (rows, n), "{what}: query shape");
                            cmp(
                                &format!("{what} queries"),
                                &g.download(&q).unwrap(),
                                &want_q,
                                tol(dt),
                            );
                        }
                        for (c, before, want, which) in [
                            (&kc, &before_k, &want_k, "keys"),
                            (&vc, &before_v, &want_v, "values"),
                        ] {
                            let got = g.download(c).unwrap();
                            let (a, b) = (row0 * n, (row0 + rows) * n);
                            cmp(&format!("{what} {which}"), &got[a..b], want, t);
                            assert!(
                                got[..a] == before[..a] && got[b..] == before[b..],
                                "{what} {which}: rows outside the written ones changed"
                            );
                        }
                        assert!(
                            run(&mut kc, &mut vc, cap - rows + 1).is_err(),
                            "{what}: rows past the cache's end are an error"
                        );
                    }
                }
            }
        }
    }

    pub fn attention<B: Backend>(g: &B, name: &str) {
        let cpu = CpuBackend::reference();
        let mut rng = Rng::new(5);
        // Head sizes that are not a multiple of the vector width take the tail paths.
        for &(heads, hd) in &[
            (4usize, 8usize),
            (3, 8),
            (3, 12),
            (2, 64),
            (1, 96),
            (8, 64),
            (3, 5),
            (2, 6),
            (1, 130),
        ] {
            let d = heads * hd;
            let (rows, keys) = (40, 150);
            let (q, k, v) = (rng.vec(rows * d), rng.vec(keys * d), rng.vec(keys * d));
            let spans: Vec<(u32, u32)> = (0..rows)
                .map(|_| {
                    let s = rng.below(keys);
                    (s as u32, (1 + rng.below(keys - s)) as u32)
                })
                .collect();
            // Short lists (at most 32 keys, the decoder's self-attention: one-pass kernels)
            // and long ones.
            let per_row = 1 + rng.below(32);
            let per_row_long = 33 + rng.below(40);
            // Index lists with a stride longer than the keys each row reads, as the
            // decoder passes its ancestries.
            let stride = per_row_long + rng.below(5);
            let index: Vec<u32> = (0..rows * stride).map(|_| rng.below(keys) as u32).collect();
            let gindex = g.ids(&index).unwrap();
            let short_spans: Vec<(u32, u32)> = (0..rows)
                .map(|_| {
                    let s = rng.below(keys - 32);
                    (s as u32, (1 + rng.below(32)) as u32)
                })
                .collect();
            // Cross-attention: consecutive rows (one user's beams) share their keys, in
            // groups longer and shorter than the kernels' blocks, straddling tiles.
            let user_span: Vec<(u32, u32)> = (0..3)
                .map(|_| {
                    let s = rng.below(keys);
                    (s as u32, (1 + rng.below(keys - s)) as u32)
                })
                .collect();
            let shared: Vec<(u32, u32)> = (0..rows)
                .map(|r| {
                    user_span[if r < 5 {
                        0
                    } else if r < 27 {
                        1
                    } else {
                        2
                    }]
                })
                .collect();
            for (km, gkm) in [
                (KeyMap::Spans(&spans), KeyMap::Spans(&spans)),
                (KeyMap::Spans(&shared), KeyMap::Spans(&shared)),
                (KeyMap::Spans(&short_spans), KeyMap::Spans(&short_spans)),
                (
                    KeyMap::Gather {
                        per_row,
                        stride,
                        index: &index,
                    },
                    KeyMap::Gather {
                        per_row,
                        stride,
                        index: &gindex,
                    },
                ),
                (
                    KeyMap::Gather {
                        per_row: per_row_long,
                        stride,
                        index: &index,
                    },
                    KeyMap::Gather {
                        per_row: per_row_long,
                        stride,
                        index: &gindex,
                    },
                ),
            ] {
                let c = |x: &[f32], r| cpu.upload(x, r, d).unwrap();
                let want = cpu
                    .attention(&c(&q, rows), &c(&k, keys), &c(&v, keys), heads, km)
                    .unwrap();
                let u = |x: &[f32], r| g.upload(x, r, d).unwrap();
                let got = g
                    .download(
                        &g.attention(&u(&q, rows), &u(&k, keys), &u(&v, keys), heads, gkm)
                            .unwrap(),
                    )
                    .unwrap();
                let what = format!("{name}: attention {heads}x{hd} {km:?}");
                cmp(
                    &what.chars().take(80).collect::<String>(),
                    &got,
                    &want.data,
                    1e-5,
                );
            }
        }
    }

    pub fn ffn_and_moe<B: Backend>(g: &B, name: &str, tol: Tol) {
        let cpu = CpuBackend::reference();
        let mut rng = Rng::new(6);
        for dt in TYPES {
            // Widths that are not multiples of 4 (float types only: quantised rows hold
            // whole blocks of 32) take the kernels' scalar paths.
            let odd: &[(usize, usize, usize, usize, usize)] =
                if matches!(dt, DType::F32 | DType::F16 | DType::BF16) {
                    &[(3, 2, 30, 18, 11)]
                } else {
                    &[]
                };
            for &(e, top_k, d, h, rows) in [
                (1usize, 1usize, 32usize, 64usize, 3usize),
                (6, 2, 64, 32, 37),
                (8, 3, 32, 96, 130),
            ]
            .iter()
            .chain(odd)
            {
                let t = [
                    Tensor::new(&mut rng, dt, &[e, h, d]),
                    Tensor::new(&mut rng, dt, &[e, h, d]),
                    Tensor::new(&mut rng, dt, &[e, d, h]),
                ];
                // The router in the case's float type (an f16 file keeps it f16; wgpu's
                // `route` decodes it itself), f32 beside quantised experts as q8/q4 files
                // keep it (an expert choice flips with the logits, and the CPU's int8 path
                // rounds the activations).
                let router_dt = if matches!(dt, DType::F16 | DType::BF16) {
                    dt
                } else {
                    DType::F32
                };
                let router = Tensor::new(&mut rng, router_dt, &[e, d]);
                let x = rng.vec(rows * d);
                let cx = cpu.upload(&x, rows, d).unwrap();
                let want_ffn = cpu.ffn(&cx, &ffn_of(&cpu, &t, 0)).unwrap();
                let cm = Moe {
                    router: cpu.weight(&router.matrix()).unwrap(),
                    experts: (0..e).map(|i| ffn_of(&cpu, &t, i)).collect(),
                    top_k,
                };
                let mut want_routes = Vec::new();
                let want = cpu.moe(&cx, &cm, Some(&mut want_routes)).unwrap();
                let gx = g.upload(&x, rows, d).unwrap();
                let got = g.download(&g.ffn(&gx, &ffn_of(g, &t, 0)).unwrap()).unwrap();
                cmp(&format!("{name}: ffn {dt}"), &got, &want_ffn.data, tol(dt));
                // Stacked experts (one binding, one launch where a backend can).
                let stack = |i: usize| g.weight_stack(&t[i].view()).unwrap();
                let (gs, us, ds) = (stack(0), stack(1), stack(2));
                let experts = gs
                    .into_iter()
                    .zip(us)
                    .zip(ds)
                    .map(|((gate, up), down)| Ffn { gate, up, down })
                    .collect();
                let gm = Moe {
                    router: g.weight(&router.matrix()).unwrap(),
                    experts,
                    top_k,
                };
                let mut routes = Vec::new();
                let got = g
                    .download(&g.moe(&gx, &gm, Some(&mut routes)).unwrap())
                    .unwrap();
                assert_eq!(routes, want_routes, "{name}: moe {dt} routes");
                cmp(
                    &format!("{name}: moe {dt} e{e} k{top_k} rows {rows}"),
                    &got,
                    &want.data,
                    tol(dt),
                );
                // Gate and up stacked together (fused with the SwiGLU where a backend can).
                let mut gu = g
                    .weight_stacks(&[&t[0].view(), &t[1].view()])
                    .unwrap()
                    .into_iter();
                let (gs, us) = (gu.next().unwrap(), gu.next().unwrap());
                assert!(gu.next().is_none(), "{name}: one stack per tensor");
                let gm2 = Moe {
                    router: g.weight(&router.matrix()).unwrap(),
                    experts: gs
                        .into_iter()
                        .zip(us)
                        .zip(stack(2))
                        .map(|((gate, up), down)| Ffn { gate, up, down })
                        .collect(),
                    top_k,
                };
                let got2 = g.download(&g.moe(&gx, &gm2, None).unwrap()).unwrap();
                cmp(
                    &format!("{name}: moe {dt} gate and up stacked together"),
                    &got2,
                    &want.data,
                    tol(dt),
                );
                // Experts made one by one (separate buffers) give the same answer.
                let gm1 = Moe {
                    router: g.weight(&router.matrix()).unwrap(),
                    experts: (0..e).map(|i| ffn_of(g, &t, i)).collect(),
                    top_k,
                };
                let got1 = g.download(&g.moe(&gx, &gm1, None).unwrap()).unwrap();
                cmp(
                    &format!("{name}: moe {dt} separate experts"),
                    &got1,
                    &want.data,
                    tol(dt),
                );
                // The MoE output added to a residual and normed (the experts' sum folded
                // into the norm's pass where a backend can): the residual written back, the
                // normed rows returned, the routes logged.
                let (resid, norm_w) = (rng.vec(rows * d), Tensor::new(&mut rng, dt, &[1, d]));
                let mut want_x = cpu.upload(&resid, rows, d).unwrap();
                let want_n = cpu
                    .add_rms_norm(
                        &mut want_x,
                        &want,
                        &cpu.weight(&norm_w.matrix()).unwrap(),
                        1e-6,
                    )
                    .unwrap();
                let mut gres = g.upload(&resid, rows, d).unwrap();
                let mut routes2 = Vec::new();
                let gw = g.weight(&norm_w.matrix()).unwrap();
                let got_n = g
                    .moe_add_rms_norm(&mut gres, &gx, &gm2, Some(&mut routes2), &gw, 1e-6)
                    .unwrap();
                let what = format!("{name}: moe_add_rms_norm {dt} e{e} k{top_k} rows {rows}");
                assert_eq!(routes2, want_routes, "{what}: routes");
                cmp(
                    &format!("{what} residual"),
                    &g.download(&gres).unwrap(),
                    &want_x.data,
                    tol(dt),
                );
                cmp(
                    &format!("{what} normed"),
                    &g.download(&got_n).unwrap(),
                    &want_n.data,
                    tol(dt),
                );
                let short = g.upload(&resid[..d], 1, d).unwrap();
                assert!(
                    g.moe_add_rms_norm(
                        &mut g.upload(&resid, rows, d).unwrap(),
                        &short,
                        &gm2,
                        None,
                        &gw,
                        1e-6
                    )
                    .is_err()
                        || rows == 1,
                    "{what}: a residual of other rows than the input is an error"
                );
            }
        }
    }
}

/// One `#[test]` per case for a list of `(label, backend, tolerance)` instances.
macro_rules! suite {
    ($m:ident, $instances:expr) => {
        mod $m {
            use super::*;
            #[test]
            fn matmul() {
                for (name, b, tol) in $instances {
                    cases::matmul(&b, &name, tol);
                }
            }
            #[test]
            fn rms_norm() {
                for (name, b, _) in $instances {
                    cases::rms_norm(&b, &name);
                }
            }
            #[test]
            fn gather_sum() {
                for (name, b, _) in $instances {
                    cases::gather_sum(&b, &name);
                }
            }
            #[test]
            fn small_ops() {
                for (name, b, _) in $instances {
                    cases::small_ops(&b, &name);
                }
            }
            #[test]
            fn project_kv() {
                for (name, b, tol) in $instances {
                    cases::project_kv(&b, &name, tol);
                }
            }
            #[test]
            fn attention() {
                for (name, b, _) in $instances {
                    cases::attention(&b, &name);
                }
            }
            #[test]
            fn ffn_and_moe() {
                for (name, b, tol) in $instances {
                    cases::ffn_and_moe(&b, &name, tol);
                }
            }
        }
    };
}

/// The CPU at every SIMD level this machine runs, with and without the integer q8 path;
/// the reference itself is the scalar level without it.
fn cpu_levels() -> Vec<(String, CpuBackend, Tol)> {
    let mut v: Vec<(String, CpuBackend, Tol)> = SimdLevel::available()
        .into_iter()
        .map(|l| {
            (
                format!("cpu {}", l.name()),
                CpuBackend::with_simd(l),
                exact as Tol,
            )
        })
        .collect();
    for l in SimdLevel::available() {
        v.push((
            format!("cpu {} int8", l.name()),
            CpuBackend::with_simd(l).with_int8(true),
            int8_activations as Tol,
        ));
    }
    v
}

/// The shared poisoned device and one that splits weights across 4 KiB bindings.
fn wgpu_devices() -> Vec<(String, onerec_engine::WgpuBackend, Tol)> {
    [crate::wgpu_ops::gpu(), crate::wgpu_ops::gpu_split()]
        .into_iter()
        .flatten()
        .map(|g| {
            (
                format!("wgpu (max binding {})", g.max_binding()),
                g,
                exact as Tol,
            )
        })
        .collect()
}

suite!(cpu, cpu_levels());
suite!(wgpu, wgpu_devices());

/// With and without cuBLAS for f32 products; f32 KV cache.
#[cfg(feature = "cuda")]
fn cuda_devices() -> Vec<(String, onerec_engine::backend::cuda::CudaBackend, Tol)> {
    use onerec_engine::backend::cuda::{CudaBackend, CudaOptions};
    [true, false]
        .into_iter()
        .filter_map(|cublas| {
            let opts = CudaOptions {
                cublas,
                kv_f16: false,
                ..CudaOptions::default()
            };
            match CudaBackend::with_options(opts) {
                Ok(b) => Some((format!("cuda cublas={cublas}"), b, exact as Tol)),
                Err(e) if std::env::var("ONEREC_REQUIRE_CUDA").as_deref() == Ok("1") => {
                    panic!("ONEREC_REQUIRE_CUDA=1 but no CUDA backend: {e}")
                }
                Err(e) => {
                    eprintln!("op suite: CUDA skipped ({e})");
                    None
                }
            }
        })
        .collect()
}

#[cfg(feature = "cuda")]
suite!(cuda, cuda_devices());

/// Every level this CPU runs is exercised (and the best one is the default).
#[test]
fn cpu_runs_its_best_simd_level_by_default() {
    let levels = SimdLevel::available();
    assert_eq!(levels[0].name(), "scalar");
    if std::env::var_os("ONEREC_CPU_SIMD").is_none() {
        assert_eq!(CpuBackend::new().simd(), *levels.last().unwrap());
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
    {
        assert!(
            levels.iter().any(|l| l.name() == "avx2"),
            "AVX2 CPU without the avx2 level"
        );
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512cd")
            && is_x86_feature_detected!("avx512dq")
            && is_x86_feature_detected!("avx512vl")
        {
            assert!(
                levels.iter().any(|l| l.name() == "avx512"),
                "AVX-512 CPU without the avx512 level"
            );
        }
    }
}
