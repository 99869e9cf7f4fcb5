//! Printing sessions as JSON or as a table.

use onerec_engine::Response;
use serde_json::{json, Value};

/// How item ids appear in JSON output.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonStyle {
    /// Ids as decimal strings: JavaScript reads numbers above 2^53 with lost digits.
    pub ids_as_strings: bool,
}

/// The sessions of one response as a JSON value: `{"sessions":[{"score","items","sids"},..]}`;
/// a reranked session adds `"reward"` and `"signals"` (`r_k` in the model's signal
/// order), and an item-list answer adds `"items":[{"item","sid","score"},..]`.
pub fn sessions(r: &Response, style: JsonStyle) -> Value {
    let id = |id: u64| -> Value {
        if style.ids_as_strings {
            Value::from(id.to_string())
        } else {
            Value::from(id)
        }
    };
    let sessions: Vec<_> = r
        .sessions
        .iter()
        .map(|s| {
            let items: Value = s.items.iter().map(|&i| id(i)).collect();
            let mut v = json!({"score": s.score, "items": items, "sids": s.sids});
            if let Some(reward) = s.reward {
                v["reward"] = json!(reward);
                v["signals"] = json!(s.signals);
            }
            v
        })
        .collect();
    let mut out = json!({ "sessions": sessions });
    if !r.items.is_empty() {
        let items: Vec<Value> = r
            .items
            .iter()
            .map(|it| json!({"item": id(it.item), "sid": it.sid, "score": it.score}))
            .collect();
        out["items"] = Value::from(items);
    }
    out
}

pub fn json(r: &Response, style: JsonStyle) -> String {
    sessions(r, style).to_string()
}

pub fn table(r: &Response) -> String {
    if r.sessions.is_empty() {
        return "no session: every continuation was excluded\n".to_string();
    }
    let reranked = r.sessions.iter().any(|s| s.reward.is_some());
    let mut out = match reranked {
        true => format!(
            "{:>4}  {:>8}  {:>10}  items (semantic ids)\n",
            "rank", "reward", "score"
        ),
        false => format!("{:>4}  {:>10}  items (semantic ids)\n", "rank", "score"),
    };
    for (i, s) in r.sessions.iter().enumerate() {
        let items: Vec<String> = s
            .items
            .iter()
            .zip(&s.sids)
            .map(|(id, sid)| format!("{id} ({})", dashed(sid)))
            .collect();
        let reward = s.reward.map_or(String::new(), |v| format!("{v:>8.4}  "));
        out += &format!(
            "{:>4}  {reward}{:>10.4}  {}\n",
            i + 1,
            s.score,
            items.join(", ")
        );
    }
    out + &item_table(r)
}

/// The item-list answer under the sessions (nothing when not asked for).
fn item_table(r: &Response) -> String {
    if r.items.is_empty() {
        return String::new();
    }
    let mut out = format!("\n{:>4}  {:>10}  item (semantic id)\n", "rank", "score");
    for (i, it) in r.items.iter().enumerate() {
        out += &format!(
            "{:>4}  {:>10.4}  {} ({})\n",
            i + 1,
            it.score,
            it.item,
            dashed(&it.sid)
        );
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
        match s.reward {
            Some(v) => {
                out += &format!("session {}  (reward {v:.4}, score {:.4})\n", i + 1, s.score)
            }
            None => out += &format!("session {}  (score {:.4})\n", i + 1, s.score),
        }
        for (id, sid) in s.items.iter().zip(&s.sids) {
            out += &format!("        {id:>5}  {:<50}  sid {}\n", name(id), dashed(sid));
        }
    }
    if !r.items.is_empty() {
        out += "items:\n";
        for it in &r.items {
            out += &format!(
                "        {:>5}  {:<50}  score {:.4}\n",
                it.item,
                name(&it.item),
                it.score
            );
        }
    }
    out
}
