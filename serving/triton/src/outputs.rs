//! One engine `Response` → the output tensors of its Triton response (docs/SERVING.md).

use crate::error::ServeError;
use crate::settings::{IdType, Settings};
use crate::sys;
use onerec_engine::Response;

pub const ITEM_IDS: &str = "ITEM_IDS";
pub const SCORES: &str = "SCORES";
pub const SIDS: &str = "SIDS";
pub const REWARDS: &str = "REWARDS";
pub const SIGNALS: &str = "SIGNALS";
pub const ITEM_LIST: &str = "ITEM_LIST";
pub const ITEM_SCORES: &str = "ITEM_SCORES";

/// Every output this backend can write.
pub const ALL: [&str; 7] = [
    ITEM_IDS,
    SCORES,
    SIDS,
    REWARDS,
    SIGNALS,
    ITEM_LIST,
    ITEM_SCORES,
];

/// One output tensor: name, type, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: &'static str,
    pub datatype: sys::DataType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// What the model makes: the sizes every response's tensors are checked against.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub session_len: usize,
    pub levels: usize,
    /// The reward model's signals (0: the model has no reward model).
    pub signals: usize,
}

fn le<T: Copy, const N: usize>(v: impl IntoIterator<Item = T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.into_iter().flat_map(f).collect()
}

/// The output tensors named in `wanted` (Triton lists every output of the model when the
/// client names none). `REWARDS` is `[s]` and `SIGNALS` `[s, signals]` when the request
/// was reranked, `[0]` and `[0, signals]` when it was not; `ITEM_LIST`/`ITEM_SCORES` hold
/// the item-list answer (`[0]` unless the request asked for items).
pub fn outputs(
    r: &Response,
    s: &Settings,
    d: Dims,
    wanted: &[String],
) -> Result<Vec<Tensor>, ServeError> {
    let n = r.sessions.len();
    if let Some(bad) = r.sessions.iter().find(|x| {
        x.items.len() != d.session_len
            || x.sids.len() != d.session_len
            || x.sids.iter().any(|sid| sid.len() != d.levels)
    }) {
        return Err(ServeError::Internal(format!(
            "a session of {} items where the model makes {} of {} levels",
            bad.items.len(),
            d.session_len,
            d.levels
        )));
    }
    // Rewards come for every session or none (the engine reranks a request whole).
    let reranked = r.sessions.iter().filter(|x| x.reward.is_some()).count();
    if reranked != 0 && reranked != n {
        return Err(ServeError::Internal(format!(
            "{reranked} of {n} sessions carry a reward"
        )));
    }
    if r.sessions
        .iter()
        .any(|x| x.reward.is_some() && x.signals.len() != d.signals)
    {
        return Err(ServeError::Internal(format!(
            "a session's signals are not the model's {}",
            d.signals
        )));
    }
    let lead: &[i64] = if s.batched { &[1] } else { &[] };
    let shape = |rest: &[usize]| -> Vec<i64> {
        lead.iter()
            .copied()
            .chain(rest.iter().map(|&x| x as i64))
            .collect()
    };
    let id_type = match s.id_type {
        IdType::Int64 => sys::TYPE_INT64,
        IdType::Uint64 => sys::TYPE_UINT64,
    };
    let mut out = Vec::new();
    for &name in ALL.iter().filter(|&&a| wanted.iter().any(|w| w == a)) {
        let (datatype, dims, data) = match name {
            ITEM_IDS => (
                id_type,
                vec![n, d.session_len],
                le(
                    r.sessions.iter().flat_map(|x| x.items.iter().copied()),
                    u64::to_le_bytes,
                ),
            ),
            SCORES => (
                sys::TYPE_FP32,
                vec![n],
                le(r.sessions.iter().map(|x| x.score), f32::to_le_bytes),
            ),
            SIDS => (
                sys::TYPE_INT32,
                vec![n, d.session_len, d.levels],
                le(
                    r.sessions
                        .iter()
                        .flat_map(|x| x.sids.iter().flatten().map(|&c| c as i32)),
                    i32::to_le_bytes,
                ),
            ),
            REWARDS => (
                sys::TYPE_FP32,
                vec![reranked],
                le(r.sessions.iter().filter_map(|x| x.reward), f32::to_le_bytes),
            ),
            SIGNALS => (
                sys::TYPE_FP32,
                vec![reranked, d.signals],
                le(
                    r.sessions
                        .iter()
                        .filter(|x| x.reward.is_some())
                        .flat_map(|x| x.signals.iter().copied()),
                    f32::to_le_bytes,
                ),
            ),
            ITEM_LIST => (
                id_type,
                vec![r.items.len()],
                le(r.items.iter().map(|x| x.item), u64::to_le_bytes),
            ),
            ITEM_SCORES => (
                sys::TYPE_FP32,
                vec![r.items.len()],
                le(r.items.iter().map(|x| x.score), f32::to_le_bytes),
            ),
            _ => continue,
        };
        out.push(Tensor {
            name,
            datatype,
            shape: shape(&dims),
            data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use onerec_engine::{BackendKind, Engine, Request};
    use std::path::Path;

    fn settings() -> Settings {
        let json = r#"{"max_batch_size":8,"input":[{"name":"HISTORY","data_type":"TYPE_INT64"}]}"#;
        Settings::from_config(json, Path::new("/")).unwrap()
    }

    fn f32s(t: &Tensor) -> Vec<f32> {
        t.data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn u64s(t: &Tensor) -> Vec<u64> {
        t.data
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }

    fn all() -> Vec<String> {
        ALL.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rewards_and_item_list_carry_the_engine_answer() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reward_l3");
        let e = Engine::load(&root, BackendKind::Cpu).unwrap();
        let cfg = e.config();
        let d = Dims {
            session_len: cfg.session_len,
            levels: cfg.n_levels,
            signals: cfg.reward.as_ref().unwrap().signals.len(),
        };
        let history = vec![e.file().catalog.item_id(0), e.file().catalog.item_id(5)];
        let reranked = Request::builder(history.clone())
            .beam(8)
            .results(3)
            .rerank(true)
            .items(5)
            .build();
        let plain = Request::builder(history).beam(8).results(3).build();
        let answers = e.recommend(&[reranked, plain]).unwrap();
        let (r, p) = (&answers[0], &answers[1]);
        assert!(!r.sessions.is_empty() && r.items.len() == 5);

        let t = outputs(r, &settings(), d, &all()).unwrap();
        let names: Vec<_> = t.iter().map(|t| t.name).collect();
        assert_eq!(names, ALL);
        let get = |ts: &[Tensor], n: &str| ts.iter().find(|t| t.name == n).unwrap().clone();
        let n = r.sessions.len() as i64;
        let rewards = get(&t, REWARDS);
        assert_eq!(
            (rewards.datatype, rewards.shape.clone()),
            (sys::TYPE_FP32, vec![1, n])
        );
        let want: Vec<f32> = r.sessions.iter().map(|s| s.reward.unwrap()).collect();
        assert_eq!(f32s(&rewards), want);
        let signals = get(&t, SIGNALS);
        assert_eq!(signals.shape, vec![1, n, d.signals as i64]);
        let want: Vec<f32> = r.sessions.iter().flat_map(|s| s.signals.clone()).collect();
        assert_eq!(f32s(&signals), want);
        let list = get(&t, ITEM_LIST);
        assert_eq!(
            (list.datatype, list.shape.clone()),
            (sys::TYPE_INT64, vec![1, 5])
        );
        assert_eq!(
            u64s(&list),
            r.items.iter().map(|i| i.item).collect::<Vec<_>>()
        );
        let scores = get(&t, ITEM_SCORES);
        assert_eq!(scores.shape, vec![1, 5]);
        assert_eq!(
            f32s(&scores),
            r.items.iter().map(|i| i.score).collect::<Vec<_>>()
        );
        let ids = get(&t, ITEM_IDS);
        assert_eq!(ids.shape, vec![1, n, d.session_len as i64]);
        let sids = get(&t, SIDS);
        assert_eq!(ids.data.len() / 8 * d.levels, sids.data.len() / 4);

        // Not reranked, no items asked: empty rewards, signals and item list.
        let t = outputs(p, &settings(), d, &all()).unwrap();
        assert!(!p.sessions.is_empty());
        assert_eq!(get(&t, REWARDS).shape, vec![1, 0]);
        assert_eq!(get(&t, SIGNALS).shape, vec![1, 0, d.signals as i64]);
        for name in [ITEM_LIST, ITEM_SCORES] {
            let x = get(&t, name);
            assert_eq!((x.shape, x.data.len()), (vec![1, 0], 0));
        }
        assert_eq!(get(&t, SCORES).shape, vec![1, p.sessions.len() as i64]);

        // Only what was asked for.
        let t = outputs(r, &settings(), d, &[ITEM_LIST.to_string()]).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].name, ITEM_LIST);

        // An answer that contradicts the model is an internal error, not a bad tensor.
        let mut half = r.clone();
        half.sessions[0].reward = None;
        assert!(outputs(&half, &settings(), d, &all()).is_err());
        let mut short = r.clone();
        short.sessions[0].signals.pop();
        assert!(outputs(&short, &settings(), d, &all()).is_err());
    }
}
