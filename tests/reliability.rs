//! Replays every class of hostile or careless input found by the hardening review
//! (issue 11) so none can come back: each must fail fast with a clear error, never
//! block, grow, panic or destroy data. One test per class.

use crate::common::fixture;
use onerec_engine::ModelFile;
use onerec_quantize::{Args, Target};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Generous: each case below takes milliseconds; the bound only catches a hang or a
/// size-driven blow-up (2^20 layers took 10-20 s before the limits).
const FAST: Duration = Duration::from_secs(5);

/// Opens `path` on another thread; the error text, or a test failure when it takes
/// longer than `FAST` (a blocked open never returns, so it cannot be joined).
fn open_err_within(path: &Path) -> String {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let r = ModelFile::open(&p).map(|_| ()).map_err(|e| e.to_string());
        let _ = tx.send(r);
    });
    match rx.recv_timeout(FAST) {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("{} opened", path.display()),
        Err(_) => panic!("opening {} blocked for {FAST:?}", path.display()),
    }
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap().success();
    assert!(ok, "mkfifo {}", path.display());
}

/// A checkpoint directory copied from a fixture, one file of it replaced by `replace`.
fn checkpoint_with(dir: &Path, name: &str, replace: impl FnOnce(&Path)) -> PathBuf {
    let ck = dir.join(format!("ck-{}", name.replace('.', "_")));
    std::fs::create_dir_all(&ck).unwrap();
    for f in ["config.json", "model.safetensors"] {
        if f != name {
            std::fs::copy(fixture("dense_l3").join(f), ck.join(f)).unwrap();
        }
    }
    replace(&ck.join(name));
    ck
}

fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn fifos_are_refused_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model.fifo");
    mkfifo(&model);
    let e = open_err_within(&model);
    assert!(e.contains("not a regular file (a FIFO)"), "{e}");

    for name in ["config.json", "model.safetensors"] {
        let ck = checkpoint_with(tmp.path(), name, mkfifo);
        let e = open_err_within(&ck);
        assert!(e.contains(name) && e.contains("a FIFO"), "{name}: {e}");
    }

    // The titles file the CLI reads from the dataset cache: a FIFO there means no titles,
    // not a hang.
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(cache.join("ml-100k")).unwrap();
    mkfifo(&cache.join("ml-100k/ml-100k.item"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_onerec"))
        .args(["recommend", "--history", "50,172,181", "--beam", "4"])
        .args(["--results", "1", "--backend", "cpu"])
        .env("ONEREC_CACHE_DIR", &cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_within(&mut child, Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "recommend with a FIFO as the titles file: {status:?}"
    );
}

#[test]
fn devices_and_oversized_config_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        let ck = checkpoint_with(tmp.path(), "config.json", |p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        });
        let e = open_err_within(&ck);
        assert!(e.contains("a character device"), "{e}");
        let ck = checkpoint_with(tmp.path(), "model.safetensors", |p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap()
        });
        let e = open_err_within(&ck);
        assert!(e.contains("a character device"), "{e}");
    }
    // A regular config.json larger than any real one (sparse: no disk used).
    let big = tmp.path().join("big");
    let ck = checkpoint_with(&big, "config.json", |p| {
        std::fs::File::create(p).unwrap().set_len(4 << 20).unwrap()
    });
    let e = open_err_within(&ck);
    assert!(e.contains("larger than 1048576 bytes"), "{e}");
}

/// A model file with `header` as its JSON header and `data` as its data section.
fn model_file_bytes(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let data_offset = (64 + json.len()).next_multiple_of(256);
    let mut b = vec![0u8; data_offset];
    b[..8].copy_from_slice(b"ONERECMF");
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    b[12..16].copy_from_slice(&(json.len() as u32).to_le_bytes());
    b[16..24].copy_from_slice(&(data_offset as u64).to_le_bytes());
    b[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    b[64..64 + json.len()].copy_from_slice(&json);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..32]);
    h.update(&json);
    b[32..36].copy_from_slice(&h.finalize().to_le_bytes());
    b.extend_from_slice(data);
    b
}

/// The parts of a real model file (`dense_l3` as f32): its header and data section.
fn real_model_file(dir: &Path) -> (serde_json::Value, Vec<u8>) {
    let out = dir.join("real.onerec");
    quantize(&fixture("dense_l3"), &out).unwrap();
    let b = std::fs::read(&out).unwrap();
    let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let off = u64::from_le_bytes(b[16..24].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&b[64..64 + len]).unwrap();
    (header, b[off..].to_vec())
}

fn open_bytes_err(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    let start = Instant::now();
    let e = open_err_within(&p);
    assert!(start.elapsed() < FAST, "{name}: {:?}", start.elapsed());
    e
}

#[test]
fn absurd_configs_fail_fast_with_small_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (header, data) = real_model_file(tmp.path());
    let huge = 1usize << 20;
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "layers",
            Box::new(move |c| c["n_dec_layers"] = huge.into()),
            "`n_dec_layers` = 1048576 is larger than 256",
        ),
        (
            "moe-list",
            Box::new(move |c| {
                c["n_dec_layers"] = huge.into();
                c["moe_dec_layers"] = (0..huge).collect::<Vec<_>>().into();
            }),
            "`n_dec_layers` = 1048576 is larger than 256",
        ),
        (
            "moe-list-long",
            Box::new(move |c| c["moe_dec_layers"] = vec![0usize; huge].into()),
            "`moe_dec_layers` lists 1048576 layers, but there are only 2",
        ),
        (
            "codebook",
            Box::new(|c| c["codebook_size"] = (1usize << 40).into()),
            "`codebook_size` = 1099511627776 is larger than 1048576",
        ),
        (
            "unknown-key",
            Box::new(|c| c["n_layers"] = 4.into()),
            "unknown field `n_layers`",
        ),
    ];
    for (name, edit, want) in cases {
        let mut h = header.clone();
        edit(&mut h["config"]);
        let e = open_bytes_err(tmp.path(), name, &model_file_bytes(&h, &data));
        assert!(e.contains(want), "{name}: {e}");
    }

    // The same through the CLI under an address-space limit: a clean error, no abort.
    let mut h = header.clone();
    h["config"]["n_dec_layers"] = huge.into();
    h["config"]["moe_dec_layers"] = (0..huge).collect::<Vec<_>>().into();
    let path = tmp.path().join("layers-cli.onerec");
    std::fs::write(&path, model_file_bytes(&h, &data)).unwrap();
    let limited = |model: &Path| {
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 1048576 && exec \"$0\" inspect --model \"$1\"")
            .arg(env!("CARGO_BIN_EXE_onerec"))
            .arg(model)
            .output()
            .unwrap()
    };
    let out = limited(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is larger than 256"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // The same limit lets a real file through, so the limit is not what failed above.
    let ok = limited(&tmp.path().join("real.onerec"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn sizes_from_the_file_never_wrap() {
    let tmp = tempfile::tempdir().unwrap();
    let (header, data) = real_model_file(tmp.path());
    let tensors = header["tensors"].as_array().unwrap();
    let ids = tensors
        .iter()
        .position(|t| t["name"] == "catalog.item_ids")
        .unwrap();
    let n = tensors[ids]["shape"][0].as_u64().unwrap();
    // 8 · (2^61 + n) wraps to 8 · n, the tensor's real byte count.
    let mut h = header.clone();
    h["tensors"][ids]["shape"] = serde_json::json!([(1u64 << 61) + n]);
    let e = open_bytes_err(tmp.path(), "wrap", &model_file_bytes(&h, &data));
    assert!(e.contains("cannot hold i64"), "{e}");

    let mut h = header.clone();
    let crc = h["tensors"][0]["crc32"].as_str().unwrap().to_uppercase();
    h["tensors"][0]["crc32"] = crc.clone().into();
    if crc.bytes().any(|c| c.is_ascii_uppercase()) {
        let e = open_bytes_err(tmp.path(), "crc", &model_file_bytes(&h, &data));
        assert!(e.contains("not 8 lowercase hex digits"), "{e}");
    }
    let mut h = header.clone();
    h["tensors"][0]["crc32"] = "+1234567".into();
    let e = open_bytes_err(tmp.path(), "crc-plus", &model_file_bytes(&h, &data));
    assert!(e.contains("not 8 lowercase hex digits"), "{e}");

    // Reserved preamble bytes (not covered by the header checksum) must be zero.
    let mut b = model_file_bytes(&header, &data);
    b[40] = 1;
    let e = open_bytes_err(tmp.path(), "reserved", &b);
    assert!(e.contains("reserved bytes 36..64 are not zero"), "{e}");
    // The untouched file opens: the checks above are not what fails.
    let p = tmp.path().join("good.onerec");
    std::fs::write(&p, model_file_bytes(&header, &data)).unwrap();
    ModelFile::open(&p).unwrap();
}

fn args(input: &Path, output: &Path) -> Args {
    Args {
        input: input.to_path_buf(),
        output: Some(output.to_path_buf()),
        dtype: Target::F32,
        keep_f16: vec![],
        dry_run: false,
        quiet: true,
    }
}

fn quantize(input: &Path, output: &Path) -> anyhow::Result<()> {
    onerec_quantize::quantize(&args(input, output)).map(|_| ())
}

fn digest(dir: &Path) -> Vec<(String, u32)> {
    let mut v: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            (
                e.file_name().to_string_lossy().into_owned(),
                crc32fast::hash(&bytes),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn quantize_refuses_to_overwrite_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("dense_l3").join(f), ck.join(f)).unwrap();
    }
    let before = digest(&ck);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&ck, tmp.path().join("link")).unwrap();
    let mut outputs = vec![
        ck.join("model.safetensors"),
        ck.join("config.json"),
        ck.join("new.onerec"),
        ck.clone(),
        tmp.path().join("ck/../ck/model.safetensors"),
    ];
    #[cfg(unix)]
    outputs.push(tmp.path().join("link/model.safetensors"));
    for out in &outputs {
        let e = format!("{:#}", quantize(&ck, out).unwrap_err());
        assert!(
            e.contains("is the input") || e.contains("lies inside the input"),
            "{}: {e}",
            out.display()
        );
    }
    assert_eq!(digest(&ck), before, "the checkpoint changed");

    // A model file as input: the same path, and a hard link to it.
    let file = tmp.path().join("m.onerec");
    quantize(&ck, &file).unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let e = format!("{:#}", quantize(&file, &file).unwrap_err());
    assert!(e.contains("is the input"), "{e}");
    #[cfg(unix)]
    {
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::hard_link(&file, other.join("m.onerec")).unwrap();
        let e = format!(
            "{:#}",
            quantize(&file, &other.join("m.onerec")).unwrap_err()
        );
        assert!(e.contains("same device and inode"), "{e}");
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the model file changed"
    );
    // An output beside the input is fine.
    quantize(&file, &tmp.path().join("copy.onerec")).unwrap();
}

/// A checkpoint large enough that writing its q4 file takes a while (about 80 MB of f32),
/// with random weights.
fn large_checkpoint(dir: &Path) -> PathBuf {
    use safetensors::Dtype;
    let cfg = serde_json::json!({
        "d_model": 512, "n_heads": 8, "n_enc_layers": 1, "n_dec_layers": 1,
        "d_ff": 512, "n_experts": 0, "top_k": 0, "d_expert": 0,
        "moe_enc_layers": [], "moe_dec_layers": [], "n_levels": 3, "codebook_size": 4096,
        "session_len": 2, "max_history": 8, "rms_eps": 1e-6
    });
    let config: onerec_engine::config::Config = serde_json::from_value(cfg.clone()).unwrap();
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, shape) in onerec_engine::schema::weight_shapes(&config) {
        let n: usize = shape.iter().product();
        let mut bytes = Vec::with_capacity(4 * n);
        for _ in 0..n {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        tensors.push((name, Dtype::F32, shape, bytes));
    }
    let items = 64usize;
    let ids: Vec<u8> = (0..items as i64)
        .flat_map(|i| (i + 1).to_le_bytes())
        .collect();
    let sids: Vec<u8> = (0..items as i32)
        .flat_map(|i| [i, i % 7, i % 5])
        .flat_map(|c| c.to_le_bytes())
        .collect();
    tensors.push(("catalog.item_ids".into(), Dtype::I64, vec![items], ids));
    tensors.push(("catalog.sids".into(), Dtype::I32, vec![items, 3], sids));
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            let v = safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap();
            (n.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    dir.to_path_buf()
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.starts_with(".onerec-").then_some(name)
        })
        .collect()
}

/// `onerec-quantize` of this build (another package's binary: Cargo does not hand its
/// path to these tests), built first if `cargo test` did not build it.
fn quantize_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/tests-HASH
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let tool = profile_dir.join(format!("onerec-quantize{}", std::env::consts::EXE_SUFFIX));
    if !tool.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "-p", "onerec-quantize"]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        assert!(
            build.status().unwrap().success(),
            "building onerec-quantize"
        );
    }
    tool
}

#[test]
#[cfg(unix)]
fn interrupted_quantize_leaves_no_temporary_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ck = tmp.path().join("ck");
    std::fs::create_dir(&ck).unwrap();
    large_checkpoint(&ck);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let tool = quantize_binary();
    for signal in ["INT", "TERM", "HUP"] {
        let out = out_dir.join("m.onerec");
        let mut child = Command::new(&tool)
            .arg("--input")
            .arg(&ck)
            .arg("--output")
            .arg(&out)
            .args(["--dtype", "q4", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Signal as soon as the temporary file exists: the tool is mid-write then.
        let start = Instant::now();
        while temporaries(&out_dir).is_empty() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "SIG{signal}: the tool finished before it could be interrupted"
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no temporary file"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let status = wait_within(&mut child, Duration::from_secs(60)).expect("did not exit");
        assert!(!status.success(), "SIG{signal}: exited {status:?}");
        assert_eq!(temporaries(&out_dir), Vec::<String>::new(), "SIG{signal}");
        assert!(!out.exists(), "SIG{signal}: a partial output");
    }
}
