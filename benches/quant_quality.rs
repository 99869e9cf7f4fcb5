//! Quality report: each checkpoint written as f16, q8 and q4 files, compared with its f32
//! file on an evaluation set drawn from its catalog (teacher-forced logits error, top-1
//! code and session agreement; see quantize-tool/src/quality.rs). Not a timed test.
//!
//! cargo bench --bench quant_quality -- CHECKPOINT_DIR... [--cases 64] [--beam 16]
//! (no directory: the five fixtures)

use onerec_quantize::{quality, Args, Target};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let opt = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (cases, beam) = (opt("--cases", 64), opt("--beam", 16));
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut skip = false;
    for a in &args {
        if skip {
            skip = false;
        } else if a == "--cases" || a == "--beam" {
            skip = true;
        } else {
            dirs.push(a.into());
        }
    }
    if dirs.is_empty() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        dirs = [
            "dense_l3",
            "moe_dec_l2",
            "moe_enc_dec_l4",
            "pointwise_top1",
            "heads_odd",
        ]
        .iter()
        .map(|f| root.join(f))
        .collect();
    }
    let tmp = tempfile::tempdir()?;
    println!("{cases} cases per model, beam {beam}; errors relative to the f32 file");
    println!(
        "{:<24} {:<4} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "model", "type", "bytes", "of f32", "weights", "logits", "code top1", "sess top1"
    );
    for dir in &dirs {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut reference = None;
        for target in [Target::F32, Target::F16, Target::Q8, Target::Q4] {
            let out = tmp.path().join(format!("{name}.{}", target.name()));
            let a = Args {
                input: dir.clone(),
                output: Some(out.clone()),
                dtype: target,
                keep_f16: vec![],
                dry_run: false,
                quiet: true,
            };
            let report = onerec_quantize::quantize(&a)?;
            let file = onerec_engine::ModelFile::open(&out)?;
            let set = quality::eval_set(&file, cases, 99);
            let o = quality::outputs(&out, &set, beam)?;
            let q = quality::compare(reference.get_or_insert_with(|| o.clone()), &o);
            println!(
                "{name:<24} {:<4} {:>12} {:>7.2}% {:>9.2e} {:>9.2e} {:>9.3} {:>9.3}",
                target.name(),
                report.file_bytes,
                100.0 * report.ratio_to_f32(),
                report.rel_err(),
                q.logits_rel_err,
                q.code_top1,
                q.session_top1
            );
        }
    }
    Ok(())
}
