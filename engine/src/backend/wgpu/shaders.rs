//! The WGSL sources (`engine/shaders/*.wgsl`, embedded at build time) and the tiny strict
//! preprocessor that specializes them (see `engine/shaders/README.md`):
//! `#include "file.wgsl"`, `#if NAME` / `#if !NAME` / `#else` / `#endif` over a set of
//! defined names. Anything else starting with `#` is an error, so a typo cannot silently
//! drop a block. Every specialization the backend can ask for is listed by [`variants`],
//! which the naga test validates.

use crate::tensor::DType;

/// `(file name, source)` of every shader file.
pub const FILES: &[(&str, &str)] = &[
    (
        "attention.wgsl",
        include_str!("../../../shaders/attention.wgsl"),
    ),
    ("beams.wgsl", include_str!("../../../shaders/beams.wgsl")),
    (
        "elementwise.wgsl",
        include_str!("../../../shaders/elementwise.wgsl"),
    ),
    ("gather.wgsl", include_str!("../../../shaders/gather.wgsl")),
    ("grid.wgsl", include_str!("../../../shaders/grid.wgsl")),
    (
        "kv_cache.wgsl",
        include_str!("../../../shaders/kv_cache.wgsl"),
    ),
    (
        "log_softmax.wgsl",
        include_str!("../../../shaders/log_softmax.wgsl"),
    ),
    ("matmul.wgsl", include_str!("../../../shaders/matmul.wgsl")),
    ("moe.wgsl", include_str!("../../../shaders/moe.wgsl")),
    (
        "rms_norm.wgsl",
        include_str!("../../../shaders/rms_norm.wgsl"),
    ),
    (
        "weights.wgsl",
        include_str!("../../../shaders/weights.wgsl"),
    ),
];

/// One specialization: a file (with its includes) and the names defined for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Variant {
    pub file: &'static str,
    pub defines: Vec<&'static str>,
}

impl Variant {
    pub fn new(file: &'static str, defines: &[&'static str]) -> Self {
        let mut defines = defines.to_vec();
        defines.sort_unstable();
        Variant { file, defines }
    }

    pub fn source(&self) -> Result<String, String> {
        preprocess(self.file, &self.defines)
    }
}

/// The define naming a weight storage type in weights.wgsl.
pub fn weight_define(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::F32 => "W_F32",
        DType::F16 => "W_F16",
        DType::BF16 => "W_BF16",
        DType::Q8_0 => "W_Q8",
        DType::Q4_0 => "W_Q4",
        DType::I32 | DType::I64 => return None,
    })
}

pub const WEIGHT_TYPES: [DType; 5] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
];

/// Every specialization the backend uses (the naga test validates each one).
pub fn variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for dt in WEIGHT_TYPES {
        let w = weight_define(dt).unwrap_or("W_F32");
        for y4 in [&[][..], &["Y4"][..]] {
            let mut defs = vec![w];
            defs.extend_from_slice(y4);
            v.push(Variant::new("matmul.wgsl", &defs));
            defs.push("GROUPED");
            v.push(Variant::new("matmul.wgsl", &defs));
            defs.push("SWIGLU");
            v.push(Variant::new("matmul.wgsl", &defs));
        }
        for q in [&[][..], &["Q"][..]] {
            let mut defs = vec![w, "KV"];
            defs.extend_from_slice(q);
            v.push(Variant::new("matmul.wgsl", &defs));
            defs.push("KV_F16");
            v.push(Variant::new("matmul.wgsl", &defs));
        }
        for x4 in [&[][..], &["X4"][..]] {
            let mut defs = vec![w];
            defs.extend_from_slice(x4);
            v.push(Variant::new("rms_norm.wgsl", &defs));
            defs.push("ADD");
            v.push(Variant::new("rms_norm.wgsl", &defs));
            defs.push("COMBINE");
            v.push(Variant::new("rms_norm.wgsl", &defs));
        }
        v.push(Variant::new("gather.wgsl", &[w]));
        v.push(Variant::new("moe.wgsl", &[w, "ROUTER"]));
    }
    for keys in ["SPANS", "GATHER"] {
        for out4 in [&[][..], &["OUT4"][..]] {
            let mut defs = vec![keys];
            defs.extend_from_slice(out4);
            v.push(Variant::new("attention.wgsl", &defs));
            defs.push("KV_F16");
            v.push(Variant::new("attention.wgsl", &defs));
        }
    }
    for file in ["log_softmax.wgsl", "kv_cache.wgsl", "moe.wgsl"] {
        v.push(Variant::new(file, &["X4"]));
    }
    for file in [
        "elementwise.wgsl",
        "kv_cache.wgsl",
        "log_softmax.wgsl",
        "moe.wgsl",
        "beams.wgsl",
    ] {
        v.push(Variant::new(file, &[]));
    }
    v
}

/// Files only ever included by others (validated through the files that include them).
pub const INCLUDE_ONLY: &[&str] = &["grid.wgsl", "weights.wgsl"];

fn file(name: &str) -> Result<&'static str, String> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .ok_or_else(|| format!("no shader file `{name}`"))
}

/// Expands includes and conditional blocks of `name` for the given defines.
pub fn preprocess(name: &str, defines: &[&str]) -> Result<String, String> {
    let mut out = String::new();
    expand(name, defines, &mut out, &mut Vec::new())?;
    Ok(out)
}

fn expand(
    name: &str,
    defines: &[&str],
    out: &mut String,
    stack: &mut Vec<String>,
) -> Result<(), String> {
    if stack.iter().any(|s| s == name) {
        return Err(format!(
            "{name}: recursive #include ({})",
            stack.join(" -> ")
        ));
    }
    stack.push(name.to_string());
    let src = file(name)?;
    // One entry per open #if: (this branch is live, an enclosing branch is live).
    let mut conds: Vec<(bool, bool)> = Vec::new();
    let live = |c: &[(bool, bool)]| c.last().map(|&(a, b)| a && b).unwrap_or(true);
    for (i, line) in src.lines().enumerate() {
        let at = || format!("{name}:{}", i + 1);
        let t = line.trim_start();
        if !t.starts_with('#') {
            if live(&conds) {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        let mut words = t.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#if"), Some(cond), None) => {
                let (neg, nm) = cond
                    .strip_prefix('!')
                    .map(|n| (true, n))
                    .unwrap_or((false, cond));
                if nm.is_empty()
                    || !nm
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(format!("{}: bad #if name `{cond}`", at()));
                }
                let outer = live(&conds);
                conds.push((defines.contains(&nm) != neg, outer));
            }
            (Some("#else"), None, None) => match conds.last_mut() {
                Some(c) => c.0 = !c.0,
                None => return Err(format!("{}: #else without #if", at())),
            },
            (Some("#endif"), None, None) => {
                if conds.pop().is_none() {
                    return Err(format!("{}: #endif without #if", at()));
                }
            }
            (Some("#include"), Some(f), None)
                if f.len() > 2 && f.starts_with('"') && f.ends_with('"') =>
            {
                if live(&conds) {
                    expand(&f[1..f.len() - 1], defines, out, stack)?;
                }
            }
            _ => return Err(format!("{}: unknown directive `{t}`", at())),
        }
    }
    if !conds.is_empty() {
        return Err(format!("{name}: {} unclosed #if", conds.len()));
    }
    stack.pop();
    Ok(())
}
