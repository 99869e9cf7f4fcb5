//! `onerec batch`: requests as JSON lines in, one JSON line out per request. A bad line
//! gets an error object and the batch goes on.

use crate::ids;
use crate::output::{self, JsonStyle};
use anyhow::{Context, Result};
use onerec_engine::{Engine, Request};
use serde_json::{json, Map, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// The longest input line: 16 MiB holds a history of about a million ids. Longer lines
/// are answered with an error and skipped, so one runaway line cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 16 << 20;

#[derive(clap::Args, Debug)]
pub struct BatchArgs {
    #[command(flatten)]
    pub model: crate::model_args::ModelArgs,
    /// JSON-lines file of requests, or `-` for standard input. One object per line:
    /// {"history": [ids], "beam": B, "results": R, "exclude": [ids], "exclude_history": bool,
    /// "rerank": bool, "keep_permutations": bool, "items": K, "id": anything}; only
    /// "history" is required, ids are numbers or strings of digits.
    #[arg(long, default_value = "-")]
    pub input: PathBuf,
    /// Beam width of lines that do not give "beam".
    #[arg(long, default_value_t = 16)]
    pub beam: usize,
    /// Sessions per request for lines that do not give "results".
    #[arg(long, default_value_t = 5)]
    pub results: usize,
    /// Exclude history items for lines that do not give "exclude_history".
    #[arg(long)]
    pub exclude_history: bool,
    /// Rerank by the reward model for lines that do not give "rerank".
    #[arg(long)]
    pub rerank: bool,
    /// Keep permutations for lines that do not give "keep_permutations".
    #[arg(long)]
    pub keep_permutations: bool,
    /// Item-list length for lines that do not give "items".
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub items: usize,
    /// Requests decoded together (one engine call); larger is faster up to the device's limits.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub batch_size: u64,
    /// Write item ids as JSON strings.
    #[arg(long)]
    pub ids_as_strings: bool,
}

/// One input line after parsing: its number (1-based), the caller's "id", and the
/// request or why there is none.
struct Line {
    number: usize,
    id: Option<Value>,
    request: Result<Request, String>,
}

pub fn run(a: BatchArgs) -> Result<()> {
    let engine = a.model.load()?;
    let input: Box<dyn BufRead> = if a.input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(&a.input)
            .with_context(|| format!("cannot open {}", a.input.display()))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut lines = LineReader::new(input);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let style = JsonStyle {
        ids_as_strings: a.ids_as_strings,
    };
    let mut pending = Vec::new();
    let mut number = 0;
    loop {
        let next = lines
            .next_line()
            .with_context(|| format!("reading {}", a.input.display()))?;
        let Some(text) = next else { break };
        number += 1;
        let line = match text {
            Ok(t) if t.trim().is_empty() => continue,
            Ok(t) => parse_line(number, &t, &a),
            Err(e) => Line {
                number,
                id: None,
                request: Err(e),
            },
        };
        pending.push(line);
        if pending.len() as u64 >= a.batch_size {
            serve(&engine, std::mem::take(&mut pending), style, &mut out)?;
        }
    }
    serve(&engine, pending, style, &mut out)?;
    out.flush().context("writing standard output")?;
    Ok(())
}

fn parse_line(number: usize, text: &str, a: &BatchArgs) -> Line {
    let value: Result<Value, String> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"));
    let id = value.as_ref().ok().and_then(|v| v.get("id")).cloned();
    let request = value.and_then(|v| match v {
        Value::Object(m) => request_of(&m, a),
        _ => Err("not a JSON object".into()),
    });
    Line {
        number,
        id,
        request,
    }
}

const FIELDS: [&str; 9] = [
    "history",
    "beam",
    "results",
    "exclude",
    "exclude_history",
    "rerank",
    "keep_permutations",
    "items",
    "id",
];

fn request_of(m: &Map<String, Value>, a: &BatchArgs) -> Result<Request, String> {
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!(
            "unknown field `{k}` (expected {})",
            FIELDS.join(", ")
        ));
    }
    let history = ids::list_from_json(
        "history",
        m.get("history").ok_or("missing field `history`")?,
    )?;
    let exclude = match m.get("exclude") {
        Some(v) => ids::list_from_json("exclude", v)?,
        None => Vec::new(),
    };
    let count = |k: &str, default: usize| -> Result<usize, String> {
        match m.get(k) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| format!("`{k}` must be a non-negative integer, got {v}")),
        }
    };
    let flag = |k: &str, default: bool| -> Result<bool, String> {
        match m.get(k) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(format!("`{k}` must be true or false, got {v}")),
        }
    };
    Ok(Request::builder(history)
        .beam(count("beam", a.beam)?)
        .results(count("results", a.results)?)
        .exclude(exclude)
        .exclude_history(flag("exclude_history", a.exclude_history)?)
        .rerank(flag("rerank", a.rerank)?)
        .keep_permutations(flag("keep_permutations", a.keep_permutations)?)
        .items(count("items", a.items)?)
        .build())
}

/// Runs the parsed requests of `lines` as one batch and writes one output line per input line.
fn serve(engine: &Engine, lines: Vec<Line>, style: JsonStyle, out: &mut impl Write) -> Result<()> {
    let requests: Vec<Request> = lines
        .iter()
        .filter_map(|l| l.request.as_ref().ok().cloned())
        .collect();
    let mut answers = crate::serve::each(engine, &requests)?.into_iter();
    for line in lines {
        let mut obj = Map::new();
        obj.insert("line".into(), json!(line.number));
        if let Some(id) = line.id {
            obj.insert("id".into(), id);
        }
        let answer = match line.request {
            Ok(_) => answers
                .next()
                .context("internal error: one answer per request")?,
            Err(e) => Err(e),
        };
        match answer {
            Ok(r) => {
                if let Value::Object(s) = output::sessions(&r, style) {
                    obj.extend(s);
                }
            }
            Err(e) => {
                obj.insert("error".into(), json!(e));
            }
        }
        writeln!(out, "{}", Value::Object(obj)).context("writing standard output")?;
    }
    out.flush().context("writing standard output")
}

/// Lines of at most [`MAX_LINE_BYTES`]; a longer one is reported (as the line's error) and skipped.
struct LineReader<R> {
    inner: R,
}

impl<R: BufRead> LineReader<R> {
    fn new(inner: R) -> Self {
        LineReader { inner }
    }

    /// `None` at the end; `Some(Err)` for a line that is too long or not UTF-8.
    fn next_line(&mut self) -> std::io::Result<Option<Result<String, String>>> {
        let mut buf = Vec::new();
        let n = <&mut R as std::io::Read>::take(&mut self.inner, MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE_BYTES {
            // Drop the rest of the line without keeping it.
            loop {
                let chunk = self.inner.fill_buf()?;
                if chunk.is_empty() {
                    break;
                }
                match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        self.inner.consume(i + 1);
                        break;
                    }
                    None => {
                        let len = chunk.len();
                        self.inner.consume(len);
                    }
                }
            }
            return Ok(Some(Err(format!(
                "the line is longer than {MAX_LINE_BYTES} bytes"
            ))));
        }
        Ok(Some(
            String::from_utf8(buf).map_err(|_| "the line is not UTF-8 text".to_string()),
        ))
    }
}
