//! The wgpu devices of the op suite (`ops.rs`: every kernel against the CPU reference,
//! outputs poisoned with NaN so that an element a kernel forgets to write fails, weights
//! also split across small bindings), and the wgpu-only checks: the f16 KV cache, the
//! device-resident beam state, device errors.

use crate::ops::{cmp, Rng, Tensor};
use onerec_engine::backend::beams::layout;
use onerec_engine::backend::wgpu::{WgpuBackend, WgpuOptions};
use onerec_engine::backend::{Backend, BeamPlan, BeamStep, KeyMap};
use onerec_engine::catalog::Catalog;
use onerec_engine::tensor::DType;
use onerec_engine::trie::Trie;
use onerec_engine::CpuBackend;
use std::sync::OnceLock;

/// The decoded weights are the same f32 values on both sides and the kernels accumulate
/// in f32, so only the order of the sums differs: 1e-5 relative covers it for every type.
const TOL: f64 = 1e-5;

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

/// Weights split across bindings really are split (the op suite runs this device).
#[test]
fn the_split_device_splits() {
    if let Some(g) = gpu_split() {
        let w = Tensor::new(&mut Rng::new(1), DType::F32, &[200, 96]);
        assert!(g.weight(&w.matrix()).unwrap().parts.len() > 1);
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

/// A device whose weights are split across bindings of at most 4 KiB, and whose KV
/// caches are f32 (as on a device without SHADER_F16).
pub fn gpu_split() -> Option<WgpuBackend> {
    static G: OnceLock<Option<WgpuBackend>> = OnceLock::new();
    G.get_or_init(|| {
        open(WgpuOptions {
            poison: true,
            max_binding: Some(4096),
            kv_f32: true,
            ..Default::default()
        })
    })
    .clone()
}

/// The KV cache in f16 (where the device has SHADER_F16; lavapipe does): rows written
/// through `write_rows` come back rounded to f16, and attention over the cache matches
/// the CPU on the same rounded keys and values.
#[test]
fn f16_kv_cache_matches_cpu() {
    let cpu = CpuBackend::reference();
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
    // Raw f32 rows are rounded to nearest, ties to even, as `half` does, by both store
    // kernels: 4 values at a time (aligned rows of a width that is a multiple of 4) and
    // one at a time (a width of 5).
    for (rows, d, row0) in [(6usize, 8usize, 1usize), (6, 5, 1)] {
        let mut raw = rng.vec(rows * d);
        // Halfway between two f16 values: ties go to the even one.
        raw[0] = 1.0 + 2f32.powi(-11);
        raw[1] = 1.0 + 3.0 * 2f32.powi(-11);
        let mut c = g.kv_cache(rows + row0, d).unwrap();
        g.write_rows(&mut c, row0, &g.upload(&raw, rows, d).unwrap())
            .unwrap();
        let back = g.download(&c).unwrap();
        assert_eq!(
            &back[row0 * d..],
            &round(raw)[..],
            "f16 rounding, width {d}"
        );
    }
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
    let cpu = CpuBackend::reference();
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

/// Kernel timestamps (`WgpuOptions::timestamps`): every launch is counted under its
/// kernel with a positive time, totals reset, and results are unchanged.
#[test]
fn kernel_timestamps_count_every_launch() {
    let Some(plain) = gpu() else { return };
    let opts = WgpuOptions {
        timestamps: true,
        ..WgpuOptions::default()
    };
    let g = match WgpuBackend::with_options(opts) {
        Ok(g) => g,
        // lavapipe has the features; another adapter may not, and says so.
        Err(e) if !plain.adapter_info().name.contains("llvmpipe") => {
            eprintln!("no kernel timestamps here: {e}");
            return;
        }
        Err(e) => panic!("lavapipe offers timestamps inside passes: {e}"),
    };
    let mut rng = Rng::new(21);
    let w = Tensor::new(&mut rng, DType::F32, &[48, 64]);
    let x = rng.vec(5 * 64);
    let run = |b: &WgpuBackend| {
        let gx = b.upload(&x, 5, 64).unwrap();
        let gw = b.weight(&w.matrix()).unwrap();
        let mut y = b.matmul(&gx, &gw).unwrap();
        b.add_assign(&mut y, &b.matmul(&gx, &gw).unwrap()).unwrap();
        b.download(&y).unwrap()
    };
    assert_eq!(run(&g), run(&plain), "timestamps change no result");
    let t = g.kernel_times();
    let mm = t
        .iter()
        .find(|k| k.0.starts_with("matmul.wgsl"))
        .unwrap_or_else(|| panic!("no matmul among {t:?}"));
    assert_eq!(mm.1, 2, "two matmul launches: {t:?}");
    assert!(mm.2 > 0.0 && mm.2 < 10.0, "matmul time {}", mm.2);
    assert!(
        t.iter().any(|k| k.0.starts_with("elementwise.wgsl")),
        "{t:?}"
    );
    g.reset_kernel_times();
    assert!(g.kernel_times().is_empty());
    assert!(plain.kernel_times().is_empty(), "off unless asked for");
    // More launches than one query set holds in one submission: none is lost.
    let mut a = g.upload(&[1.0; 4], 1, 4).unwrap();
    let one = g.upload(&[1.0; 4], 1, 4).unwrap();
    for _ in 0..2100 {
        g.add_assign(&mut a, &one).unwrap();
    }
    assert_eq!(g.download(&a).unwrap(), vec![2101.0; 4]);
    let adds = g
        .kernel_times()
        .into_iter()
        .find(|k| k.0.starts_with("elementwise.wgsl"))
        .map(|k| k.1);
    assert_eq!(adds, Some(2100), "every add counted");
}
