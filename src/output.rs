//! Printing sessions as JSON or as a table.

use onerec_engine::Response;
use serde_json::{json, Value};

/// How item ids appear in JSON output.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonStyle {
    /// Ids as decimal strings: JavaScript reads numbers above 2^53 with lost digits.
    pub ids_as_strings: bool,
}

/// The sessions of one response as a JSON value: `{"sessions":[{"score","items","sids"},..]}`.
pub fn sessions(r: &Response, style: JsonStyle) -> Value {
    let sessions: Vec<_> = r
        .sessions
        .iter()
        .map(|s| {
            let items: Value = if style.ids_as_strings {
                s.items
                    .iter()
                    .map(|id| Value::from(id.to_string()))
                    .collect()
            } else {
                s.items.iter().map(|&id| Value::from(id)).collect()
            };
            json!({"score": s.score, "items": items, "sids": s.sids})
        })
        .collect();
    json!({ "sessions": sessions })
}

pub fn json(r: &Response, style: JsonStyle) -> String {
    sessions(r, style).to_string()
}

pub fn table(r: &Response) -> String {
    if r.sessions.is_empty() {
        return "no session: every continuation was excluded\n".to_string();
    }
    let mut out = format!("{:>4}  {:>10}  items (semantic ids)\n", "rank", "score");
    for (i, s) in r.sessions.iter().enumerate() {
        let items: Vec<String> = s
            .items
            .iter()
            .zip(&s.sids)
            .map(|(id, sid)| format!("{id} ({})", dashed(sid)))
            .collect();
        out += &format!("{:>4}  {:>10.4}  {}\n", i + 1, s.score, items.join(", "));
    }
    out
}

fn dashed(sid: &[u32]) -> String {
    sid.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// The table for a catalog whose titles are known (the built-in MovieLens model): one
/// line per item, the history first so the answer can be read against it.
pub fn titled(
    history: &[u64],
    r: &Response,
    titles: &std::collections::HashMap<u64, String>,
) -> String {
    let name = |id: &u64| {
        titles
            .get(id)
            .map_or("(no title)", String::as_str)
            .to_string()
    };
    let mut out = String::from("history:\n");
    for id in history {
        out += &format!("        {id:>5}  {}\n", name(id));
    }
    if r.sessions.is_empty() {
        return out + "no session: every continuation was excluded\n";
    }
    for (i, s) in r.sessions.iter().enumerate() {
        out += &format!("session {}  (score {:.4})\n", i + 1, s.score);
        for (id, sid) in s.items.iter().zip(&s.sids) {
            out += &format!("        {id:>5}  {:<50}  sid {}\n", name(id), dashed(sid));
        }
    }
    out
}
