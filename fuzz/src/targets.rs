//! The three fuzz targets: what each feeds the engine, how its inputs are mutated, and
//! what must hold when the engine accepts an input. A target returns the outcome class
//! (which error, with numbers removed): new classes steer the fuzzer (`main.rs`).

use crate::mutate::mutate;
use crate::rng::Rng;
use onerec_engine::generate::Request;
use onerec_engine::tensor::Blob;
use onerec_engine::{BackendKind, Engine, ModelFile};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Inputs never grow past this (the seeds are at most a few hundred KB).
pub const MAX_LEN: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A OneRec model file, as bytes (`format::from_blob`), then `verify`.
    ModelFile,
    /// A checkpoint: `u32 LE` length of `config.json`, its text, then `model.safetensors`.
    Checkpoint,
    /// A batch of requests against the `dense_l3` fixture on the CPU backend.
    Request,
}

impl Target {
    pub const ALL: [Target; 3] = [Target::ModelFile, Target::Checkpoint, Target::Request];

    pub fn name(self) -> &'static str {
        match self {
            Target::ModelFile => "model_file",
            Target::Checkpoint => "checkpoint",
            Target::Request => "request",
        }
    }

    pub fn from_name(s: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Runs one input; panics (the crash the fuzzer looks for) when an accepted input
    /// breaks an invariant.
    pub fn run(self, data: &[u8]) -> String {
        match self {
            Target::ModelFile => model_file(data),
            Target::Checkpoint => checkpoint(data),
            Target::Request => request(data),
        }
    }

    /// An input running longer than this is reported as slow and fails the run: the
    /// readers are linear in the input, a beam search is not (beam 4096, 3 users).
    pub fn slow_limit(self) -> std::time::Duration {
        std::time::Duration::from_secs(match self {
            Target::ModelFile | Target::Checkpoint => 1,
            Target::Request => 30,
        })
    }

    pub fn mutate(self, rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
        match self {
            Target::ModelFile if rng.chance(2) => mutate_model_header(rng, data, other),
            Target::Checkpoint if rng.chance(2) => mutate_checkpoint_part(rng, data, other),
            _ => mutate(rng, data, other, MAX_LEN),
        }
    }
}

/// The outcome class of a result: the error text with its digits dropped.
fn class<T>(r: &onerec_engine::error::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        // Up to the first quoted part (names and values copied from the input would make
        // nearly every mutant a new class), digits dropped.
        Err(e) => e
            .to_string()
            .chars()
            .take_while(|c| !matches!(c, '`' | '"' | '\''))
            .filter(|c| !c.is_ascii_digit())
            .take(120)
            .collect(),
    }
}

fn check_loaded(file: &ModelFile) -> String {
    // What a loaded model promises: every tensor readable, the catalog consistent.
    for name in &file.names {
        let t = file.tensor(name).expect("a listed tensor is readable");
        assert_eq!(Some(t.bytes.len()), t.dtype.tensor_bytes(t.shape), "{name}");
    }
    let c = &file.catalog;
    for i in 0..c.len() {
        assert_eq!(c.index_of(c.item_id(i)), Some(i));
        assert_eq!(c.sid(i).len(), file.config.n_levels);
    }
    class(&file.verify())
}

fn model_file(data: &[u8]) -> String {
    let blob = Arc::new(Blob::Owned(data.to_vec()));
    match onerec_engine::format::from_blob(blob, Path::new("fuzz")) {
        Ok(file) => format!("ok/{}", check_loaded(&file)),
        Err(e) => class::<()>(&Err(e)),
    }
}

/// Splits a checkpoint input into its config text and safetensors bytes.
fn split_checkpoint(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_le_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let rest = &data[4..];
    (n <= rest.len()).then(|| rest.split_at(n))
}

fn checkpoint(data: &[u8]) -> String {
    let Some((config, st)) = split_checkpoint(data) else {
        return "unsplittable".into();
    };
    let Ok(config) = std::str::from_utf8(config) else {
        return "config not utf-8".into();
    };
    let blob = Arc::new(Blob::Owned(st.to_vec()));
    match ModelFile::from_checkpoint_bytes(config, blob) {
        Ok(file) => format!("ok/{}", check_loaded(&file)),
        Err(e) => class::<()>(&Err(e)),
    }
}

/// Mutates the JSON header of a model file and re-seals it (length, data offset, CRC),
/// so the mutation reaches the checks behind the header checksum.
fn mutate_model_header(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let field = |b: &[u8], at: usize, w: usize| -> Option<usize> {
        let mut v = [0u8; 8];
        v[..w].copy_from_slice(b.get(at..at + w)?);
        usize::try_from(u64::from_le_bytes(v)).ok()
    };
    let (Some(len), Some(off)) = (field(data, 12, 4), field(data, 16, 8)) else {
        return mutate(rng, data, other, MAX_LEN);
    };
    if 64 + len > off || off > data.len() {
        return mutate(rng, data, other, MAX_LEN);
    }
    let mut json = data[64..64 + len].to_vec();
    mutate(rng, &mut json, other, MAX_LEN / 2);
    let payload = data[off..].to_vec();
    let new_off = (64 + json.len()).next_multiple_of(256);
    let mut out = data[..64].to_vec();
    out[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
    out[16..24].copy_from_slice(&(new_off as u64).to_le_bytes());
    out[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(new_off, 0);
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..32]);
    h.update(&json);
    out[32..36].copy_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    *data = out;
}

/// Mutates the config text or the safetensors header of a checkpoint input, keeping the
/// framing (lengths) consistent.
fn mutate_checkpoint_part(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let Some((config, st)) = split_checkpoint(data) else {
        return mutate(rng, data, other, MAX_LEN);
    };
    let (mut config, mut st) = (config.to_vec(), st.to_vec());
    let st_header = st
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as usize)
        .filter(|&n| n <= st.len().saturating_sub(8));
    match (rng.chance(2), st_header) {
        (false, Some(n)) => {
            let mut header = st[8..8 + n].to_vec();
            mutate(rng, &mut header, other, MAX_LEN / 2);
            let mut out = (header.len() as u64).to_le_bytes().to_vec();
            out.extend_from_slice(&header);
            out.extend_from_slice(&st[8 + n..]);
            st = out;
        }
        _ => mutate(rng, &mut config, other, 1 << 16),
    }
    let mut out = (config.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&config);
    out.extend_from_slice(&st);
    *data = out;
}

/// The engine the request target runs against, loaded once.
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/dense_l3");
        Engine::load(&dir, BackendKind::Cpu).expect("the dense_l3 fixture loads")
    })
}

/// Reads a batch of requests from bytes: ids are catalog items or raw values, sizes
/// range over valid and invalid values (beam up to 5000, past `MAX_BEAM`).
fn requests(data: &[u8], ids: &[u64]) -> Vec<Request> {
    let mut it = data.iter().copied();
    let mut byte = || it.next().unwrap_or(0);
    let id = |b: &mut dyn FnMut() -> u8| -> u64 {
        if b().is_multiple_of(8) {
            u64::from_le_bytes(std::array::from_fn(|_| b()))
        } else {
            let i = u16::from_le_bytes([b(), b()]) as usize;
            ids[i % ids.len()]
        }
    };
    let n = 1 + byte() as usize % 3;
    (0..n)
        .map(|_| {
            // Mostly small beams (fast), one in 16 up to 5000 (past MAX_BEAM).
            let beam = match byte() % 16 {
                0 => u16::from_le_bytes([byte(), byte()]) as usize % 5000,
                _ => byte() as usize % 64,
            };
            let results = match byte() % 4 {
                0 => beam + 1,
                _ => 1 + byte() as usize % beam.max(1),
            };
            let history: Vec<u64> = (0..byte() % 24).map(|_| id(&mut byte)).collect();
            let mut r = Request::new(history, beam, results);
            r.exclude = (0..byte() % 8).map(|_| id(&mut byte)).collect();
            r.exclude_history = byte() % 2 == 1;
            r
        })
        .collect()
}

fn request(data: &[u8]) -> String {
    let e = engine();
    let catalog = &e.file().catalog;
    let reqs = requests(data, catalog.item_ids());
    let r = e.recommend(&reqs);
    if let Ok(responses) = &r {
        // What an accepted batch promises.
        assert_eq!(responses.len(), reqs.len());
        let m = e.config().session_len;
        for (req, resp) in reqs.iter().zip(responses) {
            assert!(resp.sessions.len() <= req.results);
            for s in &resp.sessions {
                assert!(s.score.is_finite(), "score {}", s.score);
                assert_eq!(s.items.len(), m);
                for item in &s.items {
                    assert!(catalog.index_of(*item).is_some(), "item {item}");
                    assert!(!req.exclude.contains(item), "excluded item {item}");
                    assert!(!(req.exclude_history && req.history.contains(item)));
                }
            }
        }
    }
    class(&r)
}
