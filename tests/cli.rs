//! The `onerec` binary: JSON output equals the reference's sessions; bad input exits
//! non-zero with a one-line message.

use crate::common::fixture;
use crate::golden::{ids, load_golden, requests};
use std::io::Write;
use std::process::{Command, Output, Stdio};

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
                // The goldens record the search's order, permutations included.
                "--keep-permutations",
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

#[test]
fn a_bad_backend_is_a_usage_error_listing_the_choices() {
    let out = onerec(&["recommend", "--history", "1", "--backend", "tpu"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage-error exit code");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("tpu") && err.contains("auto, cpu, wgpu, cuda"),
        "{err}"
    );
}

/// Runs onerec with `input` on standard input.
fn onerec_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onerec"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run onerec");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    // A thread, so a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn history_file_and_standard_input_equal_the_argument() {
    let g = load_golden("dense_l3");
    let (req, _) = &requests(&g)[1];
    let model = fixture("dense_l3");
    let m = model.to_str().unwrap();
    let history = join(&req.history);
    let common = ["recommend", "--model", m, "--backend", "cpu", "--json"];
    let with = |extra: &[&str], stdin: &[u8]| {
        let mut args = common.to_vec();
        args.extend(extra);
        json_of(&onerec_stdin(&args, stdin))
    };
    let want = with(&["--history", &history], b"");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("history.txt");
    // Newlines and spaces separate ids as well as commas.
    std::fs::write(&file, history.replace(',', "\n ")).unwrap();
    assert_eq!(with(&["--history-file", file.to_str().unwrap()], b""), want);
    assert_eq!(with(&["--history-file", "-"], history.as_bytes()), want);

    // A history far longer than one argument may be (128 KB): 40,000 ids.
    let long: Vec<String> = (0..40_000)
        .map(|i| req.history[i % req.history.len()].to_string())
        .collect();
    let long = long.join(",");
    assert!(long.len() > 128 * 1024);
    let out = with(&["--history-file", "-"], long.as_bytes());
    assert!(!out["sessions"].as_array().unwrap().is_empty());

    // Both, or neither, is a usage error.
    let out = onerec(&[
        "recommend",
        "--model",
        m,
        "--history",
        "1",
        "--history-file",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = onerec(&["recommend", "--model", m]);
    assert_eq!(out.status.code(), Some(2));
    let err = fails(&[
        "recommend",
        "--model",
        m,
        "--backend",
        "cpu",
        "--history-file",
        "/nonexistent/history",
    ]);
    assert!(err.contains("/nonexistent/history"), "{err}");
}

#[test]
fn ids_as_strings_in_json() {
    let g = load_golden("dense_l3");
    let (req, want) = &requests(&g)[1];
    let model = fixture("dense_l3");
    let history = join(&req.history);
    let args = [
        "recommend",
        "--model",
        model.to_str().unwrap(),
        "--history",
        &history,
        "--beam",
        "4",
        "--results",
        "2",
        "--backend",
        "cpu",
        "--json",
    ];
    let numbers = json_of(&onerec(&args));
    let mut s_args = args.to_vec();
    s_args.push("--ids-as-strings");
    let strings = json_of(&onerec(&s_args));
    let first = &strings["sessions"][0]["items"][0];
    assert!(first.is_string(), "{strings}");
    assert_eq!(
        first.as_str().unwrap(),
        numbers["sessions"][0]["items"][0]
            .as_u64()
            .unwrap()
            .to_string()
    );
    // The golden ids (u64, beyond 2^53) survive as strings digit for digit.
    assert_eq!(
        first.as_str().unwrap(),
        ids(&want["sessions"][0]["items"])[0].to_string()
    );
    assert_eq!(
        strings["sessions"][0]["sids"],
        numbers["sessions"][0]["sids"]
    );
}

#[test]
fn batch_answers_every_line_and_matches_single_requests() {
    let g = load_golden("moe_enc_dec_l4");
    let model = fixture("moe_enc_dec_l4");
    let m = model.to_str().unwrap();
    let reqs: Vec<_> = requests(&g).into_iter().take(4).collect();
    let mut input = String::new();
    let mut expect = Vec::new(); // (line number, Some(golden sessions) or None for an error)
    let mut line = 0;
    for (i, (req, want)) in reqs.iter().enumerate() {
        // Ids as numbers on even lines, as strings on odd ones.
        let hist: Vec<serde_json::Value> = req
            .history
            .iter()
            .map(|&h| {
                if i % 2 == 0 {
                    serde_json::json!(h)
                } else {
                    serde_json::json!(h.to_string())
                }
            })
            .collect();
        let obj = serde_json::json!({
            "id": format!("user-{i}"),
            "history": hist,
            "beam": req.beam,
            "results": req.results,
            "exclude": req.exclude,
            "exclude_history": req.exclude_history,
            "keep_permutations": true,
        });
        input += &format!("{obj}\n");
        line += 1;
        expect.push((line, Some((*want).clone())));
        // A bad line after each good one; the batch goes on.
        let bad = [
            r#"{"history": [1, 2, 3]}"#,
            r#"{"history": []}"#,
            r#"not json"#,
            r#"{"history": [1], "beam": 0, "colour": "red"}"#,
        ][i];
        input += bad;
        input += "\n";
        line += 1;
        expect.push((line, None));
    }
    input += "\n"; // a blank line is skipped
    let out = onerec_stdin(
        &[
            "batch",
            "--model",
            m,
            "--backend",
            "cpu",
            "--batch-size",
            "3",
        ],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), expect.len(), "{text}");
    for (got, (number, want)) in lines.iter().zip(&expect) {
        assert_eq!(got["line"], *number, "{got}");
        match want {
            Some(want) => {
                assert!(got.get("error").is_none(), "{got}");
                assert_eq!(got["id"], format!("user-{}", (number - 1) / 2));
                let (gs, ws) = (
                    got["sessions"].as_array().unwrap(),
                    want["sessions"].as_array().unwrap(),
                );
                assert_eq!(gs.len(), ws.len(), "{got}");
                for (a, b) in gs.iter().zip(ws) {
                    assert_eq!(ids(&a["items"]), ids(&b["items"]));
                    let (x, y) = (a["score"].as_f64().unwrap(), b["score"].as_f64().unwrap());
                    assert!((x - y).abs() < 1e-3, "{x} vs {y}");
                }
            }
            None => assert!(got["error"].is_string(), "{got}"),
        }
    }
    let errors: Vec<&str> = lines.iter().filter_map(|l| l["error"].as_str()).collect();
    assert!(errors[0].contains("unknown item"), "{errors:?}");
    assert!(errors[1].contains("history is empty"), "{errors:?}");
    assert!(errors[2].contains("JSON"), "{errors:?}");
    assert!(errors[3].contains("unknown field `colour`"), "{errors:?}");

    // Ids as strings on output; the input from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(&file, input.lines().next().unwrap()).unwrap();
    let out = onerec(&[
        "batch",
        "--model",
        m,
        "--backend",
        "cpu",
        "--input",
        file.to_str().unwrap(),
        "--ids-as-strings",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["sessions"][0]["items"][0].is_string(), "{v}");
}

#[test]
fn batch_survives_a_runaway_line() {
    let model = fixture("dense_l3");
    let mut input = vec![b'['; 17 << 20]; // longer than MAX_LINE_BYTES, no newline
    input.push(b'\n');
    input.extend_from_slice(b"{\"history\": [1]}\n");
    let out = onerec_stdin(
        &[
            "batch",
            "--model",
            model.to_str().unwrap(),
            "--backend",
            "cpu",
        ],
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains("longer than"), "{}", lines[0]);
    assert!(lines[1].contains("\"line\":2"), "{}", lines[1]);
}

#[test]
fn inspect_without_model_describes_the_built_in_model() {
    let out = onerec(&["inspect"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("built-in") && text.contains("catalog: 1682 items"),
        "{text}"
    );
}

/// A PyTorch-style renaming of `name` with per-expert tensors: the converter's input.
fn torch_names(name: &str, data: &[u8], shape: &[usize]) -> Vec<(String, Vec<u8>, Vec<usize>)> {
    let renamed = name
        .replace("enc.layers.", "encoder.layer.")
        .replace("dec.layers.", "decoder.layer.")
        .replace(".attn.", ".attention.")
        .replace(".self_attn.", ".self_attention.")
        .replace(".cross_attn.", ".cross_attention.");
    if let Some(prefix) = renamed.strip_suffix(".moe.gate") {
        // [E, de, d] → E tensors `...experts.{e}.w_gate` of [de, d].
        let e = shape[0];
        let per = data.len() / e;
        return (0..e)
            .map(|i| {
                (
                    format!("{prefix}.experts.{i}.w_gate.weight"),
                    data[i * per..(i + 1) * per].to_vec(),
                    shape[1..].to_vec(),
                )
            })
            .collect();
    }
    vec![(
        format!("model.{renamed}.weight"),
        data.to_vec(),
        shape.to_vec(),
    )]
}

#[test]
fn convert_renames_and_stacks_and_reports_every_mismatch() {
    let src = fixture("moe_dec_l2");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        for t in torch_names(&name, view.data(), view.shape()) {
            tensors.push((t, view.dtype()));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("torch.safetensors");
    let views: Vec<_> = tensors
        .iter()
        .map(|((n, d, s), dt)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &input).unwrap();
    // Placeholders match integers only, so each name family gets its own rule; the
    // per-expert gates (`{e}` absent from the engine name) are stacked into `[E, de, d]`.
    let mut map = serde_json::Map::new();
    map.insert(
        "decoder.layer.{i}.experts.{e}.w_gate.weight".into(),
        "dec.layers.{i}.moe.gate".into(),
    );
    map.insert("model.head.weight".into(), "head".into());
    for n in ["attn_norm", "ffn_norm"] {
        map.insert(
            format!("model.encoder.layer.{{i}}.{n}.weight"),
            format!("enc.layers.{{i}}.{n}").into(),
        );
    }
    for m in ["q", "k", "v", "o"] {
        map.insert(
            format!("model.encoder.layer.{{i}}.attention.{m}.weight"),
            format!("enc.layers.{{i}}.attn.{m}").into(),
        );
        map.insert(
            format!("model.decoder.layer.{{i}}.self_attention.{m}.weight"),
            format!("dec.layers.{{i}}.self_attn.{m}").into(),
        );
        map.insert(
            format!("model.decoder.layer.{{i}}.cross_attention.{m}.weight"),
            format!("dec.layers.{{i}}.cross_attn.{m}").into(),
        );
    }
    for m in ["gate", "up", "down"] {
        map.insert(
            format!("model.encoder.layer.{{i}}.ffn.{m}.weight"),
            format!("enc.layers.{{i}}.ffn.{m}").into(),
        );
    }
    for m in ["up", "down", "router"] {
        map.insert(
            format!("model.decoder.layer.{{i}}.moe.{m}.weight"),
            format!("dec.layers.{{i}}.moe.{m}").into(),
        );
    }
    for n in ["self_norm", "cross_norm", "ffn_norm"] {
        map.insert(
            format!("model.decoder.layer.{{i}}.{n}.weight"),
            format!("dec.layers.{{i}}.{n}").into(),
        );
    }
    for n in [
        "enc.embed",
        "enc.pos",
        "enc.norm",
        "dec.bos",
        "dec.embed",
        "dec.pos",
        "dec.norm",
        "catalog.item_ids",
        "catalog.sids",
    ] {
        map.insert(format!("model.{n}.weight"), n.into());
    }
    let map_path = dir.path().join("map.json");
    std::fs::write(
        &map_path,
        serde_json::Value::Object(map.clone()).to_string(),
    )
    .unwrap();
    let config = src.join("config.json");
    let out_dir = dir.path().join("converted");
    let args = |map: &std::path::Path, out: &std::path::Path| {
        onerec(&[
            "convert",
            "--input",
            input.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--map",
            map.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ])
    };
    let out = args(&map_path, &out_dir);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The converted checkpoint answers as the original does.
    let g = load_golden("moe_dec_l2");
    let (req, _) = &requests(&g)[1];
    let run = |model: &std::path::Path| {
        json_of(&onerec(&[
            "recommend",
            "--model",
            model.to_str().unwrap(),
            "--history",
            &join(&req.history),
            "--backend",
            "cpu",
            "--json",
        ]))
    };
    assert_eq!(run(&out_dir), run(&src));

    // A map with three problems: all three reported, nothing written.
    map.remove("model.head.weight"); // head missing, and its source unmapped
    map.insert("model.dec.bos.weight".into(), "dec.pos".into()); // wrong shape, dec.bos missing
    std::fs::write(&map_path, serde_json::Value::Object(map).to_string()).unwrap();
    let bad_dir = dir.path().join("bad");
    let out = args(&map_path, &bad_dir);
    assert!(!out.status.success());
    let report = String::from_utf8(out.stdout).unwrap();
    for want in [
        "source tensor `model.head.weight` matches no map entry",
        "engine tensor `head` is missing",
        "engine tensor `dec.bos` is missing",
        "both map to `dec.pos`",
    ] {
        assert!(report.contains(want), "{want}: {report}");
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains("mismatch"));
    assert!(!bad_dir.exists());
}

#[test]
fn devices_lists_adapters_as_json() {
    let out = onerec(&["devices", "--json"]);
    let list = json_of(&out);
    let list = list.as_array().unwrap();
    for (i, d) in list.iter().enumerate() {
        assert_eq!(d["index"], i, "{d}");
        assert!(d["name"].is_string() && d["type"].is_string() && d["backend"].is_string());
    }
    // Where the GPU tests must run (CI with lavapipe), an adapter is listed.
    if std::env::var("ONEREC_REQUIRE_GPU").is_ok_and(|v| v == "1") {
        assert!(!list.is_empty(), "no adapter listed");
    }
    let table = onerec(&["devices"]);
    assert!(table.status.success());
}

/// `--rerank`, `--items` and the default distinct rule against the reward fixture's
/// goldens (reference/make_reward_fixture.py); the table shows rewards and items; rerank
/// without a reward model and items above the beam are one-line errors.
#[test]
fn rerank_items_and_distinct_sessions() {
    let model = fixture("reward_l3");
    let m = model.to_str().unwrap();
    let text = std::fs::read_to_string(model.join("golden.json")).unwrap();
    let g: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (k, r) in g["requests"].as_array().unwrap().iter().enumerate().take(3) {
        let (history, exclude) = (join(&ids(&r["history"])), join(&ids(&r["exclude"])));
        let (beam, results, items) = (
            r["beam"].to_string(),
            r["results"].to_string(),
            r["items"].to_string(),
        );
        let beams = r["beams"].as_array().unwrap();
        for (flags, key) in [
            (&["--rerank"][..], "rerank=1,keep=0"),
            (&[][..], "rerank=0,keep=0"),
            (&["--rerank", "--keep-permutations"][..], "rerank=1,keep=1"),
        ] {
            let mut args = vec![
                "recommend",
                "--model",
                m,
                "--history",
                &history,
                "--exclude",
                &exclude,
                "--beam",
                &beam,
                "--results",
                &results,
                "--items",
                &items,
                "--backend",
                "cpu",
                "--json",
            ];
            if r["exclude_history"].as_bool().unwrap() {
                args.push("--exclude-history");
            }
            args.extend(flags);
            let got = json_of(&onerec(&args));
            let want: Vec<Vec<u64>> = r["answers"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| ids(&beams[i.as_u64().unwrap() as usize]["items"]))
                .collect();
            let sessions = got["sessions"].as_array().unwrap();
            let got_items: Vec<Vec<u64>> = sessions.iter().map(|s| ids(&s["items"])).collect();
            assert_eq!(got_items, want, "request {k} {key}");
            for s in sessions {
                assert_eq!(s.get("reward").is_some(), key.starts_with("rerank=1"));
                if let Some(sig) = s.get("signals") {
                    assert_eq!(sig.as_array().unwrap().len(), 3);
                }
            }
            let list: Vec<u64> = got["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["item"].as_u64().unwrap())
                .collect();
            let want_list: Vec<u64> = r["first_items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i[0].as_u64().unwrap())
                .collect();
            assert_eq!(list, want_list, "request {k} item list");
        }
    }
    let r = &g["requests"][0];
    let history = join(&ids(&r["history"]));
    let out = onerec(&[
        "recommend",
        "--model",
        m,
        "--history",
        &history,
        "--beam",
        "8",
        "--results",
        "3",
        "--rerank",
        "--items",
        "4",
        "--backend",
        "cpu",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("reward"), "{table}");
    assert_eq!(table.lines().count(), 1 + 3 + 2 + 4, "{table}");

    let dense = fixture("dense_l3");
    let item = crate::golden::load_golden("dense_l3").json["requests"][0]["history"][0].to_string();
    let e = fails(&[
        "recommend",
        "--model",
        dense.to_str().unwrap(),
        "--history",
        &item,
        "--rerank",
        "--backend",
        "cpu",
    ]);
    assert!(e.contains("no reward model"), "{e}");
    let e = fails(&[
        "recommend",
        "--model",
        m,
        "--history",
        &history,
        "--beam",
        "4",
        "--results",
        "2",
        "--items",
        "5",
        "--backend",
        "cpu",
    ]);
    assert!(e.contains("items must be in 0..=beam"), "{e}");
}

/// `onerec bench` re-encodes the built-in q8 model (3-D embedding tensors included) to
/// every weight type and times it: one row per type, the same FLOPs for each (it failed
/// on NaNs when 3-D q8 tensors were decoded as one matrix).
#[test]
fn bench_converts_the_built_in_model_to_every_type() {
    let out = onerec(&[
        "bench",
        "--beam",
        "4",
        "--history",
        "8",
        "--dtype",
        "stored,f32,f16,q8,q4",
        "--repeat",
        "1",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench --json");
    let rows = v["results"].as_array().expect("results");
    let types: Vec<&str> = rows.iter().map(|r| r["dtype"].as_str().unwrap()).collect();
    assert_eq!(types, ["stored", "f32", "f16", "q8", "q4"]);
    let flops = rows[0]["gflop_per_request"].as_f64().unwrap();
    for r in rows {
        assert!(r["ms_median"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["gflop_per_request"].as_f64().unwrap(), flops, "{r}");
    }
}

/// `--profile` times every backend op of the CPU backend: the ops a decoder runs are
/// there, each called at least once per request, and their times fit in the request.
#[test]
fn bench_profile_says_where_the_time_goes() {
    let out = onerec(&[
        "bench",
        "--beam",
        "4",
        "--history",
        "8",
        "--repeat",
        "2",
        "--profile",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bench --json");
    let row = &v["results"][0];
    let ops = row["profile"].as_array().expect("profile");
    let names: Vec<&str> = ops.iter().map(|o| o["op"].as_str().unwrap()).collect();
    for want in ["matmul", "attention", "moe", "log_softmax", "beams_step"] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} missing: {names:?}"
        );
    }
    let total: f64 = ops
        .iter()
        .map(|o| o["ms_per_request"].as_f64().unwrap())
        .sum();
    assert!(ops
        .iter()
        .all(|o| o["calls_per_request"].as_f64().unwrap() >= 1.0));
    // Timed ops never nest, so they add up to at most the slowest request.
    let max = row["ms_max"].as_f64().unwrap();
    assert!(
        total > 0.0 && total <= max * 1.01,
        "ops {total} ms, request max {max} ms"
    );
}
