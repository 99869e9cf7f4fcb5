//! Bad input of every kind gets an error that names what is wrong, never a panic.

use crate::common::fixture;
use onerec_engine::{BackendKind, Engine, Error, Request};
use std::collections::BTreeMap;
use std::path::Path;

/// A copy of a fixture checkpoint in a temp dir, with its tensors editable.
struct Ckpt {
    dir: tempfile::TempDir,
    config: serde_json::Value,
    tensors: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>,
}

impl Ckpt {
    fn from_fixture(name: &str) -> Self {
        let src = fixture(name);
        let config =
            serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap())
                .unwrap();
        let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, (t.dtype(), t.shape().to_vec(), t.data().to_vec())))
            .collect();
        Ckpt {
            dir: tempfile::tempdir().unwrap(),
            config,
            tensors,
        }
    }

    fn write(&self) -> &Path {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_string_pretty(&self.config).unwrap(),
        )
        .unwrap();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(n, (d, s, b))| {
                (
                    n.clone(),
                    safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &self.dir.path().join("model.safetensors"))
            .unwrap();
        self.dir.path()
    }

    fn load_err(&self) -> Error {
        match Engine::load(self.write(), BackendKind::Cpu) {
            Ok(_) => panic!("a bad checkpoint loaded"),
            Err(e) => e,
        }
    }
}

fn engine() -> Engine {
    Engine::load(&fixture("dense_l3"), BackendKind::Cpu).unwrap()
}

fn some_item(e: &Engine, i: usize) -> u64 {
    e.file().catalog.item_id(i)
}

fn request_err(req: Request) -> String {
    engine()
        .recommend(&[req])
        .expect_err("bad request accepted")
        .to_string()
}

#[test]
fn unknown_history_items_are_named() {
    let e = engine();
    let known = some_item(&e, 0);
    let err = e
        .recommend(&[Request::new(vec![known, 7, 99], 4, 2)])
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownItems { ids } if ids == &[7, 99]),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("7, 99"), "{msg}");
}

#[test]
fn unknown_excluded_items_are_ignored() {
    let e = engine();
    let mut req = Request::new(vec![some_item(&e, 0)], 4, 2);
    let plain = e.recommend(std::slice::from_ref(&req)).unwrap();
    req.exclude = vec![7, 99];
    assert_eq!(e.recommend(&[req]).unwrap(), plain);
}

#[test]
fn empty_history_is_refused() {
    assert!(request_err(Request::new(vec![], 4, 2)).contains("history is empty"));
}

#[test]
fn beam_and_results_are_checked() {
    let e = engine();
    let h = vec![some_item(&e, 0)];
    let msg = request_err(Request::new(h.clone(), 0, 1));
    assert!(msg.contains("beam must be at least 1"), "{msg}");
    let msg = request_err(Request::new(h.clone(), 4, 5));
    assert!(msg.contains("results must be in 1..=beam"), "{msg}");
    let msg = request_err(Request::new(h.clone(), 4, 0));
    assert!(msg.contains("results must be in 1..=beam"), "{msg}");
    let msg = request_err(Request::new(h, onerec_engine::MAX_BEAM + 1, 1));
    assert!(msg.contains("larger than the maximum"), "{msg}");
}

#[test]
fn a_bad_request_in_a_batch_is_named() {
    let e = engine();
    let good = Request::new(vec![some_item(&e, 0)], 4, 2);
    let err = e
        .recommend(&[good, Request::new(vec![], 4, 2)])
        .unwrap_err();
    assert!(
        matches!(&err, Error::InRequest { index: 1, error } if matches!(**error, Error::Request(_))),
        "{err:?}"
    );
    // The cause is said once (issue 11 item 8: no "invalid request: request 1: invalid request").
    let msg = err.to_string();
    assert_eq!(msg.matches("invalid request").count(), 1, "{msg}");
    assert!(msg.starts_with("request 1: "), "{msg}");
}

#[test]
fn bad_config_values_are_named() {
    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("n_heads", 5.into(), "multiple of `n_heads`"),
        ("d_model", 0.into(), "`d_model` must be > 0"),
        ("rms_eps", (-1.0).into(), "rms_eps"),
        ("moe_dec_layers", serde_json::json!([7]), "names layer 7"),
        ("codebook_size", "many".into(), "invalid type"),
        ("session_len", 0.into(), "`session_len` must be > 0"),
    ];
    for (field, value, want) in cases {
        let mut c = Ckpt::from_fixture("dense_l3");
        c.config[field] = value.clone();
        let msg = c.load_err().to_string();
        assert!(msg.contains(want), "{field}: {msg}");
    }
    let mut c = Ckpt::from_fixture("moe_dec_l2");
    c.config["top_k"] = 9.into();
    let msg = c.load_err().to_string();
    assert!(msg.contains("top_k"), "{msg}");
    let mut c = Ckpt::from_fixture("dense_l3");
    c.config.as_object_mut().unwrap().remove("n_levels");
    let msg = c.load_err().to_string();
    assert!(msg.contains("n_levels"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let mut c = Ckpt::from_fixture("moe_dec_l2");
    c.tensors.remove("dec.layers.1.moe.up");
    let msg = c.load_err().to_string();
    assert!(
        msg.contains("missing tensor `dec.layers.1.moe.up`"),
        "{msg}"
    );
}

#[test]
fn wrong_shape_is_named() {
    let mut c = Ckpt::from_fixture("dense_l3");
    let t = c.tensors.get_mut("enc.layers.0.ffn.gate").unwrap();
    t.1.reverse(); // [d_ff, d] -> [d, d_ff]: same bytes, wrong shape
    let msg = c.load_err().to_string();
    assert!(
        msg.contains("enc.layers.0.ffn.gate") && msg.contains("expected [64, 32]"),
        "{msg}"
    );
}

#[test]
fn unexpected_tensor_and_dtype_are_named() {
    let mut c = Ckpt::from_fixture("dense_l3");
    c.tensors.insert(
        "enc.extra".into(),
        (safetensors::Dtype::F32, vec![1], vec![0; 4]),
    );
    let msg = c.load_err().to_string();
    assert!(msg.contains("enc.extra"), "{msg}");

    let mut c = Ckpt::from_fixture("dense_l3");
    let t = c.tensors.get_mut("enc.norm").unwrap();
    *t = (safetensors::Dtype::I32, t.1.clone(), t.2.clone());
    let msg = c.load_err().to_string();
    assert!(msg.contains("enc.norm") && msg.contains("i32"), "{msg}");

    let mut c = Ckpt::from_fixture("dense_l3");
    let t = c.tensors.get_mut("enc.norm").unwrap();
    *t = (safetensors::Dtype::U8, vec![t.2.len()], t.2.clone());
    let msg = c.load_err().to_string();
    assert!(
        msg.contains("enc.norm") && msg.contains("unsupported dtype"),
        "{msg}"
    );
}

#[test]
fn duplicate_sids_name_the_items() {
    let mut c = Ckpt::from_fixture("dense_l3");
    let l = c.config["n_levels"].as_u64().unwrap() as usize;
    let (_, _, sids) = c.tensors.get_mut("catalog.sids").unwrap();
    let row0: Vec<u8> = sids[..4 * l].to_vec();
    sids[4 * l..8 * l].copy_from_slice(&row0); // item 1 gets item 0's SID
    let ids = &c.tensors["catalog.item_ids"].2;
    let id0 = i64::from_le_bytes(ids[0..8].try_into().unwrap()) as u64;
    let id1 = i64::from_le_bytes(ids[8..16].try_into().unwrap()) as u64;
    let msg = c.load_err().to_string();
    assert!(
        msg.contains("duplicate semantic IDs")
            && msg.contains(&id0.to_string())
            && msg.contains(&id1.to_string()),
        "{msg}"
    );
}

#[test]
fn bad_catalog_codes_and_ids_are_named() {
    let mut c = Ckpt::from_fixture("dense_l3");
    let (_, _, sids) = c.tensors.get_mut("catalog.sids").unwrap();
    sids[0..4].copy_from_slice(&999i32.to_le_bytes());
    let msg = c.load_err().to_string();
    assert!(msg.contains("code 999"), "{msg}");

    let mut c = Ckpt::from_fixture("dense_l3");
    let (_, _, ids) = c.tensors.get_mut("catalog.item_ids").unwrap();
    let first: Vec<u8> = ids[0..8].to_vec();
    ids[8..16].copy_from_slice(&first);
    let msg = c.load_err().to_string();
    assert!(msg.contains("appears twice"), "{msg}");
}

#[test]
fn unreadable_and_truncated_files_are_errors() {
    let missing = Engine::load(Path::new("/nonexistent/onerec-model"), BackendKind::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(missing.contains("/nonexistent/onerec-model"), "{missing}");

    let c = Ckpt::from_fixture("dense_l3");
    let dir = c.write();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let msg = Engine::load(dir, BackendKind::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");

    let c = Ckpt::from_fixture("dense_l3");
    let dir = c.write();
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    for cut in [0, 5, 100, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let msg = Engine::load(dir, BackendKind::Cpu)
            .err()
            .unwrap()
            .to_string();
        assert!(msg.contains("model.safetensors"), "cut at {cut}: {msg}");
    }
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let msg = Engine::load(dir, BackendKind::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("config.json"), "{msg}");
}
