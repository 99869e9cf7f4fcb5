//! One Triton request's tensors → one engine `Request`, checked before it joins a batch so
//! that a bad request gets its own error and never fails its neighbours.

use crate::error::ServeError;
use crate::settings::{IdType, Settings};
use crate::sys;
use onerec_engine::{Request, MAX_BEAM};

pub const HISTORY: &str = "HISTORY";
pub const EXCLUDE: &str = "EXCLUDE";
pub const BEAM: &str = "BEAM";
pub const RESULTS: &str = "RESULTS";
pub const EXCLUDE_HISTORY: &str = "EXCLUDE_HISTORY";
pub const RERANK: &str = "RERANK";
pub const KEEP_PERMUTATIONS: &str = "KEEP_PERMUTATIONS";
pub const ITEMS: &str = "ITEMS";

/// An input tensor as Triton delivered it (bytes already gathered into host memory).
#[derive(Debug, Clone)]
pub struct RawInput {
    pub datatype: sys::DataType,
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// Looks an input up by name (`None`: the client did not send it).
pub trait Inputs {
    fn get(&self, name: &str) -> Result<Option<RawInput>, ServeError>;
}

fn type_name(t: sys::DataType) -> &'static str {
    match t {
        sys::TYPE_BOOL => "BOOL",
        sys::TYPE_UINT8 => "UINT8",
        sys::TYPE_UINT32 => "UINT32",
        sys::TYPE_UINT64 => "UINT64",
        sys::TYPE_INT32 => "INT32",
        sys::TYPE_INT64 => "INT64",
        sys::TYPE_FP32 => "FP32",
        _ => "another type",
    }
}

/// The element count of `input` after the leading batch dimension of 1 (when batched).
fn elements(name: &str, input: &RawInput, batched: bool) -> Result<usize, ServeError> {
    let dims = if batched {
        match input.shape.split_first() {
            Some((1, rest)) => rest,
            _ => {
                return Err(ServeError::Input(format!(
                    "input {name} has shape {:?}: one user per request (batch dimension 1)",
                    input.shape
                )))
            }
        }
    } else {
        &input.shape[..]
    };
    if dims.len() > 1 || dims.iter().any(|&d| d < 0) {
        return Err(ServeError::Input(format!(
            "input {name} has shape {:?}: expected a vector",
            input.shape
        )));
    }
    Ok(dims.first().map_or(1, |&d| d as usize))
}

fn ids(name: &str, input: &RawInput, s: &Settings) -> Result<Vec<u64>, ServeError> {
    let want = match s.id_type {
        IdType::Int64 => sys::TYPE_INT64,
        IdType::Uint64 => sys::TYPE_UINT64,
    };
    if input.datatype != want {
        return Err(ServeError::Input(format!(
            "input {name} is {}: expected {}",
            type_name(input.datatype),
            type_name(want)
        )));
    }
    let n = elements(name, input, s.batched)?;
    if input.data.len() != n.saturating_mul(8) {
        return Err(ServeError::Input(format!(
            "input {name}: {} bytes for {n} ids",
            input.data.len()
        )));
    }
    // Both types carry the id's 64 bits as they are (INT64 is u64 bit-for-bit).
    Ok(input
        .data
        .chunks_exact(8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("chunks of 8")))
        .collect())
}

/// A one-element integer input (INT32, INT64, UINT32 or UINT64).
fn scalar(name: &str, input: &RawInput, batched: bool) -> Result<i128, ServeError> {
    if elements(name, input, batched)? != 1 {
        return Err(ServeError::Input(format!(
            "input {name} has shape {:?}: expected one value",
            input.shape
        )));
    }
    let d = &input.data;
    let v = match (input.datatype, d.len()) {
        (sys::TYPE_INT32, 4) => i32::from_le_bytes(d[..4].try_into().unwrap()) as i128,
        (sys::TYPE_UINT32, 4) => u32::from_le_bytes(d[..4].try_into().unwrap()) as i128,
        (sys::TYPE_INT64, 8) => i64::from_le_bytes(d[..8].try_into().unwrap()) as i128,
        (sys::TYPE_UINT64, 8) => u64::from_le_bytes(d[..8].try_into().unwrap()) as i128,
        (t, n) => {
            return Err(ServeError::Input(format!(
                "input {name} is {} with {n} bytes: expected one INT32 or INT64",
                type_name(t)
            )))
        }
    };
    Ok(v)
}

fn width(name: &str, v: i128) -> Result<usize, ServeError> {
    if v < 1 || v > MAX_BEAM as i128 {
        return Err(ServeError::Input(format!(
            "{name} must be in 1..={MAX_BEAM}, got {v}"
        )));
    }
    Ok(v as usize)
}

/// Builds the engine request from the tensors, with the model's defaults where the
/// optional inputs are absent.
pub fn build(inputs: &dyn Inputs, s: &Settings) -> Result<Request, ServeError> {
    let history = match inputs.get(HISTORY)? {
        Some(t) => ids(HISTORY, &t, s)?,
        None => return Err(ServeError::Input("input HISTORY is missing".into())),
    };
    let exclude = match inputs.get(EXCLUDE)? {
        Some(t) => ids(EXCLUDE, &t, s)?,
        None => Vec::new(),
    };
    let beam = match inputs.get(BEAM)? {
        Some(t) => width(BEAM, scalar(BEAM, &t, s.batched)?)?,
        None => s.beam,
    };
    let results = match inputs.get(RESULTS)? {
        Some(t) => width(RESULTS, scalar(RESULTS, &t, s.batched)?)?,
        // The configured default, never more than the request's own beam.
        None => s.results.min(beam),
    };
    let items = match inputs.get(ITEMS)? {
        Some(t) => {
            let v = scalar(ITEMS, &t, s.batched)?;
            if v < 0 || v > beam as i128 {
                return Err(ServeError::Input(format!(
                    "{ITEMS} must be in 0..=beam ({beam}), got {v}"
                )));
            }
            v as usize
        }
        // Like results: the configured default, never more than the request's beam.
        None => s.items.min(beam),
    };
    let flag = |name: &str, default: bool| -> Result<bool, ServeError> {
        match inputs.get(name)? {
            Some(t) => boolean(name, &t, s.batched),
            None => Ok(default),
        }
    };
    Ok(Request::builder(history)
        .beam(beam)
        .results(results)
        .exclude(exclude)
        .exclude_history(flag(EXCLUDE_HISTORY, s.exclude_history)?)
        .rerank(flag(RERANK, s.rerank)?)
        .keep_permutations(flag(KEEP_PERMUTATIONS, s.keep_permutations)?)
        .items(items)
        .build())
}

/// A one-element BOOL input.
fn boolean(name: &str, input: &RawInput, batched: bool) -> Result<bool, ServeError> {
    if input.datatype != sys::TYPE_BOOL
        || elements(name, input, batched)? != 1
        || input.data.len() != 1
    {
        return Err(ServeError::Input(format!(
            "input {name} is {} {:?}: expected one BOOL",
            type_name(input.datatype),
            input.shape
        )));
    }
    Ok(input.data[0] != 0)
}

/// The server's own limit on a request, beyond the engine's checks (which
/// `Engine::recommend_each` makes per request): the model's configured `max_beam`.
pub fn within_max_beam(r: &Request, max_beam: usize) -> Result<(), ServeError> {
    if r.beam > max_beam {
        return Err(ServeError::Input(format!(
            "beam must be in 1..={max_beam} (this model's max_beam), got {}",
            r.beam
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    struct Map(HashMap<&'static str, RawInput>);
    impl Inputs for Map {
        fn get(&self, name: &str) -> Result<Option<RawInput>, ServeError> {
            Ok(self.0.get(name).cloned())
        }
    }

    fn settings() -> Settings {
        let json = r#"{"max_batch_size":8,"input":[{"name":"HISTORY","data_type":"TYPE_INT64"}],
            "parameters":{"beam":{"string_value":"16"},"results":{"string_value":"4"}}}"#;
        Settings::from_config(json, Path::new("/")).unwrap()
    }

    fn i64s(v: &[i64]) -> RawInput {
        RawInput {
            datatype: sys::TYPE_INT64,
            shape: vec![1, v.len() as i64],
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn i32s(v: i32) -> RawInput {
        RawInput {
            datatype: sys::TYPE_INT32,
            shape: vec![1, 1],
            data: v.to_le_bytes().to_vec(),
        }
    }

    #[test]
    fn defaults_fill_absent_inputs() {
        let m = Map([(HISTORY, i64s(&[3, -1]))].into());
        let r = build(&m, &settings()).unwrap();
        assert_eq!(r.history, vec![3, u64::MAX]);
        assert_eq!((r.beam, r.results, r.exclude_history), (16, 4, false));
        // A smaller beam lowers the default results with it.
        let m = Map([(HISTORY, i64s(&[3])), (BEAM, i32s(2))].into());
        assert_eq!(build(&m, &settings()).unwrap().results, 2);
        let m = Map([
            (HISTORY, i64s(&[3])),
            (EXCLUDE, i64s(&[5, 6])),
            (RESULTS, i32s(1)),
            (
                EXCLUDE_HISTORY,
                RawInput {
                    datatype: sys::TYPE_BOOL,
                    shape: vec![1, 1],
                    data: vec![1],
                },
            ),
        ]
        .into());
        let r = build(&m, &settings()).unwrap();
        assert_eq!(
            (r.exclude, r.results, r.exclude_history),
            (vec![5, 6], 1, true)
        );
    }

    fn boolean_input(v: bool) -> RawInput {
        RawInput {
            datatype: sys::TYPE_BOOL,
            shape: vec![1, 1],
            data: vec![v as u8],
        }
    }

    #[test]
    fn answer_options() {
        // Absent: the model's defaults (rerank off, permutations dropped, no item list).
        let r = build(&Map([(HISTORY, i64s(&[3]))].into()), &settings()).unwrap();
        assert_eq!((r.rerank, r.keep_permutations, r.items), (false, false, 0));
        let m = Map([
            (HISTORY, i64s(&[3])),
            (RERANK, boolean_input(true)),
            (KEEP_PERMUTATIONS, boolean_input(true)),
            (ITEMS, i64s(&[16])),
        ]
        .into());
        let r = build(&m, &settings()).unwrap();
        assert_eq!((r.rerank, r.keep_permutations, r.items), (true, true, 16));
        let m = Map([
            (HISTORY, i64s(&[3])),
            (RERANK, boolean_input(false)),
            (ITEMS, i32s(0)),
        ]
        .into());
        let r = build(&m, &settings()).unwrap();
        assert_eq!((r.rerank, r.items), (false, 0));
        // Configured defaults; the default item count never exceeds the request's beam.
        let mut s = settings();
        (s.rerank, s.keep_permutations, s.items) = (true, true, 12);
        let r = build(&Map([(HISTORY, i64s(&[3]))].into()), &s).unwrap();
        assert_eq!((r.rerank, r.keep_permutations, r.items), (true, true, 12));
        let m = Map([(HISTORY, i64s(&[3])), (BEAM, i32s(4))].into());
        assert_eq!(build(&m, &s).unwrap().items, 4);
        let m = Map([(HISTORY, i64s(&[3])), (RERANK, boolean_input(false))].into());
        assert!(!build(&m, &s).unwrap().rerank);
    }

    #[test]
    fn bad_answer_options_are_named() {
        let mut int_flag = i32s(1);
        int_flag.shape = vec![1, 1];
        let mut two_flags = boolean_input(true);
        two_flags.shape = vec![1, 2];
        two_flags.data = vec![1, 0];
        let mut flag_no_batch = boolean_input(true);
        flag_no_batch.shape = vec![2, 1];
        let mut float_items = i32s(4);
        float_items.datatype = sys::TYPE_FP32;
        let h = || (HISTORY, i64s(&[1]));
        for (m, needle) in [
            (
                Map([h(), (RERANK, int_flag.clone())].into()),
                "RERANK is INT32",
            ),
            (Map([h(), (RERANK, two_flags.clone())].into()), "RERANK"),
            (
                Map([h(), (KEEP_PERMUTATIONS, int_flag)].into()),
                "KEEP_PERMUTATIONS is INT32",
            ),
            (
                Map([h(), (KEEP_PERMUTATIONS, two_flags)].into()),
                "KEEP_PERMUTATIONS",
            ),
            (
                Map([h(), (RERANK, flag_no_batch)].into()),
                "one user per request",
            ),
            (
                Map([h(), (ITEMS, i32s(17))].into()),
                "ITEMS must be in 0..=beam (16)",
            ),
            (
                Map([h(), (BEAM, i32s(4)), (ITEMS, i32s(5))].into()),
                "ITEMS must be in 0..=beam (4)",
            ),
            (Map([h(), (ITEMS, i32s(-1))].into()), "ITEMS"),
            (Map([h(), (ITEMS, float_items)].into()), "ITEMS is FP32"),
            (Map([h(), (ITEMS, i64s(&[1, 2]))].into()), "one value"),
        ] {
            let e = build(&m, &settings()).unwrap_err();
            assert!(e.is_client_error(), "{needle}: {e}");
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn bad_tensors_are_named() {
        let mut wrong_type = i64s(&[1]);
        wrong_type.datatype = sys::TYPE_FP32;
        let mut two_users = i64s(&[1, 2]);
        two_users.shape = vec![2, 1];
        let mut short = i64s(&[1, 2]);
        short.data.pop();
        for (m, needle) in [
            (Map(HashMap::new()), "HISTORY is missing"),
            (Map([(HISTORY, wrong_type)].into()), "FP32"),
            (Map([(HISTORY, two_users)].into()), "one user per request"),
            (Map([(HISTORY, short)].into()), "bytes"),
            (Map([(HISTORY, i64s(&[1])), (BEAM, i32s(0))].into()), "BEAM"),
            (
                Map([(HISTORY, i64s(&[1])), (RESULTS, i32s(-3))].into()),
                "RESULTS",
            ),
            (
                Map([(HISTORY, i64s(&[1])), (BEAM, i64s(&[1, 2]))].into()),
                "one value",
            ),
        ] {
            let e = build(&m, &settings()).unwrap_err();
            assert!(e.is_client_error());
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
    }
}
