//! The model's `config.pbtxt`, as Triton hands it over (JSON): the parameters this backend
//! reads and the choices it derives from the declared inputs (docs/SERVING.md).

use crate::error::ServeError;
use onerec_engine::{BackendKind, MAX_BEAM};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Beam widths above this are refused unless `max_beam` raises it: on a server one request's
/// beam sizes the KV cache every neighbour in its batch shares.
pub const DEFAULT_MAX_BEAM: usize = 512;

/// Item ids travel as INT64 (bit-for-bit u64, as the model file stores them) or UINT64,
/// whichever the model's config declares for `HISTORY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdType {
    Int64,
    Uint64,
}

/// KV cache precision asked for in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvPrecision {
    /// The backend's default (f32 on the CPU, f16 on a GPU that has it).
    Auto,
    F16,
    F32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Model file or checkpoint directory (`model_file`, relative to the version folder).
    pub model_path: PathBuf,
    /// `backend`: `auto` follows the instance group (KIND_CPU → cpu, KIND_GPU → a GPU).
    pub backend: Option<BackendKind>,
    pub kv: KvPrecision,
    pub beam: usize,
    pub results: usize,
    pub exclude_history: bool,
    /// Defaults of `RERANK`, `KEEP_PERMUTATIONS` and `ITEMS`.
    pub rerank: bool,
    pub keep_permutations: bool,
    pub items: usize,
    pub max_beam: usize,
    pub id_type: IdType,
    /// `max_batch_size > 0`: every tensor has a leading batch dimension (of 1 per request).
    pub batched: bool,
}

fn param<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    config
        .get("parameters")?
        .get(key)?
        .get("string_value")?
        .as_str()
        .map(str::trim)
}

fn param_usize(config: &Value, key: &str, default: usize) -> Result<usize, ServeError> {
    match param(config, key) {
        None | Some("") => Ok(default),
        Some(s) => s.parse().map_err(|_| {
            ServeError::Config(format!(
                "parameter `{key}` = `{s}`: expected a non-negative integer"
            ))
        }),
    }
}

fn param_bool(config: &Value, key: &str) -> Result<bool, ServeError> {
    match param(config, key).unwrap_or("false") {
        "" | "false" | "0" => Ok(false),
        "true" | "1" => Ok(true),
        s => Err(ServeError::Config(format!(
            "parameter `{key}` = `{s}`: expected true or false"
        ))),
    }
}

fn io_type(config: &Value, list: &str, name: &str) -> Option<String> {
    config
        .get(list)?
        .as_array()?
        .iter()
        .find(|t| t.get("name").and_then(Value::as_str) == Some(name))?
        .get("data_type")?
        .as_str()
        .map(String::from)
}

impl Settings {
    /// Reads the model configuration JSON; `version_dir` is `<repository>/<model>/<version>`.
    pub fn from_config(json: &str, version_dir: &Path) -> Result<Self, ServeError> {
        let config: Value = serde_json::from_str(json)
            .map_err(|e| ServeError::Config(format!("model configuration is not JSON: {e}")))?;
        let file = param(&config, "model_file").unwrap_or("model.onerec");
        let model_path = version_dir.join(file);
        let backend = match param(&config, "backend").unwrap_or("auto") {
            "" | "auto" => None,
            s => Some(
                s.parse::<BackendKind>()
                    .map_err(|e| ServeError::Config(format!("parameter `backend`: {e}")))?,
            ),
        };
        let kv = match param(&config, "kv_precision").unwrap_or("auto") {
            "" | "auto" => KvPrecision::Auto,
            "f16" => KvPrecision::F16,
            "f32" => KvPrecision::F32,
            s => {
                return Err(ServeError::Config(format!(
                    "parameter `kv_precision` = `{s}`: expected auto, f16 or f32"
                )))
            }
        };
        let max_beam = param_usize(&config, "max_beam", DEFAULT_MAX_BEAM)?;
        if max_beam == 0 || max_beam > MAX_BEAM {
            return Err(ServeError::Config(format!(
                "parameter `max_beam` = {max_beam}: must be in 1..={MAX_BEAM}"
            )));
        }
        let beam = param_usize(&config, "beam", 32.min(max_beam))?;
        let results = param_usize(&config, "results", 10.min(beam))?;
        if beam == 0 || beam > max_beam || results == 0 || results > beam {
            return Err(ServeError::Config(format!(
                "parameters `beam` = {beam}, `results` = {results}: need 1 <= results <= beam <= max_beam ({max_beam})"
            )));
        }
        let items = param_usize(&config, "items", 0)?;
        if items > beam {
            return Err(ServeError::Config(format!(
                "parameter `items` = {items}: must be in 0..=beam ({beam})"
            )));
        }
        let exclude_history = param_bool(&config, "exclude_history")?;
        let rerank = param_bool(&config, "rerank")?;
        let keep_permutations = param_bool(&config, "keep_permutations")?;
        let id_type = match io_type(&config, "input", "HISTORY").as_deref() {
            Some("TYPE_INT64") => IdType::Int64,
            Some("TYPE_UINT64") => IdType::Uint64,
            Some(t) => {
                return Err(ServeError::Config(format!(
                    "input HISTORY is {t}: declare it TYPE_INT64 or TYPE_UINT64"
                )))
            }
            None => {
                return Err(ServeError::Config(
                    "the configuration declares no input HISTORY".into(),
                ))
            }
        };
        let ids = match id_type {
            IdType::Int64 => "TYPE_INT64",
            IdType::Uint64 => "TYPE_UINT64",
        };
        for output in ["ITEM_IDS", "ITEM_LIST"] {
            match io_type(&config, "output", output) {
                Some(t) if t != ids => {
                    return Err(ServeError::Config(format!(
                        "output {output} is {t} but HISTORY is {ids}: declare both the same"
                    )))
                }
                _ => {}
            }
        }
        let batched = config
            .get("max_batch_size")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0;
        Ok(Settings {
            model_path,
            backend,
            kv,
            beam,
            results,
            exclude_history,
            rerank,
            keep_permutations,
            items,
            max_beam,
            id_type,
            batched,
        })
    }
}

impl Settings {
    /// What the settings ask of the opened model: a default of reranking needs its reward
    /// model (refused at load rather than on every request).
    pub fn check_model(&self, model: &onerec_engine::Config) -> Result<(), ServeError> {
        if self.rerank && model.reward.is_none() {
            return Err(ServeError::Config(format!(
                "parameter `rerank` = true, but {} has no reward model (docs/REWARD_MODEL.md)",
                self.model_path.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(params: &str) -> String {
        format!(
            r#"{{"name":"m","max_batch_size":8,
            "input":[{{"name":"HISTORY","data_type":"TYPE_INT64","dims":["-1"]}}],
            "output":[{{"name":"ITEM_IDS","data_type":"TYPE_INT64","dims":["-1","-1"]}}],
            "parameters":{{{params}}}}}"#
        )
    }

    #[test]
    fn defaults_and_parameters() {
        let s = Settings::from_config(&cfg(""), Path::new("/r/m/1")).unwrap();
        assert_eq!(s.model_path, Path::new("/r/m/1/model.onerec"));
        assert_eq!((s.beam, s.results, s.max_beam), (32, 10, DEFAULT_MAX_BEAM));
        assert!(s.batched && s.backend.is_none() && !s.exclude_history);
        assert_eq!((s.rerank, s.keep_permutations, s.items), (false, false, 0));
        let s = Settings::from_config(
            &cfg(
                r#""beam":{"string_value":"8"},"results":{"string_value":"3"},
                 "backend":{"string_value":"cpu"},"exclude_history":{"string_value":"true"},
                 "model_file":{"string_value":"x.onerec"},"kv_precision":{"string_value":"f32"}"#,
            ),
            Path::new("/r/m/1"),
        )
        .unwrap();
        assert_eq!((s.beam, s.results), (8, 3));
        assert_eq!(s.backend, Some(BackendKind::Cpu));
        assert_eq!(s.kv, KvPrecision::F32);
        assert!(s.exclude_history);
        assert_eq!(s.model_path, Path::new("/r/m/1/x.onerec"));
        let s = Settings::from_config(
            &cfg(
                r#""rerank":{"string_value":"true"},"keep_permutations":{"string_value":"1"},
                 "items":{"string_value":"32"}"#,
            ),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!((s.rerank, s.keep_permutations, s.items), (true, true, 32));
    }

    #[test]
    fn rerank_by_default_needs_a_reward_model() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let config = |dir: &str| {
            let text = std::fs::read_to_string(fixtures.join(dir).join("config.json")).unwrap();
            onerec_engine::Config::from_json(&text).unwrap()
        };
        let (plain, reward) = (config("moe_dec_l2"), config("reward_l3"));
        assert!(plain.reward.is_none() && reward.reward.is_some());
        let mut s = Settings::from_config(&cfg(""), Path::new("/")).unwrap();
        s.check_model(&plain).unwrap();
        s.rerank = true;
        s.check_model(&reward).unwrap();
        let e = s.check_model(&plain).unwrap_err();
        assert!(e.to_string().contains("no reward model"), "{e}");
    }

    #[test]
    fn bad_parameters_are_named() {
        for (p, needle) in [
            (r#""beam":{"string_value":"0"}"#, "beam"),
            (r#""beam":{"string_value":"x"}"#, "beam"),
            (r#""results":{"string_value":"64"}"#, "results"),
            (r#""backend":{"string_value":"tpu"}"#, "backend"),
            (r#""kv_precision":{"string_value":"q8"}"#, "kv_precision"),
            (r#""max_beam":{"string_value":"100000"}"#, "max_beam"),
            (r#""items":{"string_value":"33"}"#, "items"),
            (r#""items":{"string_value":"-1"}"#, "items"),
            (r#""rerank":{"string_value":"yes"}"#, "rerank"),
            (
                r#""keep_permutations":{"string_value":"2"}"#,
                "keep_permutations",
            ),
        ] {
            let e = Settings::from_config(&cfg(p), Path::new("/")).unwrap_err();
            assert!(e.to_string().contains(needle), "{p}: {e}");
        }
        let list = r#"{"max_batch_size":8,
            "input":[{"name":"HISTORY","data_type":"TYPE_INT64"}],
            "output":[{"name":"ITEM_LIST","data_type":"TYPE_UINT64"}]}"#;
        let e = Settings::from_config(list, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("ITEM_LIST"), "{e}");
        let e = Settings::from_config(r#"{"input":[]}"#, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("HISTORY"), "{e}");
    }
}
