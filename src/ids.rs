//! Item ids as users write them: comma/space separated on the command line or in a file,
//! numbers or decimal strings in JSON.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// The largest history file (or standard input) read: 64 MiB is several million ids,
/// far past any `max_history`, and keeps a wrong path (a disk image, /dev/zero) bounded.
pub const MAX_ID_FILE_BYTES: u64 = 64 << 20;

/// Parses `"1,2, 3"` or ids separated by any whitespace; an empty string is an empty list.
pub fn parse_list(what: &str, s: &str) -> Result<Vec<u64>> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u64>()
                .with_context(|| format!("{what}: `{t}` is not an item id (an unsigned integer)"))
        })
        .collect()
}

/// Reads an id list from a file, or from standard input when `path` is `-`.
pub fn read_list(what: &str, path: &Path) -> Result<Vec<u64>> {
    let text = if path == Path::new("-") {
        read_capped(std::io::stdin().lock(), what)?
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("{what}: cannot open {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("{what}: {}", path.display()))?;
        if meta.is_dir() {
            bail!("{what}: {} is a directory", path.display());
        }
        read_capped(file, &format!("{what} {}", path.display()))?
    };
    parse_list(what, &text)
}

fn read_capped(r: impl Read, what: &str) -> Result<String> {
    let mut bytes = Vec::new();
    r.take(MAX_ID_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what}"))?;
    if bytes.len() as u64 > MAX_ID_FILE_BYTES {
        bail!("{what} is larger than {MAX_ID_FILE_BYTES} bytes");
    }
    String::from_utf8(bytes).with_context(|| format!("{what} is not UTF-8 text"))
}

/// One id from JSON: a non-negative integer, or a string of one (ids above 2^53 lose
/// digits as JSON numbers in JavaScript, so both are accepted).
pub fn from_json(v: &serde_json::Value) -> Result<u64, String> {
    match v {
        serde_json::Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("{n} is not an item id (an unsigned 64-bit integer)")),
        serde_json::Value::String(s) => s
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("\"{s}\" is not an item id (an unsigned 64-bit integer)")),
        other => Err(format!(
            "{other} is not an item id (a number or a string of digits)"
        )),
    }
}

/// A JSON array of ids.
pub fn list_from_json(what: &str, v: &serde_json::Value) -> Result<Vec<u64>, String> {
    let items = v
        .as_array()
        .ok_or_else(|| format!("`{what}` must be an array of item ids"))?;
    items
        .iter()
        .enumerate()
        .map(|(i, x)| from_json(x).map_err(|e| format!("`{what}[{i}]`: {e}")))
        .collect()
}

/// A small text file, refused above `cap` bytes (a wrong path must not fill memory).
pub fn read_text(path: &Path, cap: u64) -> Result<String> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        bail!("{} is not a regular file", path.display());
    }
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > cap {
        bail!("{} is larger than {cap} bytes", path.display());
    }
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", path.display()))
}
