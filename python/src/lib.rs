//! Python bindings of the OneRec engine: `onerec.Engine`. Type conversion only; the
//! engine does the work with the GIL released.

use onerec_engine::tensor::Blob;
use onerec_engine::{BackendKind, Engine as RustEngine, Request, Response};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pyo3::create_exception!(
    _onerec,
    OneRecError,
    PyRuntimeError,
    "An error of the OneRec engine."
);
pyo3::create_exception!(
    _onerec,
    UnknownItemError,
    OneRecError,
    "A history names an item id that is not in the model's catalog."
);

/// The built-in model (MovieLens-100K, q8): the same file the `onerec` CLI embeds.
#[repr(C, align(256))]
struct Aligned<T: ?Sized>(T);
static BUILT_IN: &Aligned<[u8]> = &Aligned(*include_bytes!("../../models/default/model.onerec"));

fn error(e: onerec_engine::Error) -> PyErr {
    error_with(e, "")
}

/// The Python exception for an engine error: unknown items and bad requests are the
/// caller's (UnknownItemError, ValueError), the rest the engine's (OneRecError).
fn error_with(e: onerec_engine::Error, prefix: &str) -> PyErr {
    let msg = format!("{prefix}{e}");
    match e.root() {
        onerec_engine::Error::UnknownItems { .. } => UnknownItemError::new_err(msg),
        onerec_engine::Error::Request(_) | onerec_engine::Error::NoRewardModel => {
            PyValueError::new_err(msg)
        }
        _ => OneRecError::new_err(msg),
    }
}

fn backend(name: &str) -> PyResult<BackendKind> {
    name.parse()
        .map_err(|e: onerec_engine::Error| PyValueError::new_err(e.to_string()))
}

/// A loaded model. Thread-safe: one engine may serve several Python threads at once.
#[pyclass(frozen, module = "onerec")]
struct Engine {
    engine: Arc<RustEngine>,
}

/// Per-user exclusions: None, one list for every user, or one list per user.
#[derive(FromPyObject)]
enum Exclude {
    // Tried first: `[]` is the empty list for every user.
    Shared(Vec<u64>),
    PerUser(Vec<Vec<u64>>),
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (path=None, *, backend="auto"))]
    fn new(py: Python<'_>, path: Option<PathBuf>, backend: &str) -> PyResult<Self> {
        let kind = self::backend(backend)?;
        let engine = py
            .detach(|| match &path {
                Some(p) => RustEngine::load(p, kind),
                None => onerec_engine::format::from_blob(
                    Arc::new(Blob::Static(&BUILT_IN.0)),
                    Path::new("<built-in MovieLens-100K model>"),
                )
                .and_then(|f| RustEngine::from_file(Arc::new(f), kind)),
            })
            .map_err(error)?;
        Ok(Engine {
            engine: Arc::new(engine),
        })
    }

    /// Recommends sessions for a batch of users (decoded together). Returns one list per
    /// history of up to `results` sessions, best first; each session is a dict with
    /// "score" (float), "items" (list of ids) and "sids" (list of code lists). No two
    /// sessions hold the same set of items unless `keep_permutations`. With `rerank` the
    /// sessions are ordered by the model's reward model and carry "reward" (float) and
    /// "signals" (one float per signal of the reward model).
    #[pyo3(signature = (histories, *, beam=16, results=5, exclude=None, exclude_history=false, rerank=false, keep_permutations=false))]
    #[allow(clippy::too_many_arguments)]
    fn recommend<'py>(
        &self,
        py: Python<'py>,
        histories: Vec<Vec<u64>>,
        beam: usize,
        results: usize,
        exclude: Option<Exclude>,
        exclude_history: bool,
        rerank: bool,
        keep_permutations: bool,
    ) -> PyResult<Bound<'py, PyList>> {
        let n = histories.len();
        let excludes: Vec<Vec<u64>> = match exclude {
            None => vec![Vec::new(); n],
            Some(Exclude::Shared(ids)) => vec![ids; n],
            Some(Exclude::PerUser(lists)) => {
                if lists.len() != n {
                    return Err(PyValueError::new_err(format!(
                        "exclude has {} lists for {n} histories (give one per history, or one list for all)",
                        lists.len()
                    )));
                }
                lists
            }
        };
        let requests: Vec<Request> = histories
            .into_iter()
            .zip(excludes)
            .map(|(history, exclude)| {
                Request::builder(history)
                    .beam(beam)
                    .results(results)
                    .exclude(exclude)
                    .exclude_history(exclude_history)
                    .rerank(rerank)
                    .keep_permutations(keep_permutations)
                    .build()
            })
            .collect();
        let engine = self.engine.clone();
        let outcomes = py
            .detach(move || engine.recommend_each(&requests))
            .map_err(error)?;
        let out = PyList::empty(py);
        for (i, r) in outcomes.into_iter().enumerate() {
            match r {
                Ok(r) => out.append(sessions(py, &r)?)?,
                Err(e) => return Err(error_with(e, &format!("request {i}: "))),
            }
        }
        Ok(out)
    }

    /// The model's config (MODEL_SPEC config.json fields) as a dict.
    #[getter]
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = py.import("json")?;
        json.call_method1("loads", (self.engine.config().to_json(),))
    }

    /// The backend in use, e.g. "cpu (4 threads)".
    #[getter]
    fn backend(&self) -> String {
        self.engine.describe_backend()
    }

    /// Item ids of the catalog, in catalog order.
    #[getter]
    fn items(&self) -> Vec<u64> {
        self.engine.file().catalog.item_ids().to_vec()
    }

    /// Whether `item_id` is in the catalog.
    fn __contains__(&self, item_id: u64) -> bool {
        self.engine.file().catalog.index_of(item_id).is_some()
    }

    /// Items in the catalog.
    fn __len__(&self) -> usize {
        self.engine.file().catalog.len()
    }

    /// The semantic ID of `item_id`.
    fn sid(&self, item_id: u64) -> PyResult<Vec<u32>> {
        let cat = &self.engine.file().catalog;
        cat.index_of(item_id)
            .map(|i| cat.sid(i).to_vec())
            .ok_or_else(|| {
                UnknownItemError::new_err(format!(
                    "item id {item_id} is not in the model's catalog"
                ))
            })
    }

    fn __repr__(&self) -> String {
        format!(
            "onerec.Engine({} items, backend {:?})",
            self.engine.file().catalog.len(),
            self.engine.describe_backend()
        )
    }
}

fn sessions<'py>(py: Python<'py>, r: &Response) -> PyResult<Bound<'py, PyList>> {
    let out = PyList::empty(py);
    for s in &r.sessions {
        let d = PyDict::new(py);
        d.set_item("score", s.score)?;
        d.set_item("items", &s.items)?;
        d.set_item("sids", &s.sids)?;
        if let Some(reward) = s.reward {
            d.set_item("reward", reward)?;
            d.set_item("signals", &s.signals)?;
        }
        out.append(d)?;
    }
    Ok(out)
}

#[pymodule]
fn _onerec(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add("OneRecError", m.py().get_type::<OneRecError>())?;
    m.add("UnknownItemError", m.py().get_type::<UnknownItemError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
