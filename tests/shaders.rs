//! Every WGSL file in every specialization the wgpu backend uses parses and validates
//! with naga, and no shader file is left out of the list.

use onerec_engine::backend::wgpu::shaders::{preprocess, variants, FILES, INCLUDE_ONLY};
use std::collections::BTreeSet;

/// Capabilities: naga's defaults plus `unpack2x16float` (f16 weights and block scales),
/// which wgpu grants on Vulkan, Metal and DX12 (downlevel flag SHADER_F16_IN_F32), and
/// `f16` (the KV cache variants, only built where the device has SHADER_F16).
fn validate(label: &str, src: &str) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{label}: parse error:\n{}", e.emit_to_string(src)));
    let mut v = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default()
            | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
            | naga::valid::Capabilities::SHADER_FLOAT16,
    );
    if let Err(e) = v.validate(&module) {
        panic!("{label}: invalid:\n{}", e.emit_to_string(src));
    }
}

#[test]
fn every_shader_variant_validates() {
    let all = variants();
    assert!(all.len() >= 20, "only {} variants listed", all.len());
    for v in &all {
        let src = v.source().unwrap_or_else(|e| panic!("{v:?}: {e}"));
        validate(&format!("{} {:?}", v.file, v.defines), &src);
    }
}

#[test]
fn every_shader_file_is_embedded_and_covered() {
    let dir = crate::common::repo_root().join("engine/shaders");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".wgsl"))
        .collect();
    let embedded: BTreeSet<String> = FILES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        on_disk, embedded,
        "engine/shaders/*.wgsl and the embedded list differ"
    );
    for (name, src) in FILES {
        assert_eq!(
            std::fs::read_to_string(dir.join(name)).unwrap(),
            *src,
            "{name} is stale in the build"
        );
    }
    let used: BTreeSet<&str> = variants().iter().map(|v| v.file).collect();
    for (name, _) in FILES {
        if INCLUDE_ONLY.contains(name) {
            let includer = FILES
                .iter()
                .any(|(_, s)| s.contains(&format!("#include \"{name}\"")));
            assert!(includer, "{name} is neither specialized nor included");
        } else {
            assert!(
                used.contains(name),
                "{name} has no specialization in variants()"
            );
        }
    }
}

#[test]
fn preprocessor_is_strict() {
    // Directives are checked on real files; errors name the file and line.
    assert!(preprocess("nope.wgsl", &[]).is_err());
    for (name, _) in FILES {
        preprocess(name, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Each weight type keeps exactly its own decoder.
    let q8 = preprocess("matmul.wgsl", &["W_Q8"]).unwrap();
    assert!(q8.contains("fn scale_of") && !q8.contains("unpack2x16float(w[i >> 1u])[i & 1u]"));
    let f32_ = preprocess("matmul.wgsl", &["W_F32"]).unwrap();
    let tiles = "var<storage, read> tiles";
    assert!(!f32_.contains("fn scale_of") && !f32_.contains(tiles));
    assert!(preprocess("matmul.wgsl", &["W_F32", "GROUPED"])
        .unwrap()
        .contains(tiles));
}
