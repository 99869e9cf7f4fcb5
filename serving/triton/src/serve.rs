//! One execute call's requests → one engine batch, each request with its own answer.

use crate::error::ServeError;
use crate::request::within_max_beam;
use onerec_engine::{Engine, Request, Response};
use std::panic::{catch_unwind, AssertUnwindSafe};

type Answers = Vec<Result<Response, ServeError>>;

/// The one call into the engine: a result per request (`Engine::recommend_each`: an
/// invalid request fails alone, the valid ones are decoded together); the outer error is
/// a failure of the whole call (backend, budget, an internal error).
fn recommend_batch(engine: &Engine, requests: &[Request]) -> Result<Answers, ServeError> {
    // A panic in the engine is a bug; caught here it fails this batch, not the server.
    match catch_unwind(AssertUnwindSafe(|| engine.recommend_each(requests))) {
        Ok(Ok(r)) if r.len() == requests.len() => {
            Ok(r.into_iter().map(|r| r.map_err(ServeError::from)).collect())
        }
        Ok(Ok(r)) => Err(ServeError::Internal(format!(
            "the engine answered {} of {} requests",
            r.len(),
            requests.len()
        ))),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ServeError::Internal("the engine panicked".into())),
    }
}

/// Answers every request: those that failed to parse or exceed the server's beam limit
/// keep their error, the rest are decoded as one engine batch with an answer each. If the
/// whole call fails (a budget a smaller batch would meet, an internal error), each request
/// is decoded alone, so one request never fails its neighbours.
pub fn serve(
    engine: &Engine,
    max_beam: usize,
    parsed: Vec<Result<Request, ServeError>>,
) -> Answers {
    serve_with(max_beam, parsed, |batch| recommend_batch(engine, batch))
}

/// [`serve`] over any batch decoder (tests inject failures through it).
fn serve_with(
    max_beam: usize,
    parsed: Vec<Result<Request, ServeError>>,
    recommend: impl Fn(&[Request]) -> Result<Answers, ServeError>,
) -> Answers {
    let mut out: Vec<Option<Result<Response, ServeError>>> = Vec::with_capacity(parsed.len());
    let mut batch = Vec::new();
    let mut slots = Vec::new();
    for (i, p) in parsed.into_iter().enumerate() {
        match p.and_then(|r| within_max_beam(&r, max_beam).map(|()| r)) {
            Ok(r) => {
                batch.push(r);
                slots.push(i);
                out.push(None);
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    if !batch.is_empty() {
        match recommend(&batch) {
            Ok(answers) => {
                for (slot, r) in slots.iter().zip(answers) {
                    out[*slot] = Some(r);
                }
            }
            Err(e) if batch.len() == 1 => out[slots[0]] = Some(Err(e)),
            Err(e) => {
                log::warn!(
                    "a batch of {} requests failed ({e}); decoding them one by one",
                    batch.len()
                );
                for (slot, r) in slots.iter().zip(&batch) {
                    out[*slot] = Some(recommend(std::slice::from_ref(r)).and_then(|mut v| {
                        v.pop().unwrap_or_else(|| {
                            Err(ServeError::Internal("no answer for the request".into()))
                        })
                    }));
                }
            }
        }
    }
    out.into_iter()
        .map(|o| o.unwrap_or_else(|| Err(ServeError::Internal("request left unanswered".into()))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use onerec_engine::BackendKind;
    use std::path::Path;

    fn engine() -> Engine {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/moe_dec_l2");
        Engine::load(&root, BackendKind::Cpu).unwrap()
    }

    #[test]
    fn bad_requests_do_not_fail_their_neighbours() {
        let e = engine();
        let ids = e.file().catalog.item_ids().to_vec();
        let good = |h: &[u64]| Request::new(h.to_vec(), 4, 2);
        let mut unknown = good(&[ids[0]]);
        unknown.history.push(u64::MAX - 7);
        let mut beam0 = good(&[ids[1]]);
        beam0.beam = 0;
        let wide = Request::new(vec![ids[2]], 64, 2);
        let parsed = vec![
            Ok(good(&[ids[0], ids[1]])),
            Ok(unknown),
            Err(ServeError::Input("bad tensor".into())),
            Ok(Request::new(Vec::new(), 4, 2)),
            Ok(beam0),
            Ok(wide),
            Ok(good(&[ids[2]])),
        ];
        let out = serve(&e, 32, parsed);
        assert_eq!(out.len(), 7);
        let alone = |r: Request| e.recommend(&[r]).unwrap().pop().unwrap();
        let first = out[0].as_ref().unwrap();
        let want = alone(good(&[ids[0], ids[1]]));
        assert_eq!(first.sessions.len(), want.sessions.len());
        for (a, b) in first.sessions.iter().zip(&want.sessions) {
            assert_eq!(a.items, b.items);
            assert!((a.score - b.score).abs() < 1e-3);
        }
        assert!(out[1]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("unknown item"));
        assert!(out[2]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("bad tensor"));
        assert!(out[3].as_ref().unwrap_err().to_string().contains("empty"));
        assert!(out[4].as_ref().unwrap_err().to_string().contains("beam"));
        assert!(out[5]
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("max_beam"));
        assert!(out[6].is_ok());
        for o in &out[1..6] {
            assert!(o.as_ref().unwrap_err().is_client_error());
        }
    }

    #[test]
    fn a_failing_batch_falls_back_to_one_by_one() {
        let e = engine();
        let ids = e.file().catalog.item_ids().to_vec();
        let poison = vec![ids[3]];
        // A failure the checks cannot foresee, in whatever batch holds the poison request.
        let run = |b: &[Request]| {
            if b.iter().any(|r| r.history == poison) {
                Err(ServeError::Internal("boom".into()))
            } else {
                recommend_batch(&e, b)
            }
        };
        let reqs = [vec![ids[0]], poison.clone(), vec![ids[1], ids[2]]];
        let parsed = reqs
            .iter()
            .map(|h| Ok(Request::new(h.clone(), 4, 2)))
            .collect();
        let out = serve_with(32, parsed, run);
        assert!(out[1].as_ref().unwrap_err().to_string().contains("boom"));
        for i in [0, 2] {
            let want = e.recommend(&[Request::new(reqs[i].clone(), 4, 2)]).unwrap();
            assert_eq!(out[i].as_ref().unwrap(), &want[0], "request {i}");
        }
    }

    #[test]
    fn rerank_without_a_reward_model_fails_alone() {
        let e = engine();
        assert!(!e.has_reward_model());
        let ids = e.file().catalog.item_ids().to_vec();
        let good = Request::new(vec![ids[0], ids[1]], 4, 2);
        let mut rerank = good.clone();
        rerank.rerank = true;
        let mut items = good.clone();
        items.items = 3;
        let mut too_many = good.clone();
        too_many.items = 5;
        let out = serve(
            &e,
            32,
            vec![Ok(good.clone()), Ok(rerank), Ok(items), Ok(too_many)],
        );
        let want = e.recommend(&[good]).unwrap().pop().unwrap();
        assert_eq!(out[0].as_ref().unwrap(), &want);
        let err = out[1].as_ref().unwrap_err();
        assert!(
            err.is_client_error() && err.to_string().contains("reward model"),
            "{err}"
        );
        assert_eq!(out[2].as_ref().unwrap().items.len(), 3);
        let err = out[3].as_ref().unwrap_err();
        assert!(
            err.is_client_error() && err.to_string().contains("items"),
            "{err}"
        );
    }

    #[test]
    fn reranked_and_plain_requests_share_a_batch() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/reward_l3");
        let e = Engine::load(&root, BackendKind::Cpu).unwrap();
        let ids = e.file().catalog.item_ids().to_vec();
        let reqs = [
            Request::builder(vec![ids[0], ids[3]])
                .beam(16)
                .results(4)
                .rerank(true)
                .items(6)
                .build(),
            Request::builder(vec![ids[2]]).beam(8).results(3).build(),
            Request::builder(vec![ids[1], ids[4]])
                .beam(8)
                .results(8)
                .keep_permutations(true)
                .rerank(true)
                .build(),
        ];
        let out = serve(&e, 32, reqs.iter().cloned().map(Ok).collect());
        for (i, (got, r)) in out.iter().zip(&reqs).enumerate() {
            let got = got.as_ref().unwrap();
            let want = e.recommend(std::slice::from_ref(r)).unwrap().pop().unwrap();
            // Decoded beside others: equal up to float rounding (docs/DECISIONS.md).
            assert_eq!(got.sessions.len(), want.sessions.len(), "request {i}");
            for (a, b) in got.sessions.iter().zip(&want.sessions) {
                assert_eq!(a.items, b.items, "request {i}");
                assert_eq!(a.reward.is_some(), r.rerank, "request {i}");
                if let (Some(x), Some(y)) = (a.reward, b.reward) {
                    assert!((x - y).abs() < 1e-4, "request {i}: reward {x} vs {y}");
                }
            }
            let items = |x: &Response| x.items.iter().map(|i| i.item).collect::<Vec<_>>();
            assert_eq!(items(got), items(&want), "request {i}");
            assert_eq!(got.items.len(), r.items, "request {i}");
        }
    }
}
