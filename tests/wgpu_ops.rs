//! Every wgpu kernel against the CPU reference on random inputs: every weight type,
//! ragged shapes, weights split across bindings, and outputs poisoned with NaN so that an
//! element a kernel forgets to write fails the comparison.

use crate::golden::rel_err;
use onerec_engine::backend::beams::layout;
use onerec_engine::backend::wgpu::{WgpuBackend, WgpuOptions};
use onerec_engine::backend::{Backend, BeamPlan, BeamStep, Ffn, KeyMap, Moe};
use onerec_engine::catalog::Catalog;
use onerec_engine::format::quant::encode;
use onerec_engine::tensor::{Blob, DType, TensorView, WeightView};
use onerec_engine::trie::Trie;
use onerec_engine::CpuBackend;
use std::sync::{Arc, OnceLock};

/// The decoded weights are the same f32 values on both sides and the kernels accumulate
/// in f32, so only the order of the sums differs: 1e-5 relative covers it for every type.
const TOL: f64 = 1e-5;

const TYPES: [DType; 5] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
];

fn open(opts: WgpuOptions) -> Option<WgpuBackend> {
    match WgpuBackend::with_options(opts) {
        Ok(b) => Some(b),
        Err(e) if std::env::var("ONEREC_REQUIRE_GPU").as_deref() == Ok("1") => {
            panic!("ONEREC_REQUIRE_GPU=1 but the wgpu backend is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("skipping a GPU test: {e}");
            None
        }
    }
}

/// One shared device for the tests (poisoned outputs).
pub fn gpu() -> Option<WgpuBackend> {
    static G: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    G.get_or_init(|| {
        open(WgpuOptions {
            poison: true,
            ..Default::default()
        })
    })
    .clone()
}

/// A device whose weights are split across bindings of at most 4 KiB.
fn gpu_split() -> Option<WgpuBackend> {
    static G: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    G.get_or_init(|| {
        open(WgpuOptions {
            poison: true,
            max_binding: Some(4096),
            ..Default::default()
        })
    })
    .clone()
}

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
struct Tensor {
    blob: Arc<Blob>,
    dtype: DType,
    shape: Vec<usize>,
}

impl Tensor {
    fn new(rng: &mut Rng, dtype: DType, shape: &[usize]) -> Self {
        let vals = rng.vec(shape.iter().product());
        let bytes = encode("test", dtype, shape, &vals).unwrap();
        Tensor {
            blob: Arc::new(Blob::Owned(bytes)),
            dtype,
            shape: shape.to_vec(),
        }
    }
    fn view(&self) -> TensorView<'_> {
        TensorView {
            name: "test",
            dtype: self.dtype,
            shape: &self.shape,
            bytes: self.blob.bytes(),
            blob: &self.blob,
        }
    }
    fn matrix(&self) -> WeightView<'_> {
        self.view().as_matrix()
    }
}

fn both<T>(f: impl Fn(&WgpuBackend) -> T) -> Vec<T> {
    [gpu(), gpu_split()]
        .into_iter()
        .flatten()
        .map(|g| f(&g))
        .collect()
}

fn cmp(what: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let e = rel_err(got, want);
    assert!(e < tol, "{what}: relative error {e} (tolerance {tol})");
}

#[test]
fn matmul_matches_cpu_for_every_type_and_shape() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(1);
    for dt in TYPES {
        let shapes: &[(usize, usize, usize)] = if dt.is_quantized() {
            &[(1, 32, 32), (5, 96, 64), (33, 40, 160), (70, 200, 96)]
        } else {
            &[(1, 32, 32), (3, 7, 13), (33, 40, 161), (70, 200, 96)]
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
            for g in [gpu(), gpu_split()].into_iter().flatten() {
                let gw = g.weight(&w.matrix()).unwrap();
                let got = g
                    .download(&g.matmul(&g.upload(&x, m, k).unwrap(), &gw).unwrap())
                    .unwrap();
                cmp(
                    &format!("matmul {dt} [{m},{k}]x[{n},{k}] parts {}", gw.parts.len()),
                    &got,
                    &want.data,
                    TOL,
                );
            }
        }
    }
    // The split device really splits.
    if let Some(g) = gpu_split() {
        let w = Tensor::new(&mut rng, DType::F32, &[200, 96]);
        assert!(g.weight(&w.matrix()).unwrap().parts.len() > 1);
    }
}

#[test]
fn rms_norm_matches_cpu() {
    let cpu = CpuBackend::new();
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
            both(|g| {
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
                cmp(&format!("rms_norm {dt} [{m},{d}]"), &got, &want.data, TOL);
            });
        }
    }
}

#[test]
fn gather_sum_matches_cpu() {
    let cpu = CpuBackend::new();
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
            both(|g| {
                let (gt, gp) = (
                    g.weight(&table.matrix()).unwrap(),
                    g.weight(&pos.matrix()).unwrap(),
                );
                let (g1, g2) = (g.ids(&i1).unwrap(), g.ids(&i2).unwrap());
                let got = g
                    .download(&g.gather_sum(&[(&gt, &g1), (&gp, &g2)], rows).unwrap())
                    .unwrap();
                cmp(
                    &format!("gather_sum {dt} rows {rows}"),
                    &got,
                    &want.data,
                    TOL,
                );
                let one = g
                    .download(&g.gather_sum(&[(&gt, &g1)], rows).unwrap())
                    .unwrap();
                // Indices past the table are an error named before any launch.
                let bad = g.ids(&[100]).unwrap();
                assert!(g.gather_sum(&[(&gt, &bad)], 1).is_err());
                let want1 = cpu.gather_sum(&[(&ct, &i1)], rows).unwrap();
                cmp(
                    &format!("gather_sum {dt} one table"),
                    &one,
                    &want1.data,
                    TOL,
                );
            });
        }
    }
}

#[test]
fn small_ops_match_cpu() {
    let mut rng = Rng::new(4);
    let Some(g) = gpu() else { return };
    let (m, d) = (13, 37);
    let (a, b) = (rng.vec(m * d), rng.vec(m * d));
    let mut ga = g.upload(&a, m, d).unwrap();
    assert_eq!(g.download(&ga).unwrap(), a, "upload/download round trip");
    g.add_assign(&mut ga, &g.upload(&b, m, d).unwrap()).unwrap();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(g.download(&ga).unwrap(), want, "add_assign");
    let mut z = g.zeros(40, d).unwrap();
    assert!(g.download(&z).unwrap().iter().all(|&v| v == 0.0), "zeros");
    g.write_rows(&mut z, 5, &g.upload(&a, m, d).unwrap())
        .unwrap();
    let got = g.download(&z).unwrap();
    assert_eq!(&got[5 * d..(5 + m) * d], &a[..]);
    assert!(got[..5 * d]
        .iter()
        .chain(&got[(5 + m) * d..])
        .all(|&v| v == 0.0));
    assert!(
        g.write_rows(&mut z, 30, &g.upload(&a, m, d).unwrap())
            .is_err(),
        "write past the end is an error"
    );

    let cpu = CpuBackend::new();
    for &(rows, k) in &[(1usize, 13usize), (7, 300), (3, 8192)] {
        let x: Vec<f32> = rng.vec(rows * k).iter().map(|v| v * 20.0).collect();
        let want = cpu.log_softmax(&cpu.upload(&x, rows, k).unwrap()).unwrap();
        let got = g
            .download(&g.log_softmax(&g.upload(&x, rows, k).unwrap()).unwrap())
            .unwrap();
        cmp(&format!("log_softmax [{rows},{k}]"), &got, &want.data, TOL);
    }
}

#[test]
fn attention_matches_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(5);
    let Some(g) = gpu() else { return };
    // Head sizes that are not a multiple of 4 take the kernels' one-value-at-a-time path.
    for &(heads, hd) in &[
        (4usize, 8usize),
        (3, 8),
        (2, 64),
        (1, 96),
        (8, 64),
        (3, 5),
        (2, 6),
    ] {
        let d = heads * hd;
        let (rows, keys) = (13, 150);
        let (q, k, v) = (rng.vec(rows * d), rng.vec(keys * d), rng.vec(keys * d));
        let spans: Vec<(u32, u32)> = (0..rows)
            .map(|_| {
                let s = rng.below(keys);
                (s as u32, (1 + rng.below(keys - s)) as u32)
            })
            .collect();
        let per_row = 1 + rng.below(70);
        // Index lists with a stride longer than the keys each row reads, as the decoder
        // passes its ancestries.
        let stride = per_row + rng.below(5);
        let index: Vec<u32> = (0..rows * stride).map(|_| rng.below(keys) as u32).collect();
        let gindex = g.ids(&index).unwrap();
        // Cross-attention: consecutive rows (one user's beams) share their keys, so the
        // kernels' shared-tile path runs, with tiles that straddle two users.
        let user_span: Vec<(u32, u32)> = (0..3)
            .map(|_| {
                let s = rng.below(keys);
                (s as u32, (1 + rng.below(keys - s)) as u32)
            })
            .collect();
        let shared: Vec<(u32, u32)> = (0..rows).map(|r| user_span[r / 5]).collect();
        for (km, gkm) in [
            (KeyMap::Spans(&spans), KeyMap::Spans(&spans)),
            (KeyMap::Spans(&shared), KeyMap::Spans(&shared)),
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
        ] {
            let c = |b: &CpuBackend, x: &[f32], r| b.upload(x, r, d).unwrap();
            let want = cpu
                .attention(
                    &c(&cpu, &q, rows),
                    &c(&cpu, &k, keys),
                    &c(&cpu, &v, keys),
                    heads,
                    km,
                )
                .unwrap();
            let u = |x: &[f32], r| g.upload(x, r, d).unwrap();
            let got = g
                .download(
                    &g.attention(&u(&q, rows), &u(&k, keys), &u(&v, keys), heads, gkm)
                        .unwrap(),
                )
                .unwrap();
            cmp(
                &format!("attention {heads}x{hd} {km:?}")
                    .chars()
                    .take(60)
                    .collect::<String>(),
                &got,
                &want.data,
                TOL,
            );
        }
    }
}

/// The KV cache in f16 (where the device has SHADER_F16; lavapipe does): rows written
/// through `write_rows` come back rounded to f16, and attention over the cache matches
/// the CPU on the same rounded keys and values.
#[test]
fn f16_kv_cache_matches_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(15);
    let Some(g) = gpu() else { return };
    let cache = g.kv_cache(4, 8).unwrap();
    if g.adapter_info().name.contains("llvmpipe") {
        assert!(
            cache.half,
            "lavapipe offers SHADER_F16: the KV cache should be f16"
        );
    }
    if !cache.half {
        eprintln!("no SHADER_F16 on this adapter: f16 cache not exercised");
        return;
    }
    let round = |x: Vec<f32>| -> Vec<f32> {
        x.into_iter()
            .map(|v| half::f16::from_f32(v).to_f32())
            .collect()
    };
    // Head sizes that are a multiple of 4 (4-value loads) and not (one at a time).
    for &(heads, hd) in &[(4usize, 16usize), (3, 5)] {
        let (rows, keys) = (7usize, 90usize);
        let d = heads * hd;
        let q = rng.vec(rows * d);
        let (k, v) = (round(rng.vec(keys * d)), round(rng.vec(keys * d)));
        // Written in two ragged pieces, at an odd row, so the element offset is odd too.
        let (mut kc, mut vc) = (
            g.kv_cache(keys + 3, d).unwrap(),
            g.kv_cache(keys + 3, d).unwrap(),
        );
        for (cache, x) in [(&mut kc, &k), (&mut vc, &v)] {
            let first = 37;
            g.write_rows(cache, 3, &g.upload(&x[..first * d], first, d).unwrap())
                .unwrap();
            g.write_rows(
                cache,
                3 + first,
                &g.upload(&x[first * d..], keys - first, d).unwrap(),
            )
            .unwrap();
        }
        let back = g.download(&kc).unwrap();
        assert_eq!(
            &back[..3 * d],
            &vec![0.0; 3 * d][..],
            "rows before the write"
        );
        assert_eq!(&back[3 * d..], &k[..], "f16 cache rows");
        let index: Vec<u32> = (0..rows * 11).map(|_| 3 + rng.below(keys) as u32).collect();
        let km = KeyMap::Gather {
            per_row: 11,
            stride: 11,
            index: &index,
        };
        let gindex = g.ids(&index).unwrap();
        let gkm = KeyMap::Gather {
            per_row: 11,
            stride: 11,
            index: &gindex,
        };
        let mut kk = vec![0.0; 3 * d];
        kk.extend_from_slice(&k);
        let mut vv = vec![0.0; 3 * d];
        vv.extend_from_slice(&v);
        let c = |x: &[f32], r| cpu.upload(x, r, d).unwrap();
        let want = cpu
            .attention(
                &c(&q, rows),
                &c(&kk, keys + 3),
                &c(&vv, keys + 3),
                heads,
                km,
            )
            .unwrap();
        let got = g
            .download(
                &g.attention(&g.upload(&q, rows, d).unwrap(), &kc, &vc, heads, gkm)
                    .unwrap(),
            )
            .unwrap();
        cmp("attention over an f16 cache", &got, &want.data, TOL);
    }
    let (heads, d, rows, keys) = (4usize, 64usize, 7usize, 90usize);
    let q = rng.vec(rows * d);
    let kk = rng.vec((keys + 3) * d);
    let kc = g.kv_cache(keys + 3, d).unwrap();
    let index: Vec<u32> = (0..rows * 11).map(|_| rng.below(keys) as u32).collect();
    let gindex = g.ids(&index).unwrap();
    let gkm = KeyMap::Gather {
        per_row: 11,
        stride: 11,
        index: &gindex,
    };
    // A plain f32 buffer is not a cache: mixing precisions is an error, not garbage.
    let plain = g.upload(&kk, keys + 3, d).unwrap();
    assert!(g
        .attention(&g.upload(&q, rows, d).unwrap(), &kc, &plain, heads, gkm)
        .is_err());
}

fn ffn_of<B: Backend>(b: &B, t: &[Tensor; 3], i: usize) -> Ffn<B::Weight> {
    let w = |t: &Tensor| b.weight(&t.view().slice3(i).unwrap()).unwrap();
    Ffn {
        gate: w(&t[0]),
        up: w(&t[1]),
        down: w(&t[2]),
    }
}

#[test]
fn ffn_and_moe_match_cpu() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(6);
    for dt in TYPES {
        for &(e, top_k, d, h, rows) in &[
            (1usize, 1usize, 32usize, 64usize, 3usize),
            (6, 2, 64, 32, 37),
            (8, 3, 32, 96, 130),
        ] {
            let t = [
                Tensor::new(&mut rng, dt, &[e, h, d]),
                Tensor::new(&mut rng, dt, &[e, h, d]),
                Tensor::new(&mut rng, dt, &[e, d, h]),
            ];
            let router = Tensor::new(&mut rng, DType::F32, &[e, d]);
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
            both(|g| {
                let gx = g.upload(&x, rows, d).unwrap();
                let got = g.download(&g.ffn(&gx, &ffn_of(g, &t, 0)).unwrap()).unwrap();
                cmp(&format!("ffn {dt}"), &got, &want_ffn.data, TOL);
                // Stacked experts (one binding, one launch) where they fit, else per expert.
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
                assert_eq!(routes, want_routes, "moe {dt} routes");
                cmp(
                    &format!(
                        "moe {dt} e{e} k{top_k} rows {rows} split {}",
                        g.max_binding()
                    ),
                    &got,
                    &want.data,
                    TOL,
                );
                // Experts made one by one (separate buffers) give the same answer.
                let gm1 = Moe {
                    router: g.weight(&router.matrix()).unwrap(),
                    experts: (0..e).map(|i| ffn_of(g, &t, i)).collect(),
                    top_k,
                };
                let got1 = g.download(&g.moe(&gx, &gm1, None).unwrap()).unwrap();
                cmp(
                    &format!("moe {dt} separate experts"),
                    &got1,
                    &want.data,
                    TOL,
                );
            });
        }
    }
}

/// A random catalog of `n` items with `levels` codes in `[0, k)` (unique SIDs).
fn catalog(rng: &mut Rng, n: usize, levels: usize, k: usize) -> Catalog {
    let mut seen = std::collections::HashSet::new();
    let mut sids = Vec::new();
    while seen.len() < n {
        // Skewed codes so that some prefixes have many children and some few.
        let sid: Vec<i64> = (0..levels)
            .map(|l| (rng.below(k) % (k >> l.min(2)).max(1)) as i64)
            .collect();
        if seen.insert(sid.clone()) {
            sids.extend(sid);
        }
    }
    Catalog::new((0..n as u64).map(|i| i * 7 + 3).collect(), sids, levels, k).unwrap()
}

/// Whole constrained searches on random log-probs: the device's beam steps (selection
/// and reordering) against the CPU reference, exactly, step by step. Skewed catalogs,
/// exclusions, in-session repeats that exhaust prefixes, equal scores everywhere (the
/// tie rules decide) and batches of requests of different widths.
#[test]
fn beam_search_matches_cpu_exactly() {
    let cpu = CpuBackend::new();
    let mut rng = Rng::new(7);
    let Some(g) = gpu() else { return };
    // (items, levels, codes, items per session, widths)
    let cases: &[(usize, usize, usize, usize, &[usize])] = &[
        (300, 3, 16, 3, &[8]),
        (2000, 3, 64, 4, &[40, 5, 130]),
        (500, 2, 40, 3, &[1, 64]),
        (30, 2, 8, 5, &[16, 3]),
    ];
    for &(n, levels, k, items, widths) in cases {
        for ties in [false, true] {
            let cat = catalog(&mut rng, n, levels, k);
            let trie = Trie::new(&cat);
            let users = widths.len();
            let counts: Vec<Vec<u32>> = (0..users)
                .map(|u| {
                    // The last request of a batch of three excludes every item.
                    let excl: Vec<usize> = if users == 3 && u == 2 {
                        (0..n).collect()
                    } else {
                        (0..rng.below(n / 3)).map(|_| rng.below(n)).collect()
                    };
                    trie.eligible_counts(&excl)
                })
                .collect();
            let alive: Vec<usize> = counts.iter().map(|c| usize::from(c[0] > 0)).collect();
            let plan = BeamPlan {
                widths: widths.to_vec(),
                first: layout(alive),
                cap: widths.iter().sum(),
                positions: items * (levels + 1),
                items,
                levels,
                codes: k,
            };
            let (ci, gi) = (cpu.index(&trie).unwrap(), g.index(&trie).unwrap());
            let (cc, gc) = (cpu.counts(&counts).unwrap(), g.counts(&counts).unwrap());
            let mut cb = cpu.beams_start(&plan).unwrap();
            let mut gb = g.beams_start(&plan).unwrap();
            let mut rows = plan.first.clone();
            let tn = plan.positions;
            for t in 0..tn - 1 {
                let level = t % (levels + 1);
                if level == levels {
                    continue;
                }
                let total: usize = rows.iter().map(|r| r.n).sum();
                let lp: Vec<f32> = (0..total * k)
                    .map(|_| {
                        if ties {
                            -0.25
                        } else {
                            (rng.f() * 8.0).round() / 2.0 - 5.0
                        }
                    })
                    .collect();
                let fanout = trie.max_fanout(level);
                let next = layout(rows.iter().zip(widths).map(|(r, &w)| w.min(r.n * fanout)));
                let step = BeamStep {
                    t,
                    level,
                    rows: &rows,
                    next: &next,
                    fanout,
                    trie: &trie,
                };
                let what = format!("n {n} L {levels} widths {widths:?} ties {ties} t {t}");
                cpu.beams_step(
                    &mut cb,
                    &cpu.upload(&lp, total.max(1), k).unwrap(),
                    &ci,
                    &cc,
                    &step,
                )
                .unwrap();
                g.beams_step(
                    &mut gb,
                    &g.upload(&lp, total.max(1), k).unwrap(),
                    &gi,
                    &gc,
                    &step,
                )
                .unwrap();
                rows = next;
                let want = cpu.beams_finish(&cb).unwrap();
                assert_eq!(g.beams_finish(&gb).unwrap(), want, "{what}: beams");
                // What the next position reads, on the live rows.
                let (wi, gin) = (cpu.beams_inputs(&cb), g.beams_inputs(&gb));
                let (gcodes, ganc) = (
                    g.read_ids(gin.codes).unwrap(),
                    g.read_ids(gin.ancestry).unwrap(),
                );
                for (r, f) in rows.iter().zip(&want) {
                    for row in r.row0..r.row0 + f.scores.len() {
                        assert_eq!(gcodes[row], wi.codes[row], "{what}: code of row {row}");
                        assert_eq!(
                            ganc[row * tn..row * tn + t + 2],
                            wi.ancestry[row * tn..row * tn + t + 2],
                            "{what}: ancestry of row {row}"
                        );
                    }
                }
            }
            let fin = cpu.beams_finish(&cb).unwrap();
            assert!(
                fin.iter().any(|f| !f.scores.is_empty()),
                "the search keeps beams"
            );
            if users == 3 {
                assert!(
                    fin[2].scores.is_empty(),
                    "no beam where every item is excluded"
                );
            }
            for (f, c) in fin.iter().zip(&counts) {
                for s in &f.sessions {
                    let mut u = s.clone();
                    u.sort_unstable();
                    u.dedup();
                    assert_eq!(u.len(), s.len(), "a session repeats an item");
                    assert!(s
                        .iter()
                        .all(|&it| c[trie.path_node(it as usize, levels - 1) as usize] > 0));
                }
            }
        }
    }
}

#[test]
fn device_errors_are_errors_not_crashes() {
    let Some(g) = gpu() else { return };
    // Far beyond any buffer the device can make: an error value, and the device still works.
    assert!(
        g.zeros(1 << 24, 1 << 16).is_err(),
        "a 4 TiB buffer is refused"
    );
    let x = g.upload(&[1.0, 2.0], 1, 2).unwrap();
    assert_eq!(g.download(&x).unwrap(), vec![1.0, 2.0]);
}
