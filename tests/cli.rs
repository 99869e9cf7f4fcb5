//! The `onerec` binary: JSON output equals the reference's sessions; bad input exits
//! non-zero with a one-line message.

use crate::common::fixture;
use crate::golden::{ids, load_golden, requests};
use std::process::{Command, Output};

fn onerec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onerec"))
        .args(args)
        .output()
        .expect("run onerec")
}

fn join(v: &[u64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn json_output_matches_reference_sessions() {
    for name in ["dense_l3", "moe_enc_dec_l4"] {
        let g = load_golden(name);
        let model = fixture(name);
        for (req, want) in requests(&g).into_iter().take(6) {
            let (beam, results) = (req.beam.to_string(), req.results.to_string());
            let (history, exclude) = (join(&req.history), join(&req.exclude));
            let mut args = vec![
                "recommend",
                "--model",
                model.to_str().unwrap(),
                "--history",
                &history,
            ];
            args.extend([
                "--beam",
                &beam,
                "--results",
                &results,
                "--exclude",
                &exclude,
                "--backend",
                "cpu",
                "--json",
            ]);
            if req.exclude_history {
                args.push("--exclude-history");
            }
            let out = onerec(&args);
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stdout = String::from_utf8(out.stdout).unwrap();
            assert_eq!(stdout.trim().lines().count(), 1, "exactly one JSON object");
            let got: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            let got_s = got["sessions"].as_array().unwrap();
            let want_s = want["sessions"].as_array().unwrap();
            assert_eq!(got_s.len(), want_s.len(), "{name}: session count");
            for (g, w) in got_s.iter().zip(want_s) {
                assert_eq!(ids(&g["items"]), ids(&w["items"]), "{name}: items");
                assert_eq!(g["sids"], w["sids"], "{name}: sids");
                let (gs, ws) = (g["score"].as_f64().unwrap(), w["score"].as_f64().unwrap());
                assert!((gs - ws).abs() < 1e-3, "{name}: score {gs} vs {ws}");
            }
        }
    }
}

#[test]
fn table_output_lists_sessions() {
    let g = load_golden("dense_l3");
    let (req, want) = &requests(&g)[1];
    let model = fixture("dense_l3");
    let out = onerec(&[
        "recommend",
        "--model",
        model.to_str().unwrap(),
        "--history",
        &join(&req.history),
        "--beam",
        "4",
        "--results",
        "4",
        "--backend",
        "cpu",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let first = ids(&want["sessions"][0]["items"])[0].to_string();
    assert!(text.contains("rank") && text.contains(&first), "{text}");
}

/// Exit code, and the single stderr line.
fn fails(args: &[&str]) -> String {
    let out = onerec(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_input_exits_nonzero_with_one_line() {
    let model = fixture("dense_l3");
    let m = model.to_str().unwrap();
    let g = load_golden("dense_l3");
    let known = requests(&g)[0].0.history[0].to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--history", "12345"], "12345"),
        (vec!["--history", ""], "history is empty"),
        (vec!["--history", "1,x2"], "`x2` is not an item id"),
        (
            vec!["--history", &known, "--beam", "0"],
            "beam must be at least 1",
        ),
        (
            vec!["--history", &known, "--beam", "2", "--results", "3"],
            "results must be in 1..=beam",
        ),
        (
            vec!["--history", &known, "--backend", "tpu"],
            "unknown backend `tpu`",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec!["recommend", "--model", m];
        args.extend(extra);
        if !args.contains(&"--backend") {
            args.extend(["--backend", "cpu"]);
        }
        let err = fails(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let err = fails(&[
        "recommend",
        "--model",
        "/nonexistent/model",
        "--history",
        "1",
        "--backend",
        "cpu",
    ]);
    assert!(err.contains("/nonexistent/model"), "{err}");
}
