//! The live catalog (issue 14): SIDs for new items as the tokenizer gives them, updates
//! validated as a whole, snapshots swapped under load on the CPU and on wgpu, the
//! catalog file.

use crate::common::fixture;
// `ids`: item ids written as JSON numbers (`golden.json`; the catalog golden writes strings).
use crate::golden::{f32s, ids};
use crate::wgpu_ops::gpu;
use onerec_engine::catalog::{
    file, update, Catalog, CatalogContents, CatalogSnapshot, CatalogUpdate, Codebooks, NewItem,
    SidSource, UpdateError,
};
use onerec_engine::{BackendKind, CpuBackend, Engine, Error, ModelFile, Request, WgpuBackend};
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

fn golden() -> Value {
    let path = fixture("catalog/sid_golden.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn case<'a>(g: &'a Value, name: &str) -> &'a Value {
    g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().parse().unwrap())
        .collect()
}

fn sids(v: &Value) -> Vec<Vec<u32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

fn codebooks(c: &Value) -> Arc<Codebooks> {
    let (l, k, d) = (
        c["levels"].as_u64().unwrap() as usize,
        c["codebook_size"].as_u64().unwrap() as usize,
        c["dim"].as_u64().unwrap() as usize,
    );
    let data: Vec<f32> = c["codebooks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(f32s)
        .collect();
    Arc::new(Codebooks::new(l, k, d, &data).unwrap())
}

fn contents(ids: Vec<u64>, s: &[Vec<u32>], c: &Value) -> CatalogContents {
    let (l, k) = (
        c["levels"].as_u64().unwrap() as usize,
        c["codebook_size"].as_u64().unwrap() as usize,
    );
    let flat = s.iter().flatten().map(|&x| x as i64).collect();
    CatalogContents::all_active(Catalog::new(ids, flat, l, k).unwrap(), Some(codebooks(c))).unwrap()
}

/// The case's catalog, and its new items as an update by embedding.
fn catalog_and_update(c: &Value) -> (CatalogContents, CatalogUpdate) {
    let cat = contents(u64s(&c["catalog_ids"]), &sids(&c["catalog_sids"]), c);
    let add = u64s(&c["new_ids"])
        .into_iter()
        .zip(c["new_embeddings"].as_array().unwrap())
        .map(|(id, e)| NewItem {
            id,
            sid: SidSource::Embedding(f32s(e)),
        })
        .collect();
    (
        cat,
        CatalogUpdate {
            add,
            ..Default::default()
        },
    )
}

fn sid_of(c: &CatalogContents, id: u64) -> Vec<u32> {
    c.catalog.sid(c.catalog.index_of(id).unwrap()).to_vec()
}

/// Every golden case: the engine gives new items exactly the SIDs the reference
/// tokenizer's `assign_new` gives, collisions included (last code moved; both codes
/// moved when the prefix is full; new items colliding with each other).
#[test]
fn new_items_get_the_tokenizers_sids() {
    let g = golden();
    let mut moved = 0;
    for c in g["cases"].as_array().unwrap() {
        let (cat, up) = catalog_and_update(c);
        let next = update::apply(&cat, &up).unwrap();
        let want = sids(&c["expected_sids"]);
        for (i, id) in u64s(&c["new_ids"]).into_iter().enumerate() {
            assert_eq!(sid_of(&next, id), want[i], "{}: item {id}", c["name"]);
        }
        moved += sids(&c["fit_sids"])
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count();
    }
    // The cases hold collisions the rule had to resolve (see make_catalog_golden.py).
    assert!(
        moved >= 10,
        "only {moved} SIDs differ from the fit: the golden lost its collisions"
    );
}

/// Held-out items the tokenizer's rule gives their own SIDs back are recommended again
/// exactly where the full catalog recommended them; while held out, never.
#[test]
fn held_out_items_come_back_where_the_full_catalog_had_them() {
    let g = golden();
    let c = case(&g, "fixture_holdout");
    let engine = Engine::load(&fixture("moe_dec_l2"), BackendKind::Cpu).unwrap();
    let full = contents(u64s(&c["all_ids"]), &sids(&c["all_sids"]), c);
    engine.replace_catalog(full).unwrap();
    let held: HashSet<u64> = u64s(&c["new_ids"]).into_iter().collect();
    let rest = u64s(&c["catalog_ids"]);
    let reqs: Vec<Request> = (0..12)
        .map(|i| {
            let mut r = Request::new(rest[i * 7..i * 7 + 3 + i % 4].to_vec(), 24, 8);
            r.exclude_history = i % 2 == 0;
            r
        })
        .collect();
    let want = engine.recommend(&reqs).unwrap();
    let shown: usize = want
        .iter()
        .flat_map(|r| r.sessions.iter().flat_map(|s| &s.items))
        .filter(|i| held.contains(i))
        .count();
    assert!(
        shown > 0,
        "the held-out items never appear in the full catalog's answers"
    );

    let (cat, up) = catalog_and_update(c);
    engine.replace_catalog(cat).unwrap();
    for r in engine.recommend(&reqs).unwrap() {
        for s in &r.sessions {
            assert!(
                s.items.iter().all(|i| !held.contains(i)),
                "held-out item served"
            );
        }
    }
    let snap = engine.update_catalog(&up).unwrap();
    for (id, sid) in u64s(&c["new_ids"]).into_iter().zip(sids(&c["fit_sids"])) {
        assert_eq!(sid_of(snap.contents(), id), sid, "item {id}");
    }
    let got = engine.recommend(&reqs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.final_scores, w.final_scores, "request {i}");
        let items = |r: &onerec_engine::Response| -> Vec<Vec<u64>> {
            r.sessions.iter().map(|s| s.items.clone()).collect()
        };
        assert_eq!(items(g), items(w), "request {i}");
    }
}

fn fixture_engine(kind: BackendKind) -> Engine {
    Engine::load(&fixture("moe_dec_l2"), kind).unwrap()
}

fn version_and_ptr(e: &Engine) -> (u64, *const CatalogSnapshot) {
    let s = e.catalog();
    (s.version(), Arc::as_ptr(&s))
}

/// Says whether an update error is the one a case expects.
type IsExpected = fn(&UpdateError) -> bool;

/// Every bad update is a named error and the serving snapshot stays the same one.
#[test]
fn bad_updates_are_named_and_change_nothing() {
    let e = fixture_engine(BackendKind::Cpu);
    let cat = e.catalog();
    let id = |r: usize| cat.catalog().item_id(r);
    let sid = |r: usize| cat.catalog().sid(r).to_vec();
    // One removed item to re-enable wrongly below.
    e.update_catalog(&CatalogUpdate {
        remove: vec![id(5)],
        ..Default::default()
    })
    .unwrap();
    let before = version_and_ptr(&e);
    let free_sid = {
        let taken: HashSet<Vec<u32>> = (0..cat.catalog().len()).map(sid).collect();
        (0..32u32)
            .flat_map(|a| (0..32u32).map(move |b| vec![a, b]))
            .find(|s| !taken.contains(s))
            .unwrap()
    };
    let add = |i: u64, s: SidSource| NewItem { id: i, sid: s };
    let cases: Vec<(CatalogUpdate, IsExpected)> = vec![
        (
            CatalogUpdate {
                remove: vec![id(1), id(1)],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::DuplicateIds { .. }),
        ),
        (
            CatalogUpdate {
                remove: vec![id(1)],
                enable: vec![id(1)],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::DuplicateIds { .. }),
        ),
        (
            CatalogUpdate {
                remove: vec![id(1), 987654321],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::UnknownIds { ids, .. } if ids == &[987654321]),
        ),
        (
            CatalogUpdate {
                enable: vec![123456789],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::UnknownIds { .. }),
        ),
        (
            CatalogUpdate {
                remove: vec![id(5)],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::AlreadyRemoved { .. }),
        ),
        (
            CatalogUpdate {
                enable: vec![id(2)],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::NotRemoved { .. }),
        ),
        (
            CatalogUpdate {
                add: vec![add(id(3), SidSource::Sid(free_sid.clone()))],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::AlreadyInCatalog { .. }),
        ),
        (
            CatalogUpdate {
                add: vec![add(7, SidSource::Sid(vec![1, 2, 3]))],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::BadSid { .. }),
        ),
        (
            CatalogUpdate {
                add: vec![add(7, SidSource::Sid(vec![1, 32]))],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::BadSid { .. }),
        ),
        (
            CatalogUpdate {
                add: vec![add(7, SidSource::Sid(sid(4)))],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::SidTaken { .. }),
        ),
        (
            // The removed item keeps its SID: no new item may take it.
            CatalogUpdate {
                add: vec![add(7, SidSource::Sid(sid(5)))],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::SidTaken { .. }),
        ),
        (
            CatalogUpdate {
                add: vec![
                    add(7, SidSource::Sid(free_sid.clone())),
                    add(8, SidSource::Sid(free_sid.clone())),
                ],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::SidTaken { holder: 7, .. }),
        ),
        (
            // The fixture's model file has no codebooks.
            CatalogUpdate {
                add: vec![add(7, SidSource::Embedding(vec![0.0; 16]))],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::NoCodebooks { .. }),
        ),
        (
            // A good part does not make a bad update pass.
            CatalogUpdate {
                add: vec![add(7, SidSource::Sid(free_sid.clone()))],
                remove: vec![id(9), 55555],
                ..Default::default()
            },
            |e| matches!(e, UpdateError::UnknownIds { .. }),
        ),
    ];
    for (i, (up, want)) in cases.iter().enumerate() {
        match e.update_catalog(up) {
            Err(Error::CatalogUpdate(err)) => {
                assert!(want(&err), "case {i}: {err}");
                assert!(!err.to_string().is_empty());
            }
            other => panic!("case {i}: expected a named update error, got {other:?}"),
        }
        assert_eq!(version_and_ptr(&e), before, "case {i} changed the snapshot");
    }
    // Embedding errors, with codebooks.
    let g = golden();
    let c = case(&g, "crowded_prefix");
    let (cat, _) = catalog_and_update(c);
    let bad = [
        (vec![0.0f32; 5], "width"),
        (vec![0.0, f32::NAN, 0.0, 0.0, 0.0, 0.0], "finite"),
    ];
    for (emb, what) in bad {
        let up = CatalogUpdate {
            add: vec![add(77, SidSource::Embedding(emb))],
            ..Default::default()
        };
        let err = update::apply(&cat, &up).unwrap_err();
        let ok = match what {
            "width" => matches!(
                err,
                UpdateError::EmbeddingWidth {
                    got: 5,
                    want: 6,
                    ..
                }
            ),
            _ => matches!(err, UpdateError::EmbeddingNotFinite { index: 1, .. }),
        };
        assert!(ok, "{what}: {err}");
    }
    // Removing every active item is refused.
    let all: Vec<u64> = (0..cat.catalog.len())
        .map(|r| cat.catalog.item_id(r))
        .collect();
    let up = CatalogUpdate {
        remove: all,
        ..Default::default()
    };
    assert!(matches!(
        update::apply(&cat, &up),
        Err(UpdateError::NothingActive)
    ));
}

/// Remove, serve (history may still name the removed item), re-enable, add by SID.
#[test]
fn removed_items_are_never_served_and_come_back_when_enabled() {
    let e = fixture_engine(BackendKind::Cpu);
    let cat = e.catalog();
    let hist: Vec<u64> = (0..4).map(|r| cat.catalog().item_id(r)).collect();
    let req = Request::new(hist.clone(), 32, 16);
    let want = e.recommend(std::slice::from_ref(&req)).unwrap().remove(0);
    let top: Vec<u64> = want.sessions[0].items.clone();
    let removed = vec![top[0], top[1], hist[0]];
    let snap = e
        .update_catalog(&CatalogUpdate {
            remove: removed.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(snap.version(), 1);
    assert!(!snap.is_active(top[0]) && snap.is_active(top[2]));
    let got = e.recommend(std::slice::from_ref(&req)).unwrap().remove(0);
    assert_eq!(got.catalog_version, 1);
    assert!(!got.sessions.is_empty());
    for s in &got.sessions {
        assert!(
            s.items.iter().all(|i| !removed.contains(i)),
            "removed item served: {s:?}"
        );
    }
    // A new item by explicit SID takes a free SID and is served.
    let taken: HashSet<Vec<u32>> = (0..cat.catalog().len())
        .map(|r| cat.catalog().sid(r).to_vec())
        .collect();
    let free = (0..32u32)
        .flat_map(|a| (0..32u32).map(move |b| vec![a, b]))
        .find(|s| !taken.contains(s))
        .unwrap();
    let snap = e
        .update_catalog(&CatalogUpdate {
            add: vec![NewItem {
                id: 424242,
                sid: SidSource::Sid(free.clone()),
            }],
            enable: removed.clone(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(sid_of(snap.contents(), 424242), free);
    assert!(snap.is_active(424242) && snap.is_active(top[0]));
    // The new item can be a history item at once.
    e.recommend(&[Request::new(vec![424242], 4, 2)]).unwrap();
    // Re-enabled: the first answer's sessions are back (the new item may add some).
    let again = e.recommend(std::slice::from_ref(&req)).unwrap().remove(0);
    assert_eq!(again.catalog_version, 2);
    assert!(again.sessions.iter().any(|s| s.items == top));
}

/// Several threads recommend without pause while another applies a series of updates:
/// every response comes from one snapshot (its items all active there), the snapshots a
/// thread sees never go back, nothing deadlocks, and every old snapshot is freed once
/// its last request ends.
fn concurrent_updates(e: Engine, rounds: usize) {
    let e = Arc::new(e);
    let first = e.catalog();
    let ids: Vec<u64> = first.catalog().item_ids().to_vec();
    // Version v + 1 removes a window of items and re-enables the previous window.
    let window = |v: usize| -> Vec<u64> { ids[(v * 17) % 200..(v * 17) % 200 + 30].to_vec() };
    let mut active: Vec<HashSet<u64>> = vec![ids.iter().copied().collect()];
    for v in 0..rounds {
        let mut s: HashSet<u64> = ids.iter().copied().collect();
        for id in window(v) {
            s.remove(&id);
        }
        active.push(s);
    }
    let old: Weak<CatalogSnapshot> = Arc::downgrade(&first);
    drop(first);
    let stop = Arc::new(AtomicBool::new(false));
    // Requests finished so far: the updater waits for new ones between swaps, so the
    // readers run across the swaps however slow a request is (lavapipe).
    let done = Arc::new(AtomicUsize::new(0));
    let hist: Vec<u64> = ids[250..256].to_vec();
    let readers: Vec<_> = (0..3)
        .map(|t| {
            let (e, stop, hist, active) = (e.clone(), stop.clone(), hist.clone(), active.clone());
            let done = done.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                let mut served = 0;
                let mut seen = HashSet::new();
                while !stop.load(Ordering::Relaxed) || served == 0 {
                    let mut r = Request::new(hist[t..].to_vec(), 16, 16);
                    r.exclude_history = true;
                    let got = e.recommend(&[r]).unwrap().remove(0);
                    let v = got.catalog_version as usize;
                    assert!(v >= last, "thread {t}: snapshot {v} after {last}");
                    last = v;
                    seen.insert(v);
                    for s in &got.sessions {
                        for i in &s.items {
                            assert!(
                                active[v].contains(i),
                                "item {i} is not active in snapshot {v}"
                            );
                        }
                    }
                    served += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (served, seen)
            })
        })
        .collect();
    let mut weaks = vec![old];
    for v in 0..rounds {
        let mut up = CatalogUpdate {
            remove: window(v),
            ..Default::default()
        };
        if v > 0 {
            up.enable = window(v - 1);
            let keep: HashSet<u64> = up.remove.iter().copied().collect();
            up.enable.retain(|i| !keep.contains(i));
            up.remove.retain(|i| !window(v - 1).contains(i));
        }
        let snap = e.update_catalog(&up).unwrap();
        assert_eq!(snap.version() as usize, v + 1);
        weaks.push(Arc::downgrade(&snap));
        let seen_at = done.load(Ordering::Relaxed);
        while done.load(Ordering::Relaxed) < seen_at + 2 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    let mut seen = HashSet::new();
    for h in readers {
        let (n, s) = h.join().unwrap();
        served += n;
        seen.extend(s);
    }
    // The readers really ran across swaps.
    assert!(
        seen.len() >= 2,
        "{served} requests saw only snapshots {seen:?}"
    );
    // Only the serving snapshot is alive; every older one (and its resident trie) is gone.
    let (cur, older) = weaks.split_last().unwrap();
    for (v, w) in older.iter().enumerate() {
        assert!(w.upgrade().is_none(), "snapshot {v} is still alive");
    }
    let cur = cur.upgrade().unwrap();
    assert_eq!(
        Arc::strong_count(&cur),
        2,
        "the engine and this test hold the last one"
    );
}

#[test]
fn concurrent_updates_on_the_cpu() {
    concurrent_updates(fixture_engine(BackendKind::Cpu), 12);
}

#[test]
fn concurrent_updates_on_wgpu() {
    if gpu().is_none() {
        return;
    }
    let file = Arc::new(ModelFile::open(&fixture("moe_dec_l2")).unwrap());
    let g: WgpuBackend = gpu().unwrap();
    concurrent_updates(Engine::with_backend(file, g).unwrap(), 8);
}

#[test]
fn catalog_files_round_trip_and_reject_damage() {
    let e = Engine::with_backend(
        Arc::new(ModelFile::open(&fixture("moe_dec_l2")).unwrap()),
        CpuBackend::new(),
    )
    .unwrap();
    let id = e.catalog().catalog().item_id(3);
    let snap = e
        .update_catalog(&CatalogUpdate {
            remove: vec![id],
            ..Default::default()
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.onerec-catalog");
    file::write(&path, snap.contents()).unwrap();
    let (cat, removed) = file::read(&path).unwrap();
    assert_eq!(cat.item_ids(), snap.catalog().item_ids());
    assert_eq!(removed, snap.contents().removed_flags());
    assert!(file::sniff(&path));
    let bytes = std::fs::read(&path).unwrap();
    for at in [0, 9, 13, 30, 41, bytes.len() - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x40;
        assert!(
            file::decode(&b, &path).is_err(),
            "byte {at} flipped and still read"
        );
    }
    assert!(file::decode(&bytes[..bytes.len() - 3], &path).is_err());
    // Items claimed beyond the bytes present: an error, not an allocation.
    let mut b = bytes.clone();
    b[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    let crc = crc32fast::hash(&b[..36]).to_le_bytes();
    b[36..40].copy_from_slice(&crc);
    assert!(file::decode(&b, &path).is_err());
    // A catalog with other levels than the model's is refused by the engine.
    let other = Catalog::new(vec![1, 2], vec![0, 1, 0, 2, 0, 0], 3, 32).unwrap();
    let before = version_and_ptr(&e);
    assert!(e
        .replace_catalog(CatalogContents::all_active(other, None).unwrap())
        .is_err());
    assert_eq!(version_and_ptr(&e), before);
}

/// The C API: an update applies, a bad one is a status with a message and changes
/// nothing, bad pointers are refused.
#[test]
fn the_c_api_updates_the_catalog() {
    use onerec_ffi::*;
    use std::ffi::{CStr, CString};
    let path = CString::new(fixture("moe_dec_l2").to_str().unwrap()).unwrap();
    let mut params = onerec_model_default_params();
    params.backend = ONEREC_BACKEND_CPU;
    let mut model = std::ptr::null_mut();
    assert_eq!(
        unsafe { onerec_model_load(path.as_ptr(), params, &mut model) },
        onerec_status::Ok
    );
    let file = ModelFile::open(&fixture("moe_dec_l2")).unwrap();
    let (a, b) = (file.catalog.item_id(0), file.catalog.item_id(1));
    let taken = file.catalog.sid(2).to_vec();
    let mut version = 99u64;
    let st = unsafe {
        onerec_model_update_catalog(
            model,
            std::ptr::null(),
            0,
            &a,
            1,
            std::ptr::null(),
            0,
            &mut version,
        )
    };
    assert_eq!(st, onerec_status::Ok);
    assert_eq!(version, 1);
    let last_error = || {
        unsafe { CStr::from_ptr(onerec_last_error()) }
            .to_string_lossy()
            .into_owned()
    };
    // Removing it again: refused, named, nothing changes.
    let st = unsafe {
        onerec_model_update_catalog(
            model,
            std::ptr::null(),
            0,
            &a,
            1,
            std::ptr::null(),
            0,
            &mut version,
        )
    };
    assert_eq!(st, onerec_status::InvalidArgument);
    assert!(last_error().contains("already removed"), "{}", last_error());
    assert_eq!(version, 1);
    let item = onerec_catalog_item {
        id: 5,
        sid: taken.as_ptr(),
        n_sid: taken.len(),
        embedding: std::ptr::null(),
        n_embedding: 0,
    };
    let st = unsafe {
        onerec_model_update_catalog(
            model,
            &item,
            1,
            &b,
            1,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, onerec_status::InvalidArgument, "{}", last_error());
    assert!(last_error().contains("already held"), "{}", last_error());
    let both = onerec_catalog_item {
        embedding: [0.0f32].as_ptr(),
        n_embedding: 1,
        ..item
    };
    let st = unsafe {
        onerec_model_update_catalog(
            model,
            &both,
            1,
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, onerec_status::InvalidArgument);
    let st = unsafe {
        onerec_model_update_catalog(
            model,
            std::ptr::null(),
            1,
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(st, onerec_status::NullPointer);
    // Re-enable it through the API, then load a catalog file.
    let st = unsafe {
        onerec_model_update_catalog(
            model,
            std::ptr::null(),
            0,
            std::ptr::null(),
            0,
            &a,
            1,
            &mut version,
        )
    };
    assert_eq!(st, onerec_status::Ok);
    assert_eq!(version, 2);
    let dir = tempfile::tempdir().unwrap();
    let cat_path = dir.path().join("c.catalog");
    file::write(&cat_path, &file.catalog_contents().unwrap()).unwrap();
    let c_path = CString::new(cat_path.to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { onerec_model_load_catalog(model, c_path.as_ptr(), &mut version) },
        onerec_status::Ok
    );
    assert_eq!(version, 3);
    let bad = CString::new(fixture("moe_dec_l2/config.json").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { onerec_model_load_catalog(model, bad.as_ptr(), &mut version) },
        onerec_status::InvalidModel
    );
    assert_eq!(version, 3);
    unsafe { onerec_model_free(model) };
}

fn onerec(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_onerec"))
        .args(args)
        .output()
        .expect("run onerec")
}

/// `onerec catalog`: add by SID to a new model file (weights byte for byte), remove into
/// a catalog file, list; bad input exits non-zero with one line.
#[test]
fn the_cli_lists_and_changes_a_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("m.onerec");
    onerec_quantize::run_from([
        "onerec-quantize",
        "--input",
        fixture("moe_dec_l2").to_str().unwrap(),
        "--output",
        q.to_str().unwrap(),
        "--dtype",
        "f32",
        "--quiet",
    ])
    .unwrap();
    let src = ModelFile::open(&q).unwrap();
    let taken: HashSet<Vec<u32>> = (0..src.catalog.len())
        .map(|r| src.catalog.sid(r).to_vec())
        .collect();
    let free: Vec<Vec<u32>> = (0..32u32)
        .flat_map(|a| (0..32u32).map(move |b| vec![a, b]))
        .filter(|s| !taken.contains(s))
        .take(2)
        .collect();
    let items = dir.path().join("new.jsonl");
    std::fs::write(
        &items,
        format!(
            "{{\"id\": 18446744073709551615, \"sid\": {:?}}}\n\n{{\"id\": \"77\", \"sid\": {:?}}}\n",
            free[0], free[1]
        ),
    )
    .unwrap();
    let out = dir.path().join("m2.onerec");
    let (m, o, i) = (
        q.to_str().unwrap(),
        out.to_str().unwrap(),
        items.to_str().unwrap(),
    );
    let r = onerec(&[
        "catalog",
        "add",
        "--model",
        m,
        "--items",
        i,
        "--write-model",
        o,
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let new = ModelFile::open(&out).unwrap();
    new.verify().unwrap();
    assert_eq!(new.catalog.len(), src.catalog.len() + 2);
    let row = new.catalog.index_of(u64::MAX).unwrap();
    assert_eq!(new.catalog.sid(row), &free[0][..]);
    for name in src.names.iter().filter(|n| !n.starts_with("catalog.")) {
        assert_eq!(
            src.tensor(name).unwrap().bytes,
            new.tensor(name).unwrap().bytes,
            "{name}"
        );
    }
    // The new model serves the new item as a history item.
    let e = Engine::load(&out, BackendKind::Cpu).unwrap();
    e.recommend(&[Request::new(vec![77], 4, 2)]).unwrap();

    // Remove into a catalog file; list it.
    let cat = dir.path().join("c.catalog");
    let c = cat.to_str().unwrap();
    let gone = src.catalog.item_id(0).to_string();
    let r = onerec(&[
        "catalog",
        "remove",
        "--model",
        o,
        "--ids",
        &gone,
        "--write-catalog",
        c,
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let r = onerec(&["catalog", "list", "--model", o, "--catalog", c]);
    let text = String::from_utf8(r.stdout).unwrap();
    assert_eq!(text.lines().count(), src.catalog.len() + 2);
    assert!(text
        .lines()
        .any(|l| l.starts_with(&format!("{gone}\t")) && l.ends_with("\tremoved")));
    // Removed into the model file too: the engine loads it with the item removed.
    let o2 = dir.path().join("m3.onerec");
    let r = onerec(&[
        "catalog",
        "remove",
        "--model",
        o,
        "--ids",
        &gone,
        "--write-model",
        o2.to_str().unwrap(),
    ]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let e = Engine::load(&o2, BackendKind::Cpu).unwrap();
    assert!(!e.catalog().is_active(src.catalog.item_id(0)));

    // Bad input: one line, non-zero, nothing written.
    let bad_out = dir.path().join("never.onerec");
    let b = bad_out.to_str().unwrap();
    std::fs::write(
        &items,
        "{\"id\": 5, \"sid\": [1, 2], \"embedding\": [0.5]}\n",
    )
    .unwrap();
    for args in [
        vec![
            "catalog",
            "add",
            "--model",
            m,
            "--items",
            i,
            "--write-model",
            b,
        ],
        vec![
            "catalog",
            "remove",
            "--model",
            m,
            "--ids",
            "1,x",
            "--write-model",
            b,
        ],
        vec![
            "catalog",
            "remove",
            "--model",
            m,
            "--ids",
            "12345",
            "--write-model",
            b,
        ],
        vec![
            "catalog",
            "add",
            "--model",
            m,
            "--items",
            "/nonexistent.jsonl",
            "--write-model",
            b,
        ],
        vec!["catalog", "list", "--model", m, "--catalog", m],
    ] {
        let r = onerec(&args);
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(!r.status.success(), "{args:?} succeeded");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    assert!(!bad_out.exists());
}

/// The built-in MovieLens model: items its full catalog recommends are held out of the
/// catalog the engine serves (never recommended then), added back with their SIDs
/// (explicit: the built-in model file has no codebooks or embeddings, see docs/CATALOG.md),
/// and the answers are again exactly the full catalog's.
#[test]
fn movielens_items_held_out_and_added_back_by_sid_are_recommended_again() {
    let path = crate::common::repo_root().join("models/default/model.onerec");
    let e = Engine::load(&path, BackendKind::Cpu).unwrap();
    let reqs: Vec<Request> = [
        vec![50, 172, 181],
        vec![1, 2, 3, 4],
        vec![100, 258, 286, 300],
    ]
    .into_iter()
    .map(|h| {
        let mut r = Request::new(h, 16, 8);
        r.exclude_history = true;
        r
    })
    .collect();
    let want = e.recommend(&reqs).unwrap();
    let full = e.catalog();
    let mut held: Vec<u64> = want
        .iter()
        .flat_map(|r| r.sessions.iter().flat_map(|s| s.items.clone()))
        .collect();
    held.sort_unstable();
    held.dedup();
    // Histories must stay in the catalog the engine serves.
    held.retain(|i| reqs.iter().all(|r| !r.history.contains(i)));
    held.truncate(20);
    assert!(held.len() >= 10);
    let cat = full.catalog();
    let keep: Vec<usize> = (0..cat.len())
        .filter(|&r| !held.contains(&cat.item_id(r)))
        .collect();
    let rest = Catalog::new(
        keep.iter().map(|&r| cat.item_id(r)).collect(),
        keep.iter()
            .flat_map(|&r| cat.sid(r).iter().map(|&c| c as i64))
            .collect(),
        cat.levels(),
        cat.codebook_size(),
    )
    .unwrap();
    e.replace_catalog(CatalogContents::all_active(rest, None).unwrap())
        .unwrap();
    for r in e.recommend(&reqs).unwrap() {
        assert!(!r.sessions.is_empty());
        for s in &r.sessions {
            assert!(
                s.items.iter().all(|i| !held.contains(i)),
                "held-out item served"
            );
        }
    }
    let add = held
        .iter()
        .map(|&id| NewItem {
            id,
            sid: SidSource::Sid(cat.sid(cat.index_of(id).unwrap()).to_vec()),
        })
        .collect();
    e.update_catalog(&CatalogUpdate {
        add,
        ..Default::default()
    })
    .unwrap();
    let got = e.recommend(&reqs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.final_scores, w.final_scores, "request {i}");
        let items = |r: &onerec_engine::Response| -> Vec<Vec<u64>> {
            r.sessions.iter().map(|s| s.items.clone()).collect()
        };
        assert_eq!(items(g), items(w), "request {i}");
    }
}

/// The same on CUDA where a device exists (the new trie uploaded before each swap).
#[test]
fn concurrent_updates_on_cuda() {
    match Engine::load(&fixture("moe_dec_l2"), BackendKind::Cuda) {
        Ok(e) => concurrent_updates(e, 8),
        Err(e) if std::env::var("ONEREC_REQUIRE_CUDA").is_ok_and(|v| v == "1") => {
            panic!("ONEREC_REQUIRE_CUDA=1 but no CUDA backend: {e}")
        }
        Err(e) => eprintln!("concurrent_updates_on_cuda: skipped (no CUDA device: {e})"),
    }
}

/// Issue 14 on the built-in MovieLens model, through embeddings: the items the golden
/// requests recommend (`models/default/golden.json`, `catalog_holdout`, made by
/// `reference/train/golden.py` from the model file itself) leave the catalog the engine
/// serves, then come back through `Engine::update_catalog` from the item embeddings the
/// file exports, with SIDs from the file's codebooks. They must get exactly the SIDs of
/// the reference rule (`tokenizer.assign_new`; the fit's own SID for most of them), and
/// the engine must answer exactly as the reference beam search does on that catalog, so
/// the items come back where the full catalog recommended them.
#[test]
fn movielens_items_held_out_and_added_back_by_embedding_are_recommended_again() {
    let root = crate::common::repo_root();
    let text = std::fs::read_to_string(root.join("models/default/golden.json")).unwrap();
    let g: Value = serde_json::from_str(&text).unwrap();
    let h = &g["catalog_holdout"];
    assert!(
        h.is_object(),
        "golden.json has no catalog_holdout: rerun reference/train/run_all.py"
    );
    // The reference's arithmetic (the goldens' near-ties hold there).
    let e = Engine::open(
        &root.join("models/default/model.onerec"),
        &onerec_engine::EngineOptions::new()
            .backend(BackendKind::Cpu)
            .cpu_int8(false),
    )
    .unwrap();
    let (dim, emb) = e
        .file()
        .item_embeddings()
        .unwrap()
        .expect("the built-in model exports catalog.embeddings");
    let full = e.catalog();
    let contents = full.contents();
    let cat = &contents.catalog;
    let codebooks = contents.codebooks.clone();
    assert!(
        codebooks.is_some(),
        "the built-in model exports catalog.codebooks"
    );
    let held = ids(&h["held_out"]);
    assert!(held.len() >= 10, "only {} held-out items", held.len());
    let reqs: Vec<Request> = h["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut q = Request::new(
                ids(&r["history"]),
                r["beam"].as_u64().unwrap() as usize,
                r["results"].as_u64().unwrap() as usize,
            );
            q.exclude_history = true;
            // The reference golden lists every beam, permutations included.
            q.keep_permutations = true;
            q
        })
        .collect();
    let want_full = e.recommend(&reqs).unwrap();
    let shown: usize = want_full
        .iter()
        .flat_map(|r| r.sessions.iter().flat_map(|s| &s.items))
        .filter(|i| held.contains(i))
        .count();
    assert!(shown >= held.len(), "held-out items shown {shown} times");

    // Hold them out (the codebooks stay: they belong to the model).
    let keep: Vec<usize> = (0..cat.len())
        .filter(|&r| !held.contains(&cat.item_id(r)))
        .collect();
    let rest = Catalog::new(
        keep.iter().map(|&r| cat.item_id(r)).collect(),
        keep.iter()
            .flat_map(|&r| cat.sid(r).iter().map(|&c| c as i64))
            .collect(),
        cat.levels(),
        cat.codebook_size(),
    )
    .unwrap();
    e.replace_catalog(CatalogContents::all_active(rest, codebooks).unwrap())
        .unwrap();
    for r in e.recommend(&reqs).unwrap() {
        assert!(!r.sessions.is_empty());
        for s in &r.sessions {
            assert!(
                s.items.iter().all(|i| !held.contains(i)),
                "held-out item served"
            );
        }
    }

    // Back from their embeddings.
    let add = held
        .iter()
        .map(|&id| {
            let row = cat.index_of(id).unwrap();
            NewItem {
                id,
                sid: SidSource::Embedding(emb[row * dim..(row + 1) * dim].to_vec()),
            }
        })
        .collect();
    let snap = e
        .update_catalog(&CatalogUpdate {
            add,
            ..Default::default()
        })
        .unwrap();
    let rule = sids(&h["rule_sids"]);
    let fit = sids(&h["fit_sids"]);
    let mut own = 0;
    for (i, &id) in held.iter().enumerate() {
        let got = sid_of(snap.contents(), id);
        assert_eq!(got, rule[i], "item {id}: the rule's SID");
        own += usize::from(got == fit[i]);
    }
    assert_eq!(own as u64, h["rule_equals_fit"].as_u64().unwrap());
    assert!(
        own * 2 >= held.len(),
        "only {own} of {} items got their fit SID back",
        held.len()
    );

    // The engine answers as the reference does on the re-added catalog, and the items
    // the golden counts as recommended again are in the same places as before.
    let got = e.recommend(&reqs).unwrap();
    let mut again = 0;
    for (i, (r, gr)) in got
        .iter()
        .zip(h["requests"].as_array().unwrap())
        .enumerate()
    {
        let want: Vec<Vec<u64>> = gr["sessions_readded"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| ids(&s["items"]))
            .collect();
        let items: Vec<Vec<u64>> = r.sessions.iter().map(|s| s.items.clone()).collect();
        if gr["clear_decisions"].as_bool().unwrap() {
            assert_eq!(items, want, "request {i}");
        }
        let full: Vec<Vec<u64>> = want_full[i]
            .sessions
            .iter()
            .map(|s| s.items.clone())
            .collect();
        for id in ids(&gr["held_recommended_again_same_place"]) {
            let place = |ss: &[Vec<u64>]| {
                ss.iter()
                    .enumerate()
                    .find_map(|(a, s)| s.iter().position(|&x| x == id).map(|b| (a, b)))
            };
            assert_eq!(place(&items), place(&full), "request {i}, item {id}");
            again += 1;
        }
    }
    assert!(
        again > 0,
        "no held-out item is recommended again in its place"
    );
}
