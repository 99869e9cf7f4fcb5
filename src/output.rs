//! Printing sessions as JSON or as a table.

use onerec_engine::Response;
use serde_json::json;

pub fn json(r: &Response) -> String {
    let sessions: Vec<_> = r
        .sessions
        .iter()
        .map(|s| json!({"score": s.score, "items": s.items, "sids": s.sids}))
        .collect();
    json!({ "sessions": sessions }).to_string()
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
            .map(|(id, sid)| {
                format!(
                    "{id} ({})",
                    sid.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join("-")
                )
            })
            .collect();
        out += &format!("{:>4}  {:>10.4}  {}\n", i + 1, s.score, items.join(", "));
    }
    out
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
            let sid = sid
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("-");
            out += &format!("        {id:>5}  {:<50}  sid {sid}\n", name(id));
        }
    }
    out
}
